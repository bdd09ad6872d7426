"""Which device a command runs on: `device=auto|cpu|cuda|cuda:N`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from varexp.errors import bad_value

if TYPE_CHECKING:  # torch is imported where it is used: --help and completion read ALLOWED and
    import torch  # well_formed (varexp.schema) and never need torch

ALLOWED = "choose auto, cpu, cuda or cuda:N"


def well_formed(name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name) is not None


def check(name: str) -> None:
    """The device exists here: one line naming the devices there are, never a silent fallback
    to the CPU."""
    if not name.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise bad_value("device", name, "no CUDA device is visible here; use device=auto or cpu")
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= count:
        names = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
        raise bad_value("device", name, f"this machine has {names}")


def resolve(name: str, job: int | None = None) -> torch.device:
    """device=auto: CUDA when present, else the CPU. On a machine with several GPUs, job number
    `job` of a multirun (by default this process's job, if it is one) gets GPU job mod count, so
    the jobs a local launcher runs side by side spread over the GPUs; a cluster launcher that
    gives each job its own GPU leaves one visible, cuda:0."""
    import torch

    if name != "auto":
        return torch.device(name)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    job = multirun_job() if job is None else job
    return torch.device(f"cuda:{job % count}" if job is not None and count > 1 else "cuda")


def multirun_job() -> int | None:
    """This process's job number in a Hydra multirun, if it runs one."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return int(hydra.job.num) if hydra.mode == RunMode.MULTIRUN else None


def cuda_count() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
