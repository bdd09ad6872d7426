"""Seeded minibatches: a fixed probe batch of T inputs, and an endless training stream whose
batch i is a pure function of (seed, i), so a resumed run sees exactly the batches an
uninterrupted one would, whatever the number of DataLoader workers."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterator

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from varexp.data.catalog import SPLITS, data_info, load_source
from varexp.data.sources import Source, generator
from varexp.errors import bad_value

ORDER, AUGMENT, PROBE = 0, 1, 2  # purposes mixed into the seeds, so their streams are unrelated


class Batches(Dataset):
    """Batch i = samples at positions i*B .. (i+1)*B - 1 of the concatenation of one seeded
    permutation of the source per epoch, augmented with a generator seeded by (keys, i)."""

    def __init__(self, source: Source, batch_size: int, keys: tuple[int, ...], augment: bool):
        self.source, self.batch_size, self.keys, self.augment = source, batch_size, keys, augment
        self.orders: dict[int, Tensor] = {}

    def order(self, epoch: int) -> Tensor:
        if epoch not in self.orders:
            if len(self.orders) > 2:  # a batch spans few epochs; keep memory flat
                self.orders.clear()
            gen = generator(*self.keys, ORDER, epoch)
            self.orders[epoch] = torch.randperm(len(self.source), generator=gen)
        return self.orders[epoch]

    def indices(self, i: int) -> Tensor:
        n, start = len(self.source), i * self.batch_size
        first, last = start // n, (start + self.batch_size - 1) // n
        positions = torch.cat([self.order(e) for e in range(first, last + 1)])
        return positions[start - first * n : start - first * n + self.batch_size]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        gen = generator(*self.keys, AUGMENT, i)
        return self.source.batch(self.indices(i), gen, self.augment)


def probe_batch(
    dataset: DictConfig,
    arch: DictConfig,
    samples: int,
    seed: int,
    device: str | torch.device = "cpu",
) -> Tensor:
    """A fixed batch of `samples` inputs (float32, no augmentation) chosen by `seed`: fresh iid
    N(0, 1) draws for gaussian, else distinct training samples (crops for segmentation)."""
    info = data_info(dataset, arch)
    if info.name == "gaussian":
        gen = generator(seed, PROBE)
        return torch.randn((samples, *info.input_shape), generator=gen).to(device)
    source = load_source(dataset, arch, "train")
    if info.task == "classification" and samples > len(source):
        raise bad_value(
            "probe.samples",
            samples,
            f"must be <= {len(source)}, the training set size of dataset={info.name}",
        )
    x, _ = Batches(source, samples, (seed, PROBE), augment=False)[0]
    return x.to(device)


def resolve_workers(workers: int | str, device: torch.device) -> int:
    """auto: no workers on CPU, where they would take cores from training; on a GPU, up to 4
    worker processes with one core left for the main process."""
    if workers != "auto":
        return int(workers)
    return min(4, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0


def worker_context() -> multiprocessing.context.BaseContext:
    """How DataLoader workers start: the platform's default method (fork on Linux), named
    explicitly. Left unset, the DataLoader uses the process's default context, and inside a
    joblib loky worker (hydra/launcher=joblib) that has been switched to loky's own (a process
    started by a context makes it the child's default), whose launcher only accepts loky's own
    process objects and fails on the DataLoader's ('Process' object has no attribute 'env').
    The platform default is what the DataLoader uses in a plain process, so workers start the
    same way in a single run and in a sweep; fork also needs no re-import of torch and shares
    the split copy-on-write instead of pickling it."""
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])


class Stream:
    """Endless seeded minibatches (x float32, y) of a split: y holds class ids (long) for
    classification and membrane maps (N, 1, H, W) in {0., 1.} for segmentation. Augmented
    (per dataset.augment) on the train split only."""

    def __init__(
        self,
        dataset: DictConfig,
        arch: DictConfig,
        batch_size: int,
        seed: int,
        split: str = "train",
        device: str | torch.device = "cpu",
    ):
        if split not in SPLITS:
            raise bad_value("split", split, "choose one of " + ", ".join(SPLITS))
        self.info = data_info(dataset, arch)
        self.source = load_source(dataset, arch, split)
        augment = split == "train" and bool(dataset.get("augment", False))
        self.batches = Batches(self.source, batch_size, (seed, SPLITS.index(split)), augment)
        self.device = torch.device(device)
        self.workers = resolve_workers(dataset.get("workers", "auto"), self.device)
        self.batch = 0  # index of the next batch to hand out

    @property
    def epoch(self) -> int:
        """The epoch (pass over the split) that the next batch starts in."""
        return self.batch * self.batches.batch_size // len(self.source)

    def state_dict(self) -> dict:
        return {"batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; takes effect at the next iter()."""
        self.batch = int(state["batch"])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            self.batches,
            batch_size=None,  # the dataset yields whole batches
            sampler=itertools.count(self.batch),
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=self.workers > 0,
            multiprocessing_context=worker_context() if self.workers > 0 else None,
        )
        for x, y in loader:
            self.batch += 1
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
