"""Stopping cleanly: Ctrl-C, SIGTERM and the death of the process that launched a job.

- During training, Ctrl-C (SIGINT) and SIGTERM ask the loop to stop at the next step boundary,
  where model, optimizer and data stream agree and a checkpoint can be saved (StopRequests); a
  second Ctrl-C interrupts at once.
- Elsewhere SIGTERM exits through Python's normal unwinding (SystemExit), so temporary files of
  atomic writes are removed instead of left behind.
- A benchmark script (bench/) ends at the first Ctrl-C with one line (run_benchmark).
- A job in a worker process of a parallel launcher (joblib's loky workers, submitit_local)
  watches its parent: when the launching process dies, even by SIGKILL, the worker stops its run
  as if sent SIGTERM and exits, instead of training on unseen for minutes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

GRACE_SECONDS = 30  # after the launcher died: time for a run to reach a step and checkpoint
POLL_SECONDS = 0.5


_ctrl_c = False  # a Ctrl-C reached a StopRequests block in this process


class StopRequests:
    """Within the block, SIGINT and SIGTERM set `requested` instead of interrupting."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        global _ctrl_c
        if signum == signal.SIGINT:
            _ctrl_c = True
            if self.requested:
                raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does (finally blocks run) rather than killing the process."""
    try:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except ValueError:  # not the main thread
        pass


_watching = False
_idle = threading.Event()  # set between jobs: nothing to save when the launcher dies


def watch_parent() -> None:
    """Once this process's parent is gone: SIGTERM to itself (a training run stops at its next
    step with a checkpoint), then exit as soon as the job is over (at most GRACE_SECONDS).
    Started once per process; job_started/job_ended mark the jobs."""
    global _watching
    if _watching:
        return
    _watching = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        if not _idle.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            _idle.wait(GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="varexp-parent-watch", daemon=True).start()


def job_started() -> None:
    _idle.clear()


def job_ended() -> None:
    _idle.set()


def interrupted(error: BaseException) -> bool:
    """Whether `error` came of Ctrl-C: KeyboardInterrupt, a training run that it stopped at a
    step (varexp.train.Interrupted, looked up only where training was imported), or any error
    raised after a Ctrl-C reached a training run (the same key press also ends the terminal's
    other processes, e.g. torch.compile's C++ compiler, whose error then surfaces instead)."""
    train = sys.modules.get("varexp.train")
    return isinstance(error, KeyboardInterrupt) or _ctrl_c or (
        train is not None and isinstance(error, train.Interrupted))


def run_benchmark(main: Callable[[], object]) -> None:
    """A benchmark's main(): the first Ctrl-C ends it with one line on stderr and status 130,
    the rows printed before complete; no traceback, no case marked failed and the next one
    started."""
    try:
        main()
    except BaseException as error:
        if not interrupted(error):
            raise
        print(f"{Path(sys.argv[0]).stem}: interrupted; the rows printed above are complete",
              file=sys.stderr, flush=True)
        sys.exit(130)
