"""Packed runs (`sweep.pack`): what training the runs that share a data stream as one batched
model buys, where.

    python bench/bench_pack.py                  # CPU: the sweep of 24 small MLP runs packed
                                                # against sweep.pack=off, the bare step
                                                # crossover, the default sweeps with auto vs off
    python bench/bench_pack.py --only sweep     # one part (sweep | bare | defaults)
    python bench/bench_pack.py --gpu            # on a GPU: packs of 1, 4, 8, 16, 24 of ALL-CNN-C
                                                # x1 (batch 128) and UNet x1 (4 x 256x256), fp32,
                                                # bf16 and channels-last (bench/gpu_check.sh)

CPU parts, each side by side and alternating (A, B, A, B, ...) in this one run, best of
--repeats per side, with the load average before and after (the machine is shared):
- sweep: `varexp sweep` of 24 runs (3 inits x 2 optimizers x 4 lrs, seed 0) of a 64x4 MLP on
  gaussian inputs, batch 32, 200 steps, hydra/launcher=basic, as a user types it, packed
  (sweep.pack=auto: one pack of 24) against sweep.pack=off (24 jobs): wall time of the command.
- bare: one training step (forward, loss, backward, optimizer) of 24 runs, as a loop over the
  24 models against varexp's stacked step (varexp.pack.stacked: vmap over stacked weights), for
  several models: the crossover behind sweep.pack=auto's CPU rule (CPU_PACK_MACS).
- defaults: `varexp sweep` (ALL-CNN-C x1/8 on shapes) and `experiment=figure4_quick` with
  sweep.pack=auto against off, shortened to --default-steps steps and one seed (on the CPU auto
  does not pack them, so both run the same jobs; this checks that auto costs nothing).

GPU part: per model and precision, the aggregate rate of a pack of k runs (images/s for
ALL-CNN-C, run-steps/s for UNet), its ratio to one run, and the GPU-hours of the paper's Fig. 4
grid (72 runs of 20k steps per task) at that rate. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch

from varexp.compose import complete, compose_config
from varexp.data import data_info
from varexp.models import ARCHITECTURES
from varexp.pack.plan import step_macs
from varexp.pack.stacked import Stack
from varexp.pack.trainer import PackRun, train_pack
from varexp.train import Trainer

MLP_SWEEP = [
    "arch=mlp",
    "arch.width=64",
    "arch.depth=4",
    "dataset=gaussian",
    "train.steps=200",
    "seed=0",
    "hydra/launcher=basic",
]
BARE = {
    "mlp 64x4, batch 32": ["arch=mlp", "arch.width=64", "arch.depth=4", "dataset=gaussian"],
    "mlp 128x4, batch 32": ["arch=mlp", "arch.width=128", "arch.depth=4", "dataset=gaussian"],
    "mlp 256x4, batch 32": ["arch=mlp", "arch.width=256", "arch.depth=4", "dataset=gaussian"],
    "mlp 1000x4, batch 32": ["arch=mlp", "arch.width=1000", "arch.depth=4", "dataset=gaussian"],
    "allcnnc x1/16, 32x32, batch 8": ["task=shapes", "arch.channels=0.0625", "train.batch_size=8"],
    "allcnnc x1/16, 32x32, batch 32": ["task=shapes", "arch.channels=0.0625"],
    "allcnnc x1/8, 32x32, batch 32 (default)": ["task=shapes"],
    "unet x1/32, 64x64, batch 8": ["task=membranes", "arch.channels=0.03125"],
    "unet x1/16, 64x64, batch 8 (quick Fig. 4)": ["task=membranes"],
    "unet x1/8, 64x64, batch 8": ["task=membranes", "arch.channels=0.125"],
    "unet x1/16, 128x128, batch 8": ["task=membranes", "dataset.crop=128"],
}
GPU = {
    "allcnnc x1, batch 128": ["task=shapes", "arch.channels=1", "train.batch_size=128"],
    "unet x1, 4 x 256x256": [
        "task=membranes",
        "arch.channels=1",
        "dataset.crop=256",
        "train.batch_size=4",
    ],
}
PRECISIONS = {"fp32": [], "bf16": ["train.amp=true"], "channels-last": ["train.channels_last=true"]}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def config(overrides: list[str]):
    """`varexp train OVERRIDES`'s config (a named arch or dataset replaces the default task)."""
    return compose_config("train", complete("train", overrides))


# ---------------------------------------------------------------------------------------------
# CPU: the sweep as a user runs it


def sweep_seconds(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "varexp", "sweep", *args],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"varexp sweep {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def alternate(sides: dict[str, list[str]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, args in sides.items():
            times[name].append(sweep_seconds(args))
    return times


def bench_sweep(repeats: int) -> None:
    print(f"\n### sweep of 24 runs (64x4 MLP, batch 32, 200 steps, basic launcher), load {load()}")
    times = alternate({"packed (auto)": MLP_SWEEP, "off": [*MLP_SWEEP, "sweep.pack=off"]}, repeats)
    print(f"(load after: {load()})\n")
    print("| sweep.pack | wall s (each run) | best | vs off |\n|---|---|---|---|")
    off = min(times["off"])
    for name, values in times.items():
        print(
            f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {min(values):.1f} | "
            f"{off / min(values):.2f}x |"
        )


def bench_defaults(repeats: int, steps: int | None, which: list[str]) -> None:
    """`varexp sweep` and `experiment=figure4_quick` with auto vs off (full length, or cut to
    `steps` steps and seed 0)."""
    short = [f"train.steps={steps}", "train.ratio_every=10", "seed=0"] if steps else []
    length = f"{steps} steps, seed 0" if steps else "as written"
    print(f"\n### default sweeps, auto vs off ({length}), load {load()}")
    cases = {
        "varexp sweep": short,
        "experiment=figure4_quick": ["experiment=figure4_quick", *short],
    }
    cases = {name: args for name, args in cases.items() if name.split("=")[-1] in which}
    print("| command | auto s | off s | off / auto |\n|---|---|---|---|")
    for name, args in cases.items():
        times = alternate({"auto": args, "off": [*args, "sweep.pack=off"]}, repeats)
        auto, off = min(times["auto"]), min(times["off"])
        print(
            f"| {name} | {', '.join(f'{v:.1f}' for v in times['auto'])} | "
            f"{', '.join(f'{v:.1f}' for v in times['off'])} | {off / auto:.2f}x |"
        )
    print(f"(load after: {load()})")


# ---------------------------------------------------------------------------------------------
# CPU: the bare step


def trainers(overrides: list[str], runs: int, device: str, tmp: Path) -> list[Trainer]:
    out = []
    optims = [("sgd", 1e-3), ("adam", 1e-4)]
    for k in range(runs):
        optim, lr = optims[k % 2]
        cfg = config(
            [*overrides, f"optim={optim}", f"optim.lr={lr}", f"device={device}", "init=kaiming"]
        )
        trainer = Trainer(cfg, tmp, data_info(cfg.dataset, cfg.arch), None, verbose=False)
        trainer.initialize_state()
        out.append(trainer)
    return out


def bare_times(
    overrides: list[str], runs: int, repeats: int, steps: int
) -> tuple[int, float, float]:
    """(multiply-adds per run-step, seconds of a loop over the models' steps, seconds of the
    stacked step), best of `repeats`, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        ts = trainers(overrides, runs, "cpu", Path(tmp))
        x, y = next(iter(ts[0].stream))
        loss_fn = ts[0].loss_fn
        stack = Stack(ts)

        def loop() -> None:
            for t in ts:
                loss = loss_fn(t.model(x), y)
                t.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t.optimizer.step()

        def stacked() -> None:
            stack.zero_grad()
            stack.losses(x, y, loss_fn, nullcontext())[0].sum().backward()
            stack.step()

        best: dict[str, list[float]] = {"loop": [], "stacked": []}
        for _ in range(repeats):
            for side, fn in (("loop", loop), ("stacked", stacked)):
                fn()
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                best[side].append((time.perf_counter() - start) / steps)
        return step_macs(ts[0].cfg), min(best["loop"]), min(best["stacked"])


def bench_bare(runs: int, repeats: int) -> None:
    print(
        f"\n### one step of {runs} runs: a loop over the models vs the stacked step, "
        f"{torch.get_num_threads()} thread(s), load {load()}\n"
    )
    print("| model | multiply-adds per run-step | loop ms | stacked ms | loop / stacked |")
    print("|---|---|---|---|---|")
    for name, overrides in BARE.items():
        macs, a, b = bare_times(overrides, runs, repeats, 20 if "mlp" in name else 2)
        print(
            f"| {name} | {macs / 1e6:.1f}M | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |",
            flush=True,
        )
    records = [r for r in ARCHITECTURES.values() if r.packable]
    rule = ", ".join(
        f"{r.name} {r.cpu_pack_macs / 1e6:.0f}M" for r in records if r.cpu_pack_macs is not None
    )
    unpacked = " or ".join(r.title for r in records if r.cpu_pack_macs is None)
    print(
        f"\nsweep.pack=auto packs CPU runs up to these multiply-adds per step: {rule}, and no "
        f"{unpacked} run (load after: {load()})"
    )


# ---------------------------------------------------------------------------------------------
# GPU: packs of k runs


def pack_rate(overrides: list[str], runs: int, steps: int, tmp: Path) -> tuple[float, float]:
    """(run-steps per second of a pack of `runs`, its start-up seconds) in steady state."""
    cfgs = []
    for k in range(runs):
        optim, lr = [("sgd", 1e-3), ("adam", 1e-4)][k % 2]
        cfgs.append(
            config(
                [
                    *overrides,
                    f"optim={optim}",
                    f"optim.lr={lr}",
                    "device=cuda",
                    "init=scale+bias",
                    f"train.steps={steps}",
                    f"train.ratio_every={steps}",
                    f"train.checkpoint_every={steps}",
                    "train.progress=false",
                ]
            )
        )
    folders = []
    for k in range(runs):
        folders.append(tmp / f"{runs}-{k}")
        folders[-1].mkdir()
    start = time.perf_counter()
    train_pack(
        [
            PackRun(c, f, data_info(c.dataset, c.arch), None)
            for c, f in zip(cfgs, folders, strict=True)
        ],
        verbose=False,
    )
    wall = time.perf_counter() - start
    seconds = pd.read_csv(folders[0] / "metrics.csv")["seconds"]
    third = len(seconds) // 3
    rate = (len(seconds) - 1 - third) / (seconds.iloc[-1] - seconds.iloc[third])
    return rate * runs, wall - (seconds.iloc[-1] - seconds.iloc[third])


def bench_gpu(steps: int, sizes: list[int]) -> None:
    name = torch.cuda.get_device_name()
    print(f"\n### packs on {name}, {steps} steps each (steady state: the last two thirds)\n")
    for model, overrides in GPU.items():
        images = int(next(o for o in overrides if o.startswith("train.batch_size")).split("=")[1])
        print(
            f"\n{model}\n\n| precision | runs per pack | run-steps/s | images/s | vs 1 run "
            "| start-up s | Fig. 4 grid (72 runs x 20k steps), GPU-hours |"
        )
        print("|---|---|---|---|---|---|---|")
        for precision, extra in PRECISIONS.items():
            one = None
            for runs in sizes:
                torch.cuda.empty_cache()
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        rate, startup = pack_rate([*overrides, *extra], runs, steps, Path(tmp))
                    except torch.OutOfMemoryError:
                        print(f"| {precision} | {runs} | out of memory | | | | |")
                        continue
                one = one or rate / runs
                hours = 72 * 20000 / rate / 3600
                print(
                    f"| {precision} | {runs} | {rate:.1f} | {rate * images:.0f} | "
                    f"{rate / one:.2f}x | {startup:.1f} | {hours:.2f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sweep", "bare", "defaults"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument(
        "--default-steps",
        type=int,
        default=20,
        help="cut the default sweeps to this many steps and seed 0 (0: as written)",
    )
    parser.add_argument(
        "--defaults",
        default="varexp sweep,figure4_quick",
        help="which default sweeps: 'varexp sweep' and/or figure4_quick",
    )
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=150, help="GPU: steps per pack")
    parser.add_argument("--sizes", default="1,4,8,16,24", help="GPU: runs per pack")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, load {load()}")
    if args.gpu:
        bench_gpu(args.steps, [int(s) for s in args.sizes.split(",")])
        return
    torch.set_num_threads(1)  # as a sweep's job has it on this machine (varexp.threads)
    if args.only in (None, "bare"):
        bench_bare(args.runs, args.repeats)
    if args.only in (None, "sweep"):
        bench_sweep(args.repeats)
    if args.only in (None, "defaults"):
        bench_defaults(args.repeats, args.default_steps or None, args.defaults.split(","))


if __name__ == "__main__":
    main()
