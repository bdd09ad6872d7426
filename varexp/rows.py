"""The rows of the results files, as types. Nothing here imports torch or pandas: `varexp train
--help` names metrics.csv's columns from them (varexp.results.tables reads and writes the
files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class MetricsRow(NamedTuple):
    """One row of metrics.csv: training minibatch `step` at the parameters reached after `step`
    updates (varexp.train)."""

    step: int
    epoch: int  # passes over the training split begun before this minibatch
    loss: float  # on this minibatch
    lr: float
    seconds: float  # in the training loop so far, all sessions
    accuracy: float = math.nan  # on this minibatch (of pixels for segmentation)
    test_loss: float = math.nan  # on the test split, every train.eval_every steps (else empty)
    test_accuracy: float = math.nan

    @classmethod
    def from_saved(cls, values: Sequence) -> MetricsRow:
        """A row as a checkpoint keeps it (a plain tuple); the rows of checkpoints made before a
        column existed get it empty (NaN)."""
        return cls(*values, *(math.nan,) * (len(cls._fields) - len(values)))
