"""summary.json, how a training run ended: its schema (Summary), the statuses a run and a
sweep's row can have (Status), and the one rule for "is this run finished?" (finished).

A run that ended writes the whole Summary; one that failed before it could (a refused folder, an
exception) writes only its status and the error (failed_summary). Statuses are strings in every
file (summary.json, sweep.csv, the checkpoint): Status members compare equal to them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10: the same behaviour for what varexp uses

    class StrEnum(str, Enum):
        __hash__ = str.__hash__  # a member is found where its value is (dicts, pandas)

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


SUMMARY = "summary.json"


class Status(StrEnum):
    """How a run stands: in summary.json and the checkpoint (running, completed, diverged,
    failed) and in a sweep's tables (also incomplete: stopped before its end; damaged: its
    metrics.csv does not hold the steps its summary says)."""

    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    DAMAGED = "damaged"


# a training run's status when nothing is left to do (at enough steps, for completed)
FINISHED = (Status.COMPLETED, Status.DIVERGED)


def finished(status: object, step: object, steps: int) -> bool:
    """The one rule: nothing is left to train of a run at `step` optimizer steps, asked for
    train.steps=`steps`: it diverged (at any step), or it completed at least `steps` steps (a
    longer train.steps continues it)."""
    if status == Status.DIVERGED:
        return True
    return status == Status.COMPLETED and isinstance(step, int) and step >= steps


def summary_finished(summary: dict | None, steps: int) -> bool:
    """`finished` for a run's summary.json (as read_summary returns it; None: no summary)."""
    return summary is not None and finished(summary.get("status"), summary.get("steps"), steps)


@dataclass(frozen=True)
class Summary:
    """summary.json of a run that ended (completed, diverged, or failed with its state saved)."""

    status: Status
    steps: int  # optimizer steps done
    final_loss: float | None  # the last finite training loss
    diverged_at: int | None  # the step whose loss was not finite
    seconds: float  # wall time of the run, all sessions
    train_seconds: float  # of it in the training loop
    steps_per_second: float | None
    init_forward_passes: float
    device: str
    started: str
    finished: str
    provenance: dict
    # the setting (varexp.train.identifying): what a sweep's tables read
    arch: str
    dataset: str
    init: str
    optim: str
    lr: float
    seed: int
    batch_size: int
    train_steps: int
    config: dict  # the run's identity (varexp.results.identity)
    error: str | None = None  # why it failed

    def as_dict(self) -> dict:
        """The mapping summary.json holds (and train() returns): strings for the status, no
        `error` key unless it failed."""
        out = dataclasses.asdict(self)
        out["status"] = str(self.status)
        if self.error is None:
            del out["error"]
        return out


def failed_summary(error: str | None = None) -> dict:
    """summary.json of a run that failed before it had a whole Summary to write."""
    return {"status": str(Status.FAILED)} | ({} if error is None else {"error": error})


def summary_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUMMARY


def read_summary(run_dir: str | Path) -> dict | None:
    """A training run's summary.json, or None if it has none (yet), or it is unreadable or not
    a summary (not a mapping, or its status not a word)."""
    try:
        summary = json.loads(summary_path(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("status", ""), str):
        return None
    return summary


def write_summary(summary: dict | Summary, run_dir: str | Path) -> Path:
    """summary.json into run_dir (temp + rename)."""
    from varexp.files import write_json

    data = summary.as_dict() if isinstance(summary, Summary) else summary
    return write_json(data, summary_path(run_dir))
