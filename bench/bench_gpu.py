"""The GPU path: steps/s and images/s of `varexp train` for the two Fig. 4 models against a bare
PyTorch loop on the same device and data, for fp32 / bf16 / channels-last / compile, and the
probe's dense-vs-sampled crossover on that device.

    python bench/bench_gpu.py                 # on a GPU machine: ALL-CNN-C x1, batch 128, and
                                              # UNet x1, 4 crops of 256x256, 300 steps each
    python bench/bench_gpu.py --quick         # a smoke run at toy sizes
    python bench/bench_gpu.py --quick --device cpu   # the smoke run without a GPU

Without CUDA and without --device cpu it says so in one line and exits with status 2.

Data: the embedded shapes (CIFAR10's format) and membranes (ISBI2012's), so the numbers need no
download; on the device pipeline (data and augmentation on the GPU), as `varexp train` uses with
CUDA. Rates are steady state: the first third of each run (cuDNN autotuning, compilation,
the data-dependent init) is left out and reported as start-up. The bare loop is what one would
write by hand with the same model, init, optimizer and batches: forward, loss, backward, step,
nothing read back. Prints markdown tables, with the device name.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext

import pandas as pd
import torch
from hydra import compose, initialize_config_module

from varexp.data import Stream, data_info
from varexp.inits import INITS, initialize
from varexp.models import build_model
from varexp.optim import make_optimizer
from varexp.probing import probe_network
from varexp.stop import interrupted, run_benchmark
from varexp.train import reset_globals, segmentation_loss, train

MODELS = {
    "allcnnc x1, batch 128, sgd": ["task=shapes", "arch.channels=1", "train.batch_size=128"],
    "unet x1, 4 x 256x256, adam": [
        "task=membranes",
        "arch.channels=1",
        "dataset.crop=256",
        "train.batch_size=4",
        "optim=adam",
    ],
}
QUICK = {
    "allcnnc x0.125, batch 32, sgd": ["task=shapes", "train.batch_size=32"],
    "unet x0.0625, 2 x 64x64, adam": [
        "task=membranes",
        "arch.channels=0.0625",
        "dataset.crop=64",
        "train.batch_size=2",
        "optim=adam",
    ],
}
VARIANTS = {
    "fp32": [],
    "bf16": ["train.amp=true"],
    "channels-last": ["train.channels_last=true"],
    "bf16 + channels-last": ["train.amp=true", "train.channels_last=true"],
    "compile": ["train.compile=true"],
}


def config(case: list[str], variant: list[str], steps: int, device: str):
    with initialize_config_module("varexp.conf", version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *case,
                *variant,
                "init=scale+bias",
                f"device={device}",
                "dataset.pipeline=auto",
                f"train.steps={steps}",
                "train.ratio_every=100",
                "train.checkpoint_every=100000",
                "train.progress=false",
            ],
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(cfg, device: torch.device) -> float:
    """Steady-state steps/s of the hand-written loop."""
    reset_globals(cfg.seed, device)
    info = data_info(cfg.dataset, cfg.arch)
    model = build_model(cfg.arch, info.input_shape, info.num_classes).to(device)
    batches = iter(Stream(cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed, device=device))
    fit = [next(batches)[0] for _ in range(cfg.init.batches)]
    initialize(model, cfg.init, cfg.arch.activation, fit if INITS[cfg.init.name].fit else None)
    channels_last = cfg.train.channels_last and fit[0].dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    forward = torch.compile(model) if cfg.train.compile else model
    loss_fn = (
        torch.nn.functional.cross_entropy if info.task == "classification" else segmentation_loss
    )
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.amp else nullcontext()
    steps, warm = cfg.train.steps, cfg.train.steps // 3
    for step in range(steps):
        if step == warm:
            sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            out = forward(x)
        loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return (steps - warm) / (time.perf_counter() - start)


def varexp_train(cfg) -> tuple[float, float]:
    """(steady-state steps/s, start-up seconds) of `varexp train` from its metrics.csv: the
    rows' times are read every train.sync_every steps, so the rate is taken between two reads."""
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, run_dir, quiet=True)
        metrics = pd.read_csv(f"{run_dir}/metrics.csv")
    warm = len(metrics) // 3
    t0, t1 = metrics.seconds.iloc[warm], metrics.seconds.iloc[-1]
    rate = (len(metrics) - 1 - warm) / (t1 - t0)
    startup = summary["seconds"] - summary["train_seconds"] + t0 - warm / rate
    return rate, startup


def probe_crossover(device: torch.device, widths: list[int], depth: int, samples: int) -> None:
    print(
        f"\nprobe, one kaiming MLP of depth {depth}, T = {samples}, with gradients "
        "(median of 3 networks)\n"
    )
    print("| width | dense s | sampled s | dense / sampled |")
    print("|---|---|---|---|")
    for width in widths:
        with initialize_config_module("varexp.conf", version_base="1.3"):
            cfg = compose(
                "probe",
                overrides=[
                    f"arch.width={width}",
                    f"arch.depth={depth}",
                    f"probe.samples={samples}",
                    f"device={device}",
                ],
            )
        x = torch.randn(samples, width, device=device)
        seconds = {}
        for method in ("dense", "sampled"):
            probe_network(cfg, x, 0, method)  # warm-up
            times = []
            for network in range(3):
                sync(device)
                start = time.perf_counter()
                probe_network(cfg, x, network, method)
                sync(device)
                times.append(time.perf_counter() - start)
            seconds[method] = sorted(times)[1]
        print(
            f"| {width} | {seconds['dense']:.3f} | {seconds['sampled']:.3f} | "
            f"{seconds['dense'] / seconds['sampled']:.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cuda",
        help="cuda (default), cuda:N, or cpu (with --quick: a smoke run)",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="toy sizes, 30 steps")
    parser.add_argument("--no-probe", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device here (torch.cuda.is_available() is False); it times the "
            "GPU path: run it on a GPU machine, or `python bench/bench_gpu.py --quick --device "
            "cpu` for a smoke run at toy sizes",
            file=sys.stderr,
        )
        sys.exit(2)
    models, steps = (QUICK, 30) if args.quick else (MODELS, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}; torch {torch.__version__}; {steps} steps, rates over the last two thirds\n",
        flush=True,
    )
    print(
        "| model | variant | bare steps/s | varexp train steps/s | images/s | overhead | "
        "start-up s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, case in models.items():
        for variant in args.variants.split(","):
            cfg = config(case, VARIANTS[variant], steps, args.device)
            try:
                ours, startup = varexp_train(cfg)
                theirs = bare(cfg, device)
            except Exception as err:  # e.g. compile without a compiler on this machine
                if interrupted(err):  # Ctrl-C: the benchmark stops (run_benchmark)
                    raise
                print(
                    f"| {label} | {variant} | failed: {type(err).__name__}: "
                    f"{str(err).splitlines()[0][:80]} | | | | |",
                    flush=True,
                )
                continue
            images = ours * cfg.train.batch_size
            print(
                f"| {label} | {variant} | {theirs:.1f} | {ours:.1f} | {images:.0f} | "
                f"{theirs / ours - 1:+.1%} | {startup:.1f} |",
                flush=True,
            )
    if not args.no_probe:
        widths = [200, 500] if args.quick else [500, 1000, 2000, 3000, 6000]
        probe_crossover(device, widths, 10 if args.quick else 50, 100)


if __name__ == "__main__":
    run_benchmark(main)
