"""The device pipeline (dataset.pipeline=device): the split on the device, batches cut and
augmented there, giving the host pipeline's batches; resume across pipelines; the fallback to the
host for a split too large for the GPU. Run on the CPU here, and also on CUDA where there is one."""

from __future__ import annotations

import dataclasses
import itertools
import logging

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from varexp.data import Stream, catalog, data_info, stream
from varexp.data.stream import fits_on_device, resolve_pipeline
from varexp.errors import VarexpError
from varexp.train import train

ALLCNNC = OmegaConf.create({"name": "allcnnc"})
UNET = OmegaConf.create({"name": "unet"})
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = {"train_size": 300, "test_size": 50, "cache": False, "flip": True}
MEMBRANES = {"slices": 5, "size": 64, "val_slices": 1, "crop": 32, "cache": False}
CASES = {
    "shapes": ("shapes", ALLCNNC, SHAPES, 16),
    "shapes-plain": ("shapes", ALLCNNC, {**SHAPES, "augment": False}, 16),
    "membranes": ("membranes", UNET, MEMBRANES, 4),
    "membranes-no-warp": ("membranes", UNET, {**MEMBRANES, "elastic_std": 0.0}, 4),
    "membranes-plain": ("membranes", UNET, {**MEMBRANES, "augment": False}, 4),
}


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Every test gets its own data directory and an empty in-memory cache."""
    monkeypatch.setenv("VAREXP_DATA", str(tmp_path / "data"))
    catalog.clear_caches()
    yield
    catalog.clear_caches()


def config(name: str, **overrides):
    """dataset=<name>'s defaults with `overrides` (unchecked, as a user may write them)."""
    cfg = OmegaConf.create(dataclasses.asdict(catalog.DATASETS[name]()))
    cfg.update(overrides)
    return cfg


def take(s: Stream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(s, n))


def streams(case: str, device: str, seed: int = 1) -> tuple[Stream, Stream]:
    name, arch, overrides, batch = CASES[case]
    host = Stream(config(name, **overrides, pipeline="host"), arch, batch, seed, device=device)
    on_device = Stream(
        config(name, **overrides, pipeline="device"), arch, batch, seed, device=device
    )
    return host, on_device


def no_dataloader(*args, **kwargs):
    raise AssertionError("the device pipeline started a DataLoader")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_device_pipeline_cuts_the_host_pipelines_batches(case, device, monkeypatch):
    host, on_device = streams(case, device)
    assert (host.pipeline, on_device.pipeline) == ("host", "device")
    assert all(t.device.type == device for t in on_device.source.tensors().values())
    expected = take(host, 8)
    monkeypatch.setattr(stream, "DataLoader", no_dataloader)
    got = take(on_device, 8)
    tolerance = 1e-6 if device == "cpu" else 1e-4  # grid_sample on CUDA rounds differently
    for (x, y), (x2, y2) in zip(expected, got, strict=True):
        assert x2.device.type == y2.device.type == device
        assert x2.dtype == x.dtype and y2.dtype == y.dtype and x2.shape == x.shape
        assert torch.allclose(x, x2, atol=tolerance)
        # Nearest-neighbour labels may flip where a CUDA grid point rounds across a pixel edge.
        assert (y != y2).float().mean() <= (0 if device == "cpu" else 1e-3)
    # The same first and second moments of the augmented inputs, over all 8 batches.
    xs, xs2 = torch.cat([x for x, _ in expected]), torch.cat([x for x, _ in got])
    assert xs2.mean().item() == pytest.approx(xs.mean().item(), abs=tolerance)
    assert xs2.var().item() == pytest.approx(xs.var().item(), rel=tolerance)
    assert on_device.batch == host.batch == 8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["shapes", "membranes"])
def test_resume_gives_the_same_batches_on_either_pipeline(case, device):
    """A state saved on one pipeline resumes on either: batches 2..5 as without a stop."""
    name, arch, overrides, batch = CASES[case]
    reference = take(Stream(config(name, **overrides, pipeline="host"), arch, batch, 1), 6)
    for saved_on, resumed_on in itertools.product(("host", "device"), repeat=2):
        first = Stream(config(name, **overrides, pipeline=saved_on), arch, batch, 1, device=device)
        take(first, 2)
        resumed = Stream(
            config(name, **overrides, pipeline=resumed_on), arch, batch, 1, device=device
        )
        resumed.load_state_dict(first.state_dict())
        for (x, y), (x2, y2) in zip(reference[2:], take(resumed, 4), strict=True):
            assert torch.allclose(x, x2.cpu(), atol=1e-6 if device == "cpu" else 1e-4)
            assert (y != y2.cpu()).float().mean() <= (0 if device == "cpu" else 1e-3)
        assert resumed.epoch == 6 * batch // len(resumed.source)


def test_both_pipelines_leave_the_global_rng_in_the_same_state():
    host, on_device = streams("shapes", "cpu")
    after = []
    for s in (host, on_device):
        torch.manual_seed(0)
        take(s, 2)
        after.append(torch.rand(4))
    assert torch.equal(*after)


def test_a_training_run_is_the_same_on_either_pipeline(tmp_path):
    """A data-dependent init (scale) fits on the first minibatches, then draws the weights from
    the global RNG: losses and ratios agree to the last bit on the CPU."""
    for pipeline in ("host", "device"):
        with initialize_config_module("varexp.conf", version_base="1.3"):
            cfg = compose("train", overrides=[
                "arch=allcnnc", "arch.channels=0.05", "dataset=shapes", "dataset.cache=false",
                "dataset.train_size=64", "dataset.test_size=16", "device=cpu", "init=scale",
                "init.batches=2", "train.progress=false", "train.batch_size=8",
                "train.probe_samples=8", "train.steps=3", f"dataset.pipeline={pipeline}",
            ])  # fmt: skip
        train(cfg, tmp_path / pipeline)
    host, device = (pd.read_csv(tmp_path / p / "metrics.csv") for p in ("host", "device"))
    assert len(host) == 3 and host.loss.tolist() == device.loss.tolist()
    ratios = [(tmp_path / p / "ratios.csv").read_text() for p in ("host", "device")]
    assert ratios[0] == ratios[1]


# ---------------------------------------------------------------- memory: when the split fits


def test_a_split_may_take_half_the_free_device_memory():
    assert fits_on_device(500, 1000) and not fits_on_device(501, 1000)
    assert fits_on_device(150_000_000, 80_000_000_000)  # CIFAR10's uint8 images on an H100
    assert not fits_on_device(150_000_000, 200_000_000)
    assert not fits_on_device(1, 0)


def test_free_memory_counts_what_torchs_allocator_holds_unused(monkeypatch):
    """A reused joblib worker keeps an earlier job's freed blocks in torch's cache: usable."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 8000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 700)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 200)
    assert stream.free_memory(torch.device("cuda")) == 1500


def test_auto_means_device_with_cuda_and_host_otherwise(monkeypatch):
    monkeypatch.setattr(stream, "free_memory", lambda device: 10**10)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_pipeline("auto", "cifar10", 150_000_000, cuda) == "device"
    assert resolve_pipeline("auto", "cifar10", 150_000_000, cpu) == "host"
    assert resolve_pipeline("device", "cifar10", 150_000_000, cpu) == "device"
    assert resolve_pipeline("host", "cifar10", 150_000_000, cuda) == "host"


@pytest.mark.parametrize("pipeline", ["auto", "device"])
def test_a_split_too_large_for_the_gpu_stays_on_the_host_with_a_warning(
    pipeline, monkeypatch, caplog
):
    free = 1_000_000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 8 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cfg = config("shapes", **SHAPES, pipeline=pipeline)
    with caplog.at_level(logging.WARNING, logger="varexp.data.stream"):
        s = Stream(cfg, ALLCNNC, 8, seed=0, device="cuda")  # never touches CUDA here
    assert s.pipeline == "host" and s.source.images.device.type == "cpu"
    size = s.source.nbytes  # 300 images of 3x32x32 bytes, int64 labels, channel mean and std
    assert size == 300 * 3 * 32 * 32 + 300 * 8 + 2 * 3 * 4
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in message
    for part in ("train split of dataset=shapes", f"{size / 1e6:.1f} MB", f"{free / 1e6:.1f} MB"):
        assert part in message


def test_pipeline_key_is_checked():
    with pytest.raises(
        VarexpError,
        match=r"^dataset.pipeline='gpu' is not allowed; choose one of auto, host, "
        r"device$",
    ):
        data_info(config("shapes", pipeline="gpu"), ALLCNNC)
    for name in catalog.DATASETS:  # every dataset config has the key, set to auto
        assert catalog.DATASETS[name]().pipeline == "auto"


# --------------------------------------------------------------------------------- CUDA only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["shapes", "membranes"])
def test_device_pipeline_never_waits_for_the_gpu(case):
    """No .item(), .cpu() or blocking copy in the batch path: CUDA's sync check raises on any."""
    _, on_device = streams(case, "cuda")
    it = iter(on_device)
    next(it)
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [next(it) for _ in range(5)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
