"""Seconds for the mean-field recursion (`varexp theory`) to depth 200, per activation.

    python bench/bench_theory.py                   # depth 200, best of 3
    python bench/bench_theory.py --depth 50 --repeats 1

Each activation runs once first (its gain, torch's first call), then reports its best of
--repeats in wall-clock and CPU seconds (the machine is shared: CPU time is the steadier one).
ReLU's row is the closed form of Eq. 7, which needs no quadrature: the baseline. Also printed:
q and the ratio m / v at the last layer, and the load average, since other jobs slow this down.
Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

from varexp.activations import ACTIVATIONS
from varexp.stop import run_benchmark
from varexp.theory import POINTS, recursion


def timed(depth: int, activation: str) -> tuple[float, float, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    table = recursion(depth, activation=activation)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, float(table.q.iloc[-1]), float(table.ratio.iloc[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"depth {args.depth}, {POINTS} Gauss-Legendre nodes per piece, best of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")  # fmt: skip
    last = f"layer {args.depth}"
    print(f"| activation | wall s | CPU s | q at {last} | ratio at {last} |")
    print("|---|---|---|---|---|")
    for activation in ACTIVATIONS:
        recursion(3, activation=activation)
        runs = [timed(args.depth, activation) for _ in range(args.repeats)]
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        q, ratio = runs[-1][2:]
        print(f"| {activation} | {wall:.3f} | {cpu:.3f} | {q:.4g} | {ratio:.4f} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    run_benchmark(main)
