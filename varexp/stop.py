"""Stopping cleanly: Ctrl-C, SIGTERM and the death of the process that launched a job.

- During training, Ctrl-C (SIGINT) and SIGTERM ask the loop to stop at the next step boundary,
  where model, optimizer and data stream agree and a checkpoint can be saved (StopRequests); a
  second Ctrl-C interrupts at once.
- Elsewhere SIGTERM exits through Python's normal unwinding (SystemExit), so temporary files of
  atomic writes are removed instead of left behind.
- A job in a worker process of a parallel launcher (joblib's loky workers, submitit_local)
  watches its parent: when the launching process dies, even by SIGKILL, the worker stops its run
  as if sent SIGTERM and exits, instead of training on unseen for minutes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

GRACE_SECONDS = 30  # after the launcher died: time for a run to reach a step and checkpoint
POLL_SECONDS = 0.5


class StopRequests:
    """Within the block, SIGINT and SIGTERM set `requested` instead of interrupting."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
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
