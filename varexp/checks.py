"""What a command checks in a config before any work: every key against its schema's rule
(`varexp.schema.validate`), then the rules across keys (the data fits the model, a training step
fits in memory, the lr index within the optimizer's grid), each naming the keys it reads.

A sweep's launch checks each distinct composition of group options whole. A further job, which
differs from it only in values (a seed, an lr index), is checked by `Check.job`: those values
against their keys' rules, every interpolated key (which may follow them), and each cross-key rule
once per distinct combination of the values it reads."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf

from varexp.schema import validate, validate_keys


@dataclass(frozen=True)
class Rule:
    """A check across keys: `test(cfg)` raises a ConfigError (or VarexpError) naming what is
    wrong, and reads only the keys (or whole sections) in `reads`."""

    reads: tuple[str, ...]
    test: Callable[[DictConfig], object]

    def reading(self, cfg: DictConfig) -> str:
        """The values this rule reads in cfg (what its outcome depends on)."""
        return values_of(cfg, self.reads)


@dataclass(eq=False)
class Check:
    """A command's check: `check(cfg)` checks everything and returns what `result` found (e.g.
    what the data looks like); `check.job(cfg, keys, outcomes)` checks a config that differs
    from one already checked only in the values of `keys`. `outcomes` (one launch's: free
    memory and files may change between launches) remembers each rule's outcome by what it read."""

    name: str  # who checks, e.g. varexp.train.check (what a checked config is remembered by)
    roots: tuple[type, ...]  # the schemas of the keys at the config's top (varexp.schema)
    rules: tuple[Rule, ...] = ()
    result: Rule | None = None  # the rule whose value the check returns (run first)
    # rules run before the keys' own: those whose keys others interpolate (a sweep's lr index
    # picks optim.lr; its refusal names the index, not the interpolation that fails)
    before: tuple[Rule, ...] = ()
    # seconds of this process's first check (a fresh sweep worker pays it once: the estimate)
    first_seconds: float | None = field(default=None, init=False)

    def __call__(self, cfg: DictConfig, outcomes: dict | None = None) -> object:
        start = time.perf_counter()
        outcomes = {} if outcomes is None else outcomes
        self._apply(self.before, cfg, outcomes)
        validate(cfg, *self.roots)
        found = self._apply_rules(cfg, outcomes)
        if self.first_seconds is None:
            self.first_seconds = time.perf_counter() - start
        return found

    def job(self, cfg: DictConfig, keys: Iterable[str], outcomes: dict) -> object:
        self._apply(self.before, cfg, outcomes)
        validate_keys(cfg, [*keys, *interpolated_keys(cfg)], *self.roots)
        return self._apply_rules(cfg, outcomes)

    def _apply_rules(self, cfg: DictConfig, outcomes: dict) -> object:
        """The rules after the keys' own, and what `result` found."""
        if self.result is None:
            self._apply(self.rules, cfg, outcomes)
            return None
        return self._apply((self.result, *self.rules), cfg, outcomes)[0]

    def _apply(self, rules: tuple[Rule, ...], cfg: DictConfig, outcomes: dict) -> list:
        """Each rule's outcome, computed once per distinct reading."""
        found = []
        for rule in rules:
            seen = (self.name, rule, rule.reading(cfg))
            if seen not in outcomes:
                outcomes[seen] = rule.test(cfg)
            found.append(outcomes[seen])
        return found


def interpolated_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys of cfg (but its `hydra` node) whose values are interpolations."""
    out = []
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        node = cfg._get_node(key)
        if node._is_interpolation():
            out.append(f"{prefix}{key}")
        elif isinstance(node, DictConfig):
            out.extend(interpolated_keys(node, f"{prefix}{key}."))
    return out


def values_of(cfg: DictConfig, keys: Iterable[str]) -> str:
    """The values of `keys` (dotted keys or whole sections) in cfg, resolved, as text."""
    values = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        values.append(value)
    return json.dumps(values, sort_keys=True, default=str)
