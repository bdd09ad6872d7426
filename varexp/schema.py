"""Option schemas. Every config group option (arch=mlp, init=scale+bias, ...) and every
command's own section (probe:, train:, ...) is a dataclass declared once, in varexp.options
(torch-free, for --help and completion): its keys, their types and defaults, and what each may
be (`option(...)`). They are
registered in Hydra's ConfigStore (`store`) as the options Hydra composes, the same dataclasses
are the typed specs the library's functions take, and `validate` checks a composed config
against them, saying what is wrong in one line that names the key, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from varexp import devices
from varexp.errors import ConfigError, bad_value, did_you_mean


@dataclass(frozen=True)
class Allowed:
    """What a key may hold beyond its type: an integer or a finite number in a range (bounds
    inclusive, or exclusive with `above`/`below`), a boolean, one of some choices, or a test of
    its own (with `text` saying it in words); null only with `none`."""

    kind: str = "any"  # integer | number | boolean | choice | any
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    choices: tuple = ()
    none: bool = False
    text: str | None = None
    test: Callable[[object], bool] | None = None

    def holds(self, value: object) -> bool:
        if value is None:
            return self.none
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "boolean":
            return isinstance(value, bool)
        if self.kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(
                value, int if self.kind == "integer" else int | float
            ):
                return False
            return math.isfinite(value) and self._in_range(value)
        return self.test is None or self.test(value)

    def _in_range(self, v: float) -> bool:
        return (
            (self.minimum is None or v >= self.minimum)
            and (self.above is None or v > self.above)
            and (self.maximum is None or v <= self.maximum)
            and (self.below is None or v < self.below)
        )

    def __str__(self) -> str:
        if self.text is not None:
            words = self.text
        elif self.kind == "choice":
            words = "choose one of " + ", ".join(map(str, self.choices))
        elif self.kind == "boolean":
            words = "must be true or false"
        elif self.kind == "integer":
            words = (
                f"must be an integer in {self.minimum:.0f}..{self.maximum:.0f}"
                if self.maximum is not None
                else f"must be an integer >= {self.minimum:.0f}"
            )
        else:
            low = (
                f"[{self.minimum:g}"
                if self.minimum is not None
                else f"({self.above:g}"
                if self.above is not None
                else None
            )
            high = (
                f"{self.maximum:g}]"
                if self.maximum is not None
                else f"{self.below:g})"
                if self.below is not None
                else None
            )
            if low and high:
                words = f"must be a number in {low}, {high}"
            elif low:
                words = f"must be a finite number {'>=' if low[0] == '[' else '>'} {low[1:]}"
            else:
                words = "must be a finite number"
        return words + (" or null" if self.none and self.kind != "choice" else "")

    def explain(self, value: object) -> str:
        """What the key may hold, after the closest choice to a mistyped one (figure=figur4)."""
        guess = did_you_mean(value, self.choices) if self.kind == "choice" else ""
        return guess + str(self)


def option(default: object = dataclasses.MISSING, *, factory=None, **allowed: object) -> Any:
    """A dataclass field with what it may hold (Allowed's keywords)."""
    metadata = {"allowed": Allowed(**allowed)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def integer(
    default: int | None, minimum: int = 1, maximum: int | None = None, none: bool = False
) -> Any:
    return option(default, kind="integer", minimum=minimum, maximum=maximum, none=none)


def number(
    default: float | None,
    *,
    above: float | None = 0.0,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    none: bool = False,
) -> Any:
    """A finite number; by default > 0."""
    if minimum is not None:
        above = None
    return option(
        default,
        kind="number",
        above=above,
        minimum=minimum,
        maximum=maximum,
        below=below,
        none=none,
    )


def flag(default: bool) -> Any:
    return option(default, kind="boolean")


def choice(default: str, choices: tuple) -> Any:
    return option(default, kind="choice", choices=tuple(choices))


# ---------------------------------------------------------------------------------------------


def store(group: str | None, name: str, node: object, package: str | None = None) -> None:
    """Register a config option (a dataclass, or a dict of them) in Hydra's ConfigStore."""
    ConfigStore.instance().store(group=group, name=name, node=node, package=package)


def register_option(group: str, record: Any, records: dict, specs: dict) -> Any:
    """Make `group=<record.name>` known: its record (e.g. an Architecture) in `records`, and
    its options dataclass (`record.spec`) in `specs` and Hydra's ConfigStore, where it is not
    one of varexp.options' already."""
    records[record.name] = record
    if specs.get(record.name) is not record.spec:
        specs[record.name] = record.spec
        store(group, record.name, record.spec)
    return record


def spec_of(node: DictConfig) -> type | None:
    """The dataclass a composed config node was made from, if any."""
    kind = OmegaConf.get_type(node)
    return kind if kind is not None and dataclasses.is_dataclass(kind) else None


def validate(cfg: DictConfig, *roots: type, prefix: str = "") -> None:
    """Check every key of every node made from an option dataclass (recursively), and the
    root's keys that the `roots` dataclasses describe, against what they may hold; raise
    ConfigError naming the first key that may not. (Hydra's root config cannot be typed: the
    keys at the top have their defaults in conf/ and their schema in `roots`.)"""
    for root in roots:
        for f in dataclasses.fields(root):
            allowed = f.metadata.get("allowed")
            if allowed is not None and f.name in cfg:
                value = OmegaConf.select(cfg, f.name, throw_on_missing=True)
                if isinstance(value, ListConfig | DictConfig):
                    value = OmegaConf.to_container(value, resolve=True)
                if not allowed.holds(value):
                    raise bad_value(f.name, value, allowed.explain(value))
    spec = spec_of(cfg)
    for f in dataclasses.fields(spec) if spec is not None else ():
        allowed = f.metadata.get("allowed")
        if allowed is None:
            continue
        key = f"{prefix}{f.name}"
        value = OmegaConf.select(cfg, f.name, throw_on_missing=True)
        if isinstance(value, ListConfig | DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if not allowed.holds(value):
            raise bad_value(key, value, allowed.explain(value))
    for key in cfg:
        if key == "hydra":
            continue
        child = cfg._get_node(key)  # unresolved: an interpolation is checked where it points
        if isinstance(child, DictConfig):
            validate(child, prefix=f"{prefix}{key}.")


def validate_keys(cfg: DictConfig, keys: list[str], *roots: type) -> None:
    """`validate` for the named keys only (a section: all of it): what a value changed in an
    already validated config needs."""
    for key in dict.fromkeys(keys):
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if isinstance(value, DictConfig):
            validate(value, prefix=f"{key}.")
            continue
        allowed = allowed_of(key, cfg)
        if allowed is None and "." not in key:
            fields = (f for root in roots for f in dataclasses.fields(root) if f.name == key)
            allowed = next((f.metadata.get("allowed") for f in fields), None)
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if allowed is not None and not allowed.holds(value):
            raise bad_value(key, value, allowed.explain(value))


def to_spec(node: DictConfig) -> object:
    """The typed spec a config node describes (its dataclass, resolved)."""
    return OmegaConf.to_object(node)


def allowed_of(key: str, cfg: DictConfig) -> Allowed | None:
    """What the key `key` (a dotted path in cfg) may hold, if a schema says."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    spec = spec_of(node) if isinstance(node, DictConfig) else None
    for f in dataclasses.fields(spec) if spec is not None else ():
        if f.name == leaf:
            return f.metadata.get("allowed")
    return None


def check_spec(spec: object, prefix: str) -> object:
    """Check a spec instance's fields against what they may hold (as `validate` does for a
    config node); returns it."""
    for f in dataclasses.fields(spec):
        allowed = f.metadata.get("allowed")
        value = getattr(spec, f.name)
        if allowed is not None and not allowed.holds(value):
            raise bad_value(f"{prefix}{f.name}", value, allowed.explain(value))
    return spec


def spec_from(given: object, options: dict[str, type], group: str) -> object:
    """The spec of group option `given`: an instance of one of `options`' dataclasses as it
    is; a config node made from one, converted; a plain mapping with a `name`, checked key by
    key over that option's defaults (one line for an unknown key or a bad value)."""
    if isinstance(given, tuple(options.values())):
        return check_spec(given, f"{group}.")
    if isinstance(given, DictConfig) and spec_of(given) is not None:
        return check_spec(OmegaConf.to_object(given), f"{group}.")
    mapping = (
        OmegaConf.to_container(given, resolve=True)
        if isinstance(given, DictConfig)
        else dict(given)
    )
    name = mapping.get("name")
    if name not in options:
        raise bad_value(f"{group}.name", name, "choose one of " + ", ".join(options))
    spec = options[name]
    keys = [f.name for f in dataclasses.fields(spec)]
    for key in mapping:
        if key not in keys:
            raise ConfigError(
                f"{group}.{key} is not an option of {group}={name}; options: "
                + ", ".join(k for k in keys if k != "name")
            )
    return check_spec(spec(**mapping), f"{group}.")


MAX_SEED = 2**32 - 1  # numpy's global generator takes no larger seed


def _threads(value: object) -> bool:
    return value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    )


@dataclass
class Common:
    """The keys every command has at the top of its config (defaults: conf/_common.yaml)."""

    seed: int = integer(0, minimum=0, maximum=MAX_SEED)
    device: str = option("auto", test=devices.well_formed, text=devices.ALLOWED)
    threads: Any = option("auto", test=_threads, text="must be auto or an integer >= 1")
    overwrite: bool = flag(False)
