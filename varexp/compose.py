"""A command line, composed and checked before Hydra runs it.

Hydra makes the run folder before the job starts, so everything a user can get wrong is caught
here first: composition errors (a key the config does not have, a group the command does not use,
an option that does not exist, a preset written for another command) and the command's own
checks become one line naming the key, the value and what is allowed, and no folder is left
behind. The config is composed by Hydra's compose API; a multirun is expanded into its jobs by
Hydra's basic sweeper, and each job's values are applied to the composition of its group choices
as Hydra applies them (varexp.hydra_adapter), so every job's config is checked, with the swept
value that fails named by its position, before any job starts. A job that runs in this process
takes that check's result (check_once) instead of checking again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property, partial
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import Container, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import varexp.options  # noqa: F401  (fills Hydra's ConfigStore with every option and section)
from varexp import grid, hydra_adapter
from varexp.checks import Check
from varexp.errors import ConfigError, VarexpError, bad_value, did_you_mean
from varexp.hydra_adapter import HydraException, Override
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
        return list(self._folders)

    @cached_property
    def _folders(self) -> tuple[Path, ...]:  # resolving a folder's interpolations takes a while
        if not self.multirun:
            return (Path(self.output_dir),)
        return tuple(Path(str(c.hydra.sweep.dir)) / str(c.hydra.sweep.subdir) for c in self.configs)


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
    """Whether the experiment preset chooses a task (then the preset's task stays): its
    defaults list overrides the task group, or its sweeper sweeps it."""
    if not preset:
        return False
    with _hydra():
        groups, preset_cfg = hydra_adapter.preset_overrides(f"experiment/{preset}")
    if preset_cfg is None:
        return False  # an unknown preset: composing it says so
    swept = OmegaConf.select(preset_cfg, "hydra.sweeper.params", default=None) or {}
    return "task" in groups or "task" in swept


def inspects_only(args: list[str]) -> bool:
    return any(a in INSPECT_FLAGS or a.startswith(("--cfg=", "--info=")) for a in args)


@contextmanager
def _hydra():
    """Hydra initialized with varexp's configs for the block (GlobalHydra as it was after)."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        yield


def compose_config(command: str, overrides: list[str]) -> DictConfig:
    """The config `varexp COMMAND OVERRIDES` runs with, or a one-line VarexpError."""
    try:
        with _hydra():
            cfg = compose(command, overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as error:
        raise _missing_option(command, error) from None
    except (HydraException, OmegaConfBaseException) as error:
        raise _refused(command, overrides, error) from None
    if not overrides:  # the command's defaults: its groups are known without composing again
        _default_choices.setdefault(command, _groups_of(cfg.hydra.runtime.choices))
    return cfg


GROUP_ORDER = ("arch", "dataset", "init", "optim", "task", "experiment")
# each command's groups and their default options, from its first composition without overrides
_default_choices: dict[str, tuple[tuple[str, str | None], ...]] = {}


def _groups_of(choices: DictConfig) -> tuple[tuple[str, str | None], ...]:
    # a command's own section (section@probe) is no group a user picks
    groups = [g for g in choices if not g.startswith(("hydra/", "section"))]
    groups.sort(key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER))
    return tuple((g, choices[g]) for g in groups)


def command_groups(command: str) -> dict[str, str | None]:
    """The config groups `varexp COMMAND` composes, with their default options."""
    if command not in _default_choices:
        compose_config(command, [])
    return dict(_default_choices[command])


def group_options(group: str) -> list[str]:
    """The options of a config group, from the package's YAML files and the ConfigStore."""
    with _hydra():
        return hydra_adapter.group_options(group)


@cache
def is_group(key: str) -> bool:
    """Whether an override's key names a config group (arch, hydra/launcher), not a value."""
    if "/" in key or "@" in key:
        return True
    with _hydra():
        return hydra_adapter.group_exists(key)


def presets_for(command: str) -> list[str]:
    return [p for p in group_options("experiment") if command in (commands_for(p) or (command,))]


def parse(command: str, args: list[str], check: Callable[[DictConfig], object]) -> CommandLine:
    """Compose and check `varexp COMMAND ARGS` (Hydra overrides and -m) without running it:
    the base config through Hydra's compose API, a grid's jobs as Hydra's sweeper expands it,
    every job's config checked once (check_once: a job run in this process is not checked
    again)."""
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


def _check_added_keys(command: str, parsed: list[Override], cfg: DictConfig) -> None:
    """`+key=value` (and `++key=value`) adds a key Hydra's config does not have: refuse one the
    command's schema does not know either, as a plain misspelled key is refused, instead of
    letting the typo run and join the run's identity. Hydra's own keys and `+group=option` are
    Hydra's business."""
    added = [
        o
        for o in parsed
        if (o.is_add() or o.is_force_add())
        and not _is_hydras(o.key_or_group)
        and not is_group(o.key_or_group)
    ]
    if not added:
        return
    rest = [o.input_line for o in parsed if not o.is_sweep_override() and o not in added]
    plain = compose_config(command, rest)
    missing = object()
    for o in added:
        if OmegaConf.select(plain, o.key_or_group, default=missing) is missing:
            raise VarexpError(_unknown_key(command, plain, o.key_or_group))


def _parse_overrides(overrides: list[str]) -> list[Override]:
    out = []
    for override in overrides:
        try:
            out.extend(hydra_adapter.parse([override]))
        except HydraException as error:
            reason = str(error).splitlines()[0]
            raise VarexpError(
                f"{override!r} is not a valid override ({reason}); "
                "write key=value, group=option or key=a,b,c"
            ) from None
    return out


def _is_hydras(key: str) -> bool:
    return key.startswith(("hydra.", "hydra/", "hydra@"))


def _expand(command: str, overrides: list[str], cfg: DictConfig, check) -> CommandLine:
    """A multirun's jobs as Hydra's basic sweeper expands them. Jobs that choose the same
    group options share one composition, to which each job's values are applied as Hydra
    applies them; every job's config is checked."""
    parsed = _parse_overrides(overrides)
    hydra_lines = [o.input_line for o in parsed if _is_hydras(o.key_or_group)]
    task = [o for o in parsed if not _is_hydras(o.key_or_group)]
    if not _grid_sweeper(cfg):
        # another sweeper (e.g. an optimiser) picks its jobs as it goes: check the base config
        _check(check, cfg)
        searched = [str(k) for k in (cfg.hydra.sweeper.get("params") or {})]
        searched += [o.key_or_group.lstrip("+~") for o in task if o.is_sweep_override()]
        job = [o.input_line for o in task]
        return CommandLine(command, overrides, cfg, [job], True, [cfg], tuple(searched))
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    try:
        jobs = hydra_adapter.expand(_parse_overrides(params) + task)
    except HydraException as error:  # e.g. a range of floats, which a grid cannot list
        raise VarexpError(str(error).splitlines()[0]) from None
    # each composition of group options is checked whole at its first job; a further job
    # differs from that one only in values, which a Check checks key by key (varexp.checks)
    composed: dict[tuple[str, ...], tuple[DictConfig, dict[str, str]]] = {}
    outcomes: dict = {}
    configs = []
    for number, job in enumerate(jobs):
        job_overrides = hydra_adapter.parse(job)
        groups = tuple(o.input_line for o in job_overrides if is_group(o.key_or_group))
        values = {
            o.key_or_group: o.input_line for o in job_overrides if not is_group(o.key_or_group)
        }
        first = groups not in composed
        if first:
            composed[groups] = compose_config(command, hydra_lines + list(groups)), values
        base, first_values = composed[groups]
        how = None
        if isinstance(check, Check):
            changed = [k for k, line in values.items() if first_values.get(k) != line]
            if first or values.keys() != first_values.keys():
                how = partial(check, outcomes=outcomes)
            else:
                how = partial(check.job, keys=changed, outcomes=outcomes)
        try:
            job_cfg = _job_config(command, base, job_overrides, number, hydra_lines)
            _check(check, job_cfg, how=how)
        except VarexpError as error:
            culprit = _culprit(jobs, number, str(error))
            if culprit is None:  # a value every job has: the plain one line
                raise
            raise VarexpError(f"in the sweep, {culprit}: {error}") from None
        configs.append(job_cfg)
    return CommandLine(command, overrides, configs[0], jobs, True, configs)


def _job_config(
    command: str, base: DictConfig, job: list[Override], number: int, hydra_lines: list[str]
) -> DictConfig:
    """Job `number`'s config: its values applied to the composition of its group choices."""
    values = [o for o in job if not is_group(o.key_or_group)]
    try:
        return hydra_adapter.job_config(base, values, job, number)
    except (HydraException, OmegaConfBaseException) as error:
        # a value the config refuses: the one line that composing this job would give
        raise _refused(command, hydra_lines + [o.input_line for o in job], error) from None


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


def _culprit(jobs: list[list[str]], number: int, message: str) -> str | None:
    """Which swept value (and where in its list) made job `number` fail; None if the message
    names no swept key (then every job fails alike)."""
    swept = grid.swept(jobs)
    for position, key, values in swept:
        value = jobs[number][position]
        if value in message or f"{key}=" in message:
            shown = ",".join(v.split("=", 1)[1] for v in values)
            return f"{key}={shown} (value {values.index(value) + 1} of {len(values)})"
    if number == 0:
        return None
    return "the job " + " ".join(jobs[number][p] for p, _, _ in swept)


# what each config checked in this process was found to be, by its check and its text: a job
# that runs in the process that launched it (Hydra's basic launcher) is not checked again
_checked: dict[tuple[str, str], object] = {}


def _text(cfg: DictConfig) -> str:
    """A config without its `hydra` node, as text (interpolations as written)."""
    nodes = {k: cfg._get_node(k) for k in cfg if k != "hydra"}
    plain = {
        k: OmegaConf.to_container(node) if isinstance(node, Container) else node._value()
        for k, node in nodes.items()
    }
    return json.dumps(plain, sort_keys=True, default=str)


def check_once(
    check: Callable[[DictConfig], object],
    cfg: DictConfig,
    how: Callable[[DictConfig], object] | None = None,
) -> object:
    """`check(cfg)`'s result, checked once in this process: the launch checks each job's
    config before Hydra runs it, and the job (`varexp train`, a sweep's run) takes that result
    instead of checking again. A job in another process (joblib's workers, a SLURM node, with
    its own devices and memory) checks its config there, once. `how` checks it in place of
    `check` (a sweep's further job: only what differs from a job checked whole)."""
    name = getattr(check, "name", None) or f"{check.__module__}.{check.__qualname__}"
    key = (name, _text(cfg))
    if key not in _checked:
        _checked[key] = (how or check)(cfg)
    return _checked[key]


def _check(
    check: Callable[[DictConfig], object],
    cfg: DictConfig,
    overrides: list[str] = (),
    how: Callable[[DictConfig], object] | None = None,
) -> None:
    try:
        check_once(check, cfg, how)
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


def _refused(command: str, overrides: list[str], error: Exception) -> VarexpError:
    """The one line for a command line Hydra refused to compose: replay its group choices,
    then its values one by one as Hydra applies them, to find the override it refused and
    why: a group the command does not use, a key the config does not have, a value its type
    refuses. Anything else: the first line of Hydra's message."""
    first = (str(error).splitlines() or [type(error).__name__])[0]
    parsed = _parse_overrides(overrides)
    used = command_groups(command)
    for o in parsed:
        key = o.key_or_group
        if (
            is_group(key)
            and not o.is_add()
            and not o.is_force_add()
            and not key.startswith("hydra")
            and key not in used
        ):
            return VarexpError(
                f"there is no config group {key!r} in varexp {command}; "
                f"{did_you_mean(key, used)}its groups: {', '.join(used)}"
            )
    groups = [o.input_line for o in parsed if is_group(o.key_or_group)]
    values = [o for o in parsed if not is_group(o.key_or_group)]
    if not values:
        return VarexpError(first)
    cfg = compose_config(command, groups)
    for o in values:
        key = o.key_or_group
        try:
            hydra_adapter.apply_overrides(cfg, [o])
        except (HydraException, OmegaConfBaseException) as refusal:
            cause = hydra_adapter.composition_cause(refusal)
            if isinstance(cause, ConfigAttributeError | ConfigKeyError):
                return VarexpError(_unknown_key(command, cfg, key))
            allowed = allowed_of(key, cfg) if cause is not None else None
            if allowed is not None:
                return bad_value(key, o.value(), str(allowed))
            return VarexpError((str(refusal).splitlines() or [first])[0])
    return VarexpError(first)


def _unknown_key(command: str, cfg: DictConfig, key: str) -> str:
    """`key` is not in `cfg`: the one line naming the keys there are, and the closest."""
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
