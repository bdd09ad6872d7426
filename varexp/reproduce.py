"""`varexp reproduce`: every step of the paper in order (theory, probes, Fig. 4 sweeps, plots),
each as its own `varexp` command so Hydra multiruns and launchers work as they do by hand, then
REPORT.md. A step that finished leaves a marker with everything that made its result (the
command line as it ran, VAREXP_SMOKE's token sizes included) and is skipped on the next run
that would run it the same way; a step made another way is run again."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from varexp import devices
from varexp.commands import command_module
from varexp.compose import parse, smoke, smoke_run
from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.files import atomic_path
from varexp.provenance import now
from varexp.report import write_report
from varexp.results import claim
from varexp.schema import Common, validate

log = logging.getLogger(__name__)
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
    cfg = line.cfg
    for step in plan(cfg, Path(str(cfg.hydra.run.dir))):
        if step.always:  # plots check their results folder, which the steps before make
            continue
        try:
            parse(step.args[0], step.args[1:], command_module(step.args[0]).check)
        except VarexpError as error:
            raise VarexpError(f"step '{step.name}': {error}") from None


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


def execute(step: Step) -> None:
    # the step's folder is reproduce's own: results of another config there (a step whose
    # command changed, or failed part-way before) move aside; its own are continued
    command = [sys.executable, "-m", "varexp", *step.args, "overwrite=true"]
    log.info("%s: %s", step.name, step.command)
    if subprocess.run(command).returncode != 0:
        raise VarexpError(
            f"step '{step.name}' failed (its log is under {step.out}); fix it and "
            "rerun the same command: finished steps are kept"
        )
    with atomic_path(step.out / DONE) as tmp:
        tmp.write_text(step.recorded + "\n", encoding="utf-8")


def run(cfg: DictConfig) -> None:

    check(cfg)
    if cfg.reproduce.dry_run:
        show(plan(cfg, Path(HydraConfig.get().runtime.output_dir)))
        return
    with claim("reproduce", cfg) as out:
        make(cfg, plan(cfg, out), out)


def show(steps: list[Step]) -> None:
    for i, step in enumerate(steps, 1):
        status = "done, reused" if step.done else CHANGED if step.changed else "would run"
        print(f"[{i}/{len(steps)}] {step.name} ({status})\n    {step.command}", flush=True)


def make(cfg: DictConfig, steps: list[Step], out: Path) -> None:
    """Run the steps not done yet, then write REPORT.md."""

    started, start = now(), time.perf_counter()
    for i, step in enumerate(steps, 1):
        status = "done, reused" if step.done else CHANGED if step.changed else ""
        print(f"[{i}/{len(steps)}] {step.name}" + (f" ({status})" if status else ""), flush=True)
        if not step.done:
            execute(step)
    commands = {s.out: s.command for s in steps if not s.always}
    report = write_report(
        out, cfg.reproduce.preset, commands, started, time.perf_counter() - start, smoke=smoke_run()
    )
    print(f"reproduce: {report}")
