"""CPU thread control for the dataset generators (and tests of small tensors)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run on one CPU intra-op thread. Many small, memory-bound ops
    gain little from threads and stall badly when another process holds a core (measured 5-8x
    slower with 2 threads on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
