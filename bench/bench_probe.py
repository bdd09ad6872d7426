"""The exact sampled probe against a dense one, side by side: through the command line end to end
and in-process, alternating, with the load average next to every figure.

    python bench/bench_probe.py                  # width 3000, depth 50, T 100, 30 networks, grad_sq
    python bench/bench_probe.py --rounds 3 --no-cli
    python bench/bench_probe.py --memory         # peak memory against the pre-run estimate
    python bench/bench_probe.py --library        # varexp.probe on all threads vs threads=auto
    python bench/bench_probe.py --crossover --figure2

Command line: `varexp probe arch=mlp arch.width=W arch.depth=D probe.networks=N probe.samples=T`
as a user types it (probe.method=auto: the sampled path), the same with probe.method=dense (one
nn.Linear per layer, Kaiming weights, forward and backward of the random linear loss), and the
sampled one with probe.networks=1 (the fixed cost: start-up, config, batch, files), each a fresh
process, in alternating order from round to round. In-process: varexp.sampled.sampled_probe over
the N networks (torch's default threads, one network per worker thread) against the dense
probe of --dense networks (torch's default threads), each in a fresh process. The machine is
shared: read the ratios of the same round and the load next to them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from varexp.stop import run_benchmark


def load() -> float:
    return os.getloadavg()[0]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def varexp_probe(args: list[str], folder: str) -> tuple[float, float | None]:
    """(wall seconds of the whole command, seconds its log line gives for the networks)."""
    varexp = shutil.which("varexp") or sys.exit("varexp is not on PATH: activate the venv")
    start = time.perf_counter()
    done = subprocess.run([varexp, "probe", *args], cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"varexp probe {' '.join(args)} failed:\n{done.stderr}")
    found = re.search(r", ([\d.]+) s -> ", done.stderr + done.stdout)
    return wall, float(found.group(1)) if found else None


def cli(width: int, depth: int, samples: int, networks: int, rounds: int) -> None:
    base = [
        "arch=mlp",
        f"arch.width={width}",
        f"arch.depth={depth}",
        f"probe.networks={networks}",
        f"probe.samples={samples}",
    ]
    runs = {
        "sampled": base,
        "dense": [*base, "probe.method=dense"],
        "sampled, 1 network": [*base[:3], "probe.networks=1", base[4]],
    }
    print(f"\n### Command line: `varexp probe {' '.join(base)}`\n")
    print("| round | run | load before | wall s | networks s (its log) | load after |")
    print("|---|---|---|---|---|---|")
    walls: dict[str, list[float]] = {name: [] for name in runs}
    loads: list[float] = []
    for round_ in range(1, rounds + 1):
        order = list(runs) if round_ % 2 else list(runs)[::-1]
        for name in order:
            with tempfile.TemporaryDirectory() as folder:
                before = load()
                wall, own = varexp_probe(runs[name], folder)
                after = load()
            walls[name].append(wall)
            loads += [before, after]
            own_text = f"{own:.1f}" if own is not None else ""
            print(
                f"| {round_} | {name} | {before:.2f} | {wall:.1f} | {own_text} | {after:.2f} |",
                flush=True,
            )
    print(
        "\n| round | dense / sampled, end to end | sampled s per network (beyond 1) | "
        "fixed s (1 network) |"
    )
    print("|---|---|---|---|")
    for i in range(rounds):
        sampled, dense, one = (walls[k][i] for k in runs)
        per = (sampled - one) / (networks - 1) if networks > 1 else float("nan")
        print(f"| {i + 1} | **{dense / sampled:.1f}x** | {per:.3f} | {one:.1f} |")
    print(
        f"\nload average over the runs: {min(loads):.2f} to {max(loads):.2f} on "
        f"{os.cpu_count()} cores"
    )


def run_path(
    path: str, width: int, depth: int, samples: int, networks: int, threads: int | None, queue
) -> None:
    """In a child process: `networks` random Kaiming MLPs by `path` on `threads` torch threads
    (None: torch's default); seconds per network, ratio and grad_sq per layer, peak RSS before
    and after, load before and after."""
    if threads is not None:
        torch.set_num_threads(threads)
    from varexp.inits import initialize
    from varexp.models.mlp import MLP
    from varexp.sampled import sampled_probe
    from varexp.stats import network_stats

    x = torch.randn(samples, width, generator=torch.Generator().manual_seed(0))
    base, before = peak_mb(), load()
    rows_of = []
    start, cpu = time.perf_counter(), time.process_time()
    if path == "dense":  # one nn.Linear per layer, torch's default init replaced by kaiming
        for i in range(networks):
            torch.manual_seed(i)
            model = MLP(width, width, depth)
            initialize(model, OmegaConf.create({"name": "kaiming"}), "relu")
            rows_of.append(
                network_stats(model, x, grad=True, generator=torch.Generator().manual_seed(i))[0]
            )
            del model
    else:
        generators = [torch.Generator().manual_seed(i) for i in range(networks)]
        results = sorted(sampled_probe(x, depth, width, generators), key=lambda r: r[0])
        rows_of = [rows for _, rows, _ in results]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    queue.put(
        dict(
            seconds=seconds / networks,
            cpu=cpu / networks,
            before=before,
            after=load(),
            base=base,
            peak=peak_mb(),
            threads=torch.get_num_threads(),
            ratio=np.array([[r["ratio"].item() for r in rows] for rows in rows_of]),
            grad=np.array([[r["grad_sq"].item() for r in rows] for rows in rows_of]),
        )
    )


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


def in_process(
    width: int,
    depth: int,
    samples: int,
    networks: int,
    dense_networks: int,
    rounds: int,
    threads: int | None,
) -> None:
    print(
        f"\n### In-process: width {width}, depth {depth}, T {samples}; sampled_probe of "
        f"{networks} networks, dense of {dense_networks}; torch {torch.__version__}\n"
    )
    print(
        "| round | path | threads | load before | s / network | CPU s / network | load after "
        "| peak RSS MB (over imports) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    runs = {"sampled": [], "dense": []}
    for round_ in range(1, rounds + 1):
        order = ["sampled", "dense"] if round_ % 2 else ["dense", "sampled"]
        for path in order:
            count = networks if path == "sampled" else dense_networks
            r = in_child(path, width, depth, samples, count, threads)
            runs[path].append(r)
            print(
                f"| {round_} | {path} | {r['threads']} | {r['before']:.2f} | "
                f"{r['seconds']:.3f} | {r['cpu']:.3f} | {r['after']:.2f} | {r['peak']:.0f} "
                f"({r['peak'] - r['base']:.0f}) |",
                flush=True,
            )
    print("\n| round | dense / sampled, per network | in CPU seconds |")
    print("|---|---|---|")
    for i in range(rounds):
        dense, sampled = runs["dense"][i], runs["sampled"][i]
        print(
            f"| {i + 1} | **{dense['seconds'] / sampled['seconds']:.1f}x** | "
            f"{dense['cpu'] / sampled['cpu']:.1f}x |"
        )
    dense, sampled = runs["dense"][0], runs["sampled"][0]
    print("\n| statistic (mean ± s.e. over networks) | dense | sampled |")
    print("|---|---|---|")
    for layer in (10, depth):
        print(
            f"| ratio, layer {layer} | {mean_se(dense['ratio'][:, layer - 1])} | "
            f"{mean_se(sampled['ratio'][:, layer - 1])} |"
        )
    for layer in (1, depth // 2):
        print(
            f"| grad_sq, layer {layer} | {mean_se(dense['grad'][:, layer - 1])} | "
            f"{mean_se(sampled['grad'][:, layer - 1])} |"
        )


def library(width: int, depth: int, samples: int, rounds: int) -> None:
    """varexp.probe(model, x) on a plain nn.Sequential MLP: on all of torch's threads against
    threads="auto" (the cores other processes leave free), best of 3 each, alternating."""
    from torch import nn

    import varexp

    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        layers += [linear, nn.ReLU()]
    model, x = nn.Sequential(*layers), torch.randn(samples, width)
    varexp.probe(model, x)
    every = torch.get_num_threads()
    print(
        f"\n### Library: `varexp.probe(model, x)`, an nn.Sequential MLP of width {width}, depth "
        f"{depth}, T {samples}\n"
    )
    print(f"| round | load | threads={every} s | threads=auto s | ratio |")
    print("|---|---|---|---|---|")
    for round_ in range(1, rounds + 1):
        before = load()
        seconds = {}
        for threads in (every, "auto") if round_ % 2 else ("auto", every):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                varexp.probe(model, x, threads=threads)
                times.append(time.perf_counter() - start)
            seconds[threads] = min(times)
        print(
            f"| {round_} | {before:.2f} | {seconds[every]:.3f} | {seconds['auto']:.3f} | "
            f"{seconds[every] / seconds['auto']:.1f}x |",
            flush=True,
        )


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(width: int, depth: int, samples: int, batch: int, queue) -> None:
    """Resident memory above the start of one sampled_mlps call of `batch` networks, sampled
    every 2 ms by a thread (the peak counter of the process would include import-time peaks)."""
    import threading

    from varexp.sampled import sampled_mlps

    x = torch.randn(samples, width)
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    sampled_mlps(x, 2, width, generators[:1])  # libraries' own buffers
    base, peak, done = resident_mb(), [0.0], threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], resident_mb())

    watcher = threading.Thread(target=watch)
    watcher.start()
    sampled_mlps(x, depth, width, generators)
    done.set()
    watcher.join()
    queue.put(max(peak[0], resident_mb()) - base)


def memory_check(width: int, depth: int, samples: int) -> None:
    from varexp.memory import sampled_network_bytes

    estimate = sampled_network_bytes(width, depth, samples, width, True, False) / 2**20
    print(f"\n### Memory, width {width}, depth {depth}, T {samples}, with grad_sq\n")
    print(
        "| networks in one batch | resident MB above the start, at the peak | per network | "
        "estimate per network |"
    )
    print("|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for batch in (1, 4):
        queue = ctx.Queue()
        proc = ctx.Process(target=memory_child, args=(width, depth, samples, batch, queue))
        proc.start()
        grown = queue.get()
        proc.join()
        print(f"| {batch} | {grown:.0f} | {grown / batch:.0f} | {estimate:.0f} |", flush=True)


def crossover(
    depth: int, samples: int, threads: int | None, widths=(100, 150, 200, 300, 500)
) -> None:
    print(
        f"\n### Crossover (depth {depth}, T {samples}, kaiming with grad, 30 sampled and 5 "
        f"dense networks, {threads or 'default'} thread(s))\n"
    )
    print("| width | load | dense s / network | sampled s / network | dense / sampled |")
    print("|---|---|---|---|---|")
    for w in widths:
        d = in_child("dense", w, depth, samples, 5, threads)["seconds"]
        s = in_child("sampled", w, depth, samples, 30, threads)["seconds"]
        print(f"| {w} | {load():.2f} | {d:.3f} | {s:.3f} | {d / s:.2f} |", flush=True)


def figure2(widths=(30, 100, 300, 1000, 3000)) -> None:
    """The full Fig. 2-left experiment through the command line (probe defaults: grad on)."""
    print("\n### Fig. 2 left: `varexp probe arch.width=W` (30 networks, depth 50, T 100, auto)\n")
    print("| width | load | wall s |")
    print("|---|---|---|")
    total = 0.0
    for w in widths:
        with tempfile.TemporaryDirectory() as folder:
            before = load()
            seconds, _ = varexp_probe([f"arch.width={w}"], folder)
        total += seconds
        print(f"| {w} | {before:.2f} | {seconds:.1f} |", flush=True)
    print(f"| all | | {total:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--networks", type=int, default=30)
    parser.add_argument("--dense", type=int, default=5, help="dense networks in-process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in-process (default: torch's, one per core)",
    )
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--library", action="store_true")
    parser.add_argument("--crossover", action="store_true")
    parser.add_argument("--figure2", action="store_true")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} cores, torch {torch.__version__}, load average {load():.2f} at the start"
    )
    if not args.no_cli:
        cli(args.width, args.depth, args.samples, args.networks, args.rounds)
    if not args.no_in_process:
        in_process(
            args.width,
            args.depth,
            args.samples,
            args.networks,
            args.dense,
            args.rounds,
            args.threads,
        )
    if args.library:
        library(1000, 20, args.samples, args.rounds)
    if args.memory:
        memory_check(args.width, args.depth, args.samples)
    if args.crossover:
        crossover(args.depth, args.samples, args.threads)
    if args.figure2:
        figure2()


if __name__ == "__main__":
    run_benchmark(main)
