"""Dense vs exact sampled probe of Kaiming ReLU MLPs, side by side.

    python bench/bench_probe.py [--width 3000] [--depth 50] [--samples 100] [--dense 3]
                                [--sampled 30] [--no-figure2] [--no-crossover]

Each measurement runs in a fresh process, so its peak RSS (ru_maxrss) is its own. Prints
markdown tables: per-network wall time, speed-up, peak memory, the sampled path's GFLOP/s
against this machine's 2000 x 2000 matmul rate, agreement of the statistics, the dense/sampled
crossover in width, and the wall time of the full Fig. 2-left probe (30 networks x widths 30,
100, 300, 1000, 3000, T = 100, depth 50) with probe.method=auto.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(n: int = 2000, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sampled_flops(width: int, depth: int, samples: int) -> float:
    """Leading-order flops of sampled_mlp with grad: per layer forward QR with Q (~4 n T^2) and
    Z R (2 n T^2); backward Z^T g, Q (.), QR of g (R only, 2 n T^2), Z' S, Q Q^T Y (4 n T^2)."""
    return depth * 18.0 * width * samples**2


def run_path(path: str, width: int, depth: int, samples: int, networks: int, queue) -> None:
    """In a child process: `networks` random Kaiming MLPs by `path`; per-network seconds,
    ratio and grad_sq per layer, peak RSS before and after."""
    from varexp.inits import initialize
    from varexp.models.mlp import MLP
    from varexp.sampled import sampled_mlp
    from varexp.stats import network_stats

    x = torch.randn(samples, width, generator=torch.Generator().manual_seed(0))
    base = peak_mb()
    seconds, ratio, grad = [], [], []
    for i in range(networks):
        torch.manual_seed(i)
        gen = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        if path == "dense":  # one nn.Linear per layer, torch's default init replaced by kaiming
            model = MLP(width, width, depth)
            initialize(model, OmegaConf.create({"name": "kaiming"}), "relu")
            rows, _ = network_stats(model, x, grad=True, generator=gen)
            del model
        else:
            rows, _ = sampled_mlp(x, depth, width, generator=gen)
        ratio.append([r["ratio"].item() for r in rows])
        grad.append([r["grad_sq"].item() for r in rows])
        seconds.append(time.perf_counter() - start)
    queue.put(dict(seconds=seconds, ratio=np.array(ratio), grad=np.array(grad), base=base,
                   peak=peak_mb()))


def in_child(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_path, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def mean_se(a: np.ndarray) -> str:
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():.3f} ± {se:.3f}"


def side_by_side(width: int, depth: int, samples: int, n_dense: int, n_sampled: int) -> None:
    rate = matmul_gflops()
    dense = in_child("dense", width, depth, samples, n_dense)
    sampled = in_child("sampled", width, depth, samples, n_sampled)
    t_dense, t_sampled = np.median(dense["seconds"]), np.median(sampled["seconds"])
    gflops = sampled_flops(width, depth, samples) / t_sampled / 1e9
    print(f"\nwidth {width}, depth {depth}, T {samples}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores; torch threads {torch.get_num_threads()} "
          f"; 2000x2000 float32 matmul: {rate:.1f} GFLOP/s\n")
    print("| path | networks run | s / network (median) | 30 networks | speed-up | peak RSS MB "
          "(over imports) | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r, t in (("dense", dense, t_dense), ("sampled", sampled, t_sampled)):
        extrapolated = " (extrapolated)" if len(r["seconds"]) < 30 else ""
        share = f"{gflops:.1f} ({100 * gflops / rate:.0f}% of matmul)"
        rate_col = share if name == "sampled" else ""
        print(f"| {name} | {len(r['seconds'])} | {t:.2f} | {30 * t:.0f} s{extrapolated} | "
              f"{t_dense / t:.1f}x | {r['peak']:.0f} ({r['peak'] - r['base']:.0f}) | {rate_col} |")
    print("\n| statistic (mean ± s.e. over networks) | dense | sampled |")
    print("|---|---|---|")
    for layer in (10, 50):
        if layer <= depth:
            print(f"| ratio, layer {layer} | {mean_se(dense['ratio'][:, layer - 1])} | "
                  f"{mean_se(sampled['ratio'][:, layer - 1])} |")
    for layer in (1, depth // 2):
        print(f"| grad_sq, layer {layer} | {mean_se(dense['grad'][:, layer - 1])} | "
              f"{mean_se(sampled['grad'][:, layer - 1])} |")


def crossover(depth: int, samples: int, widths=(50, 100, 150, 200, 300, 500)) -> None:
    print(f"\ncrossover (depth {depth}, T {samples}, kaiming with grad, median of 5 networks)\n")
    print("| width | dense s | sampled s | dense / sampled |")
    print("|---|---|---|---|")
    for w in widths:
        d = np.median(in_child("dense", w, depth, samples, 5)["seconds"])
        s = np.median(in_child("sampled", w, depth, samples, 5)["seconds"])
        print(f"| {w} | {d:.3f} | {s:.3f} | {d / s:.2f} |")


def figure2(widths=(30, 100, 300, 1000, 3000)) -> None:
    """The full Fig. 2-left experiment through the command line (probe defaults: grad on)."""
    from varexp.cli import main
    from varexp.probing import choose_method

    print("\nFig. 2 left: `varexp probe arch.width=W` (30 networks, depth 50, T 100, auto)\n")
    print("| width | path | wall s |")
    print("|---|---|---|")
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for w in widths:
            cfg = OmegaConf.create({"arch": {"name": "mlp", "width": w, "depth": 50,
                                             "norm": "none"},
                                    "init": {"name": "kaiming"},
                                    "probe": {"method": "auto", "samples": 100}})
            seconds = _timed(lambda w=w: main(["probe", f"arch.width={w}", "probe.progress=false",
                                               "device=cpu",
                                               f"hydra.run.dir={tmp}/w{w}"]))
            total += seconds
            print(f"| {w} | {choose_method(cfg, torch.device('cpu'))} | {seconds:.1f} |")
    print(f"| all | | {total:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--dense", type=int, default=3, help="dense networks to time")
    parser.add_argument("--sampled", type=int, default=30, help="sampled networks to time")
    parser.add_argument("--no-figure2", action="store_true")
    parser.add_argument("--no-crossover", action="store_true")
    args = parser.parse_args()
    side_by_side(args.width, args.depth, args.samples, args.dense, args.sampled)
    if not args.no_crossover:
        crossover(args.depth, args.samples)
    if not args.no_figure2:
        figure2()


if __name__ == "__main__":
    main()
