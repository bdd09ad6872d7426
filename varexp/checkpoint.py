"""Checkpoints of a training run: what identifies a run, RNG states, atomic save and load.

A checkpoint is one dict saved with torch.save (tensors, numbers, strings, lists and dicts only,
so it loads with weights_only=True). It is written to a temporary file beside checkpoint.pt and
renamed onto it, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.files import atomic_path

CHECKPOINT = "checkpoint.pt"
# Keys that identify a run: everything that changes its trajectory or its files, except these,
# which may differ on resume (train.steps extends a finished run; data location, device,
# workers, the data pipeline, compilation and bookkeeping leave the numbers as they are).
IDENTITY_GROUPS = ("arch", "dataset", "init", "optim", "seed", "train")
NOT_IDENTITY = (
    "train.steps", "train.checkpoint_every", "train.flush_seconds", "train.progress",
    "train.compile", "train.stop_after",
    "dataset.root", "dataset.download", "dataset.verify", "dataset.cache", "dataset.workers",
    "dataset.pipeline",
)  # fmt: skip


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity(cfg: DictConfig) -> dict[str, object]:
    """The resolved config keys that identify the run, flat ("optim.lr": 0.01, ...)."""
    tree = {k: cfg[k] if not OmegaConf.is_config(cfg[k]) else
            OmegaConf.to_container(cfg[k], resolve=True) for k in IDENTITY_GROUPS if k in cfg}
    flat = flatten(tree)
    return {k: v for k, v in flat.items() if k not in NOT_IDENTITY}


def differences(saved: dict[str, object], now: dict[str, object]) -> list[str]:
    """'key=saved (now value)' for every identifying key that differs."""
    missing = object()
    out = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key, missing), now.get(key, missing)
        if old != new:
            old_s = "unset" if old is missing else repr(old)
            new_s = "unset" if new is missing else repr(new)
            out.append(f"{key}={old_s} (now {new_s})")
    return out


def rng_state() -> dict:
    """Every global generator a training step may draw from (dropout, user code)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "random": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


def save(state: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt file: say which and why
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VarexpError(
            f"checkpoint {path} is unreadable ({reason}); move it away to start over"
        ) from None


def hydra_files(run_dir: str | Path) -> dict[str, str]:
    """The texts of the run's .hydra/*.yaml, kept in the checkpoint: Hydra rewrites them on every
    launch into the directory, including launches that are then refused."""
    folder = Path(run_dir) / ".hydra"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.yaml"))}


def restore_hydra_files(run_dir: str | Path, texts: dict[str, str]) -> None:
    folder = Path(run_dir) / ".hydra"
    for name, text in texts.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
