"""Every result table varexp writes: its file and its columns (the one place they are named),
the one CSV reader (a damaged file is one line), and the result files a figure or the report
reads, with the config of the run that made each."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.files import write_csv
from varexp.results.finding import find_results, run_config
from varexp.results.summary import FINISHED, Status
from varexp.rows import MetricsRow
from varexp.stats import STAT_NAMES

log = logging.getLogger("varexp.results")


@dataclass(frozen=True)
class Table:
    file: str
    columns: tuple[str, ...]
    text: tuple[str, ...] = ()  # the columns that are not numbers
    needed: int | None = None  # a reader needs the first `needed` columns (older files lack more)

    @property
    def required(self) -> tuple[str, ...]:
        return self.columns[: self.needed] if self.needed is not None else self.columns

    def write(self, rows: pd.DataFrame | Iterable, folder: str | Path) -> Path:
        """The table in folder, columns in order, written atomically."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=self.columns)
        return write_csv(frame[list(self.columns)], Path(folder) / self.file)

    def read(self, path: str | Path, allow_empty: bool = False) -> pd.DataFrame:
        return read_table(Path(path), self, allow_empty)

    def read_run(self, run_dir: str | Path, summary: dict | None = None) -> pd.DataFrame:
        """This table of a training run, checked as the record of its steps (read_run)."""
        return read_run(Path(run_dir), self, summary)


THEORY = Table("theory.csv", ("layer", "c", "q", "m", "v", "ratio"))
PROBE = Table(
    "probe.csv",
    ("network", "layer", "name", "features", *STAT_NAMES[:4], "grad_sq", *STAT_NAMES[4:]),
    text=("name",),
    needed=9,
)
NEURONS = Table("neurons.csv", ("network", "layer", "neuron", "sample", "value"))
# a fitted init's targets (varexp.inits.HELDOUT_STATS) on its fitting batch and on fresh inputs
HELDOUT = Table(
    "heldout.csv",
    (
        "network",
        "layer",
        "name",
        "fit_samples",
        "heldout_samples",
        "fit_second_moment",
        "heldout_second_moment",
        "fit_mean_sq",
        "heldout_mean_sq",
    ),
    text=("name",),
)


METRICS = Table("metrics.csv", MetricsRow._fields, needed=5)
# per layer on the fixed batch (varexp.stats), then the weight gradient's RMS
RATIO_STATS = (
    "sample_mean_sq",
    "sample_var",
    "ratio",
    "sample_mean_sq_channel",
    "sample_var_channel",
    "ratio_channel",
)
RATIOS = Table(
    "ratios.csv",
    ("step", "layer", "name", *RATIO_STATS[:3], "weight_grad_rms", *RATIO_STATS[3:]),
    text=("name",),
)
SWEEP = Table(
    "sweep.csv",
    (
        "arch",
        "dataset",
        "init",
        "optim",
        "lr",
        "seed",
        "status",
        "steps",
        "final_loss",
        "criterion",
        "seconds",
        "run_dir",
    ),
    text=("arch", "dataset", "init", "optim", "status", "run_dir"),
)
# lr_at_edge: low or high when the chosen lr is the smallest or largest of its setting's lrs with
# a finished run (the best lr is then not bracketed), both when there is one, else empty
# (varexp.sweep.lr_edge)
SELECTED = Table(
    "selected.csv",
    (
        "arch",
        "dataset",
        "init",
        "optim",
        "lr",
        "criterion",
        "criterion_std",
        "runs",
        "select_fraction",
        "lr_at_edge",
    ),
    text=("arch", "dataset", "init", "optim", "lr_at_edge"),
    needed=9,
)
SETTING = ["arch", "dataset", "init", "optim"]  # what a sweep selects a learning rate for
# an Optuna search's trials (varexp.search), one row each; a column per searched key follows
TRIALS = Table("trials.csv", ("trial", "state", "value", "seconds"), text=("state",))


def read_table(
    path: Path, table: Table, allow_empty: bool = False, keep_infinite: bool = False
) -> pd.DataFrame:
    """A result CSV with the table's columns, numeric where they should be; one-line errors.
    inf (a dead layer's ratio) cannot be averaged or drawn: it is left out, with a warning
    (kept with `keep_infinite`)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise VarexpError(f"{path}: missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise VarexpError(f"{path}: not a readable CSV ({str(error).strip()})") from None
    missing = [c for c in table.required if c not in frame.columns]
    if missing:
        raise VarexpError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(table.required)}"
        )
    if frame.empty and not allow_empty:
        raise VarexpError(f"{path}: has a header but no rows")
    for column in (c for c in table.columns if c in frame.columns and c not in table.text):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            raise VarexpError(
                f"{path}: column {column} has non-numeric value "
                f"{frame[column][bad].iloc[0]!r} (row {int(bad.idxmax()) + 2})"
            )
        infinite = np.isinf(numeric)
        if infinite.any() and not keep_infinite:
            log.warning(
                "%s: %d non-finite %s value(s) left out of the averages",
                path,
                int(infinite.sum()),
                column,
            )
        frame[column] = numeric if keep_infinite else numeric.mask(infinite)
    return frame


def whole_rows(path: Path) -> None:
    """Every file varexp writes ends its last row with a newline: one that does not was cut
    short (by hand, or a disk fault)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            raise VarexpError(f"{path}: empty")
        f.seek(-1, 2)
        if f.read(1) != b"\n":
            raise VarexpError(f"{path}: its last row is cut short (a partial file)")


def read_run(run_dir: Path, table: Table, summary: dict | None = None) -> pd.DataFrame:
    """metrics.csv (or ratios.csv) of a training run, checked as the record of its steps: the
    table's columns and types, a whole last row, and for metrics.csv the steps 0..n-1 in order
    with finite values (but the loss of a diverged run's last row); with the run's summary, as
    many rows as the steps it says it trained. A file that fails is a damaged run (one-line
    VarexpError), never data."""
    path = run_dir / table.file
    frame = read_table(path, table, keep_infinite=True)
    whole_rows(path)
    if table is not METRICS:
        return frame
    steps = frame["step"].to_numpy()
    wrong = np.flatnonzero(steps != np.arange(len(steps)))
    if wrong.size:
        raise VarexpError(
            f"{path}: steps are not 0, 1, 2, ... in order (row {wrong[0] + 2} "
            f"has step {steps[wrong[0]]})"
        )
    status = (summary or {}).get("status")
    diverged = status == Status.DIVERGED
    if status in FINISHED and isinstance(summary.get("steps"), int):
        expected = int(summary["steps"]) + (1 if diverged else 0)  # and the non-finite row
        if len(frame) != expected:
            raise VarexpError(
                f"{path}: {len(frame)} rows, but the run {status} after "
                f"{summary['steps']} steps ({expected} rows)"
            )
    # the later columns may be empty: accuracy in rows of older runs, the test columns but
    # every train.eval_every steps
    checked = [c for c in METRICS.required if c != "step"]
    values = frame[checked].to_numpy(float)
    bad = ~np.isfinite(values)
    if diverged and len(frame):
        bad[-1, checked.index("loss")] = False
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise VarexpError(f"{path}: {checked[col]} is missing or not finite in row {row + 2}")
    return frame


def complete(frame: pd.DataFrame, path: Path, networks: int | None = None) -> pd.DataFrame:
    """A probe table with every layer of every network (0..networks-1 when given) and its
    statistics present (a file cut short by hand or by a disk fault fails here)."""
    whole_rows(path)
    if networks is not None:
        found = sorted(frame["network"].unique())
        if found != list(range(networks)):
            missing = sorted(set(range(networks)) - set(found))
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise VarexpError(
                f"{path}: holds {len(found)} of the {networks} networks its run "
                f"probed (probe.networks){'; missing ' + shown if missing else ''}"
                " (a partial or altered file)"
            )
    layers = frame.groupby("network")["layer"].apply(lambda s: tuple(sorted(s)))
    if layers.nunique() != 1 or layers.iloc[0] != tuple(range(1, len(layers.iloc[0]) + 1)):
        raise VarexpError(f"{path}: not every network has layers 1..L (a partial file)")
    stats = ["sample_mean_sq", "sample_var", "second_moment"]
    partial_grads = 0 < frame["grad_sq"].isna().sum() < len(frame)
    if frame[stats].isna().any().any() or partial_grads:
        raise VarexpError(f"{path}: missing statistics in some rows (a partial file)")
    return frame


@dataclass
class RunResult:
    """One run folder's result table and the config that made it."""

    path: Path
    cfg: DictConfig
    table: pd.DataFrame

    def get(self, key: str, default: object = None) -> object:
        return OmegaConf.select(self.cfg, key, default=default)

    @property
    def arch(self) -> str:
        return arch_label(self.get("arch.name", "mlp"), self.get("arch.model"))

    @property
    def init(self) -> str:
        return str(self.get("init.name", "kaiming"))


def load_probes(
    figure: str,
    results: str | None,
    outputs_root: str,
    inits: tuple[str, ...] | None = None,
    beside: str | None = None,
) -> list[RunResult]:
    """The probe tables `figure` draws (varexp.results.finding.find_results: everything under
    `results`, else the newest runs made for the figure under `outputs_root`), with their runs'
    configs; damaged or partial files are left out with one line each. `inits` keeps only runs
    of those inits; `beside` only runs that also wrote that file."""

    def accept(path: Path) -> bool:
        if beside is not None and not (path.parent / beside).exists():
            return False
        try:
            return inits is None or str(OmegaConf.select(run_config(path), "init.name")) in inits
        except VarexpError:
            return True  # a damaged record: read below, and left out with one line

    runs = []
    for path in find_results(FIGURES[figure], results, outputs_root, accept):
        try:
            cfg = run_config(path)
            networks = OmegaConf.select(cfg, "probe.networks", default=None)
            table = complete(
                PROBE.read(path), path, int(networks) if isinstance(networks, int) else None
            )
            runs.append(RunResult(path, cfg, table))
        except VarexpError as error:  # a damaged or partial file: the others are still drawn
            log.warning("%s leaves out %s", figure, error)
    if not runs:
        raise VarexpError(
            f"nothing to draw for {figure}: every result file found was damaged "
            "(see the lines above)"
        )
    log.info(
        "%s reads %d %s file(s): %s",
        figure,
        len(runs),
        FIGURES[figure].result,
        ", ".join(str(r.path.parent) for r in runs[:5]) + (" ..." if len(runs) > 5 else ""),
    )
    return runs


def load_heldout(results: str | None, outputs_root: str) -> list[RunResult]:
    """The heldout.csv tables the heldout figure and the report read (as load_probes finds
    them), with their runs' configs; damaged files are left out with one line each."""
    runs = []
    for path in find_results(FIGURES["heldout"], results, outputs_root):
        try:
            runs.append(RunResult(path, run_config(path), HELDOUT.read(path)))
        except VarexpError as error:
            log.warning("heldout leaves out %s", error)
    if not runs:
        raise VarexpError(
            "nothing to draw for heldout: every result file found was damaged (see the lines above)"
        )
    return runs


def stack(runs: list[RunResult]) -> pd.DataFrame:
    """Concatenate runs' tables; `network` becomes unique across runs so that runs of the same
    setting (e.g. two width-300 probes) pool their networks instead of averaging them first."""
    parts = []
    offset = 0
    for run in runs:
        frame = run.table.copy()
        frame["network"] = frame["network"] + offset
        offset = int(frame["network"].max()) + 1
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def arch_label(name: str, model: str | None = None) -> str:
    """What a table's `arch` column says: the architecture, or for arch=torchvision|timm the
    model's name (resnet18, vit_b_16, ...)."""
    return str(model if model else name)


def probe_frame(network: int, rows: list[dict]) -> pd.DataFrame:
    """probe.csv's rows of one network from varexp.stats.network_stats' per-layer dicts, with
    one device-to-host copy for all of them (grad_sq NaN without gradients)."""
    keys = [*STAT_NAMES, "grad_sq"]
    nan = torch.full((), float("nan"), dtype=torch.float64, device=rows[0]["ratio"].device)
    values = (
        torch.stack([torch.stack([nan if r[k] is None else r[k] for k in keys]) for r in rows])
        .cpu()
        .numpy()
    )
    frame = pd.DataFrame(values, columns=keys)
    frame.insert(0, "features", [r["features"] for r in rows])
    frame.insert(0, "name", [r["name"] for r in rows])
    frame.insert(0, "layer", [r["layer"] for r in rows])
    frame.insert(0, "network", network)
    return frame


# ---------------------------------------------------------------------------------------------
# the end of a sweep, a `-m` run or a search: what won


def best_settings(runs: pd.DataFrame, selected: pd.DataFrame, select: str = "auc") -> str:
    """The table a sweep prints at its end: per setting (arch, dataset, init, optim) the selected
    learning rate, its criterion as mean +- std over seeds, and whether it is distinguishable
    from the runner-up lr (the next lowest mean among the eligible ones: every seed finished and
    none diverged), by the difference of the means against its standard error (2 se or more:
    distinguishable; one seed each has no spread to judge by). `runs` is sweep.csv, `selected`
    selected.csv."""
    what = (
        "mean training loss over the whole run"
        if select == "auc"
        else "mean training loss over the last part of the run"
    )
    if selected.empty:
        return f"best settings: none (no learning rate had every run finish; criterion: {what})"
    rows = []
    for _, best in selected.iterrows():
        key = tuple(best[c] for c in SETTING)
        mine = runs[(runs[SETTING] == pd.Series(key, index=SETTING)).all(axis=1)]
        rows.append(
            {
                **{c: best[c] for c in SETTING},
                "lr": f"{best['lr']:.3g}",
                "loss (mean +- std)": _mean_std(
                    best["criterion"], best["criterion_std"], int(best["runs"])
                ),
                "seeds": int(best["runs"]),
                "vs the next lr": _versus_next(mine, float(best["lr"]), float(best["criterion"])),
            }
        )
    frame = pd.DataFrame(rows)
    shown = frame.drop(columns=[c for c in SETTING if frame[c].nunique() == 1 and len(frame) > 1])
    fixed = ", ".join(f"{c}={frame[c].iloc[0]}" for c in SETTING if c not in shown.columns)
    head = f"best settings ({what}; +- std over seeds{'; ' + fixed if fixed else ''}):"
    body = shown.to_string(index=False)
    return head + "\n" + "\n".join("  " + line for line in body.splitlines())


def _mean_std(mean: float, std: float, n: int) -> str:
    return f"{mean:.4g}" if n < 2 else f"{mean:.4g} +- {std:.2g}"


def _versus_next(runs: pd.DataFrame, lr: float, best: float) -> str:
    eligible = []
    for other, group in runs.groupby("lr"):
        done = group[group["status"] == Status.COMPLETED]
        if other == lr or done.empty or not group["status"].eq(Status.COMPLETED).all():
            continue
        eligible.append((done["criterion"].mean(), other, done["criterion"]))
    if not eligible:
        return "the only lr that finished"
    mean, other, criteria = min(eligible, key=lambda c: c[0])
    mine = runs[(runs["lr"] == lr) & (runs["status"] == Status.COMPLETED)]["criterion"]
    if len(mine) < 2 or len(criteria) < 2:
        return f"{other:.3g}: {mean:.4g} (one seed: no spread to judge by)"
    se = float(np.sqrt(mine.var(ddof=1) / len(mine) + criteria.var(ddof=1) / len(criteria)))
    gap = (mean - best) / se if se > 0 else np.inf
    verdict = "distinguishable" if gap >= 2 else "not distinguishable"
    return f"{other:.3g}: {mean:.4g} ({verdict}, {gap:.1f} se)"
