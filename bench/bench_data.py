"""Input pipeline throughput: samples/s of each dataset's training Stream (with augmentation)
beside the training step rate of the matching model, as a markdown table; with --pipelines, the
host pipeline (DataLoader) beside the device pipeline (split on the device, augmented there) on
the best device present (CUDA, else the CPU).

    python bench/bench_data.py [--seconds 5]
    python bench/bench_data.py --pipelines [--seconds 5] [--repeats 3] [--device cpu]

CIFAR10 and ISBI2012 are benchmarked on full-size stand-in files in their real on-disk formats
(random CIFAR batches read with verify=false; a 30x512x512 TIFF pair made from `membranes`),
so no download is needed and the code path is the users'."""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from omegaconf import OmegaConf
from torch import nn

from varexp.data import Stream, data_info, membranes
from varexp.data.cifar10 import files
from varexp.data.stream import resolve_workers
from varexp.models import build_model
from varexp.stop import run_benchmark

CONF = Path(__file__).resolve().parent.parent / "conf"


def write_stand_ins(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in files()[:-1]:
        n = 10000
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    image, membrane = membranes.generate(30, 512, seed=0)
    (root / "isbi2012").mkdir()
    tifffile.imwrite(root / "isbi2012" / "train-volume.tif", image.numpy())
    tifffile.imwrite(
        root / "isbi2012" / "train-labels.tif", np.where(membrane, 0, 255).astype(np.uint8)
    )


def wait(device: torch.device | None) -> None:
    """Let queued device work finish, so that a timing covers it."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(batches, batch_size: int, seconds: float, step=None, device=None) -> float:
    """Samples per second over about `seconds`, after one warm-up batch."""
    it = iter(batches)
    x, y = next(it)
    if step:
        step(x, y)
    wait(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, y = next(it)
        if step:
            step(x, y)
        count += 1
    wait(device)
    return count * batch_size / (time.perf_counter() - start)


def train_step(model: nn.Module, segmentation: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = (
        nn.functional.binary_cross_entropy_with_logits
        if segmentation
        else nn.functional.cross_entropy
    )

    def step(x, y):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--pipelines", action="store_true", help="host vs device pipeline instead of training"
    )
    parser.add_argument("--device", default=None, help="for --pipelines; default: cuda if any")
    parser.add_argument("--repeats", type=int, default=3, help="for --pipelines: best of this many")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="varexp-bench-") as tmp:
        os.environ["VAREXP_DATA"] = tmp
        write_stand_ins(Path(tmp))
        if args.pipelines:
            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            pipelines(args.seconds, torch.device(device), args.repeats)
        else:
            table(args.seconds)


# (label, dataset, overrides, arch, arch.channels, batch size)
ROWS = [
    ("cifar10 (stand-in files)", "cifar10", {"verify": False, "download": False}, "allcnnc",
     0.25, 128),
    ("shapes", "shapes", {}, "allcnnc", 0.25, 128),
    ("isbi2012 (stand-in TIFFs), crop 128", "isbi2012", {"crop": 128}, "unet", 0.25, 4),
    ("isbi2012 (stand-in TIFFs), crop 256", "isbi2012", {"crop": 256}, "unet", 0.25, 4),
    ("membranes, crop 128", "membranes", {"crop": 128}, "unet", 0.25, 4),
    ("membranes, crop 256", "membranes", {"crop": 256}, "unet", 0.25, 4),
]  # fmt: skip


def header() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    print()


def pipelines(seconds: float, device: torch.device, repeats: int) -> None:
    """Samples/s of each training Stream (augmented) on `device`: the host pipeline without and
    with DataLoader workers (dataset.workers=auto on CUDA, 1 on the CPU), and the device one;
    the best of `repeats` rounds over the three, as other work on a shared machine only slows
    a measurement down."""
    header()
    workers = 1 if device.type == "cpu" else resolve_workers("auto", device)
    columns = ["dataset (augmented)", "batch", "device", "host, 0 workers",
               f"host, {workers} worker{'s' * (workers != 1)}", "device pipeline",
               "device / best host"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for label, name, overrides, arch_name, _, batch in ROWS:
        dataset = OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), overrides)
        arch = OmegaConf.load(CONF / "arch" / f"{arch_name}.yaml")
        settings = [("host", 0), ("host", workers), ("device", 0)]
        best = [0.0] * len(settings)
        for _ in range(repeats):
            for k, (pipeline, n) in enumerate(settings):
                dataset.pipeline, dataset.workers = pipeline, n
                stream = Stream(dataset, arch, batch, 0, device=device)
                assert stream.pipeline == pipeline, "the split did not fit on the device"
                best[k] = max(best[k], rate(stream, batch, seconds, device=device))
                del stream
        host_0, host_n, on_device = best
        print(f"| {label} | {batch} | {device.type} | {host_0:,.0f} | {host_n:,.0f} "
              f"| {on_device:,.0f} | {on_device / max(host_0, host_n):.1f}x |")  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def table(seconds: float) -> None:
    header()
    columns = ["dataset (augmented)", "batch", "loader, 0 workers", "loader, 1 worker",
               "model (channels)", "training alone", "training + loader (0 workers)"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for label, name, overrides, arch_name, channels, batch in ROWS:
        dataset = OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), overrides)
        arch = OmegaConf.merge(
            OmegaConf.load(CONF / "arch" / f"{arch_name}.yaml"), {"channels": channels}
        )
        loader = {}
        dataset.pipeline = "host"
        for workers in (0, 1):
            dataset.workers = workers
            loader[workers] = rate(Stream(dataset, arch, batch, seed=0), batch, seconds)
        dataset.workers = 0
        info = data_info(dataset, arch)
        model = build_model(arch, info.input_shape, info.num_classes)
        step = train_step(model, info.task == "segmentation")
        x, y = next(iter(Stream(dataset, arch, batch, seed=0)))
        alone = rate(itertools.repeat((x, y)), batch, seconds, step)
        together = rate(Stream(dataset, arch, batch, seed=0), batch, seconds, step)
        print(
            f"| {label} | {batch} | {loader[0]:,.0f} | {loader[1]:,.0f} | {arch_name} ({channels}) "
            f"| {alone:,.0f} | {together:,.0f} |"
        )


if __name__ == "__main__":
    run_benchmark(main)
