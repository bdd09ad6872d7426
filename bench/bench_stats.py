"""What the per-channel statistics and effective samples add to a probe.

Times varexp.stats.sample_stats (8 statistics) against the 4 statistics a probe computed
before (per-feature mean^2, variance, ratio, second moment: the baseline, inlined here) on every
layer's pre-activations of one network, and puts the difference beside the time of that
network's whole probe (forward with statistics, backward for grad_sq).

    python bench/bench_stats.py            # ALL-CNN-C x1 and an MLP 3000 x 50, T = 100
"""

from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf
from torch import Tensor

from varexp.inits import initialize
from varexp.models import build_model
from varexp.stats import Recorder, network_stats, sample_stats
from varexp.stop import run_benchmark


def baseline_stats(u: Tensor) -> dict[str, Tensor]:
    """The statistics before per-channel ones and effective samples were added."""
    u = u.detach().reshape(u.shape[0], -1).double()
    mean = u.mean(dim=0)
    var = (u - mean).square().mean(dim=0)
    mean_sq, sample_var = mean.square().mean(), var.mean()
    return {
        "sample_mean_sq": mean_sq,
        "sample_var": sample_var,
        "ratio": (mean_sq / sample_var).sqrt(),
        "second_moment": mean_sq + sample_var,
    }


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(
    name: str, arch: dict, shape: tuple[int, ...], classes: int | None, samples: int, repeats: int
) -> None:
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(arch), shape, classes)
    initialize(model, {"name": "kaiming", "gain": None})
    x = torch.randn(samples, *shape)
    with Recorder(model, keep_u=range(1, 1000), keep_x=False) as rec:
        with torch.no_grad():
            model(x)
    layers = [rec.u[i].reshape(samples, *u_shape) for i, u_shape in shapes(model, x).items()]
    whole = best(lambda: network_stats(model, x, grad=True), repeats)
    new = best(lambda: [sample_stats(u) for u in layers], repeats)
    old = best(lambda: [baseline_stats(u) for u in layers], repeats)
    print(f"| {name} | {whole:.3f} | {old:.4f} | {new:.4f} | {(new - old) / whole:+.1%} |")


def shapes(model, x) -> dict[int, tuple[int, ...]]:
    """Each weight layer's pre-activation shape (one sample)."""
    out = {}
    with Recorder(model, keep_x=False) as rec:
        hooks = [
            wl.measured.register_forward_hook(
                lambda m, i, o, index=wl.index: out.__setitem__(index, tuple(o.shape[1:]))
            )
            for wl in rec.layers
        ]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| network, T = 100 | whole probe s | 4 statistics s | 8 statistics s | added |")
    print("|---|---|---|---|---|")
    bench(
        "ALL-CNN-C x1, 32x32",
        {"name": "allcnnc", "channels": 1.0},
        (3, 32, 32),
        10,
        100,
        args.repeats,
    )
    bench(
        "MLP 3000 x 50 (dense path)",
        {"name": "mlp", "width": 3000, "depth": 50},
        (3000,),
        None,
        100,
        args.repeats,
    )


if __name__ == "__main__":
    run_benchmark(main)
