"""Folder locks. While a command works in a folder it holds `.lock` there (its pid, host and
start time), so two launches into one folder cannot run at once; a lock whose process has died
on this host is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from varexp.errors import VarexpError
from varexp.stop import running  # a holder that exited, even unreaped, holds nothing

log = logging.getLogger("varexp.results")

LOCK = ".lock"


def holder(folder: Path) -> dict | None:
    """Who holds folder/.lock: another live process (its pid, host, start and command), or
    None when no one does, this process does, or the holder died on this host."""
    found = _read_lock(folder / LOCK)
    if found is None or found["host"] != socket.gethostname():
        return found
    if found["pid"] == os.getpid() or not running(found["pid"]):
        return None
    return found


def in_use(folder: Path, found: dict) -> VarexpError:
    since = time.strftime("%H:%M:%S", time.localtime(found["since"]))
    return VarexpError(
        f"{folder} is in use by {found['what']} (pid {found['pid']} on {found['host']}, since "
        f"{since}); wait for it, or choose another folder (if that process is gone, delete "
        f"{folder / LOCK})"
    )


def check_free(folder: Path) -> None:
    """Refuse (one line naming the pid) a folder another live process holds; takes nothing."""
    found = holder(folder)
    if found is not None:
        raise in_use(folder, found)


@contextmanager
def lock(folder: Path, what: str = "varexp") -> Iterator[None]:
    """Hold folder/.lock while the block runs; one line if another live process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read_lock(path)
            if found is None or (found["host"] == me["host"] and not running(found["pid"])):
                path.unlink(missing_ok=True)  # its process is gone: take it over
                continue
            if found["host"] == me["host"] and found["pid"] == me["pid"]:
                yield  # this process holds it already (a sweep's job in the launching process)
                return
            raise in_use(folder, found) from None
        except OSError as error:
            raise VarexpError(f"cannot write in {folder} ({error.strerror})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise VarexpError(f"could not take {path}; delete it if no varexp runs there")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
        return {
            "pid": int(holder["pid"]),
            "host": str(holder["host"]),
            "since": float(holder["since"]),
            "what": str(holder.get("what", "varexp")),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
