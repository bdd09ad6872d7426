"""`varexp reproduce`: every step of the paper in order (theory, probes, Fig. 4 sweeps, plots),
each as its own `varexp` command so Hydra multiruns and launchers work as they do by hand, then
REPORT.md. A step that finished leaves a marker and is skipped on the next run."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError, bad_value
from varexp.files import atomic_path

log = logging.getLogger(__name__)
DONE = ".done"


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str]
    out: Path
    always: bool = False  # cheap steps (plots) rerun so they see every finished result

    @property
    def done(self) -> bool:
        return not self.always and (self.out / DONE).exists()


FIGURES = ("figure1", "figure2", "figure3", "figure4")


def check(cfg: DictConfig) -> None:
    from varexp.compose import group_options
    from varexp.config import boolean, check_common, get

    check_common(cfg)
    boolean(cfg, "reproduce.dry_run")
    extra = get(cfg, "reproduce.extra")
    if not OmegaConf.is_list(extra) or not all(isinstance(e, str) for e in extra):
        raise bad_value("reproduce.extra", extra, "must be a list of overrides, e.g. [device=cuda]")
    presets = group_options("experiment")
    for figure in FIGURES:
        chosen = get(cfg, f"reproduce.{figure}")
        if not OmegaConf.is_list(chosen) or not set(chosen) <= set(presets):
            raise bad_value(f"reproduce.{figure}", chosen,
                            f"must be a list of experiment presets from {', '.join(presets)}")


def plan(cfg: DictConfig, out: Path) -> list[Step]:
    """The steps of one preset in order: theory, probes and sweeps per figure, then the plots."""
    extra = list(cfg.reproduce.extra)
    steps = [Step("theory", ["theory", "arch.depth=50"], out / "theory")]
    for figure in FIGURES:
        command = "sweep" if figure == "figure4" else "probe"
        for preset in cfg.reproduce[figure]:
            where = out / figure / preset
            steps.append(Step(f"{figure}: {command} experiment={preset}",
                              [command, f"experiment={preset}", f"hydra.sweep.dir={where}"],
                              where))
    for figure in FIGURES:
        where = out / "figures" / figure
        steps.append(Step(f"plot {figure}", ["plot", figure, f"results={out / figure}"],
                          where, always=True))
    return [
        Step(s.name, [*s.args, f"hydra.run.dir={s.out}", *extra], s.out, s.always) for s in steps
    ]


def execute(step: Step) -> None:
    command = [sys.executable, "-m", "varexp", *step.args]
    log.info("%s: %s", step.name, " ".join(command[2:]))
    if subprocess.run(command).returncode != 0:
        raise VarexpError(f"step '{step.name}' failed (its log is under {step.out}); fix it and "
                          "rerun the same command: finished steps are kept")
    with atomic_path(step.out / DONE) as tmp:
        tmp.write_text(" ".join(command[2:]) + "\n")


def run(cfg: DictConfig) -> None:
    from varexp.report import write_report

    check(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    steps = plan(cfg, out)
    for i, step in enumerate(steps, 1):
        status = "done, reused" if step.done else ("would run" if cfg.reproduce.dry_run else "")
        print(f"[{i}/{len(steps)}] {step.name}" + (f" ({status})" if status else ""), flush=True)
        if cfg.reproduce.dry_run:
            print("    varexp " + " ".join(step.args))
        elif not step.done:
            execute(step)
    if not cfg.reproduce.dry_run:
        print(f"reproduce: {write_report(out, cfg.reproduce.preset)}")
