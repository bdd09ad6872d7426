"""Steps per second of `varexp train` against a bare PyTorch loop on the same model, data and
batch size.

    python bench/bench_train.py            # ALL-CNN-C x0.25 and an MLP on shapes, 300 steps
    python bench/bench_train.py --steps 30 --repeats 1   # a smoke run

A third column runs `varexp train logger=tensorboard` (event files beside the CSVs).
The bare loop is what one would write by hand: the same seeded Stream, forward, loss, backward,
optimizer step, nothing else. `varexp train` adds the per-step metrics row (one loss.item()),
ratios.csv every 100 steps on the 100-input probe batch, the periodic CSV flush and a checkpoint
every --checkpoint-every steps; its time is the training loop alone (summary.json's
train_seconds), as the bare loop's is. Runs alternate (bare, train, bare, train, ...) and each
side reports its best of --repeats, since the machine is shared. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from varexp.data import Stream, data_info
from varexp.inits import initialize
from varexp.models import build_model
from varexp.optim import make_optimizer
from varexp.stop import run_benchmark
from varexp.train import reset_globals, train

CASES = {
    "allcnnc x0.25": ["arch=allcnnc", "arch.channels=0.25"],
    "mlp 256x4": ["arch=mlp", "arch.width=256", "arch.depth=4"],
}


def config(case: list[str], steps: int, checkpoint_every: int = 1000, logger: str = "csv"):
    with initialize_config_module("varexp.conf", version_base="1.3"):
        return compose("train", overrides=[*case, "~task", "dataset=shapes", "device=cpu",
                                           "init=kaiming", f"logger={logger}",
                                           f"train.steps={steps}", "train.ratio_every=100",
                                           f"train.checkpoint_every={checkpoint_every}",
                                           "train.progress=false"])  # fmt: skip


def bare(cfg) -> float:
    """Steps per second of the hand-written loop."""
    device = torch.device("cpu")
    reset_globals(cfg.seed, device)
    info = data_info(cfg.dataset, cfg.arch)
    model = build_model(cfg.arch, info.input_shape, info.num_classes)
    initialize(model, cfg.init, cfg.arch.get("activation", "relu"))
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    batches = iter(Stream(cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed))
    x, y = next(batches)
    start = time.perf_counter()
    for step in range(cfg.train.steps):
        if step:
            x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return cfg.train.steps / (time.perf_counter() - start)


def varexp_train(cfg) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, run_dir)
    return summary["steps"] / summary["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} steps, train.checkpoint_every={args.checkpoint_every}, "
          f"best of {args.repeats}\n")  # fmt: skip
    print(
        "| model (shapes, batch 32, sgd) | bare steps/s | varexp train steps/s | overhead | "
        "with logger=tensorboard | its cost |"
    )
    print("|---|---|---|---|---|---|")
    for name, case in CASES.items():
        cfg = config(case, args.steps, args.checkpoint_every)
        tb = config(case, args.steps, args.checkpoint_every, "tensorboard")
        warm = config(case, 10)  # generate the dataset, let oneDNN build its kernels
        bare(warm), varexp_train(warm)
        best_bare = best_train = best_tb = 0.0
        for _ in range(args.repeats):
            best_bare = max(best_bare, bare(cfg))
            best_train = max(best_train, varexp_train(cfg))
            best_tb = max(best_tb, varexp_train(tb))
        overhead = best_bare / best_train - 1
        print(
            f"| {name} | {best_bare:.2f} | {best_train:.2f} | {overhead:+.1%} | "
            f"{best_tb:.2f} | {best_train / best_tb - 1:+.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    run_benchmark(main)
