"""Checkpoints of a training run: what one holds (Checkpoint), RNG states, atomic save and load.

A checkpoint is one dict saved with torch.save (tensors, numbers, strings, lists and dicts only,
so it loads with weights_only=True). It is written to a temporary file beside checkpoint.pt and
renamed onto it, so an interrupted save leaves the previous checkpoint intact. torch.save writes
through a Python file object: given a path, its own writer reports a full disk as a RuntimeError
("unexpected pos"), through a file object the OSError (ENOSPC) reaches the caller as it is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from varexp.errors import VarexpError
from varexp.files import atomic_path
from varexp.results.tables import MetricsRow

CHECKPOINT = "checkpoint.pt"


@dataclass
class Checkpoint:
    """Everything a training run needs to go on exactly where it stopped."""

    identity: dict  # the config keys the run depends on (varexp.results.identity)
    step: int  # optimizer updates done
    status: str
    model: dict  # state dicts
    optimizer: dict
    stream: dict
    rng: dict  # every global generator (rng_state)
    metrics: list[MetricsRow]  # the rows of metrics.csv and ratios.csv so far
    ratios: list
    seconds: float  # wall time spent in the run, all sessions
    train_seconds: float  # of it in the training loop
    init_forward_passes: float
    version: int = 1


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


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


def save(checkpoint: Checkpoint, path: str | Path) -> None:
    state = {f.name: getattr(checkpoint, f.name) for f in fields(Checkpoint)}
    state["metrics"] = [tuple(row) for row in checkpoint.metrics]  # plain: weights_only loads
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load(path: str | Path) -> Checkpoint:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt file: say which and why
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VarexpError(
            f"checkpoint {path} is unreadable ({reason}); move it away to start over"
        ) from None
    keys = [f.name for f in fields(Checkpoint)]
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise VarexpError(
            f"checkpoint {path} lacks {', '.join(missing)} (not a varexp training "
            "checkpoint, or a damaged one); move it away to start over"
        )
    saved = Checkpoint(**{k: state[k] for k in keys})
    saved.metrics = [MetricsRow.from_saved(row) for row in saved.metrics]
    return saved
