"""A pack job: one Hydra job that trains several runs of a sweep together.

The sweeper (varexp.pack.sweeper) launches a pack under its lead run's overrides plus
`+packed_runs=[...]`, the runs it trains. Here each run gets exactly what a job of its own
would: its config composed by Hydra's config loader from its own overrides, as the launcher
composes a job's; its run folder (hydra.sweep.dir / hydra.sweep.subdir of that config) claimed,
checked and recorded (run.json, .hydra/) with Hydra's config of that job in place; finished runs
skipped, interrupted ones continued from their checkpoints, refused folders left untouched; a
`<job>.log` of its own. Then the runs that have training left train as one pack
(varexp.pack.trainer), cut into smaller packs if the memory here cannot hold them.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from varexp import hydra_adapter, results
from varexp.compose import check_once, is_group
from varexp.data import data_info
from varexp.devices import resolve as resolve_device
from varexp.errors import VarexpError
from varexp.pack.plan import PACK_KEY, Plan, decode, fitting, key_of, member_overrides
from varexp.pack.trainer import PackRun, train_pack
from varexp.results.checkpoint import checkpoint_path
from varexp.results.summary import Status, failed_summary
from varexp.results.tables import METRICS
from varexp.threads import auto_threads
from varexp.train import Stopped, already_done, check_writable, existing_run, timing_config

log = logging.getLogger("varexp.sweep")

_current: ContextVar[Path | None] = ContextVar("varexp_pack_run", default=None)


class OneRun(logging.Filter):
    """Passes the lines about one run folder, and those about the whole pack."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        return current is None or current == self.folder


@contextmanager
def about(run: PackRun | Path | None) -> Iterator[None]:
    """Log lines in this block are about `run` (they go to its log; None: to every log)."""
    token = _current.set(run.run_dir if isinstance(run, PackRun) else run)
    try:
        yield
    finally:
        _current.reset(token)


def job_configs(cfg: DictConfig) -> list[tuple[int, DictConfig]]:
    """(job number in the sweep, full config with its `hydra` node) of each run of this pack,
    composed as a launcher composes a job: Hydra's overrides of the launch, then the job's."""
    hydra_cfg = HydraConfig.get()
    lead = [o for o in hydra_cfg.overrides.task if key_of(o) != PACK_KEY]
    master = OmegaConf.create(
        {
            "hydra": {
                "overrides": {"hydra": list(hydra_cfg.overrides.hydra)},
                "job": {"config_name": hydra_cfg.job.config_name},
            }
        }
    )
    loader = GlobalHydra.instance().config_loader()
    composed: dict[tuple[str, ...], DictConfig] = {}
    out = []
    for number, differing in decode(list(cfg[PACK_KEY])):
        overrides = member_overrides(lead, differing)
        parsed = hydra_adapter.parse(overrides)
        # runs that choose the same group options share one composition, as in varexp.compose:
        # a composition is most of a run's start-up
        groups = tuple(o.input_line for o in parsed if is_group(o.key_or_group))
        if groups not in composed:
            composed[groups] = loader.load_sweep_config(master, list(groups))
        values = [o for o in parsed if not is_group(o.key_or_group)]
        job_cfg = hydra_adapter.job_config(composed[groups], values, parsed, number)
        with open_dict(job_cfg):
            job_cfg.hydra.overrides.task = overrides
            # the job that trains it: its number decides the GPU (varexp.devices.resolve)
            job_cfg.hydra.job.id = hydra_cfg.job.id
            job_cfg.hydra.job.num = hydra_cfg.job.num
        out.append((number, job_cfg))
    return out


@contextmanager
def as_job(job_cfg: DictConfig) -> Iterator[DictConfig]:
    """Hydra's config of the run's own job in place while the block runs (as hydra.core.utils.
    run_job sets it: with its output_dir); yields the run's config without `hydra`."""
    instance = HydraConfig.instance()
    saved = instance.cfg
    try:
        instance.set_config(job_cfg)
        output_dir = os.path.join(
            str(OmegaConf.select(job_cfg, "hydra.sweep.dir")),
            str(OmegaConf.select(job_cfg, "hydra.sweep.subdir")),
        )
        with read_write(job_cfg.hydra.runtime), open_dict(job_cfg.hydra.runtime):
            job_cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
        instance.set_config(job_cfg)
        task_cfg = copy.deepcopy(job_cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        yield task_cfg
    finally:
        instance.cfg = saved


def run(cfg: DictConfig) -> list[dict]:
    """The pack job: claim every run's folder (held until the pack ends), then train the runs
    that are not finished together. Each run's outcome is recorded for the sweep's tables as
    its own job's would be (varexp.sweep.record_outcome): finished, failed (refused, its own
    error), or incomplete (the pack was stopped). Returns each run's summary."""
    from varexp.sweep import record_outcome  # the sweep's own job records, per run

    sweep_dir = Path(HydraConfig.get().sweep.dir)
    folders: dict[int, Path] = {}
    outcomes: dict[int, dict] = {}

    def record(number: int, outcome: dict) -> None:
        outcomes[number] = outcome
        record_outcome(
            sweep_dir,
            number,
            folders[number],
            outcome.get("status", Status.FAILED),
            outcome.get("error"),
        )

    runs: list[tuple[int, PackRun]] = []
    try:
        with ExitStack() as held:
            for number, job_cfg in job_configs(cfg):
                with as_job(job_cfg) as run_cfg:
                    folders[number] = Path(HydraConfig.get().runtime.output_dir)
                    outcome = _claim(run_cfg, folders[number], held)
                if isinstance(outcome, PackRun):
                    runs.append((number, outcome))
                else:
                    record(number, outcome)
            if runs:
                for part in _fitting_parts([r for _, r in runs]):
                    train_pack(part, about=about)
            for number, packed in runs:
                record(number, packed.summary or failed_summary("ended without a result"))
    except Stopped as stop:  # the runs that had not ended can continue from their checkpoints
        for number, packed in runs:
            if number not in outcomes:
                record(
                    number, packed.summary or {"status": str(Status.INCOMPLETE), "error": str(stop)}
                )
        raise
    except BaseException as error:
        for number in folders:
            if number not in outcomes:
                record(number, failed_summary(f"{type(error).__name__}: {error}"))
        raise
    return [outcomes[n] for n in sorted(outcomes)]


def _claim(cfg: DictConfig, folder: Path, held: ExitStack) -> PackRun | dict:
    """Hold one run's folder for the pack (refused as its own job would refuse it: in use,
    another config's results or checkpoint), with its own log; then what it needs."""
    from varexp.sweep import accept

    # the folder and its log first, as Hydra makes them for a job before the job runs: a
    # refusal is in the run's own log, where the sweep's last lines point
    folder.mkdir(parents=True, exist_ok=True)
    _run_log(
        folder,
        [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)],
        held,
    )
    with about(folder):
        try:
            run_dir = held.enter_context(
                results.claim("sweep", cfg, accept=lambda run_dir: accept(cfg, run_dir))
            )
        except VarexpError as error:  # left untouched
            log.error("run %s not started: %s", folder, error)
            return failed_summary(str(error))
        return _prepare(cfg, run_dir)


def _prepare(cfg: DictConfig, run_dir: Path) -> PackRun | dict:
    """What `varexp sweep` does for a run before training it (varexp.sweep.run_job and
    varexp.train.train): the summary of a run that needs no training, or the run to train."""
    from varexp.sweep import check, failed, finished_intact, resumed

    try:
        info = check_once(check, cfg)
    except VarexpError as error:
        log.error("run %s not started: %s", run_dir, error)
        return failed_summary(str(error))
    summary = finished_intact(cfg, run_dir)
    if summary is not None:
        return summary
    cfg = resumed(cfg)
    try:
        check_writable(run_dir)
        saved = existing_run(cfg, run_dir)
        summary = already_done(cfg, run_dir, saved)
    except Exception as error:  # one broken run must not stop the rest of its pack
        return failed(run_dir, error)
    if summary is not None:
        return summary
    if checkpoint_path(run_dir).exists():
        log.info("continue %s from its checkpoint", run_dir)
    return PackRun(cfg, run_dir, info, saved)


def _fitting_parts(runs: list[PackRun]) -> list[list[PackRun]]:
    """The runs in packs that fit in the memory here (one line if they must be cut)."""
    cfg = runs[0].cfg
    device = resolve_device(str(cfg.device))
    most = fitting(cfg, len(runs), device)
    if most >= len(runs):
        return [runs]
    parts = -(-len(runs) // most)
    per = -(-len(runs) // parts)  # even packs
    log.warning(
        "a pack of %d runs does not fit in the memory free on %s: %d packs of at most "
        "%d, one after another",
        len(runs),
        device,
        parts,
        per,
    )
    return [runs[i : i + per] for i in range(0, len(runs), per)]


def _run_log(run_dir: Path, hydra_files: list[logging.FileHandler], held: ExitStack) -> None:
    """The run's own `<job>.log`: Hydra's handler where it writes into this folder (the lead's),
    else one like it; each passes only this run's lines and the pack's."""
    root = logging.getLogger()
    mine = [h for h in hydra_files if Path(h.baseFilename).parent == run_dir.resolve()]
    if mine:
        for handler in mine:
            handler.addFilter(OneRun(run_dir))
            held.callback(handler.removeFilter, handler.filters[-1])
        return
    name = f"{HydraConfig.get().job.name}.log"
    handler = logging.FileHandler(run_dir / name)
    if hydra_files:
        handler.setFormatter(hydra_files[0].formatter)
        handler.setLevel(hydra_files[0].level)
    else:
        handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        )
    handler.addFilter(OneRun(run_dir))
    root.addHandler(handler)

    def close() -> None:
        root.removeHandler(handler)
        handler.close()

    held.callback(close)


# ---------------------------------------------------------------------------------------------
# the time estimate before a packed sweep


def estimate(line, packs: Plan, remaining: int, side_by_side: int) -> str:
    """Wall time of the remaining runs: a pack of each task and size timed for a few steps on
    this machine, with the threads each job will have (varexp.sweep.estimate for packs)."""
    from varexp.compose import launcher
    from varexp.sweep import duration, launch_costs, measured_start_up, task_of

    cfg = line.cfg
    if launcher(cfg) == "submitit_slurm":
        return "not estimated here (the runs go to the cluster's nodes)"
    if remaining <= 0:
        return "nothing left to run"
    threads = cfg.get("threads", "auto")
    torch_threads = auto_threads(side_by_side) if threads == "auto" else int(threads)
    kinds: dict[tuple, list[int]] = {}
    for pack in packs.packs:
        task = task_of(line.configs[pack[0]])
        kinds.setdefault((task, len(pack)), pack)
    timed = {
        kind: calibrate([line.configs[i] for i in pack], torch_threads)
        for kind, pack in kinds.items()
    }
    steps = int(cfg.train.steps)
    total = 0.0
    for pack in packs.packs:
        task = task_of(line.configs[pack[0]])
        fixed, step = timed[(task, len(pack))]
        total += fixed + steps * step
    jobs = len(packs.packs) * remaining / packs.runs
    start_up = measured_start_up()
    once, each = launch_costs(launcher(cfg), side_by_side, start_up.seconds, 0.0)
    total = (total * remaining / packs.runs + jobs * each) / side_by_side + once
    detail = "; ".join(
        f"{fixed:.1f} s + {steps} x {step * 1e3:.1f} ms per pack of {size}"
        for (_, size), (fixed, step) in timed.items()
    )
    device = resolve_device(str(cfg.device))
    return (
        f"about {duration(total)} for {remaining} runs ({detail}; start-up "
        f"{once + each:.0f} s ({start_up.text}); measured just now on {device}, "
        f"{torch_threads} thread(s) per pack)"
    )


def calibrate(cfgs: list[DictConfig], threads: int, steps: int = 6) -> tuple[float, float]:
    """(seconds outside the training loop, seconds per step) of a short pack of `cfgs`."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for k, cfg in enumerate(cfgs):
                cfg = timing_config(cfg, steps)
                folder = Path(tmp) / str(k)
                folder.mkdir()
                runs.append(PackRun(cfg, folder, data_info(cfg.dataset, cfg.arch), None))
            start = time.perf_counter()
            train_pack(runs, verbose=False)
            wall = time.perf_counter() - start
            seconds = METRICS.read(Path(tmp) / "0" / METRICS.file)["seconds"].to_numpy()
    finally:
        torch.set_num_threads(saved)
    # the first steps warm up (allocations, cuDNN autotuning): time the steady ones
    step = float(np.median(np.diff(seconds[1:]))) if len(seconds) > 2 else seconds[-1] / steps
    return max(0.0, wall - steps * step), step
