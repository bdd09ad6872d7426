"""`varexp sweep`: the paper's Sec. 5.2 grid, init x optimizer x learning rate x seed, as a Hydra
multirun (conf/sweep.yaml). Each job is one `varexp train` run in a directory named after its
settings, so a re-launched sweep skips finished runs and resumes interrupted ones. After the last
job, SweepTables writes sweep.csv (one row per run) and selected.csv (the fastest-converging lr
per arch, dataset, init and optimizer) into the sweep directory.

A launch writes its plan (.plan.json: every job's folder and config) and each job how it ended
this time (.launch/<job>.json), so the tables give every job of the launch its real status (a
job refused or failed now is failed, whatever an older summary.json in its folder says), and the
sweep exits non-zero when any of them did not finish.

The lr grid depends on the optimizer, which a Cartesian sweep cannot express, so the sweep runs
over an index into the optimizer's grid, `sweep.lr_index`, and `optim.lr` selects
`sweep.lr_grid.<optim.name>[sweep.lr_index]`.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from varexp import provenance, results
from varexp.checks import Check, Rule, values_of
from varexp.commands import typed_override
from varexp.compose import check_once, compose_config, launcher
from varexp.devices import resolve as resolve_device
from varexp.errors import VarexpError, bad_value
from varexp.files import write_json
from varexp.grid import grid_text, swept
from varexp.options.sections import learning_rates
from varexp.pack import job as pack_job
from varexp.pack.plan import PACK_KEY, sweep_plan
from varexp.progress import Count, LaunchDisplay, process_age
from varexp.results.aggregate import criterion
from varexp.results.checkpoint import checkpoint_path
from varexp.results.locks import LOCK
from varexp.results.run_record import HYDRA_RECORD, move_aside
from varexp.results.summary import (
    FINISHED,
    Status,
    failed_summary,
    read_summary,
    summary_finished,
    summary_path,
    write_summary,
)
from varexp.results.tables import (
    METRICS,
    SELECTED,
    SETTING,
    SWEEP,
    arch_label,
    best_settings,
)
from varexp.schema import validate
from varexp.search import Scored, searching, trials_to_run
from varexp.stop import output_closed
from varexp.threads import auto_threads, available_cores
from varexp.train import Checked, Stopped, existing_run, timing_config, train
from varexp.train import check as train_check

log = logging.getLogger("varexp.sweep")

PLAN = ".plan.json"  # the launch: its id, start time and jobs (folder and config of each)
OUTCOMES = ".launch"  # <job number>.json: how each job of the launch ended
# what one training step costs depends on: the model (with any units its init adds, e.g.
# init=batchnorm's), the data, the batch and the device; init, optimizer, lr and seed barely
COST_KEYS = ("arch", "dataset", "train.batch_size", "device")


def task_of(cfg: DictConfig) -> str:
    """What a run's cost depends on (COST_KEYS), as text: runs alike cost about the same."""
    return values_of(cfg, COST_KEYS)


# ---------------------------------------------------------------------------------------------
# checks and the plan


def selection_fraction(cfg: DictConfig) -> float:
    """The tail of the loss curve the criterion averages: all of it for `auc` (the area under
    the curve per step), the last sweep.select_fraction of it for `final`."""
    return 1.0 if cfg.sweep.select == "auc" else float(cfg.sweep.select_fraction)


def check_sweep(cfg: DictConfig) -> None:
    """The sweep's own keys, and lr_index within the chosen optimizer's grid."""
    grids = cfg.sweep.get("lr_grid")
    for optim, grid in grids.items() if isinstance(grids, DictConfig) else ():
        grid = OmegaConf.to_container(grid) if isinstance(grid, ListConfig) else grid
        if not learning_rates(grid):
            raise bad_value(
                f"sweep.lr_grid.{optim}", grid, "must be a non-empty list of learning rates > 0"
            )
    validate(cfg.sweep, prefix="sweep.")
    index, optim = cfg.sweep.lr_index, cfg.optim.name
    grid = cfg.sweep.lr_grid.get(optim)
    if grid is not None and index >= len(grid):
        raise bad_value(
            "sweep.lr_index",
            index,
            f"must be an integer in 0..{len(grid) - 1} "
            f"(sweep.lr_grid.{optim} has {len(grid)} learning rates)",
        )


# every key a job reads: the sweep's own and those of `varexp train` (what the data looks like,
# as varexp.train.check)
check = Check(
    "varexp.sweep.check",
    train_check.roots,
    train_check.rules,
    train_check.result,
    before=(Rule(("sweep", "optim.name"), check_sweep),),
)


def parallel(cfg: DictConfig, runs: int) -> int:
    """Runs side by side in this machine: joblib's n_jobs (-1: every core), else one."""

    if launcher(cfg) != "joblib":
        return 1
    n_jobs = int(cfg.hydra.launcher.get("n_jobs", 1) or 1)
    return max(1, min(runs, available_cores() if n_jobs < 0 else n_jobs))


def announce(line) -> None:
    """Before any job: where the runs go, the grid, how they run and how long they will take;
    with sweep.dry_run, stop there."""
    cfg, jobs = line.cfg, line.jobs
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    finished = [f for f in line.folders() if nothing_left(f, int(cfg.train.steps))]
    packs = sweep_plan(cfg, jobs, lambda i: line.configs[i])
    side_by_side = parallel(cfg, len(packs.packs))
    print(
        f"varexp sweep: {len(jobs)} runs into {sweep_dir}/ ({launcher(cfg)} launcher, "
        f"{side_by_side} {'job' if packs.packed else 'run'}{'s' * (side_by_side > 1)} at a "
        "time)",
        flush=True,
    )
    print(f"  grid: {grid_text(jobs)}", flush=True)
    print(f"  packs (sweep.pack={cfg.sweep.pack}): {packs.text()}", flush=True)
    if finished:
        complete = "all " * (len(finished) == len(jobs)) + f"{len(finished)} runs"
        print(f"  {complete} already complete: skipped", flush=True)
    if cfg.sweep.estimate:
        told = (
            pack_job.estimate(line, packs, len(jobs) - len(finished), side_by_side)
            if packs.packed
            else estimate(line, len(jobs) - len(finished), side_by_side)
        )
        print(f"  time: {told}", flush=True)
    if cfg.sweep.dry_run:
        print("sweep.dry_run=true: nothing was run")
        sys.exit(0)


def estimate(line, remaining: int, side_by_side: int) -> str:
    """Wall time of the remaining runs: each task's first run timed for a few steps on this
    machine now, with the threads each job will have, plus what every run costs around its
    steps (its config composed, its data built, its model made, its files written) and what
    each process that runs them costs to start (measured_start_up)."""

    cfg = line.cfg
    if launcher(cfg) == "submitit_slurm":
        return "not estimated here (the runs go to the cluster's nodes)"
    if remaining <= 0:
        return "nothing left to run"
    global _estimated
    seconds, told = estimate_seconds(line, remaining, side_by_side)
    _estimated = seconds
    return f"about {duration(seconds)} for {remaining} runs ({told})"


def estimate_seconds(
    line, remaining: int, side_by_side: int, start_up: StartUp | None = None
) -> tuple[float, str]:
    """(seconds, how they were reckoned) for the remaining runs of `line` (see estimate);
    `start_up`: a fresh process's, measured already (reproduce measures it once for all its
    steps)."""
    cfg = line.cfg
    hydra_overrides = [o for o in line.overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    tasks: dict[str, list[int]] = {}  # each task's jobs: one timed for all of them
    for number, job_cfg in enumerate(line.configs):
        tasks.setdefault(task_of(job_cfg), []).append(number)
    threads = cfg.get("threads", "auto")
    torch_threads = auto_threads(side_by_side) if threads == "auto" else int(threads)
    steps = int(cfg.train.steps)
    # a fresh process starts as a worker would, beside the timing runs (as the jobs will run
    # beside each other): interpreter, imports, Hydra's first compose, the first check; only
    # where the launcher starts processes (the basic one runs the jobs in this one)
    fresh = start_up is None and starts_processes(launcher(cfg), side_by_side)
    first_job = line.jobs[next(iter(tasks.values()))[0]]
    worker = start_up_probe([*hydra_overrides, *first_job]) if fresh else None
    timed = []
    for numbers in tasks.values():
        start = time.perf_counter()
        job_cfg = compose_config("sweep", hydra_overrides + line.jobs[numbers[0]])
        timing = calibrate(job_cfg, torch_threads)
        timed.append((time.perf_counter() - start - timing.wall, timing, numbers))
    runs = sum(len(numbers) for *_, numbers in timed)
    per_run = sum(len(n) * (compose + t.fixed + steps * t.step) for compose, t, n in timed) / runs
    first_run = max(t.first_run for _, t, _ in timed)
    if start_up is None:
        start_up = start_up_measured(worker) if fresh else measured_start_up()
    once, each = launch_costs(launcher(cfg), side_by_side, start_up.seconds + first_run, first_run)
    launch = min(compose for compose, _, _ in timed)  # Hydra composes the command again
    total = launch + once + math.ceil(remaining / side_by_side) * (per_run + each)
    # several tasks: each named by what its timed job sets that the others' do not
    timed_jobs = [line.jobs[numbers[0]] for *_, numbers in timed]
    differing = [position for position, _, _ in swept(timed_jobs)] if len(timed) > 1 else []
    detail = "; ".join(
        f"{compose + t.fixed:.1f} s + {steps} x {t.step * 1e3:.1f} ms per run"
        + (
            f" ({len(numbers)} like {' '.join(line.jobs[numbers[0]][p] for p in differing)})"
            if differing
            else ""
        )
        + (f", timed on {t.stand_in}" if t.stand_in else "")
        for compose, t, numbers in timed
    )
    device = resolve_device(str(cfg.device))
    return total, (
        f"{detail}; start-up {once + each:.0f} s ({start_up.text}, first run "
        f"{first_run:.1f} s more); measured just now on {device}, {torch_threads} thread(s) "
        "per run"
    )


def launch_costs(
    name: str, side_by_side: int, process: float, first_run: float
) -> tuple[float, float]:
    """(seconds once per launch, seconds more per job) of starting the processes that run the
    jobs: joblib starts its workers side by side once, submitit_local a process per job; the
    basic launcher (and joblib with one job at a time) runs them in this process, already
    started."""
    if not starts_processes(name, side_by_side):
        return first_run, 0.0
    return (process, 0.0) if name == "joblib" else (0.0, process)


def starts_processes(name: str, side_by_side: int) -> bool:
    """Whether the launcher runs the jobs in processes of their own: joblib side by side,
    submitit one per job."""
    return (name == "joblib" and side_by_side > 1) or name.startswith("submitit")


@dataclass(frozen=True)
class StartUp:
    """What a fresh process costs before its first run can start, measured on this machine."""

    imports: float  # the interpreter and varexp's imports (torch, Hydra, pandas)
    first_check: float  # the first config check (its first use of the memory pre-check)
    measured_how: str

    @property
    def seconds(self) -> float:
        return self.imports + self.first_check

    @property
    def text(self) -> str:
        return (
            f"a process: {self.imports:.1f} s of imports ({self.measured_how}) and "
            f"{self.first_check:.1f} s to its first check"
        )


# how long this process took to start and import everything a sweep's job needs (measured
# when this module finished importing: a `varexp` command imports it before its first check)
_IMPORTED_AFTER = process_age()
_estimated: float | None = None  # the estimate announce() printed, in seconds (the display's ETA)


_PROBE = (
    "import sys\n"
    "from varexp import sweep\n"
    "from varexp.compose import compose_config\n"
    "imported = sweep.process_age()\n"
    "sweep.check(compose_config('sweep', sys.argv[1:]))\n"
    "print(imported, sweep.process_age())\n"
)


def start_up_probe(overrides: list[str]) -> subprocess.Popen | None:
    """A fresh interpreter that starts as a sweep's worker does, up to its first run."""
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _PROBE, *overrides],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def start_up_measured(probe: subprocess.Popen | None) -> StartUp:
    """The probe's start-up (its imports, then its compose and check); this process's where
    the probe could not say (measured_start_up)."""
    if probe is not None:
        try:
            out, _ = probe.communicate(timeout=600)
            imported, ready = (float(v) for v in out.split())
            return StartUp(imported, ready - imported, "a fresh worker's, just now")
        except (subprocess.TimeoutExpired, ValueError):
            probe.kill()
    return measured_start_up()


def measured_start_up() -> StartUp:
    """A fresh process's start-up, measured: in a `varexp` command, this very process's (its
    age when this module had imported, and its first check); elsewhere (a library call, a
    test) by starting an interpreter that imports the same modules."""
    is_command = Path(sys.argv[0]).name in ("varexp", "__main__.py")
    command = sys.argv[1] if is_command and len(sys.argv) > 1 else None
    if command == "reproduce":  # measured as it started, before it checked its steps
        from varexp import reproduce

        if reproduce.IMPORTED_AFTER is not None:
            first = reproduce.first_check or 0.0
            return StartUp(reproduce.IMPORTED_AFTER, first, "this command's own")
    if command == "sweep" and _IMPORTED_AFTER is not None:
        imports, how = _IMPORTED_AFTER, "this command's own"
    else:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import varexp.cli, varexp.sweep"], check=False, timeout=600
        )
        imports, how = time.perf_counter() - start, "a fresh interpreter's"
    return StartUp(imports, check.first_seconds or 0.0, how)


@dataclass(frozen=True)
class Timing:
    """A short run timed: wall seconds of its steps (step each) and around them (fixed); the
    extra of the first run in a process (first_run); on which data if not the run's own."""

    fixed: float
    step: float
    first_run: float
    wall: float
    stand_in: str | None = None


def calibrate(cfg: DictConfig, threads: int, steps: int = 6) -> Timing:
    """Two short runs of `cfg` timed whole (its check, data, model, init, steps and files):
    the second is what every run of a process costs, the first's excess is paid once per
    process. Nothing is downloaded: a dataset whose files are not here (a dry run before a
    download) is stood in for by an embedded one of the same shape, and the estimate says so."""

    cfg = timing_config(cfg, steps)
    with open_dict(cfg):
        if "download" in cfg.dataset:
            cfg.dataset.download = False
    name = str(cfg.dataset.name)
    try:
        return _timed(cfg, threads, steps)
    except VarexpError:
        if name not in STAND_INS:
            raise
    stand_in = compose_config("train", [f"dataset={STAND_INS[name]}", "~task"]).dataset
    with open_dict(cfg):
        if "crop" in cfg.dataset and "crop" in stand_in:
            stand_in.crop = cfg.dataset.crop
        cfg.dataset = stand_in
    told = f"{STAND_INS[name]} data of the same shape ({name}'s files are not here)"
    return dataclasses.replace(_timed(cfg, threads, steps), stand_in=told)


# embedded data sets of the same shape and task as those read from files: what a timing run
# trains on while the files are not here (the model costs the same; reading the data differs)
STAND_INS = {"cifar10": "shapes", "isbi2012": "membranes"}


def _timed(cfg: DictConfig, threads: int, steps: int) -> Timing:
    """A first run of 3 steps; for a model whose steps are quick, a second of `steps` steps,
    the steady cost of every later run of a process (a slow model's single run says enough,
    and a dry run of a big model on a CPU must not take minutes)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    walls, seconds, counts = [], np.zeros(0), []
    try:
        for count in (3, steps):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                # the sweep's check of cfg holds for its shorter timing run
                timing = Checked(timing_config(cfg, count), check_once(check, cfg))
                summary = train(timing, Path(tmp), quiet=True)
                walls.append(time.perf_counter() - start)
                seconds = METRICS.read_run(Path(tmp), summary)["seconds"].to_numpy()
                counts.append(count)
            if seconds[-1] / count * steps > 2.0:
                break
    finally:
        torch.set_num_threads(saved)
    # the first steps warm up (allocations, cuDNN autotuning): time the steady ones
    step = float(np.median(np.diff(seconds[1:]))) if len(seconds) > 2 else seconds[-1] / counts[-1]
    return Timing(
        fixed=max(0.0, walls[-1] - counts[-1] * step),
        step=step,
        first_run=max(0.0, walls[0] - 3 * step - (walls[-1] - counts[-1] * step))
        if len(walls) > 1
        else 0.0,
        wall=sum(walls),
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def nothing_left(run_dir: Path, steps: int) -> bool:
    """Whether a run folder holds a run that diverged, or completed `steps` steps, with its
    metrics.csv intact (a damaged one is rewritten or trained again)."""
    summary = read_summary(run_dir) or {}
    if not summary_finished(summary, steps):
        return False
    try:
        METRICS.read_run(run_dir, summary)
        return True
    except VarexpError:
        return False


def read_plan(sweep_dir: Path) -> dict | None:
    """The launch's plan (None without one, or an unreadable one)."""
    try:
        plan = json.loads((sweep_dir / PLAN).read_text(encoding="utf-8"))
        return plan if isinstance(plan, dict) and isinstance(plan.get("launch"), str) else None
    except (OSError, ValueError):
        return None


def read_outcomes(sweep_dir: Path, plan: dict) -> dict[int, dict]:
    """job number -> how it ended, for the jobs of the planned launch that have ended."""
    outcomes = {}
    for path in (sweep_dir / OUTCOMES).glob("*.json"):
        try:
            outcome = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(outcome, dict) and outcome.get("launch") == plan["launch"]:
            outcomes[int(path.stem)] = outcome
    return outcomes


def report_progress(sweep_dir: Path) -> None:
    """'k/N runs done' with an ETA, after each job, in whichever process ran it."""
    plan = read_plan(sweep_dir)
    if plan is None:
        return
    outcomes = read_outcomes(sweep_dir, plan)
    ended = len(outcomes)
    failed = sum(o.get("status") not in FINISHED for o in outcomes.values())
    elapsed = time.time() - plan["started"]
    left = max(0, plan["runs"] - ended)
    eta = f", about {duration(elapsed / ended * left)} left" if ended and left else ""
    log.info(
        "sweep: %d/%d runs done%s, %s elapsed%s",
        ended,
        plan["runs"],
        f" ({failed} failed)" if failed else "",
        duration(elapsed),
        eta,
    )


def prepare(line) -> None:
    """Once the launch holds its folder: its plan, read by the jobs (progress) and the tables
    (every job's row); outcomes of an earlier launch are cleared."""
    sweep_dir = Path(line.output_dir)
    searched = searching(line.cfg)  # an Optuna search picks its runs as it goes: no job list
    jobs = (
        []
        if searched
        else [
            {"run_dir": relative(folder, sweep_dir), "identity": results.identity("train", job_cfg)}
            for folder, job_cfg in zip(line.folders(), line.configs, strict=True)
        ]
    )
    shutil.rmtree(sweep_dir / OUTCOMES, ignore_errors=True)
    (sweep_dir / OUTCOMES / RUNNING).mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "launch": f"{time.time():.6f}-{os.getpid()}",
            "started": time.time(),
            "runs": trials_to_run(line.cfg) if searched else len(jobs),
            "train_steps": int(line.cfg.train.steps),
            **({} if searched else {"jobs": jobs}),
        },
        sweep_dir / PLAN,
    )
    before = (
        set()
        if searched
        else {i for i, f in enumerate(line.folders()) if nothing_left(f, int(line.cfg.train.steps))}
    )
    logging.getLogger("hydra_plugins.hydra_joblib_launcher._core").addFilter(_LaunchLines())
    if len(before) < len(jobs) or searched:
        show_progress(sweep_dir, before, launcher(line.cfg))


# ---------------------------------------------------------------------------------------------
# the launch's one progress display (in the launching process)

RUNNING = "running"  # .launch/running/<job number>: a job in flight (holding its run count)
_display: LaunchDisplay | None = None


def launch_count(sweep_dir: Path, before: set[int]) -> Count:
    """Runs of the launch done (ended now, or finished before it), running and failed."""
    plan = read_plan(sweep_dir)
    outcomes = read_outcomes(sweep_dir, plan) if plan else {}
    running = 0
    for marker in (sweep_dir / OUTCOMES / RUNNING).glob("*"):
        try:
            running += int(marker.read_text() or 1)
        except (OSError, ValueError):
            running += 1
    failed = sum(o.get("status") not in FINISHED for o in outcomes.values())
    return Count(len(set(outcomes) | before), running, failed)


class _LaunchLines(logging.Filter):
    """Drops the joblib launcher's line per job and its repr of joblib.Parallel: the display
    counts the jobs, each run's folder logs its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("\t#") or message.startswith("Joblib.Parallel("))


def show_progress(sweep_dir: Path, before: set[int], launcher_name: str) -> None:
    """One display for the launch's runs until close_progress(); the jobs log to their run
    folders only (conf/sweep.yaml: warnings and errors still reach the terminal)."""
    global _display
    plan = read_plan(sweep_dir) or {}
    runs = int(plan.get("runs", 0))
    if launcher_name == "joblib":
        # loky's resource tracker warns of "leaked semaphore objects" when Ctrl-C ends the
        # workers: joblib's own bookkeeping, nothing of the user's; it reads -W from here
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
        os.environ["PYTHONWARNINGS"] = ",".join(
            filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning"])
        )
    _display = LaunchDisplay(lambda: launch_count(sweep_dir, before), runs, _estimated)
    _display.__enter__()
    atexit.register(close_progress)
    previous = signal.getsignal(signal.SIGINT)
    if callable(previous) and threading.current_thread() is threading.main_thread():

        def interrupted(signum, frame):  # the line ends before the command says what to do
            try:
                close_progress()
            except Exception:  # (stderr closed): the interrupt still stops the sweep
                pass
            previous(signum, frame)

        signal.signal(signal.SIGINT, interrupted)


def close_progress() -> None:
    global _display
    if _display is not None:
        _display.close()
        _display = None


def relative(folder: Path, sweep_dir: Path) -> str:
    """A run folder as the plan and the outcomes name it: relative to the sweep's folder (its
    path where a hydra.sweep.subdir leaves that folder)."""
    try:
        return Path(os.path.abspath(folder)).relative_to(os.path.abspath(sweep_dir)).as_posix()
    except ValueError:
        return os.path.abspath(folder)


def job_number(plan: dict, rel: str, number: int) -> int:
    """The plan's number of the job whose run folder is `rel`: the launch numbers a sweep's
    packs and its runs that train alone in its own order (the longest first), the plan its
    runs in the grid's."""
    jobs = plan.get("jobs")
    if not isinstance(jobs, list):  # a search: its jobs are numbered as they are asked
        return number
    mine = [i for i, job in enumerate(jobs) if isinstance(job, dict) and job.get("run_dir") == rel]
    return number if not mine or number in mine else mine[0]


def record_outcome(
    sweep_dir: Path, number: int, folder: Path, status: str, error: str | None
) -> None:
    """How job `number` of the launch ended (status, and why it failed); a run folder that the
    plan lists is recorded under the plan's number of its job."""
    plan = read_plan(sweep_dir)
    if plan is None:
        return
    rel = relative(folder, sweep_dir)
    number = job_number(plan, rel, number)
    outcome = {"launch": plan["launch"], "run_dir": rel, "status": status, "error": error}
    try:
        write_json(outcome, sweep_dir / OUTCOMES / f"{number}.json")
    except OSError as err:  # the tables will say it did not report
        log.error("could not record how %s ended: %s", folder, err)


# ---------------------------------------------------------------------------------------------
# one job


def finished_here(summary: dict | None, cfg: DictConfig) -> bool:
    """Whether run_dir already holds this very run, completed or diverged, at train.steps."""
    if not summary_finished(summary, int(cfg.train.steps)):
        return False
    return results.identity("train", cfg) == summary.get("config")


def resumed(cfg: DictConfig) -> DictConfig:
    """The job's config as it trains: continuing its folder's checkpoint if there is one."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.resume = True
        cfg.train.progress = False  # the launch's one display counts the runs
    return cfg


def run(cfg: DictConfig) -> dict | list[dict]:
    """One job of the multirun: nothing to do if the run directory holds this run finished
    (and intact); otherwise train, continuing from its checkpoint if there is one. A folder
    whose run cannot continue as this config (another config's checkpoint, a finished run whose
    checkpoint is gone) is refused before anything in it is rewritten. How the job ended is
    recorded for the launch's tables. A pack job (hydra/sweeper=varexp launched it) does all
    this for each of its runs (varexp.pack.job) and records each run's outcome."""

    hydra_cfg = HydraConfig.get()
    sweep_dir, folder = Path(hydra_cfg.sweep.dir), Path(hydra_cfg.runtime.output_dir)
    marker = sweep_dir / OUTCOMES / RUNNING / str(hydra_cfg.job.num)
    try:
        marker.write_text(str(len(cfg[PACK_KEY]) if PACK_KEY in cfg else 1))
    except OSError:  # (a launch without a plan: nobody counts)
        pass
    try:
        return run_one(cfg, hydra_cfg, sweep_dir, folder)
    finally:
        marker.unlink(missing_ok=True)


def run_one(cfg: DictConfig, hydra_cfg, sweep_dir: Path, folder: Path) -> dict | list[dict]:
    if PACK_KEY in cfg:
        try:
            return pack_job.run(cfg)
        finally:
            report_progress(sweep_dir)
    status, reason = Status.FAILED, "ended without a result"
    try:
        with results.claim("sweep", cfg, accept=lambda run_dir: accept(cfg, run_dir)) as run_dir:
            summary = run_job(cfg, run_dir)
        status, reason = summary["status"], summary.get("error")
        return Scored(summary, run_dir)  # an Optuna search reads its score
    except Stopped as stop:
        status, reason = Status.INCOMPLETE, str(stop)
        raise
    except VarexpError as error:  # the folder was refused (in use, another config): untouched
        log.error("run %s not started: %s", folder, error)
        status, reason = Status.FAILED, str(error)
        return failed_summary(str(error))
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        record_outcome(sweep_dir, int(hydra_cfg.job.num), folder, status, reason)
        report_progress(sweep_dir)


def accept(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse (VarexpError) a folder whose run this job could not continue."""
    if not finished_here(read_summary(run_dir), cfg):
        existing_run(resumed(cfg), run_dir)


def finished_intact(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The summary of this very run, finished in run_dir with its metrics.csv intact: nothing
    to train. None: it trains (a finished run whose metrics.csv is damaged is rewritten from
    its checkpoint by varexp.train; without a checkpoint its files are moved aside first)."""
    summary = read_summary(run_dir)
    if not finished_here(summary, cfg):
        return None
    try:
        METRICS.read_run(run_dir, summary)
        log.info("skip %s: already %s", run_dir, summary["status"])
        return summary
    except VarexpError as damage:
        if not checkpoint_path(run_dir).exists():
            moved = move_aside(
                run_dir,
                keep=(LOCK, results.RECORD, HYDRA_RECORD, f"{HydraConfig.get().job.name}.log"),
            )
            log.warning(
                "%s, and there is no checkpoint to rewrite it from: the run's "
                "files moved to %s, and it trains again",
                damage,
                moved,
            )
    return None


def failed(run_dir: Path, error: Exception) -> dict:
    """A run that raised: the log says why, its summary.json says failed (a finished result
    there stays as it was; this launch's job failed all the same)."""
    if isinstance(error, VarexpError):  # e.g. a dead layer: one line is the whole story
        log.error("run %s failed: %s", run_dir, error)
        reason = str(error)
    else:
        log.exception("run %s failed", run_dir)
        reason = f"{type(error).__name__}: {error}"
    summary = read_summary(run_dir)
    if summary is None or summary.get("status") not in FINISHED:
        try:
            write_summary(failed_summary(reason), run_dir)
        except OSError as err:  # e.g. the disk is full: the log says it
            log.error("could not write %s: %s", summary_path(run_dir), err)
    return failed_summary(reason)


def run_job(cfg: DictConfig, run_dir: Path) -> dict:
    """One run of the sweep: checked once (at the launch when it runs in the launching
    process), then trained from that check."""
    info = check_once(check, cfg)
    summary = finished_intact(cfg, run_dir)
    if summary is not None:
        return summary
    if checkpoint_path(run_dir).exists():
        log.info("continue %s from its checkpoint", run_dir)
    try:
        summary = train(Checked(resumed(cfg), info), run_dir)
        log.info("%s: %s after %d steps", run_dir, summary["status"], summary["steps"])
        return summary
    except Stopped:  # train.stop_after or Ctrl-C: the run saved its checkpoint; stop the sweep
        raise
    except Exception as error:  # one broken run must not stop the other jobs of the sweep
        return failed(run_dir, error)


# ---------------------------------------------------------------------------------------------
# tables


def setting_row(rel: str, ident: dict) -> dict:
    """A sweep.csv row with a run's settings (from its identity) and nothing measured yet."""
    return dict(
        arch=arch_label(ident.get("arch.name"), ident.get("arch.model")),
        dataset=ident.get("dataset.name"),
        init=ident.get("init.name"),
        optim=ident.get("optim.name"),
        lr=float(ident.get("optim.lr", np.nan)),
        seed=ident.get("seed"),
        status=Status.INCOMPLETE,
        steps=np.nan,
        final_loss=np.nan,
        criterion=np.nan,
        seconds=np.nan,
        run_dir=rel,
    )


def run_row(run_dir: Path, sweep_dir: Path, ident: dict, fraction: float) -> dict:
    """The sweep.csv row of one run folder (its config from its identity); a completed run
    whose metrics.csv fails the results reader is `damaged`, with one line saying why."""
    row = setting_row(run_dir.relative_to(sweep_dir).as_posix(), ident)
    summary = read_summary(run_dir)
    if summary is None:
        return row
    row.update(
        status=summary.get("status", Status.INCOMPLETE),
        final_loss=summary.get("final_loss", np.nan),
        seconds=summary.get("seconds", np.nan),
        steps=summary.get("steps", np.nan),
    )
    if row["status"] == Status.COMPLETED:
        try:
            losses = METRICS.read_run(run_dir, summary)["loss"]
            row.update(steps=len(losses), criterion=criterion(losses, fraction))
        except VarexpError as damage:
            log.warning("%s is damaged, left out of the selection: %s", run_dir, damage)
            row.update(status=Status.DAMAGED)
    return row


def run_folders(sweep_dir: Path) -> list[Path]:
    """The run folders under sweep_dir: each with a run record or Hydra's config record."""
    found = {p.parent for p in results.discover(sweep_dir, results.RECORD)}
    found |= {p.parent.parent for p in results.discover(sweep_dir, ".hydra/config.yaml")}
    return sorted(found - {sweep_dir})


def sweep_table(sweep_dir: Path, fraction: float, plan: dict | None = None) -> pd.DataFrame:
    """One row per run folder under sweep_dir whose config agrees with what the sweep's jobs
    share (the sweep folder's run.json); any other is left out with one line naming it. With
    the `plan` of a launch: every job of it, with how it ended this time (failed if it failed,
    was refused, or never said), and the runs of earlier launches at its train.steps."""
    shared = (results.read_record(sweep_dir) or {}).get("identity", {})
    launched = {job["run_dir"]: i for i, job in enumerate(plan["jobs"])} if plan else {}
    outcomes = read_outcomes(sweep_dir, plan) if plan else {}
    rows = []
    for run_dir in run_folders(sweep_dir):
        rel = run_dir.relative_to(sweep_dir).as_posix()
        if rel in launched:
            continue
        try:
            ident = results.recorded_identity(run_dir, "train")
        except VarexpError as error:
            log.warning("left out of the tables: %s", error)
            continue
        clash = [k for k, v in shared.items() if ident is None or ident.get(k, v) != v]
        if clash:
            made = ", ".join(
                f"{k}={(ident or {}).get(k)!r} (the sweep's: {shared[k]!r})" for k in clash[:3]
            )
            log.warning("%s left out of the tables: made with %s", run_dir, made)
            continue
        steps = (read_summary(run_dir) or {}).get("train_steps")
        if plan and steps is not None and steps != plan.get("train_steps"):
            log.warning(
                "%s left out of the tables: made with train.steps=%s, this launch's runs with %s",
                run_dir,
                steps,
                plan.get("train_steps"),
            )
            continue
        rows.append(run_row(run_dir, sweep_dir, ident, fraction))
    for rel, i in launched.items():
        job, outcome = plan["jobs"][i], outcomes.get(i)
        if outcome is None or outcome.get("status") not in FINISHED:
            row = setting_row(rel, job["identity"])
            row["status"] = (
                Status.INCOMPLETE
                if (outcome or {}).get("status") == Status.INCOMPLETE
                else Status.FAILED
            )
            if outcome is None:
                log.error(
                    "%s: its job never said how it ended (its process died?)", sweep_dir / rel
                )
        else:
            row = run_row(sweep_dir / rel, sweep_dir, job["identity"], fraction)
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(SWEEP.columns))
    return table.sort_values(SETTING + ["lr", "seed"], ignore_index=True)


def select(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per (arch, dataset, init, optim), the lr with the lowest criterion averaged over seeds.
    A lr where any seed diverged is not eligible; failed and incomplete runs are left out."""
    rows = []
    for key, group in table.groupby(SETTING, sort=True):
        candidates = []
        for lr, runs in group.groupby("lr"):
            done = runs[runs["status"] == Status.COMPLETED]
            if (runs["status"] == Status.DIVERGED).any() or done.empty:
                continue
            candidates.append((done["criterion"].mean(), lr, done))
        if not candidates:
            crashed = not group["status"].isin(FINISHED).any()
            log.warning(
                "%s: nothing selected: %s",
                ", ".join(map(str, key)),
                "no run finished"
                if crashed
                else "every learning rate diverged or did not finish on some seed",
            )
            continue
        value, lr, done = min(candidates, key=lambda c: c[0])
        std = done["criterion"].std(ddof=1) if len(done) > 1 else 0.0
        rows.append(
            dict(
                zip(SETTING, key, strict=True),
                lr=lr,
                criterion=value,
                criterion_std=std,
                runs=len(done),
                select_fraction=fraction,
                lr_at_edge=lr_edge(lr, group.loc[group["status"].isin(FINISHED), "lr"]),
            )
        )
    return pd.DataFrame(rows, columns=list(SELECTED.columns))


def lr_edge(lr: float, tried: pd.Series) -> str:
    """selected.csv's lr_at_edge: whether `lr` is the smallest (low) or largest (high) of the
    learning rates `tried` (those with a run that finished: a larger lr that diverged brackets
    it, one that crashed says nothing)."""
    low, high = lr == tried.min(), lr == tried.max()
    return "both" if low and high else "low" if low else "high" if high else ""


def write_tables(
    sweep_dir: str | Path, fraction: float, plan: dict | None = None
) -> tuple[Path, Path]:
    """sweep.csv and selected.csv in sweep_dir, written atomically (with a launch's `plan`:
    sweep_table's rows for it)."""
    sweep_dir = Path(sweep_dir)
    table = sweep_table(sweep_dir, fraction, plan)
    selected = select(table, fraction)
    return SWEEP.write(table, sweep_dir), SELECTED.write(selected, sweep_dir)


def write_provenance(sweep_dir: Path, config: DictConfig, runs: int) -> None:
    """provenance.json beside the tables: the command, the code and machine, when and how long."""

    try:
        started = json.loads((sweep_dir / PLAN).read_text())["started"]
    except (OSError, ValueError, KeyError):
        started = None
    record = {
        "command": " ".join(["varexp sweep", *config.hydra.overrides.task]),
        "runs": runs,
        "started": None
        if started is None
        else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": provenance.now(),
        "seconds": None if started is None else round(time.time() - started, 1),
        **provenance.record(resolve_device(str(config.device))),
    }
    write_json(record, sweep_dir / "provenance.json")


class SweepTables(Callback):
    """Hydra callback (conf/sweep.yaml, hydra.callbacks): writes the tables after the last job
    and says how the runs ended; any job of the launch that failed or did not finish makes the
    sweep exit non-zero, after all the other runs, and so does an error in the tables (one
    line: Hydra would turn an exception here into a warning). It runs in the launching process
    for every launcher (basic, joblib, submitit), after the launcher has collected all jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        close_progress()
        try:
            self.report(config, sweep_dir)
        except BrokenPipeError:  # the tables are written; only saying so failed
            output_closed("sweep")
        except OSError as error:
            print(
                f"varexp sweep: could not write the tables in {sweep_dir} "
                f"({error.strerror or error}); free space (or fix the folder), then run the "
                "same command again: finished runs are kept",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)
        except Exception as error:  # any error here is the sweep's result, not a warning
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(
                f"varexp sweep: the tables in {sweep_dir} could not be made: {reason}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)

    def report(self, config: DictConfig, sweep_dir: Path) -> None:
        plan = read_plan(sweep_dir)
        if plan is not None and not isinstance(plan.get("jobs"), list):
            plan = None
        fraction = selection_fraction(config)
        table = sweep_table(sweep_dir, fraction, plan)
        sweep_csv = SWEEP.write(table, sweep_dir)
        selected_csv = SELECTED.write(select(table, fraction), sweep_dir)
        write_provenance(sweep_dir, config, len(table))
        counts = table["status"].value_counts()
        order = [*FINISHED, Status.FAILED, Status.DAMAGED, Status.INCOMPLETE]
        told = ", ".join(
            f"{counts[s]} {s}"
            for s in sorted(
                counts.index, key=lambda s: order.index(s) if s in order else len(order)
            )
        )
        print(f"sweep: {len(table)} runs ({told}) -> {sweep_csv}, {selected_csv}", flush=True)
        selected = SELECTED.read(selected_csv, allow_empty=True)
        print(best_settings(table, selected, config.sweep.select), flush=True)
        if not selected.empty:
            print(f"next: varexp plot figure4 {typed_override('results', sweep_dir)}", flush=True)
        mine = table[table["run_dir"].isin([j["run_dir"] for j in plan["jobs"]])] if plan else table
        bad = mine[~mine["status"].isin(FINISHED)]
        if not bad.empty:
            logs = [str(sweep_dir / d / f"{config.hydra.job.name}.log") for d in bad["run_dir"]]
            shown = ", ".join(logs[:3]) + (f" and {len(logs) - 3} more" if len(logs) > 3 else "")
            print(
                f"varexp sweep: {len(bad)} of {len(mine)} runs did not finish; see {shown}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)


# ---------------------------------------------------------------------------------------------
# the best settings of a `varexp train -m` run or search


def print_best_settings(sweep_dir: Path) -> None:
    """The best-settings table of the training runs under sweep_dir, by the mean training loss
    over the whole run (what an Optuna search minimises)."""
    table = sweep_table(sweep_dir, 1.0)
    print(best_settings(table, select(table, 1.0), "auc"), flush=True)


class BestSettings(Callback):
    """Hydra callback (conf/train.yaml): after the last job of `varexp train -m` (a grid or an
    Optuna search), the best settings of its runs."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        print_best_settings(Path(config.hydra.sweep.dir))
