"""CPU thread control shared by the sampled probe path and the dataset generators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(device: torch.device | None = None) -> Iterator[None]:
    """Run on one CPU intra-op thread (a no-op for other devices). Many small, memory-bound ops
    gain little from threads and stall badly when another process holds a core: measured 5-8x
    slower with 2 threads on a loaded 2-core machine (a 3000 x 100 QR: 200 ms instead of 3 ms)."""
    if device is not None and device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
