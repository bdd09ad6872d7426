"""Stopping cleanly: Ctrl-C, SIGTERM and the death of the process that launched a job.

- During training, Ctrl-C (SIGINT) and SIGTERM ask the loop to stop at the next step boundary,
  where model, optimizer and data stream agree and a checkpoint can be saved (StopRequests); a
  second Ctrl-C interrupts at once.
- Elsewhere SIGTERM exits through Python's normal unwinding (SystemExit), so temporary files of
  atomic writes are removed instead of left behind.
- A benchmark script (bench/) ends at the first Ctrl-C with one line (run_benchmark).
- When the reader of its output goes away (`varexp sweep | head -1`), a command stops with one
  line on stderr and exit status 141 (128 + SIGPIPE, as a shell reports a program that a
  closed pipe ended), instead of a BrokenPipeError traceback.
- A worker process of a parallel launcher (joblib's loky workers, submitit_local's jobs)
  watches the process that launched it, named by VAREXP_LAUNCHER_PID (set by that process,
  inherited by its workers): when it dies, even by SIGKILL, the worker stops its run as if sent
  SIGTERM and exits, instead of training on unseen for minutes. Loky workers watch from the
  moment they start (a joblib backend whose workers run `worker_started` first), so a worker
  whose launcher died before it got a job, or while it was being started, exits too; and with
  the workers gone, the resource trackers they share with the launcher end as well.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

GRACE_SECONDS = 5  # after the launcher died: time for a run to reach a step and checkpoint
POLL_SECONDS = 0.25
LAUNCHER_ENV = "VAREXP_LAUNCHER_PID"


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


def output_closed(command: str) -> NoReturn:
    """Stop after a write to a closed pipe: one line on stderr (if it is still open), exit 141.
    stdout goes to /dev/null first, so that Python's own flush at exit does not fail again."""
    with suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    with suppress(OSError, ValueError):
        print(
            f"varexp {command}: stopped: its output was closed (the reader of the pipe, such "
            "as `head`, has ended)",
            file=sys.stderr,
            flush=True,
        )
    sys.exit(141)


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
_idle.set()


def mark_launcher(joblib: bool) -> None:
    """This process launches jobs: its workers (which inherit the environment) watch it, and
    with `joblib`, joblib's loky workers start watching before their first job."""
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    if not joblib:
        return
    from joblib import register_parallel_backend
    from joblib._parallel_backends import LokyBackend

    class WatchedLokyBackend(LokyBackend):
        def configure(self, *args, **kwargs):
            return super().configure(*args, initializer=worker_started, **kwargs)

    # Hydra's joblib launcher asks for the backend by this name
    register_parallel_backend("loky", WatchedLokyBackend)


def worker_started() -> None:
    """The first thing a loky worker runs: watch the launcher while waiting for jobs."""
    watch_parent()


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie waiting for its parent to
    reap it has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _children() -> list[int]:
    """The processes this one started that are still there (Linux; none known elsewhere)."""
    me, found = os.getpid(), []
    with suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                            found.append(int(entry.name))
    return found


def watch_parent() -> None:
    """Once the launcher is gone: SIGTERM to this process (a training run stops at its next
    step with a checkpoint), then exit as soon as the job is over (at most GRACE_SECONDS); at
    once when no job runs. The launcher is VAREXP_LAUNCHER_PID, else this process's parent now.
    Started once per process; job_started/job_ended mark the jobs."""
    global _watching
    if _watching:
        return
    _watching = True
    launcher = int(os.environ.get(LAUNCHER_ENV) or 0) or os.getppid()
    child = os.getppid() == launcher  # else: started by another process, or orphaned already

    def gone() -> bool:
        if child:  # reparented the moment the launcher exits, before anyone reaps it
            return os.getppid() != launcher
        return not running(launcher)

    def watch() -> None:
        while not gone():
            time.sleep(POLL_SECONDS)
        if not _idle.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            _idle.wait(GRACE_SECONDS)
        for pid in _children():  # DataLoader workers would wait seconds to notice
            with suppress(OSError):
                os.kill(pid, signal.SIGTERM)
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
    return (
        isinstance(error, KeyboardInterrupt)
        or _ctrl_c
        or (train is not None and isinstance(error, train.Interrupted))
    )


def run_benchmark(main: Callable[[], object]) -> None:
    """A benchmark's main(): the first Ctrl-C ends it with one line on stderr and status 130,
    the rows printed before complete; no traceback, no case marked failed and the next one
    started."""
    try:
        main()
    except BaseException as error:
        if not interrupted(error):
            raise
        print(
            f"{Path(sys.argv[0]).stem}: interrupted; the rows printed above are complete",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
