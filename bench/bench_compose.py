"""Checking a command line before the launch: this tree against a baseline tree, side by side.

    git archive <baseline commit> | tar -x -C /tmp/varexp_base
    python bench/bench_compose.py --baseline /tmp/varexp_base [--repeats 3] [--only NAME]

Three commands, each as a user types it in an empty folder, alternating baseline and this tree
(A, B, A, B, ...) in this one run, median wall time per side, with the load average before and
after (the machine is shared):
- dry: `varexp sweep sweep.dry_run=true`: the default grid of 72 runs composed, expanded and
  checked, its plan and time estimate printed (the estimate trains a run for a few steps),
  nothing run.
- check: the same with sweep.estimate=false: the command line's composition and checks alone.
- sweep: a 24-run MLP sweep (3 inits x 2 optimizers x 4 lrs, seed 0, a 64x4 MLP on gaussian
  inputs, 50 steps, hydra/launcher=basic, sweep.pack=off): every run in the launching process,
  which Hydra's basic launcher does, so a run's config is checked once, at the launch.
The baseline runs from its own tree (PYTHONPATH first), in the same interpreter and packages
(and the same conf/, which an editable install maps to this tree's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "dry": ["sweep", "sweep.dry_run=true"],
    "check": ["sweep", "sweep.dry_run=true", "sweep.estimate=false"],
    "sweep": [
        "sweep",
        "arch=mlp",
        "arch.width=64",
        "arch.depth=4",
        "dataset=gaussian",
        "train.steps=50",
        "train.ratio_every=25",
        "seed=0",
        "hydra/launcher=basic",
        "sweep.pack=off",
        "sweep.estimate=false",
    ],
}


def timed(tree: Path | None, args: list[str]) -> float:
    """Wall seconds of `varexp ARGS` in an empty folder, run from `tree` (None: this one)."""
    env = dict(os.environ)
    env.pop("VAREXP_SMOKE", None)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "varexp", *args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"varexp {' '.join(args)} failed ({tree or 'this tree'}):\n{out.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline's tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(COMMANDS), action="append")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| command | baseline (s) | this tree (s) | this / baseline |")
    print("|---|---|---|---|")
    for name, command in COMMANDS.items():
        if args.only and name not in args.only:
            continue
        base, mine = [], []
        for _ in range(args.repeats):
            base.append(timed(args.baseline, command))
            mine.append(timed(None, command))
        b, m = statistics.median(base), statistics.median(mine)
        print(f"| `varexp {' '.join(command)}` | {b:.2f} | {m:.2f} | {m / b:.2f} |", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("bench_compose: interrupted; the rows printed above are complete", file=sys.stderr)
        sys.exit(130)
