"""The subcommands: each a module with `check(cfg)` (every key it reads, before any work) and
`run(cfg)` (the job), optionally `announce(line)` (before Hydra starts: a sweep's plan, on the
terminal), `prepare(line)` (once the launch holds its folder: a sweep's plan, for its jobs and
tables) and `describe(cfg)` (more for --help)."""

from __future__ import annotations

import importlib
import re
import shlex
from types import ModuleType

# subcommand -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("varexp.theory", "infinite-width mean-field predictions per layer (paper Eq. 6-8)"),
    "probe": (
        "varexp.probing",
        "N random networks on T inputs: per-layer sample statistics, grads",
    ),
    "train": ("varexp.train", "one training run: loss curve and per-layer ratios (paper Sec. 5)"),
    "sweep": ("varexp.sweep", "init x optimizer x learning rate x seed grid as a Hydra multirun"),
    "plot": ("varexp.plot", "render a figure (figure1..figure4, slopes) as PNG and PDF"),
    "reproduce": ("varexp.reproduce", "the main job: every figure, then REPORT.md"),
}


# what adds to a command's --help beyond its config (module:function of the config, each
# torch-free): a sweep's grid, what a training run writes
DESCRIBED = {"sweep": "varexp.grid:describe", "train": "varexp.options.sections:describe_train"}


def command_module(command: str) -> ModuleType:
    """The module of a subcommand, imported when first needed: each pulls in its own share of
    torch, pandas and matplotlib, which the others need not pay for."""
    return importlib.import_module(COMMANDS[command][0])


# a value Hydra's override grammar reads as it is (no '=', ',', space, bracket or quote)
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_/.+\-:@%]+")


def typed_override(key: str, value: object) -> str:
    """key=value as a user types it in a shell: the value quoted for Hydra where its grammar
    would read it otherwise (a folder named lr=0.1, a space, a comma), then for the shell."""
    text = str(value)
    if not _PLAIN_VALUE.fullmatch(text):
        text = '"' + text.replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={text}")
