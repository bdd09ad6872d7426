"""Wall time of the main job, `varexp reproduce experiment=quick`, from scratch in a temporary
directory, then again to show that finished steps are reused.

    python bench/bench_reproduce.py
"""

import subprocess
import sys
import tempfile
import time

from varexp.stop import run_benchmark


def timed(where: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "varexp", "reproduce", "experiment=quick"],
        cwd=where,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as where:
        first, again = timed(where), timed(where)
    print("| run | wall time |\n|---|---|")
    print(
        f"| from scratch | {first / 60:.1f} min |\n| again (steps reused, plots redrawn) | "
        f"{again:.0f} s |"
    )


if __name__ == "__main__":
    run_benchmark(main)
