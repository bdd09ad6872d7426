"""The identity of a config: the keys a command's results depend on (IDENTITY less
NOT_IDENTITY), flattened, and their hash. Two configs of equal identity make equal results, so a
command may continue or reuse a folder of its own identity and refuses another's."""

from __future__ import annotations

import hashlib
import json
import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("varexp.results")

# The keys each command's results depend on (a group name stands for all its keys).
IDENTITY: dict[str, tuple[str, ...]] = {
    "theory": ("arch.depth", "arch.activation", "init", "theory"),
    "probe": ("seed", "arch", "dataset", "init", "probe"),
    "train": ("seed", "arch", "dataset", "init", "optim", "train"),
    "plot": ("figure", "results", "smooth", "cnn_ratio"),
    # a reproduce folder is one scale; its steps record their own configs (and a step whose
    # command changed is rerun, its old results moved aside)
    "reproduce": ("reproduce.preset",),
}
IDENTITY["sweep"] = IDENTITY["train"]  # a sweep's jobs are training runs
# Keys that may differ without changing a result: where the data lives and how it is fed, how
# chatty or fast a run is, and how long a training run is (a longer run continues a shorter one).
NOT_IDENTITY = frozenset((
    "dataset.root", "dataset.download", "dataset.verify", "dataset.cache", "dataset.workers",
    "dataset.pipeline", "probe.progress", "train.steps", "train.checkpoint_every",
    "train.flush_seconds", "train.log_seconds", "train.progress", "train.compile",
    "train.stop_after",
))  # fmt: skip
# Keys added after runs were made, with the value that does what runs did before them: at that
# value they are left out, so that those runs keep their identity.
ADDED_LATER: dict[str, object] = {"arch.bias": False, "train.eval_every": None}


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def identity(command: str, cfg: DictConfig) -> dict[str, object]:
    """The resolved config keys `command`'s results depend on, flat ("optim.lr": 0.01, ...),
    in JSON's types (so a record read back compares equal)."""
    flat: dict[str, object] = {}
    for key in IDENTITY[command]:
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        flat.update(flatten(value, f"{key}."))
    return json.loads(
        json.dumps(
            {
                k: v
                for k, v in sorted(flat.items())
                if k not in NOT_IDENTITY and not (k in ADDED_LATER and ADDED_LATER[k] == v)
            }
        )
    )


def identity_hash(ident: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def differences(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """'key=old (now new)' for every key whose value differs, sorted."""
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            shown_a = "unset" if a is missing else repr(a)
            shown_b = "unset" if b is missing else repr(b)
            out.append(f"{key}={shown_a} (now {shown_b})")
    return out


def shared(identities: list[dict[str, object]]) -> dict[str, object]:
    """The keys every identity has with the same value: what a multirun's jobs share."""
    if not identities:
        return {}
    first = identities[0]
    return {k: v for k, v in first.items() if all(i.get(k, object()) == v for i in identities)}
