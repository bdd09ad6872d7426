"""How much checking a sweep's launch does: the calls of each check while `varexp sweep ARGS`
is composed and checked (as `sweep.dry_run=true` does before it prints its plan), counted
exactly, and the seconds it took.

    python bench/bench_checks.py                          # the default grid: 72 jobs
    python bench/bench_checks.py experiment=figure4_quick  # 252 jobs

A sweep checks each combination of group options whole at its first job; a further job, which
differs only in values, has those keys (and every interpolated key) checked against their rules,
and each rule across keys runs once per distinct combination of the keys it reads
(varexp/checks.py). Before that, each of the counts below was one per job.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

from varexp import checks, compose, sweep, train
from varexp.stop import run_benchmark

COUNTED = [
    (checks, "validate", "whole-config schema walks"),
    (checks, "validate_keys", "per-key checks (a job's changed and interpolated keys)"),
    (train, "check_memory", "memory pre-checks"),
    (train, "data_info", "data shape checks"),
]


def main() -> None:
    calls: Counter[str] = Counter()
    for module, name, _ in COUNTED:
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(module, name, counted)
    args = sys.argv[1:]
    start = time.perf_counter()
    line = compose.parse("sweep", compose.complete("sweep", args), sweep.check)
    seconds = time.perf_counter() - start
    print(f"`{' '.join(['varexp sweep', *args])}`: {len(line.jobs)} jobs composed and checked in "
          f"{seconds:.1f} s\n\n| check | calls |\n|---|---|")  # fmt: skip
    for _, name, what in COUNTED:
        print(f"| {what} (`{name}`) | {calls[name]} |")


if __name__ == "__main__":
    run_benchmark(main)
