"""What varexp needs from Hydra beyond its public API, in one place.

Hydra's public API (hydra.compose, initialize_config_module, the ConfigStore, callbacks,
HydraConfig) composes a config. Checking a multirun before its launch needs four more things a
launch does inside Hydra: parse the override grammar, expand a sweep into jobs as the basic
sweeper does, apply a job's value overrides to a composed config, and name a job's folder
(override_dirname). Each is Hydra's own code, reached here and nowhere else, and
tests/test_hydra_adapter.py pins what it does on the Hydra versions listed in TESTED.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

# the Hydra minor versions this adapter was tested with (tests/test_hydra_adapter.py passes on
# hydra-core 1.3.2 and 1.3.8)
TESTED = ("1.3",)

__all__ = [
    "ConfigCompositionException",
    "HydraException",
    "Override",
    "apply_overrides",
    "expand",
    "group_exists",
    "group_options",
    "job_config",
    "parse",
    "preset_overrides",
    "untested_version",
]


def untested_version(version: str = hydra.__version__) -> str | None:
    """One line saying that this Hydra is not one varexp was tested with, or None."""
    minor = ".".join(version.split(".")[:2])
    if minor in TESTED:
        return None
    return (
        f"hydra-core {version} is not a version varexp was tested with ({', '.join(TESTED)}); "
        "if a command line is checked wrongly, install hydra-core 1.3"
    )


_warning = untested_version()
if _warning is not None:  # one line, once per process: a warning's source line would be noise
    print(f"varexp: {_warning}", file=sys.stderr)

_parser: OverridesParser | None = None


def parse(lines: Iterable[str]) -> list[Override]:
    """Overrides as Hydra reads them (HydraException on one its grammar refuses)."""
    global _parser
    if _parser is None:
        _parser = OverridesParser.create()
    return _parser.parse_overrides(list(lines))


def expand(overrides: list[Override]) -> list[list[str]]:
    """The jobs of a grid sweep, each its overrides in order, as Hydra's basic sweeper makes
    them (HydraException for a sweep it cannot expand, e.g. a range of floats)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]


def apply_overrides(cfg: DictConfig, overrides: list[Override]) -> None:
    """Apply value overrides (key=value, +key=value, ++key=value, ~key) to a composed config in
    place, as Hydra does after composing the defaults (ConfigCompositionException as Hydra's,
    caused by OmegaConf's error)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def job_config(base: DictConfig, values: list[Override], job: list[Override], number: int):
    """A job's config from the composition it shares with other jobs (`base`, with its `hydra`
    node, composed from the job's group choices): its value overrides applied, and what Hydra
    sets per job from all of the job's overrides (hydra.overrides.task, hydra.job.num and
    hydra.job.override_dirname, which its folder may name)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    cfg = copy.deepcopy(base)
    apply_overrides(cfg, values)
    naming = cfg.hydra.job.config.override_dirname
    with open_dict(cfg):
        cfg.hydra.overrides.task = [o.input_line for o in job]
        cfg.hydra.job.num = number
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=job,
            exclude_keys=list(naming.exclude_keys),
            item_sep=naming.item_sep,
            kv_sep=naming.kv_sep,
        )
    return cfg


def _loader():
    return GlobalHydra.instance().config_loader()


def group_options(group: str) -> list[str]:
    """The options of a config group (Hydra must be initialized)."""
    return sorted(_loader().get_group_options(group))


def group_exists(group: str) -> bool:
    """Whether `group` is a config group (Hydra must be initialized)."""
    return bool(group) and _loader().repository.group_exists(group)


def preset_overrides(config_path: str) -> tuple[set[str], DictConfig | None]:
    """The groups a config file's defaults list overrides (`override /task: ...` -> {"task"})
    and its config, as Hydra reads the file; (set(), None) if there is none."""
    found = _loader().repository.load_config(config_path)
    if found is None:
        return set(), None
    groups = {
        str(d.group).lstrip("/")
        for d in found.defaults_list or ()
        if getattr(d, "group", None) and d.is_override()
    }
    return groups, found.config


def composition_cause(error: Exception) -> OmegaConfBaseException | None:
    """The OmegaConf error that made Hydra refuse an override (a key the config lacks, a value
    its type refuses), or None."""
    cause = error.__cause__
    if isinstance(error, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        return cause
    return None
