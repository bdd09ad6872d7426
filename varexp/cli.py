"""The `varexp` command line: parse the subcommand, hand the rest to Hydra, dispatch."""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib.resources import files
from pathlib import Path

import hydra
from omegaconf import DictConfig

from varexp.errors import VarexpError

# subcommand -> (module with run(cfg), one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("varexp.theory", "infinite-width mean-field predictions per layer (paper Eq. 6-8)"),
    "probe": ("varexp.probe", "N random networks on T inputs: per-layer sample statistics, grads"),
    "train": ("varexp.train", "one training run: loss curve and per-layer ratios (paper Sec. 5)"),
    "sweep": ("varexp.sweep", "init x optimizer x learning rate x seed grid as a Hydra multirun"),
    "plot": ("varexp.plot", "render paper Figure N (figure1..figure4) as PNG and PDF"),
    "reproduce": ("varexp.reproduce", "the main job: every figure, then REPORT.md"),
}
EXAMPLES = (
    "varexp theory arch.depth=50",
    "varexp probe arch=mlp arch.width=1000 probe.networks=30",
    "varexp train init=scale+bias",
    "varexp sweep experiment=figure4_quick",
    "varexp plot figure4",
    "varexp reproduce experiment=quick",
)
GROUPS = ("arch", "dataset", "init", "optim", "task", "experiment")

USAGE = "usage: varexp COMMAND [HYDRA OVERRIDES ...]   (varexp COMMAND --help for its config)"


def print_help() -> None:
    print(USAGE + "\n\ncommands:")
    for name, (_, about) in COMMANDS.items():
        print(f"  {name:<10} {about}")
    print("\nexamples:")
    for example in EXAMPLES:
        print(f"  {example}")


def group_options(group: str) -> list[str]:
    folder = files("varexp.conf") / group
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_group_overrides(args: list[str]) -> None:
    """Unknown config-group options get one line here instead of Hydra's multi-line report."""
    for arg in args:
        match = re.fullmatch(r"[+~]?(\w+)=(.*)", arg)
        if not match or match.group(1) not in GROUPS:
            continue
        group, value = match.groups()
        options = group_options(group)
        for option in value.split(","):
            if option and option != "null" and option not in options:
                raise VarexpError(
                    f"{group}={option!r} is not an option; choose one of {', '.join(options)}"
                )


def check_writable(args: list[str]) -> None:
    """An output directory that cannot be created gets one line here, not Hydra's traceback."""
    dirs = {
        m.group(1): m.group(2)
        for a in args
        if (m := re.fullmatch(r"(hydra\.(?:run|sweep)\.dir)=(.+)", a))
    }
    for key, value in (dirs or {"current directory": "."}).items():
        path = Path(value).absolute()
        while not path.exists():
            path = path.parent
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise VarexpError(f"{key}={value} is not writable ({path} is not a writable directory)")


def dispatch(command: str, cfg: DictConfig) -> None:
    module = importlib.import_module(COMMANDS[command][0])
    try:
        module.run(cfg)
    except VarexpError as error:
        print(f"varexp {command}: {error}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"varexp: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    if command == "plot" and rest and re.fullmatch(r"figure\d", rest[0]):
        rest[0] = f"figure={rest[0]}"
    try:
        check_group_overrides(rest)
        check_writable(rest)
    except VarexpError as error:
        print(f"varexp {command}: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"varexp {command}", *rest]
    app = hydra.main(config_path="pkg://varexp.conf", config_name=command, version_base="1.3")
    app(lambda cfg: dispatch(command, cfg))()
