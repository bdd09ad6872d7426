"""The `varexp` command line: parse the subcommand, check the config before any work
(varexp.compose), hand the rest to Hydra, dispatch to the command's `run(cfg)`.

`varexp --help`, `varexp COMMAND --help` and shell completion import neither torch nor pandas
(tests/test_cli.py checks): the modules imported here are light, and a command's own module,
the results module and torch's thread settings are imported when a command runs."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.varexp_sweeper import pack_sweeper
from varexp import compose, devices, search
from varexp.commands import COMMANDS, DESCRIBED, command_module
from varexp.errors import VarexpError, did_you_mean
from varexp.presets import accepts
from varexp.stop import (
    exit_cleanly_on_sigterm,
    job_ended,
    job_started,
    mark_launcher,
    output_closed,
    watch_parent,
)

EXAMPLES = (
    "varexp theory arch.depth=50",
    "varexp probe arch=mlp arch.width=1000 probe.networks=30",
    "varexp train init=scale+bias",
    "varexp sweep experiment=figure4_quick",
    "varexp plot figure4",
    "varexp reproduce experiment=quick",
)
USAGE = "usage: varexp COMMAND [KEY=VALUE | GROUP=OPTION ...]   (varexp COMMAND --help: its config)"


def print_help() -> None:
    print(USAGE + "\n\ncommands:")
    for name, (_, about) in COMMANDS.items():
        print(f"  {name:<10} {about}")
    print("\nexamples:")
    for example in EXAMPLES:
        print(f"  {example}")


def print_command_help(command: str, overrides: list[str]) -> None:
    """The command's groups and options, its config, and for a sweep the grid it would run."""
    cfg = compose.compose_config(command, overrides)
    print(f"varexp {command}: {COMMANDS[command][1]}\n")
    print(
        f"usage: varexp {command} [KEY=VALUE | GROUP=OPTION ...]  (Hydra override syntax; "
        "--cfg job prints the config, -m runs one job per listed value)\n"
    )
    groups = compose.command_groups(command)
    print("groups (chosen option in brackets):" if groups else "groups: none")
    for group, chosen in groups.items():
        chosen = cfg.hydra.runtime.choices.get(group, chosen)
        options = (
            compose.presets_for(command) if group == "experiment" else compose.group_options(group)
        )
        shown = ", ".join(f"[{o}]" if o == chosen else o for o in options)
        print(f"  {group:<11} {shown}")
    if search.searching(cfg):
        print("\n" + search.describe(cfg))
    elif command in DESCRIBED:
        module, function = DESCRIBED[command].split(":")
        print("\n" + getattr(importlib.import_module(module), function)(cfg))
    body = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"})
    print("\nconfig:\n" + "\n".join("  " + line for line in body.splitlines()))


def dispatch(command: str, cfg: DictConfig) -> object:
    from varexp.threads import configure

    module = command_module(command)
    # in a launcher's worker too: a log line to a closed pipe is dropped, not a traceback
    logging.raiseExceptions = False
    exit_cleanly_on_sigterm()
    job_started()
    if launcher_of_job() in ("joblib", "submitit_local"):
        watch_parent()  # a worker of this machine's launcher ends when the launch is killed
    try:
        configure(cfg.get("threads", "auto"), parallel_jobs(cfg))
        return module.run(cfg)
    except VarexpError as error:
        print(f"varexp {command}: {error}{search.stopped_hint(error)}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # an OSError too: the reader of stdout has gone, not the disk
        output_closed(command)
    except OSError as error:  # a full disk, a folder made read-only under a running command
        print(
            f"varexp {command}: could not write {error.filename or 'a result'} "
            f"({error.strerror or error}); results written before are intact",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"varexp {command}: interrupted; nothing half-written was kept", file=sys.stderr)
        sys.exit(130)
    finally:
        job_ended()


def launcher_of_job() -> str | None:

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("hydra/launcher")


def parallel_jobs(cfg: DictConfig) -> int:
    """How many jobs of this multirun run side by side in this machine (joblib's n_jobs)."""

    if not HydraConfig.initialized():
        return 1
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("hydra/launcher") != "joblib":
        return 1
    from varexp.threads import available_cores

    n_jobs = hydra_cfg.launcher.get("n_jobs", 1) or 1
    jobs = available_cores() if n_jobs < 0 else int(n_jobs)
    return min(jobs, search.trials_at_once(hydra_cfg) or jobs)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # a log line to a closed pipe is dropped, not answered with a traceback on stderr
    logging.raiseExceptions = False
    try:
        run_command(args)
    except BrokenPipeError:  # `varexp sweep | head -1`: the reader has gone
        output_closed(args[0] if args else "")


def run_command(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        return
    if args[0] in COMPLETION_FLAGS:
        complete_shell(args[1:])
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"varexp: unknown command {command!r}; {did_you_mean(command, COMMANDS)}"
            f"choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    if command == "plot" and rest and re.fullmatch(r"\w+", rest[0]):
        rest[0] = f"figure={rest[0]}"  # varexp plot figure2, varexp plot slopes
    # torch's waiting threads sleep instead of spinning on cores that other work needs
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # the Optuna sweeper's storage layer (alembic) logs every plugin it sets up at INFO
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if "--help" in rest or "-h" in rest:
            try:
                print_command_help(
                    command, compose.complete(command, [a for a in rest if not a.startswith("-")])
                )
            except BrokenPipeError:  # `varexp probe --help | head`
                sys.stderr.close()
            return
        if any(a in COMPLETION_FLAGS for a in rest):
            complete_shell([a for a in rest if a not in COMPLETION_FLAGS])
            return
        if compose.inspects_only(rest):
            run_hydra(command, rest)
            return
        from varexp import results

        rest = compose.complete(command, rest)
        module = command_module(command)
        line = compose.parse(command, rest, module.check)
        rest = [*rest, *compose.gpu_overrides(line, devices.cuda_count())]
        replace = results.check_launch(line, bool(line.cfg.get("overwrite", False)))
        if line.multirun and search.searching(line.cfg):
            search.announce(line)
        elif hasattr(module, "announce"):
            module.announce(line)
        if line.multirun:
            mark_launcher(joblib=compose.launcher(line.cfg) == "joblib")
        # the folder is held before anything in it moves, and for the whole launch: a second
        # launch into it is refused, with or without overwrite=true
        with results.lock(Path(line.output_dir), f"varexp {command}"):
            results.prepare_launch(line, replace)
            if hasattr(module, "prepare"):
                module.prepare(line)
            run_hydra(command, [*rest, *search.resume(line)])
    except VarexpError as error:
        print(f"varexp {command}: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while jobs are composed, launched or waited for
        again = (
            "; run the same command to continue: finished runs are skipped, the others "
            "resume from their checkpoints"
            if command == "sweep"
            else ""
        )
        print(f"varexp {command}: interrupted{again}", file=sys.stderr)
        sys.exit(130)


COMPLETION_FLAGS = ("-sc", "--shell-completion")


def complete_shell(args: list[str]) -> None:
    """Hydra's shell completion through the `varexp COMMAND` wrapper: `varexp -sc install=bash`
    prints the script that registers it, and the script's queries (`varexp -sc query=bash`,
    the typed line in $COMP_LINE) complete the command word here and the rest with Hydra, as
    if the command were the program."""
    if not any(a.startswith("query") for a in args):  # install / uninstall: any command will do
        run_hydra("train", ["-sc", *args], program="varexp")
        return
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) < 2 or len(words) == 2 and not line.endswith(" "):  # the command word
        typed = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMANDS if c.startswith(typed)))
    elif words[1] in COMMANDS:  # its keys and options: Hydra, on the line without it
        rest = line.split(None, 2)[2] if len(words) > 2 else ""
        os.environ["COMP_LINE"] = f"varexp {rest}"
        offered = io.StringIO()
        with contextlib.redirect_stdout(offered):
            run_hydra(words[1], ["-sc", *args], program="varexp")
        print(only_its_presets(words[1], offered.getvalue()), end="")


def only_its_presets(command: str, offered: str) -> str:
    """Hydra's completions (words separated by spaces, or lines for fish) less the experiment
    presets written for other commands."""
    words = offered.split()
    kept = [
        w
        for w in words
        if w.split("=", 1)[0].lstrip("+~") != "experiment" or accepts(command, w.split("=", 1)[1])
    ]
    separator = "\n" if "\n" in offered.strip() else " "
    return separator.join(kept) + offered[len(offered.rstrip()) :]


def run_hydra(command: str, args: list[str], program: str | None = None) -> None:
    # again here: a launcher that ran jobs in this process (submitit's) leaves Hydra's plugin
    # registry as its pickled copy, without the sweeper an editable install's scan cannot list
    pack_sweeper.register()
    sys.argv = [program or f"varexp {command}", *args]
    app = hydra.main(config_path="pkg://varexp.conf", config_name=command, version_base="1.3")
    app(lambda cfg: dispatch(command, cfg))()
