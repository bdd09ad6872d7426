"""The subcommands: each a module with `check(cfg)` (every key it reads, before any work) and
`run(cfg)` (the job), optionally `announce(line)` (before Hydra starts: a sweep's plan, on the
terminal), `prepare(line)` (once the launch holds its folder: a sweep's plan, for its jobs and
tables) and `describe(cfg)` (more for --help)."""

from __future__ import annotations

import importlib
from types import ModuleType

# subcommand -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("varexp.theory", "infinite-width mean-field predictions per layer (paper Eq. 6-8)"),
    "probe": ("varexp.probing",
              "N random networks on T inputs: per-layer sample statistics, grads"),
    "train": ("varexp.train", "one training run: loss curve and per-layer ratios (paper Sec. 5)"),
    "sweep": ("varexp.sweep", "init x optimizer x learning rate x seed grid as a Hydra multirun"),
    "plot": ("varexp.plot", "render a figure (figure1..figure4, slopes) as PNG and PDF"),
    "reproduce": ("varexp.reproduce", "the main job: every figure, then REPORT.md"),
}


def command_module(command: str) -> ModuleType:
    """The module of a subcommand, imported when first needed: each pulls in its own share of
    torch, pandas and matplotlib, which the others need not pay for."""
    return importlib.import_module(COMMANDS[command][0])
