"""A multirun's grid: its jobs as Hydra's basic sweeper lists them, the keys they vary and the
grid in words. Torch-free, so that `varexp sweep --help` shows the grid in a blink; how the
runs pack into jobs depends on the device and its free memory, and is the dry run's to say."""

from __future__ import annotations

from omegaconf import DictConfig

from varexp import hydra_adapter


def swept(jobs: list[list[str]]) -> list[tuple[int, str, list[str]]]:
    """(position, key, distinct values in order) of every override that varies across jobs."""
    out = []
    for position in range(len(jobs[0])):
        values = list(dict.fromkeys(job[position] for job in jobs))
        if len(values) > 1:
            out.append((position, values[0].split("=", 1)[0], values))
    return out


def grid_text(jobs: list[list[str]]) -> str:
    """The swept keys and their values, e.g. init=scale,scale+bias x optim=sgd,adam."""
    parts = [
        f"{key}=" + ",".join(v.split("=", 1)[1] for v in values) for _, key, values in swept(jobs)
    ]
    return " x ".join(parts) or "a single run"


def describe(cfg: DictConfig) -> str:
    """The grid `varexp sweep` would run with this config (for --help)."""
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    typed = list(cfg.hydra.overrides.task)  # the --help line's, which win over the preset's
    jobs = hydra_adapter.expand(hydra_adapter.parse([*params, *typed]))
    return (
        f"grid ({len(jobs)} runs into {cfg.hydra.sweep.dir}/): {grid_text(jobs)}\n"
        f"packs: sweep.pack={cfg.sweep.pack} (runs that differ only in init, optimizer or lr "
        "train together where that measured faster)\n"
        "narrow it with e.g. seed=0 optim=adam; sweep.dry_run=true prints the plan, how the "
        "runs pack on this machine and a time estimate, and runs nothing"
    )
