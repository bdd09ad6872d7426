"""`varexp reproduce`: every step of the paper in order (theory, probes, Fig. 4 sweeps, plots),
each as its own `varexp` command so Hydra multiruns and launchers work as they do by hand, then
REPORT.md. A step that finished leaves a marker with everything that made its result (the
command line as it ran, VAREXP_SMOKE's token sizes included) and is skipped on the next run
that would run it the same way; a step made another way is run again."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from varexp import devices
from varexp.commands import command_module
from varexp.compose import complete, parse, smoke, smoke_run
from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.files import atomic_path
from varexp.progress import process_age
from varexp.provenance import now
from varexp.report import write_report
from varexp.results import claim
from varexp.schema import Common, validate

log = logging.getLogger(__name__)
# how long this process took to start and import what a step's command needs, and its first
# check of a step (what every step's own process pays again: the time estimate counts it)
IMPORTED_AFTER = process_age()
first_check: float | None = None
estimated: Estimate | None = None  # announce()'s, for run()
DONE = ".done"
CHANGED = "made with another command or size: rerun"


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str]
    out: Path
    always: bool = False  # cheap steps (plots) rerun so they see every finished result

    @property
    def command(self) -> str:
        return "varexp " + " ".join(self.args)

    @property
    def recorded(self) -> str:
        """The command line as the step runs it: with VAREXP_SMOKE=1, its token sizes too."""
        return " ".join([self.command, *smoke(self.args[0], self.args[1:])])

    @property
    def done(self) -> bool:
        """Finished before exactly as it would run now (the marker records how)."""
        marker = self.out / DONE
        if self.always or not marker.is_file():
            return False
        return marker.read_text(encoding="utf-8").strip() == self.recorded

    @property
    def changed(self) -> bool:
        """Finished before with another command line or size: its results no longer match."""
        marker = self.out / DONE
        return not self.always and marker.is_file() and not self.done


def check(cfg: DictConfig) -> None:
    validate(cfg, Common)
    devices.check(cfg.device)


def announce(line) -> None:
    """Check every step's command line before the first one runs, as each would be checked on
    its own, so a bad override in reproduce.extra or a missing launcher fails in one line now
    instead of after the steps before it."""
    global first_check
    cfg = line.cfg
    for step in plan(cfg, Path(str(cfg.hydra.run.dir))):
        if step.always:  # plots check their results folder, which the steps before make
            continue
        try:
            start = time.perf_counter()
            parse(step.args[0], step.args[1:], command_module(step.args[0]).check)
            if first_check is None:  # (the later ones reuse what the first imported)
                first_check = time.perf_counter() - start
        except VarexpError as error:
            raise VarexpError(f"step '{step.name}': {error}") from None
    global estimated
    # before Hydra runs the command: the steps' configs are composed as each step's would be
    estimated = estimate(plan(cfg, Path(str(cfg.hydra.run.dir))))


def plan(cfg: DictConfig, out: Path) -> list[Step]:
    """The steps of one scale in order: theory, each figure's probes or sweeps (the presets
    varexp.figures lists for it), then the plots."""
    extra = list(cfg.reproduce.extra)
    device = cfg.get("device", "auto")
    if device != "auto" and not any(e.startswith("device=") for e in extra):
        extra.insert(0, f"device={device}")  # `varexp reproduce device=cuda:1`: every step there
    scale = cfg.reproduce.preset
    figures = [FIGURES[name] for name in FIGURES if name in cfg.reproduce.figures]
    steps = [Step("theory", ["theory", "arch.depth=50"], out / "theory")]
    for figure in figures:
        for preset in figure.presets(scale):
            where = out / figure.name / preset
            steps.append(
                Step(
                    f"{figure.name}: {figure.command} experiment={preset}",
                    [figure.command, f"experiment={preset}", f"hydra.sweep.dir={where}"],
                    where,
                )
            )
    for figure in figures:
        where = out / "figures" / figure.name
        steps.append(
            Step(
                f"plot {figure.name}",
                ["plot", figure.name, f"results={out / figure.name}"],
                where,
                always=True,
            )
        )
    return [
        Step(s.name, [*s.args, f"hydra.run.dir={s.out}", *extra], s.out, s.always) for s in steps
    ]


def log_path(step: Step) -> Path:
    """Where a step's own output goes: beside the folders of its kind (plots: figures/)."""
    return step.out.parent / f"{step.out.name}.log"


def execute(step: Step) -> None:
    """Run the step as its own command, its output into its log (a sweep's one progress
    display, on stderr, stays on the terminal); on failure, the end of the log."""
    # the step's folder is reproduce's own: results of another config there (a step whose
    # command changed, or failed part-way before) move aside; its own are continued
    command = [sys.executable, "-m", "varexp", *step.args, "overwrite=true"]
    log.info("%s: %s", step.name, step.command)
    where = log_path(step)
    where.parent.mkdir(parents=True, exist_ok=True)
    with where.open("w", encoding="utf-8") as out:
        stderr = None if step.args[0] == "sweep" else subprocess.STDOUT
        returncode = subprocess.run(command, stdout=out, stderr=stderr).returncode
    if returncode != 0:
        lines = where.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join("    " + line for line in lines[-8:])
        print(tail, file=sys.stderr, flush=True)
        raise VarexpError(
            f"step '{step.name}' failed (its output: {where}); fix it and "
            "rerun the same command: finished steps are kept"
        )
    with atomic_path(step.out / DONE) as tmp:
        tmp.write_text(step.recorded + "\n", encoding="utf-8")


def run(cfg: DictConfig) -> None:

    check(cfg)
    if cfg.reproduce.dry_run:
        steps = plan(cfg, Path(HydraConfig.get().runtime.output_dir))
        show(steps, estimated or estimate(steps))
        return
    with claim("reproduce", cfg) as out:
        make(cfg, plan(cfg, out), out)


def show(steps: list[Step], times: Estimate) -> None:
    for i, step in enumerate(steps, 1):
        status = "done, reused" if step.done else CHANGED if step.changed else "would run"
        took = f", about {duration(times.steps[i - 1])}" if not step.done else ""
        print(f"[{i}/{len(steps)}] {step.name} ({status}{took})\n    {step.command}", flush=True)
    print(f"estimate: {times.text}", flush=True)
    print("reproduce.dry_run=true: nothing was run", flush=True)


def make(cfg: DictConfig, steps: list[Step], out: Path) -> None:
    """Run the steps not done yet, then write REPORT.md."""

    times = estimated or estimate(steps)
    print(f"varexp reproduce: {len(steps)} steps into {out}/", flush=True)
    print(f"  estimate: {times.text}", flush=True)
    started, start = now(), time.perf_counter()
    for i, step in enumerate(steps, 1):
        status = "done, reused" if step.done else CHANGED if step.changed else ""
        if not step.done:
            status = ", ".join(filter(None, [status, f"about {duration(times.steps[i - 1])}"]))
        print(f"[{i}/{len(steps)}] {step.name}" + (f" ({status})" if status else ""), flush=True)
        if not step.done:
            execute(step)
    commands = {s.out: s.command for s in steps if not s.always}
    report = write_report(
        out, cfg.reproduce.preset, commands, started, time.perf_counter() - start, smoke=smoke_run()
    )
    print(f"reproduce: {report} ({duration(time.perf_counter() - start)})", flush=True)


# ---------------------------------------------------------------------------------------------
# the time estimate: each step measured here now, as it will run


@dataclass(frozen=True)
class Estimate:
    steps: list[float]  # seconds per step (0 for a step done before)
    text: str


def estimate(steps: list[Step]) -> Estimate:
    """Seconds of each step left to run, measured on this machine now: every step is a fresh
    `varexp` process (its start-up: imports and first check, measured as for a sweep); a
    sweep's runs as the sweep itself estimates them (its timing runs included, which it
    repeats); a probe step as its first job times at 1 and 2 networks, scaled to each job;
    theory and plots: their start-up only (a few seconds of work each)."""
    from varexp.sweep import start_up_measured, start_up_probe

    began = time.perf_counter()
    # a fresh `varexp` process, once: each step's, and a sweep's workers'
    start_up = start_up_measured(start_up_probe([]))
    works = []
    for step in steps:
        work = 0.0
        if not step.done and step.args[0] in ("sweep", "probe"):
            command = step.args[0]
            line = parse(command, complete(command, step.args[1:]), command_module(command).check)
            work = sweep_seconds(line, start_up) if command == "sweep" else probe_seconds(line)
        works.append(work)
    seconds = [0.0 if s.done else start_up.seconds + w for s, w in zip(steps, works, strict=True)]
    total = sum(seconds)
    return Estimate(
        seconds,
        f"about {duration(total)} for {sum(not s.done for s in steps)} steps (each step a "
        f"process: {start_up.seconds:.0f} s of start-up; sweeps and probes timed just now, "
        f"in {time.perf_counter() - began:.0f} s)",
    )


def sweep_seconds(line, start_up) -> float:
    from varexp import sweep
    from varexp.pack.plan import sweep_plan

    finished = [f for f in line.folders() if sweep.nothing_left(f, int(line.cfg.train.steps))]
    remaining = len(line.jobs) - len(finished)
    if remaining <= 0 or sweep.launcher(line.cfg) == "submitit_slurm":
        return 0.0
    packs = sweep_plan(line.cfg, line.jobs, lambda i: line.configs[i])
    side_by_side = sweep.parallel(line.cfg, len(packs.packs))
    start = time.perf_counter()
    seconds, _ = sweep.estimate_seconds(line, remaining, side_by_side, start_up)
    return seconds + (time.perf_counter() - start)  # the sweep times its runs again


def probe_seconds(line) -> float:
    """The probe's first job run at 1 and 2 networks: the difference is a network's, the
    rest a job's own; every job of the step scaled to its probe.networks."""
    from omegaconf import open_dict

    from varexp.probing import probe

    def timed(cfg: DictConfig, networks: int) -> float:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.probe.networks = networks
            cfg.probe.progress = False
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            probe(cfg, Path(tmp))
            return time.perf_counter() - start

    logging.getLogger("varexp.probing").disabled = True
    try:  # the first job stands for the step's others (a multirun's jobs differ in a size)
        cfg = line.configs[0]
        one, two = timed(cfg, 1), timed(cfg, 2)
    finally:
        logging.getLogger("varexp.probing").disabled = False
    per_network = max(0.0, two - one)
    job = max(0.0, one - per_network)
    return sum(job + int(c.probe.networks) * per_network for c in line.configs)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
