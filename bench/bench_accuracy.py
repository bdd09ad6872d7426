"""What accuracy costs a training run: the training accuracy (from the step's own logits) per
step, and the held-out evaluation (`train.eval_every`) per evaluation.

    python bench/bench_accuracy.py                 # the default task (ALL-CNN-C x0.125 on shapes)
    python bench/bench_accuracy.py --steps 20 --repeats 1   # a smoke run

1. Side by side in one loop (best of --repeats rounds; --reps calls each of the first two): a
   training step (forward, loss, backward, SGD step), `varexp.train.accuracy` on that step's
   logits, and one held-out evaluation (`varexp.train.held_out` over the whole test split), for
   ALL-CNN-C on shapes and for UNet's pixel accuracy on membranes (2 test slices). An
   evaluation's cost in training steps, over train.eval_every, is the overhead a run pays.
2. Per evaluation: `varexp train` of --steps steps with train.eval_every=null against
   train.eval_every=E for each E of --every, alternated, each the best of --repeats (its
   training-loop seconds, summary.json's train_seconds). The cost of one evaluation is the
   difference over the number of evaluations; the overhead a run pays is that cost over
   E training steps.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from varexp.data import Stream, data_info
from varexp.data.catalog import load_source
from varexp.models import build_model
from varexp.optim import make_optimizer
from varexp.stop import run_benchmark
from varexp.train import accuracy, held_out, reset_globals, segmentation_loss, train

DEFAULT = ["device=cpu", "train.progress=false", "train.checkpoint_every=100000"]
UNET = ["task=membranes", "dataset.slices=6", "dataset.size=256", "dataset.cache=false",
        "dataset.val_slices=2"]  # fmt: skip


def config(*overrides: str):
    with initialize_config_module("varexp.conf", version_base="1.3"):
        return compose("train", overrides=[*DEFAULT, *overrides])


def per_step(overrides: list[str], reps: int, repeats: int) -> tuple[float, float, float, int]:
    """Seconds of a training step, of accuracy() on its logits and of one held-out evaluation
    (varexp.train.held_out over the test split), best of repeats, one after the other in each
    round; and the number of samples (crops for segmentation) an evaluation predicts."""
    cfg = config(*overrides)
    reset_globals(cfg.seed, torch.device("cpu"))
    info = data_info(cfg.dataset, cfg.arch)
    model = build_model(cfg.arch, info.input_shape, info.num_classes)
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    loss_fn = F.cross_entropy if info.task == "classification" else segmentation_loss
    x, y = next(iter(Stream(cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed)))
    test = load_source(cfg.dataset, cfg.arch, "test")
    eval_batch = max(cfg.train.batch_size, cfg.train.probe_samples)
    step_best = hits_best = eval_best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        step_best = min(step_best, (time.perf_counter() - start) / reps)
        out = out.detach()
        start = time.perf_counter()
        for _ in range(reps):
            accuracy(out, y).item()
        hits_best = min(hits_best, (time.perf_counter() - start) / reps)
        start = time.perf_counter()
        held_out(model, test, eval_batch, loss_fn, torch.device("cpu"), nullcontext())
        eval_best = min(eval_best, time.perf_counter() - start)
    return step_best, hits_best, eval_best, sum(len(x) for x, _ in test.held_out(eval_batch))


def train_seconds(steps: int, every: int | None) -> float:
    cfg = config(
        f"train.steps={steps}",
        "train.ratio_every=50",
        f"train.eval_every={'null' if every is None else every}",
    )
    with tempfile.TemporaryDirectory() as folder:
        return train(cfg, folder, quiet=True)["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as varexp trains on a shared 2-core machine (varexp.threads)

    print(
        "| task | training step | accuracy() | share of the step | one held-out evaluation "
        "| in training steps | overhead at eval_every=50 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, overrides in (
        ("allcnnc x0.125, shapes, batch 32", []),
        ("unet x0.0625, membranes 128x128 crops, batch 32", UNET),
    ):
        step, hits, each, size = per_step(overrides, args.reps, args.repeats)
        print(
            f"| {name} | {step * 1e3:.2f} ms | {hits * 1e3:.3f} ms | {hits / step:.2%} "
            f"| {each:.2f} s ({size} samples) | {each / step:.1f} | {each / step / 50:+.0%} |"
        )

    runs = [None, *args.every]
    best = {e: float("inf") for e in runs}
    for _ in range(args.repeats):
        for every in runs:
            best[every] = min(best[every], train_seconds(args.steps, every))
    cfg = config()
    test_size = cfg.dataset.test_size
    print(f"\n`varexp train` (default task), {args.steps} steps, test split of {test_size}:\n")
    print("| train.eval_every | evaluations | train_seconds | per evaluation | overhead |")
    print("|---|---|---|---|---|")
    print(f"| null | 0 | {best[None]:.1f} s | | |")
    per_step_s = best[None] / args.steps
    for every in args.every:
        count = len(range(0, args.steps, every))
        each = (best[every] - best[None]) / count
        print(
            f"| {every} | {count} | {best[every]:.1f} s | {each:.2f} s "
            f"({each / per_step_s:.1f} steps) | {each / (every * per_step_s):+.0%} |"
        )


if __name__ == "__main__":
    run_benchmark(main)
