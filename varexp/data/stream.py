"""Seeded minibatches: a fixed probe batch of T inputs, and an endless training stream whose
batch i is a pure function of (seed, i), so a resumed run sees exactly the batches an
uninterrupted one would, whatever the pipeline and the number of DataLoader workers.

Two pipelines cut the same batches. host: a DataLoader (optionally with worker processes) cuts
them on the CPU and copies each to the device. device: the split is copied to the device once
and every batch is cut and augmented there, in this process; only the few random parameters
and sample indices of a batch travel, from the same CPU generators."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from varexp.data import gaussian
from varexp.data.catalog import SPLITS, data_info, dataset_spec, load_source
from varexp.data.sources import Source, generator
from varexp.errors import bad_value

log = logging.getLogger(__name__)

ORDER, AUGMENT, PROBE = 0, 1, 2  # purposes mixed into the seeds, so their streams are unrelated
# The share of the device's free memory a split may take on the device pipeline; the rest stays
# for the model, its activations and optimizer state, and each batch's temporaries.
DEVICE_SHARE = 0.5


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


def fixed_batch(
    dataset: object,
    arch: object,
    samples: int,
    seed: int,
    device: str | torch.device = "cpu",
    key: str = "probe.samples",
) -> Tensor:
    """A fixed batch of `samples` inputs (float32, no augmentation) chosen by `seed` (a probe's
    inputs, and the batch a training run measures its layers on): fresh iid N(0, 1) draws for
    gaussian, else distinct training samples (crops for segmentation). `key` is the option that
    set `samples`, named if there are not that many."""
    dataset = dataset_spec(dataset)
    info = data_info(dataset, arch)
    if info.name == "gaussian":
        gen = generator(seed, PROBE)
        return gaussian.draw(samples, info.input_shape, dataset.norm_spread, gen).to(device)
    source = load_source(dataset, arch, "train")
    if info.task == "classification" and samples > len(source):
        raise bad_value(
            key,
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
    """How DataLoader workers start: the platform's default method (fork on Linux before
    Python 3.14), named explicitly. Left unset, the DataLoader uses the process's default
    context, and inside a joblib loky worker (hydra/launcher=joblib) that has been switched to
    loky's own (a process started by a context makes it the child's default), whose launcher
    only accepts loky's own process objects and fails on the DataLoader's ('Process' object has
    no attribute 'env'). The platform default is what the DataLoader uses in a plain process,
    so workers start the same way in a single run and in a sweep; fork also needs no re-import
    of torch and shares the split copy-on-write instead of pickling it."""
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])


def fits_on_device(size_bytes: int, free_bytes: int) -> bool:
    """Whether a split of size_bytes may be copied to a device with free_bytes free."""
    return size_bytes <= DEVICE_SHARE * free_bytes


def free_memory(device: torch.device) -> int:
    """Bytes this process may still allocate on a CUDA device: free on the device, plus what
    torch's caching allocator holds unused (an earlier job in a reused joblib worker)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def resolve_pipeline(pipeline: str, what: str, size_bytes: int, device: torch.device) -> str:
    """auto: device with CUDA, else host. A split too large for the CUDA device's free memory
    (fits_on_device) stays on the host, with a one-line warning naming `what` it is, rather than
    run out of device memory during training."""
    if pipeline == "auto":
        pipeline = "device" if device.type == "cuda" else "host"
    if pipeline == "device" and device.type == "cuda":
        free = free_memory(device)
        if not fits_on_device(size_bytes, free):
            log.warning(
                "%s takes %.1f MB, more than %d%% of the %.1f MB free on %s; using the host "
                "pipeline instead", what, size_bytes / 1e6, 100 * DEVICE_SHARE, free / 1e6, device,
            )  # fmt: skip
            return "host"
    return pipeline


class Stream:
    """Endless seeded minibatches (x float32, y) of a split, on `device`: y holds class ids
    (long) for classification and membrane maps (N, 1, H, W) in {0., 1.} for segmentation.
    Augmented (per dataset.augment) on the train split only. dataset.pipeline picks where the
    batches are cut (module docstring); `pipeline` is the one in use."""

    def __init__(
        self,
        dataset: object,
        arch: object,
        batch_size: int,
        seed: int,
        split: str = "train",
        device: str | torch.device = "cpu",
    ):
        if split not in SPLITS:
            raise bad_value("split", split, "choose one of " + ", ".join(SPLITS))
        dataset = dataset_spec(dataset)
        self.info = data_info(dataset, arch)
        self.device = torch.device(device)
        source = load_source(dataset, arch, split)
        what = f"the {split} split of dataset={self.info.name}"
        self.pipeline = resolve_pipeline(dataset.pipeline, what, source.nbytes, self.device)
        self.source = source.to(self.device) if self.pipeline == "device" else source
        augment = split == "train" and bool(getattr(dataset, "augment", False))
        self.batches = Batches(self.source, batch_size, (seed, SPLITS.index(split)), augment)
        self.workers = resolve_workers(dataset.workers, self.device)
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
        return self.on_device() if self.pipeline == "device" else self.on_host()

    def on_host(self) -> Iterator[tuple[Tensor, Tensor]]:
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

    def on_device(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A starting DataLoader draws its workers' base seed from the global RNG; draw the same
        # number here, so that what a run draws next (data-dependent inits) is the same on
        # both pipelines.
        torch.empty((), dtype=torch.int64).random_()
        for i in itertools.count(self.batch):
            x, y = self.batches[i]
            self.batch = i + 1
            yield x, y
