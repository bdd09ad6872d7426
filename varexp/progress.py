"""One progress display for a whole launch of runs (a sweep's jobs side by side): runs done,
running, failed, elapsed and an ETA on one tqdm line on a terminal; elsewhere (a log, a pipe)
a plain line when runs end, at most every `every` seconds, and the last. The jobs report
through files (varexp.sweep: the launch's outcomes and running markers), so the display works
with every launcher of this machine, whichever process runs the jobs."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class Count:
    done: int  # ended this launch, or finished before it
    running: int
    failed: int


def process_age() -> float | None:
    """Seconds since this process started (from /proc; None where there is none)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LaunchDisplay:
    """Polls `count()` in a thread and shows it until close()."""

    def __init__(
        self,
        count: Callable[[], Count],
        total: int,
        estimate: float | None = None,
        desc: str = "sweep",
        every: float = 30.0,
        file=None,
    ):
        self.count, self.total, self.estimate, self.every = count, total, estimate, every
        self.file = file or sys.stderr
        self.start = time.monotonic()
        self.first: tuple[float, int] | None = None  # when this launch's first run ended
        self.initial = count().done
        self.bar = tqdm(
            total=total,
            initial=self.initial,
            desc=desc,
            unit="run",
            file=self.file,
            dynamic_ncols=True,
            disable=None,  # a terminal only
            bar_format="{desc}: {n}/{total} runs done{postfix} |{bar}|",
        )
        self.last_line, self.last_done = 0.0, -1
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True, name="launch-display")
        self.closed = False

    def __enter__(self) -> LaunchDisplay:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def eta(self, now: float, done: int) -> float | None:
        """Seconds left: from the rate of runs ending once two have ended this launch (the
        first waits for the workers' start-up), from the estimate before."""
        new = done - self.initial
        if new > 0 and self.first is None:
            self.first = (now, new)
        left = self.total - done
        if left <= 0:
            return 0.0
        if self.first is not None and new > self.first[1] and now > self.first[0]:
            rate = (new - self.first[1]) / (now - self.first[0])
            return left / rate
        if self.estimate is not None and self.estimate > now - self.start:
            return self.estimate - (now - self.start)
        if new > 0:  # (the start-up counted in: an overestimate until the next run ends)
            return (now - self.start) / new * left
        return None

    def text(self, count: Count, now: float) -> str:
        eta = self.eta(now, count.done)
        parts = [f"{count.running} running"]
        if count.failed:
            parts.append(f"{count.failed} failed")
        parts.append(f"{clock(now - self.start)} elapsed")
        if eta is not None and count.done < self.total:
            parts.append(f"about {clock(eta)} left")
        return ", ".join(parts)

    def update(self) -> None:
        try:
            count = self.count()
        except Exception:  # a file being replaced: the next poll reads it
            return
        now = time.monotonic()
        text = self.text(count, now)
        if not self.bar.disable:
            self.bar.n = count.done
            self.bar.set_postfix_str(text, refresh=True)
            return
        if count.done != self.last_done and (
            now - self.last_line >= self.every or count.done == self.total
        ):
            print(f"sweep: {count.done}/{self.total} runs done, {text}", file=self.file, flush=True)
            self.last_line, self.last_done = now, count.done

    def _poll(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                self.update()
            except (ValueError, OSError):  # its stream was closed under it: nobody reads on
                return

    def close(self) -> None:
        """The last count, and the terminal's line ended (before anything else is printed)."""
        if self.closed:
            return
        self.closed = True
        self.stopped.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=2)
        self.update()
        self.bar.close()
