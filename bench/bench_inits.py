"""Time every init of varexp.inits on a model, against the `lsuv` package on the same model.

    python bench/bench_inits.py                      # MLP 1000 x 50, ALL-CNN-C x1, UNet x1/4 @256
    python bench/bench_inits.py --models mlp --quick # a smoke run

Prints one markdown table: seconds per init, the forward passes the init
reports (minibatch-pass equivalents), and for the data-dependent inits the time of the fit alone
(after the weights are drawn), also in measured forward passes of one minibatch through the
same model (the package's fit: do_orthonorm=False on freshly orthogonal weights). Times are the
best of --repeats (the machine is shared; the minimum is the least disturbed run). ALL-CNN-C and
UNet come from varexp.models.build_model; until that exists they are skipped with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from varexp import inits
from varexp.inits import initialize
from varexp.models import ARCHS, build_model
from varexp.models.base import weight_layers
from varexp.models.mlp import MLP
from varexp.stop import run_benchmark

INITS = ("kaiming", "xavier", "orthogonal", "scale", "scale+bias", "lsuv")


@dataclass
class Case:
    name: str
    build: Callable[[str], nn.Module]  # init name -> fresh model
    input_shape: tuple[int, ...]  # one sample
    samples: int  # T per minibatch


def mlp_case(width: int, depth: int, samples: int) -> Case:
    return Case(f"mlp {width}x{depth}", lambda _init: MLP(width, width, depth), (width,), samples)


def registry_case(arch: str, overrides: dict, shape: tuple[int, ...], samples: int) -> Case:
    """A model of varexp.models' registry (the arch=<arch> option with `overrides`)."""
    cfg = dataclasses.replace(ARCHS[arch](), **overrides)
    label = f"{arch} x{getattr(cfg, 'channels', 1)} @{'x'.join(map(str, shape[1:]))}"
    return Case(
        label,
        lambda init: build_model(
            dataclasses.replace(cfg, norm=inits.INITS[init].norm), shape, None
        ),
        shape,
        samples,
    )


def best_seconds(
    fn: Callable[[], object], repeats: int, setup: Callable[[], object] = list
) -> float:
    """Best of `repeats` timings of fn, each after an untimed setup()."""
    times = []
    for _ in range(repeats):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class FitTimer:
    """Times varexp.inits._fit (the data-dependent part, after the weights are drawn)."""

    def __init__(self):
        self.fit, self.seconds = inits._fit, []

    def __enter__(self) -> FitTimer:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.fit(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)

        inits._fit = timed
        return self

    def __exit__(self, *exc) -> None:
        inits._fit = self.fit


def timed_init(case: Case, init: str, k: int, batches: list, repeats: int) -> tuple:
    """(best total seconds, best fit seconds or None, reported forward passes) on one model."""
    model = case.build(init)
    cfg = {"name": init} | ({"batches": k} if inits.INITS[init].fit is not None else {})
    reports = []
    with FitTimer() as fit:
        seconds = best_seconds(
            lambda: reports.append(initialize(model, cfg, batches=batches)), repeats
        )
    return seconds, min(fit.seconds, default=None), reports[-1].forward_passes


def bench(case: Case, k: int, repeats: int, with_peer: bool) -> list[dict]:
    torch.manual_seed(0)
    batches = [torch.randn(case.samples, *case.input_shape) for _ in range(k)]
    model = case.build("kaiming")
    initialize(model, {"name": "kaiming"})
    model.eval()
    with torch.no_grad():
        forward = best_seconds(lambda: model(batches[0]), repeats)
    label = f"{case.name}, {len(weight_layers(model))} layers, T={case.samples}"
    results = {f"{init} (k={k})": timed_init(case, init, k, batches, repeats) for init in INITS}
    results["lsuv (k=1)"] = timed_init(case, "lsuv", 1, batches, repeats)
    if with_peer:
        import lsuv

        model = case.build("lsuv")

        def peer(orthonormalize: bool) -> None:
            lsuv.lsuv_with_singlebatch(
                model, batches[0], do_orthonorm=orthonormalize, verbose=False
            )

        def draw() -> None:
            initialize(model, {"name": "orthogonal", "gain": 1.0})

        total = best_seconds(lambda: peer(True), repeats)
        fit = best_seconds(lambda: peer(False), repeats, setup=draw)
        results["lsuv package (1 batch)"] = (total, fit, None)
    return [
        {
            "model": label,
            "init": init,
            "seconds": seconds,
            "fit seconds": fit,
            "reported passes": passes,
            "fit / forward": None if fit is None else fit / forward,
        }
        for init, (seconds, fit, passes) in results.items()
    ]


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append("-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,allcnnc,unet")
    parser.add_argument("--k", type=int, default=5, help="minibatches for data-dependent inits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import lsuv  # noqa: F401

        with_peer = True
    except ImportError:
        print("lsuv package not installed: no peer comparison", file=sys.stderr)
        with_peer = False

    cases: list[Case | None] = []
    for name in args.models.split(","):
        if name == "mlp":
            cases.append(mlp_case(*((256, 20, 64) if args.quick else (1000, 50, 100))))
        elif name == "allcnnc":
            cases.append(registry_case("allcnnc", {"channels": 1.0}, (3, 32, 32), 32))
        elif name == "unet":
            size = 64 if args.quick else 256
            cases.append(registry_case("unet", {"channels": 0.25}, (1, size, size), 2))
        else:
            parser.error(f"unknown model {name!r}; choose from mlp, allcnnc, unet")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, k={args.k}\n")
    rows = [
        r for case in cases if case is not None for r in bench(case, args.k, repeats, with_peer)
    ]
    print(markdown(rows))


if __name__ == "__main__":
    run_benchmark(main)
