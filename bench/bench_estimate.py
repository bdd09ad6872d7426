"""The time estimates varexp prints against the time the commands then take, on this machine
now, each command as a user types it in an empty folder.

    python bench/bench_estimate.py                      # the default sweep at smoke size
    python bench/bench_estimate.py --full               # the default sweep: 72 runs, ~10 min
    python bench/bench_estimate.py --reproduce          # reproduce experiment=quick, smoke size
    python bench/bench_estimate.py -- sweep seed=0      # any command (its own arguments)

For each command: the estimate it printed (its `time:` or `estimate:` line), the seconds from
that line to the command's exit (what the estimate is of), the whole command's wall time, their
ratio, and the load average before and after (the machine is shared: read the ratio with the
load beside it). Target: actual / estimate within 1/1.5 .. 1.5.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from varexp.stop import run_benchmark

UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
ESTIMATE = re.compile(r"(?:time|estimate): about ([\d.]+) (s|min|h)\b")


def load() -> float:
    return os.getloadavg()[0]


def measure(args: list[str], smoke: bool) -> dict:
    """Run `varexp ARGS` in an empty folder; when its estimate appeared, when it ended."""
    env = {k: v for k, v in os.environ.items() if k != "VAREXP_SMOKE"}
    if smoke:
        env["VAREXP_SMOKE"] = "1"
    with tempfile.TemporaryDirectory() as where:
        before = load()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "varexp", *args],
            cwd=where,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        estimate = told_at = None
        lines = 0
        for line in proc.stdout:
            lines += 1
            found = ESTIMATE.search(line)
            if found and estimate is None:
                estimate = float(found.group(1)) * UNITS[found.group(2)]
                told_at = time.perf_counter()
                print(f"  ({told_at - start:.0f} s) {line.strip()}", file=sys.stderr, flush=True)
        proc.wait()
        end = time.perf_counter()
    return dict(
        command=("VAREXP_SMOKE=1 " if smoke else "") + "varexp " + " ".join(args),
        estimate=estimate,
        after=None if told_at is None else end - told_at,
        whole=end - start,
        lines=lines,
        load=f"{before:.1f} -> {load():.1f}",
        rc=proc.returncode,
    )


def row(r: dict) -> str:
    est, after = r["estimate"], r["after"]
    ratio = f"{after / est:.2f}" if est and after else "-"
    shown = "-" if est is None else f"{est:.0f} s"
    return (
        f"| `{r['command']}` | {shown} | {after or 0:.0f} s | {r['whole']:.0f} s | {ratio} | "
        f"{r['lines']} | {r['load']} | {r['rc']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the sweep at full size (72 runs)")
    parser.add_argument("--reproduce", action="store_true", help="reproduce experiment=quick")
    parser.add_argument("args", nargs="*", help="a varexp command line instead")
    opts = parser.parse_args()
    if opts.args:
        cases = [(opts.args, not opts.full)]
    elif opts.reproduce:
        cases = [(["reproduce", "experiment=quick"], not opts.full)]
    else:
        cases = [(["sweep"], not opts.full)]
    print(
        "| command | estimate | after the estimate | whole command | actual / estimate | "
        "lines printed | load | exit |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for args, smoke in cases:
        print(row(measure(args, smoke)), flush=True)


if __name__ == "__main__":
    run_benchmark(main)
