"""A command line, composed and checked before Hydra runs it.

Hydra makes the run folder before the job starts, so everything a user can get wrong is caught
here first: composition errors (a key the config does not have, a group the command does not use,
an option that does not exist, a preset written for another command) and the command's own
checks become one line naming the key, the value and what is allowed, and no folder is left
behind. A multirun is expanded into its jobs exactly as Hydra's basic sweeper will expand it
(its own `split_arguments`), so every swept value is checked, with its position, before any job
starts.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import varexp.options  # noqa: F401  (fills Hydra's ConfigStore with every option and section)
from varexp.errors import ConfigError, VarexpError, bad_value, did_you_mean
from varexp.presets import commands_for
from varexp.schema import allowed_of

CONFIG_MODULE = "varexp.conf"
_stamp: str | None = None


def run_stamp() -> str:
    """The default run folder's name: this process's start time and pid, so that two commands
    started in the same second never share a folder. The same all through one process (the
    check before Hydra and Hydra itself agree); Hydra hands it on to a sweep's workers with the
    config's resolver cache."""
    global _stamp
    if _stamp is None:
        _stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"
    return _stamp


OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)
# Hydra flags that only inspect the config (or complete a shell line): no job runs, no preflight
INSPECT_FLAGS = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--hydra-help",
                 "--resolve", "--package", "-p")  # fmt: skip
MULTIRUN_FLAGS = ("-m", "--multirun")

# VAREXP_SMOKE=1 appends these to a command line: every command runs end to end at a token size
# (a few networks, steps and runs), to check an installation or a cluster in seconds. The tests
# run the README's commands this way.
SMOKE: dict[str, list[str]] = {
    "probe": ["probe.networks=2"],
    "train": ["train.steps=4", "train.ratio_every=2", "train.checkpoint_every=2"],
    "sweep": ["train.steps=4", "train.ratio_every=2", "train.checkpoint_every=2", "seed=0",
              "sweep.lr_index=0"],
}  # fmt: skip
# ... and these to a command with the preset: a search of 2 trials
SMOKE_PRESETS: dict[str, list[str]] = {"optuna_lr": ["hydra.sweeper.n_trials=2"]}


@dataclass(frozen=True)
class CommandLine:
    """A checked command line: the first job's config (with its `hydra` node), every job's
    overrides and config (one job for a single run)."""

    command: str
    overrides: list[str]
    cfg: DictConfig
    jobs: list[list[str]]
    multirun: bool
    configs: list[DictConfig]
    # keys a sweeper that picks its jobs as it goes (an Optuna search) chooses per job
    searched: tuple[str, ...] = ()

    @property
    def output_dir(self) -> str:
        return str(self.cfg.hydra.sweep.dir if self.multirun else self.cfg.hydra.run.dir)

    def folders(self) -> list[Path]:
        """Each job's run folder (for a multirun: the sweep folder / its subdir)."""
        if not self.multirun:
            return [Path(self.output_dir)]
        return [Path(str(c.hydra.sweep.dir)) / str(c.hydra.sweep.subdir) for c in self.configs]


def complete(command: str, args: list[str]) -> list[str]:
    """The command line Hydra gets: a default task steps aside when the user names arch= or
    dataset= without task= (a narrow ALL-CNN-C's sizes mean nothing to an MLP), and
    VAREXP_SMOKE=1 appends the token sizes."""
    values = dict(a.lstrip("+~").split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    if (
        values.keys() & {"arch", "dataset"}
        and "task" not in values
        and (not _preset_picks_task(values.get("experiment")))
        and "task" in command_groups(command)
    ):
        args = [*args, "~task"]
    return [*args, *smoke(command, args)]


def smoke_run() -> bool:
    """Whether VAREXP_SMOKE=1 (token sizes) is set for this process and the commands it starts."""
    return bool(os.environ.get("VAREXP_SMOKE"))


def smoke(command: str, args: list[str]) -> list[str]:
    """What VAREXP_SMOKE=1 appends to `varexp COMMAND ARGS`: the token sizes (none without
    it)."""
    if not smoke_run():
        return []
    values = dict(a.lstrip("+~").split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    return [*SMOKE.get(command, []), *SMOKE_PRESETS.get(values.get("experiment"), [])]


def _preset_picks_task(preset: str | None) -> bool:
    """Whether the experiment preset chooses a task (then the preset's task stays)."""
    if not preset:
        return False
    path = resources.files(CONFIG_MODULE) / "experiment" / f"{preset}.yaml"
    if not path.is_file():
        return False  # an unknown preset: composing it says so
    preset_cfg = OmegaConf.load(str(path))
    defaults = preset_cfg.get("defaults") or []
    swept = OmegaConf.select(preset_cfg, "hydra.sweeper.params", default=None) or {}
    return "task" in swept or any(
        "override /task" in (d if isinstance(d, str) else next(iter(d), "")) for d in defaults
    )


def inspects_only(args: list[str]) -> bool:
    return any(a in INSPECT_FLAGS or a.startswith(("--cfg=", "--info=")) for a in args)


def compose_config(command: str, overrides: list[str]) -> DictConfig:
    """The config `varexp COMMAND OVERRIDES` runs with, or a one-line VarexpError."""
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return compose(command, overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as error:
        raise _missing_option(command, error) from None
    except (HydraException, OmegaConfBaseException) as error:
        raise _one_line(command, overrides, error) from None


GROUP_ORDER = ("arch", "dataset", "init", "optim", "task", "experiment")


@cache
def _default_choices(command: str) -> tuple[tuple[str, str | None], ...]:
    choices = compose_config(command, []).hydra.runtime.choices
    # a command's own section (section@probe) is no group a user picks
    groups = [g for g in choices if not g.startswith(("hydra/", "section"))]
    groups.sort(key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER))
    return tuple((g, choices[g]) for g in groups)


def command_groups(command: str) -> dict[str, str | None]:
    """The config groups `varexp COMMAND` composes, with their default options."""
    return dict(_default_choices(command))


def group_options(group: str) -> list[str]:
    """The options of a config group, from the package's YAML files and the ConfigStore."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def presets_for(command: str) -> list[str]:
    return [p for p in group_options("experiment") if command in (commands_for(p) or (command,))]


def parse(command: str, args: list[str], check: Callable[[DictConfig], object]) -> CommandLine:
    """Compose and check `varexp COMMAND ARGS` (Hydra overrides and -m) without running it."""
    flags = [a for a in args if a in MULTIRUN_FLAGS]
    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    parsed = _parse_overrides(overrides)
    for o in parsed:  # before composing: another command's preset may not even compose here
        if o.key_or_group == "experiment" and not o.is_sweep_override():
            _check_preset(command, str(o.value()))
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose_config(command, base)
    _check_preset(command, cfg.hydra.runtime.choices.get("experiment"))
    _check_added_keys(command, parsed, cfg)
    multirun = bool(flags) or cfg.hydra.mode == RunMode.MULTIRUN
    if not multirun:
        if any(o.is_sweep_override() for o in parsed):
            swept = next(o.input_line for o in parsed if o.is_sweep_override())
            raise VarexpError(f"{swept} lists several values; add -m to run one job per value")
        _check(check, cfg, overrides)
        line = CommandLine(command, overrides, cfg, [overrides], False, [cfg])
    else:
        line = _expand(command, overrides, cfg, check)
        _check_launcher(line.cfg)
    _check_output_dir(line)
    return line


def _check_added_keys(command: str, parsed: list, cfg: DictConfig) -> None:
    """`+key=value` (and `++key=value`) adds a key Hydra's config does not have: refuse one the
    command's schema does not know either, as a plain misspelled key is refused, instead of
    letting the typo run and join the run's identity. Hydra's own keys and `+group=option` are
    Hydra's business."""
    groups = set(cfg.hydra.runtime.choices)
    added = [
        o
        for o in parsed
        if (o.is_add() or o.is_force_add())
        and not o.key_or_group.startswith(("hydra.", "hydra/", "hydra@"))
        and o.key_or_group not in groups
        and "@" not in o.key_or_group
    ]
    if not added:
        return
    rest = [o.input_line for o in parsed if not o.is_sweep_override() and o not in added]
    plain = compose_config(command, rest)
    missing = object()
    for o in added:
        if OmegaConf.select(plain, o.key_or_group, default=missing) is missing:
            raise VarexpError(_unknown_key(command, rest, o.key_or_group))


def _parse_overrides(overrides: list[str]) -> list:
    parser = OverridesParser.create()
    out = []
    for override in overrides:
        try:
            out.extend(parser.parse_overrides([override]))
        except HydraException as error:
            reason = str(error).splitlines()[0]
            raise VarexpError(
                f"{override!r} is not a valid override ({reason}); "
                "write key=value, group=option or key=a,b,c"
            ) from None
    return out


def _expand(command: str, overrides: list[str], cfg: DictConfig, check) -> CommandLine:
    """A multirun's jobs as Hydra's basic sweeper expands them, every job's config composed and
    checked (configs that differ only in values share one composition)."""
    is_hydra = [o.split("=", 1)[0].lstrip("+~").startswith(("hydra.", "hydra/"))
                for o in overrides]  # fmt: skip
    hydra_overrides = [o for o, h in zip(overrides, is_hydra, strict=True) if h]
    task = [o for o, h in zip(overrides, is_hydra, strict=True) if not h]
    if not _grid_sweeper(cfg):
        # another sweeper (e.g. an optimiser) picks its jobs as it goes: check the base config
        _check(check, cfg)
        searched = [str(k) for k in (cfg.hydra.sweeper.get("params") or {})]
        searched += [
            o.key_or_group.lstrip("+~") for o in _parse_overrides(task) if o.is_sweep_override()
        ]
        return CommandLine(command, overrides, cfg, [task], True, [cfg], tuple(searched))
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    jobs = [list(j) for j in BasicSweeper.split_arguments(_parse_overrides(params + task), None)[0]]
    groups = set(cfg.hydra.runtime.choices)
    composed: dict[tuple[str, ...], DictConfig] = {}
    configs = []
    for number, job in enumerate(jobs):
        parsed = _parse_overrides(job)
        key = tuple(o.input_line for o in parsed if o.key_or_group.lstrip("+~") in groups)
        if key not in composed:
            composed[key] = compose_config(command, hydra_overrides + job)
        job_cfg = with_values(
            composed[key], [o for o in parsed if o.key_or_group.lstrip("+~") not in groups]
        )
        set_job(job_cfg, number, parsed)
        try:
            _check(check, job_cfg)
        except VarexpError as error:
            culprit = _culprit(jobs, number, str(error))
            if culprit is None:  # a value every job has: the plain one line
                raise
            raise VarexpError(f"in the sweep, {culprit}: {error}") from None
        configs.append(job_cfg)
    return CommandLine(command, overrides, configs[0], jobs, True, configs)


def _grid_sweeper(cfg: DictConfig) -> bool:
    """Whether the sweeper expands the grid as Hydra's basic sweeper does (it, or varexp's
    packing sweeper)."""
    target = str(cfg.hydra.sweeper.get("_target_", ""))
    if target.endswith(".BasicSweeper"):
        return True
    try:
        return bool(getattr(get_class(target), "expands_basic_grid", False))
    except Exception:  # a sweeper that does not import here: Hydra says why when it runs
        return False


def with_values(cfg: DictConfig, overrides: list) -> DictConfig:
    """A copy of a composed config with value overrides (key=value) applied as Hydra does."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for o in overrides:
            key = o.key_or_group
            if o.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(out, parent) if parent else out
                node.pop(leaf, None)
            else:
                OmegaConf.update(out, key, o.value(), merge=False, force_add=True)
    return out


def set_job(cfg: DictConfig, number: int, parsed: list) -> None:
    """What Hydra sets per job and a job's folder name may use: its number and override_dirname."""

    naming = cfg.hydra.job.config.override_dirname
    with open_dict(cfg):
        cfg.hydra.job.num = number
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed,
            exclude_keys=list(naming.exclude_keys),
            item_sep=naming.item_sep,
            kv_sep=naming.kv_sep,
        )


def _culprit(jobs: list[list[str]], number: int, message: str) -> str | None:
    """Which swept value (and where in its list) made job `number` fail; None if the message
    names no swept key (then every job fails alike)."""
    swept = _swept(jobs)
    for position, key, values in swept:
        value = jobs[number][position]
        if value in message or f"{key}=" in message:
            shown = ",".join(v.split("=", 1)[1] for v in values)
            return f"{key}={shown} (value {values.index(value) + 1} of {len(values)})"
    if number == 0:
        return None
    return "the job " + " ".join(jobs[number][p] for p, _, _ in swept)


def _swept(jobs: list[list[str]]) -> list[tuple[int, str, list[str]]]:
    """(position, key, distinct values in order) of every override that varies across jobs."""
    out = []
    for position in range(len(jobs[0])):
        values = list(dict.fromkeys(job[position] for job in jobs))
        if len(values) > 1:
            out.append((position, values[0].split("=", 1)[0], values))
    return out


def _check(
    check: Callable[[DictConfig], object], cfg: DictConfig, overrides: list[str] = ()
) -> None:
    try:
        check(cfg)
    except OmegaConfBaseException as error:  # e.g. an interpolation that cannot resolve
        raise VarexpError(str(error).splitlines()[0]) from None
    except ConfigError as error:
        typed = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if "=" in o}
        if (
            error.key in typed
            and error.allowed is not None
            and isinstance(OmegaConf.select(cfg, error.key, default=None), float)
        ):
            raise error.as_typed(typed[error.key]) from None
        raise


def launcher(cfg: DictConfig) -> str:
    """The hydra/launcher option a composed config uses: basic, joblib, submitit_slurm, ..."""
    return str(cfg.hydra.runtime.choices.get("hydra/launcher") or "basic")


def gpu_overrides(line: CommandLine, cuda_devices: int) -> list[str]:
    """What the launcher needs to hand this machine's GPUs to its jobs: submitit_local hides
    every GPU from them unless hydra.launcher.gpus_per_node is set, so each job gets one where
    there is CUDA and the user set none."""
    if not line.multirun or launcher(line.cfg) != "submitit_local" or cuda_devices == 0:
        return []
    if line.cfg.hydra.launcher.get("gpus_per_node") or any(
        o.split("=", 1)[0].lstrip("+~") == "hydra.launcher.gpus_per_node" for o in line.overrides
    ):
        return []
    return ["hydra.launcher.gpus_per_node=1"]


def _check_launcher(cfg: DictConfig) -> None:
    if launcher(cfg) == "submitit_slurm" and not shutil.which("sbatch"):
        raise VarexpError(
            "hydra/launcher=submitit_slurm submits jobs with SLURM's sbatch, which "
            "is not on PATH here: run it on the cluster, or use "
            "hydra/launcher=joblib (or submitit_local) on this machine"
        )


def _check_preset(command: str, preset: str | None) -> None:
    commands = commands_for(preset) if preset else None
    if commands is not None and command not in commands:
        allowed = ", ".join(presets_for(command)) or "none"
        raise VarexpError(
            f"experiment={preset} is a preset for `varexp {commands[0]}`, not "
            f"`varexp {command}`; presets for {command}: {allowed}"
        )


def _check_output_dir(line: CommandLine) -> None:
    key = "hydra.sweep.dir" if line.multirun else "hydra.run.dir"
    try:
        value = line.output_dir
    except OmegaConfBaseException as error:
        raise VarexpError(f"{key}: {str(error).splitlines()[0]}") from None
    if not value.strip():
        raise VarexpError(f"{key}={value!r} is not allowed; it must name a folder")
    path = Path(value).absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise VarexpError(f"{key}={value} is not writable ({path} is not a writable folder)")


def _missing_option(command: str, error: MissingConfigException) -> VarexpError:
    missing = error.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    if not group:
        return VarexpError(str(error).splitlines()[0])
    options = presets_for(command) if group == "experiment" else list(error.options or [])
    extra = (
        " (pip install -e '.[slurm]' adds submitit_local and submitit_slurm)"
        if group == "hydra/launcher" and option.startswith("submitit")
        else " (pip install -e '.[optuna]' adds optuna)"
        if group == "hydra/sweeper" and option == "optuna"
        else " (pip install -e . again: it installs varexp's own sweeper)"
        if group == "hydra/sweeper" and option == "varexp"
        else ""
    )
    return VarexpError(
        f"{group}={option!r} is not an option; {did_you_mean(option, options)}"
        f"choose one of {', '.join(options)}{extra}"
    )


def _one_line(command: str, overrides: list[str], error: Exception) -> VarexpError:
    message = str(error)
    first = message.splitlines()[0] if message else type(error).__name__
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        if "No match in the defaults list" in message:
            groups = command_groups(command)
            return VarexpError(
                f"there is no config group {key!r} in varexp {command}; "
                f"{did_you_mean(key, groups)}its groups: {', '.join(groups)}"
            )
        return VarexpError(_unknown_key(command, rest, key))
    if first.startswith("Error merging override "):  # a value of the wrong type for its key
        override = first[len("Error merging override ") :]
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        allowed = allowed_of(key, compose_config(command, rest))
        if allowed is not None:
            return bad_value(key, _parsed(value), str(allowed))
    return VarexpError(first)


def _parsed(value: str) -> object:
    """An override's value as Hydra reads it (for the one-line error)."""
    try:
        return OverridesParser.create().parse_overrides([f"k={value}"])[0].value()
    except HydraException:
        return value


def _unknown_key(command: str, overrides: list[str], key: str) -> str:
    cfg = compose_config(command, overrides)
    parent, _, _ = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    choices = cfg.hydra.runtime.choices
    if isinstance(node, DictConfig):
        where = f"{parent}={choices[parent]}" if parent in choices else parent
        keys = [str(k) for k in node.keys() if k not in ("hydra", "name")]
        # the leaves alone: a shared "arch." would make any key of arch close
        guess = did_you_mean(key.rpartition(".")[2], keys, f"{parent}.{{}}" if parent else "{}")
        return (
            f"{key} is not a key of {where or 'varexp ' + command}; {guess}its keys: "
            f"{', '.join(keys)}"
        )
    # a mistyped section (trian.steps): the closest section with the rest of the key
    sections = [str(k) for k in cfg.keys() if k != "hydra"]
    head, _, tail = key.partition(".")
    guess = did_you_mean(head, sections, f"{{}}.{tail}" if tail else "{}")
    return f"{key} is not a key of varexp {command}; {guess}its keys: {', '.join(sections)}"
