"""`varexp sweep`: the paper's Sec. 5.2 grid, init x optimizer x learning rate x seed, as a Hydra
multirun (conf/sweep.yaml). Each job is one `varexp train` run in a directory named after its
settings, so a re-launched sweep skips finished runs and resumes interrupted ones. After the last
job, SweepTables writes sweep.csv (one row per run) and selected.csv (the fastest-converging lr
per arch, dataset, init and optimizer) into the sweep directory.

The lr grid depends on the optimizer, which a Cartesian sweep cannot express, so the sweep runs
over an index into the optimizer's grid, `sweep.lr_index`, and `optim.lr` selects
`sweep.lr_grid.<optim.name>[sweep.lr_index]`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from varexp.errors import VarexpError, bad_value
from varexp.files import read_summary, write_csv, write_json

log = logging.getLogger("varexp.sweep")

SWEEP_COLUMNS = ("arch", "dataset", "init", "optim", "lr", "seed", "status", "steps",
                 "final_loss", "criterion", "seconds", "run_dir")
SELECTED_COLUMNS = ("arch", "dataset", "init", "optim", "lr", "criterion", "criterion_std",
                    "runs", "select_fraction")
KEY = ["arch", "dataset", "init", "optim"]
FINISHED = ("completed", "diverged")


# ---------------------------------------------------------------------------------------------
# checks


def check_sweep(cfg: DictConfig) -> None:
    """The sweep's own keys: a fraction in (0, 1] and positive learning rates."""
    fraction = OmegaConf.select(cfg, "sweep.select_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise bad_value("sweep.select_fraction", fraction, "must be a number in (0, 1]")
    grids = OmegaConf.select(cfg, "sweep.lr_grid")
    for optim, grid in (grids or {}).items():
        key = f"sweep.lr_grid.{optim}"
        if not OmegaConf.is_list(grid) or len(grid) == 0:
            raise bad_value(key, grid, "must be a non-empty list of learning rates")
        for lr in grid:
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
                raise bad_value(key, list(grid), "every learning rate must be a number > 0")
    index = OmegaConf.select(cfg, "sweep.lr_index")
    optim = OmegaConf.select(cfg, "optim.name")
    grid = (grids or {}).get(optim)
    if grid is not None and (isinstance(index, bool) or not isinstance(index, int)
                             or not 0 <= index < len(grid)):
        raise bad_value("sweep.lr_index", index, f"must be an integer in 0..{len(grid) - 1} "
                        f"(sweep.lr_grid.{optim} has {len(grid)} learning rates)")


# ---------------------------------------------------------------------------------------------
# one job


def finished_here(summary: dict | None, cfg: DictConfig) -> bool:
    """Whether run_dir already holds this very run, completed or diverged, at train.steps."""
    from varexp.checkpoint import identity

    if summary is None or summary.get("status") not in FINISHED:
        return False
    same = json.loads(json.dumps(identity(cfg))) == summary.get("config")
    return same and summary.get("train_steps") == cfg.train.steps


def run(cfg: DictConfig) -> dict:
    """One job of the multirun: nothing to do if the run directory holds this run finished;
    otherwise train, continuing from its checkpoint if there is one (varexp.train with
    resume=true refuses, naming the keys, a checkpoint made with another config)."""
    from hydra.core.hydra_config import HydraConfig

    from varexp.checkpoint import checkpoint_path
    from varexp.train import Stopped, train

    check_sweep(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = read_summary(run_dir)
    if finished_here(summary, cfg):
        log.info("skip %s: already %s", run_dir, summary["status"])
        return summary
    with open_dict(cfg):
        cfg.resume = True
    if checkpoint_path(run_dir).exists():
        log.info("continue %s from its checkpoint", run_dir)
    try:
        summary = train(cfg, run_dir)
        log.info("%s: %s after %d steps", run_dir, summary["status"], summary["steps"])
        return summary
    except Stopped:  # train.stop_after: the debug stand-in for a kill stops the whole sweep
        raise
    except VarexpError as error:  # e.g. a dead layer, or a checkpoint of another config: this
        log.error("run %s failed: %s", run_dir, error)  # run only; what it holds stays as it is
        return dict(status="failed", error=str(error))
    except Exception as error:  # one broken run must not stop the other jobs of the sweep
        log.exception("run %s failed", run_dir)
        summary = read_summary(run_dir)
        if summary is None or summary.get("status") != "failed":
            summary = dict(status="failed", error=f"{type(error).__name__}: {error}")
            write_json(summary, run_dir / "summary.json")
        return summary


# ---------------------------------------------------------------------------------------------
# tables


def criterion(losses: pd.Series, fraction: float) -> float:
    """Mean training loss over the last `fraction` of the logged steps (at least one step);
    fraction = 1 gives the area under the whole loss curve per step."""
    tail = max(1, math.ceil(fraction * len(losses)))
    return float(losses.iloc[-tail:].mean())


def run_row(run_dir: Path, sweep_dir: Path, fraction: float) -> dict:
    """The sweep.csv row of one run directory."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    row = dict(arch=OmegaConf.select(cfg, "arch.name"),
               dataset=OmegaConf.select(cfg, "dataset.name"),
               init=OmegaConf.select(cfg, "init.name"), optim=OmegaConf.select(cfg, "optim.name"),
               lr=float(OmegaConf.select(cfg, "optim.lr")), seed=OmegaConf.select(cfg, "seed"),
               status="incomplete", steps=np.nan, final_loss=np.nan, criterion=np.nan,
               seconds=np.nan, run_dir=run_dir.relative_to(sweep_dir).as_posix())
    summary = read_summary(run_dir)
    if summary is None:
        return row
    row.update(status=summary.get("status", "incomplete"),
               final_loss=summary.get("final_loss", np.nan),
               seconds=summary.get("seconds", np.nan))
    metrics = run_dir / "metrics.csv"
    if row["status"] == "completed" and metrics.exists():
        losses = pd.read_csv(metrics)["loss"].astype(float)
        row.update(steps=len(losses), criterion=criterion(losses, fraction))
    else:
        row.update(steps=summary.get("steps", np.nan))
    return row


def sweep_table(sweep_dir: Path, fraction: float) -> pd.DataFrame:
    """One row per run directory (one holding .hydra/config.yaml) under sweep_dir."""
    run_dirs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml"))
    rows = [run_row(d, sweep_dir, fraction) for d in run_dirs]
    table = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    return table.sort_values(KEY + ["lr", "seed"], ignore_index=True)


def select(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per (arch, dataset, init, optim), the lr with the lowest criterion averaged over seeds.
    A lr where any seed diverged is not eligible; failed and incomplete runs are left out."""
    rows = []
    for key, group in table.groupby(KEY, sort=True):
        candidates = []
        for lr, runs in group.groupby("lr"):
            done = runs[runs["status"] == "completed"]
            if (runs["status"] == "diverged").any() or done.empty:
                continue
            candidates.append((done["criterion"].mean(), lr, done))
        if not candidates:
            log.warning("%s: no learning rate without divergence; nothing selected",
                        ", ".join(map(str, key)))
            continue
        value, lr, done = min(candidates, key=lambda c: c[0])
        std = done["criterion"].std(ddof=1) if len(done) > 1 else 0.0
        rows.append(dict(zip(KEY, key, strict=True), lr=lr, criterion=value, criterion_std=std,
                         runs=len(done), select_fraction=fraction))
    return pd.DataFrame(rows, columns=list(SELECTED_COLUMNS))


def write_tables(sweep_dir: str | Path, fraction: float) -> tuple[Path, Path]:
    """sweep.csv and selected.csv in sweep_dir, written atomically."""
    sweep_dir = Path(sweep_dir)
    table = sweep_table(sweep_dir, fraction)
    selected = select(table, fraction)
    counts = table["status"].value_counts().to_dict()
    log.info("sweep %s: %d runs (%s), %d settings selected", sweep_dir, len(table),
             ", ".join(f"{n} {s}" for s, n in counts.items()), len(selected))
    sweep_csv = write_csv(table, sweep_dir / "sweep.csv")
    return sweep_csv, write_csv(selected, sweep_dir / "selected.csv")


def read_sweep_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """sweep.csv or selected.csv with the expected columns; one-line errors."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise VarexpError(f"{path}: missing; re-run the sweep to write it") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise VarexpError(f"{path}: not a readable CSV ({str(error).strip()})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise VarexpError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


class SweepTables(Callback):
    """Hydra callback (conf/sweep.yaml, hydra.callbacks): checks the config before any job runs
    and writes the tables after the last one. Both hooks run in the launching process for
    every launcher (basic, joblib, submitit), after the launcher has collected all jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from varexp.train import check_train

        try:
            check_sweep(config)
            check_train(config)  # the keys no job overrides are wrong in every job: say so now
        except VarexpError as error:
            print(f"varexp sweep: {error}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_csv, selected_csv = write_tables(config.hydra.sweep.dir, config.sweep.select_fraction)
        print(f"sweep: {sweep_csv}, {selected_csv}")
