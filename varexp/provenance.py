"""What made a result: the code (git commit, or the installed version), the software versions and
the machine, recorded beside every summary, sweep table and report."""

from __future__ import annotations

import datetime
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import hydra
import torch

import varexp
from varexp.threads import available_cores


@lru_cache(maxsize=1)
def code_version() -> str:
    """`git <commit>[+changes]` for a source checkout, else the installed package version."""
    source = Path(varexp.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            dirty = "+changes" if status.stdout.strip() else ""
            return f"git {commit.stdout.strip()[:12]}{dirty}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"varexp {varexp.__version__}"


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)

    return f"{cpu_name()} ({available_cores()} cores)"


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def record(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """The provenance of a result made now on `device`."""

    return {
        "code": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hydra": hydra.__version__,
        "device": device_name(device),
        "host": socket.gethostname(),
    }
