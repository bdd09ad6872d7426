"""CPU threads: how many torch uses in a run, and one thread for many small operations.

Torch's intra-op threads wait for each other at the end of every parallel operation. When a core
is busy with other work (another job of the same sweep, another user's process), a thread that
loses its core makes the others wait, and a small model trains many times slower than on one
thread: measured 2.5 vs 31 steps/s for a narrow ALL-CNN-C on the 2-core machine at load 2-4.
So `threads=auto` gives each run the cores no one else is using.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

_free_at_start: int | None = None  # measured once per process: later jobs would see our own load


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores not busy with other work when this process first asked (1-minute load average)."""
    global _free_at_start
    if _free_at_start is None:
        cores = available_cores()
        try:
            busy = round(os.getloadavg()[0])
        except OSError:
            busy = 0
        _free_at_start = max(1, cores - busy)
    return _free_at_start


def _state(task: str) -> str:
    with open(f"{task}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()[0]  # after the command name, which may hold ")"


def busy_elsewhere(samples: int = 5, interval: float = 0.002) -> int:
    """Threads of other processes running or waiting for a core now: the system's runnable
    threads (/proc/loadavg) less this process's own (/proc/self/task), the median of `samples`
    looks `interval` s apart. Unlike the load average, this process's own recent work does not
    count. Raises OSError off Linux."""
    counts = []
    for look in range(samples):
        if look:
            time.sleep(interval)
        with open("/proc/loadavg", encoding="ascii") as f:
            runnable = int(f.read().split()[3].partition("/")[0])
        own = 0
        for task in os.scandir("/proc/self/task"):
            try:
                own += _state(task.path) == "R"
            except OSError:  # the thread ended
                pass
        counts.append(max(0, runnable - own))
    return sorted(counts)[len(counts) // 2]


def free_cores_now() -> int:
    """Cores other processes leave free at this moment, for a process that runs long and asks
    before each piece of work (the library: a notebook's load changes). Off Linux: free_cores()."""
    try:
        busy = busy_elsewhere()
    except (OSError, ValueError, IndexError):
        return free_cores()
    return max(1, available_cores() - busy)


def auto_threads(parallel_jobs: int = 1) -> int:
    """The cores shared among the jobs that run side by side, and no more than are free."""
    share = available_cores() // max(1, parallel_jobs)
    return max(1, min(share, free_cores()))


def configure(setting: int | str, parallel_jobs: int = 1) -> int:
    """Set torch's intra-op threads for this process (`threads` key: auto or a count)."""
    count = auto_threads(parallel_jobs) if setting == "auto" else int(setting)
    torch.set_num_threads(count)
    return count


@contextmanager
def using_threads(count: int) -> Iterator[None]:
    """Run on `count` CPU intra-op threads, then restore torch's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread() -> AbstractContextManager[None]:
    """Run on one CPU intra-op thread. Many small, memory-bound ops gain little from threads and
    stall badly when another process holds a core (measured 5-8x slower with 2 threads on a
    loaded 2-core machine)."""
    return using_threads(1)
