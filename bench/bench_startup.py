"""Start-up: how long a user waits for `varexp --help`, a command's --help, one <TAB> of shell
completion and a one-step training, each against `import torch` measured in the same rounds.

    python bench/bench_startup.py               # 5 rounds
    python bench/bench_startup.py --rounds 2    # a smoke run
    git worktree add /tmp/before <commit>       # then, before and after side by side:
    python bench/bench_startup.py --before /tmp/before
    python bench/bench_startup.py --before /tmp/before --only dynamo steps   # a training's start

Each round runs every case once as a fresh process (alternating, so the machine's load falls on
all of them alike); a case's time is its median over the rounds, and its ratio is to the median
of `import torch` in the same rounds. With --before, every varexp case runs a second time with
that checkout's varexp first on PYTHONPATH (same interpreter, same libraries). Every process
gets OMP_NUM_THREADS=1, as the tests do. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from varexp.stop import run_benchmark

PYTHON = sys.executable
CASES = {
    "import torch": [PYTHON, "-c", "import torch"],
    # what constructing any torch.optim optimizer imports (Optimizer.add_param_group is wrapped
    # by torch._disable_dynamo): the floor of a training run's start-up
    "import torch, torch._dynamo": [PYTHON, "-c", "import torch, torch._dynamo"],
    "import hydra": [PYTHON, "-c", "import hydra"],
    "varexp --help": [PYTHON, "-m", "varexp", "--help"],
    "varexp train --help": [PYTHON, "-m", "varexp", "train", "--help"],
    "varexp sweep --help": [PYTHON, "-m", "varexp", "sweep", "--help"],
    "one TAB (train arch=)": [PYTHON, "-m", "varexp", "-sc", "query=bash"],
    "one TAB (train experiment=)": [PYTHON, "-m", "varexp", "-sc", "query=bash"],
    "varexp train train.steps=1": [
        PYTHON,
        "-m",
        "varexp",
        "train",
        "train.steps=1",
        "train.progress=false",
    ],
}
# what bash puts in the environment when <TAB> is pressed after the typed line
COMPLETION_LINE = {
    "one TAB (train arch=)": "varexp train arch=",
    "one TAB (train experiment=)": "varexp train experiment=",
}
BEFORE = " (before)"


def seconds(name: str, command: list[str], folder: str, before: str | None = None) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if before is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [before, env.get("PYTHONPATH")]))
        name = name.removesuffix(BEFORE)
    if name in COMPLETION_LINE:
        env["COMP_LINE"] = COMPLETION_LINE[name]
    with tempfile.TemporaryDirectory(dir=folder) as cwd:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--before", metavar="DIR", help="a checkout of varexp to run every varexp case with too"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="TEXT", help="only the cases whose name has one of these"
    )
    args = parser.parse_args()
    cases = {
        name: command
        for name, command in CASES.items()
        if name == "import torch" or not args.only or any(text in name for text in args.only)
    }
    before = os.path.abspath(args.before) if args.before else None
    runs = []  # each varexp case beside its run before, so both meet the same load
    for name, command in cases.items():
        runs.append((name, command, None))
        if before is not None and command[1:3] == ["-m", "varexp"]:
            runs.append((name + BEFORE, command, before))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, command, checkout in runs:
                times[name].append(seconds(name, command, folder, checkout))
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    torch_s = statistics.median(times["import torch"])
    print(
        f"load {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores, {args.rounds} rounds"
        + (f"; before: {before}" if before else "")
        + "\n"
    )
    print("| what | median s | min s | x import torch |\n|---|---|---|---|")
    for name, values in sorted(
        times.items(), key=lambda item: list(CASES).index(item[0].removesuffix(BEFORE))
    ):
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {median / torch_s:.2f} |")


if __name__ == "__main__":
    run_benchmark(main)
