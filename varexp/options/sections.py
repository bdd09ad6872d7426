"""Each command's own section of its config (`theory:`, `probe:`, `train:`, `sweep:`,
`reproduce:`): what each key may hold. The commands that read them: varexp.theory,
varexp.probing, varexp.train, varexp.sweep, varexp.reproduce."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from varexp.figures import FIGURES, SCALES
from varexp.schema import choice, flag, integer, number, option

POINTS = 12  # Gauss-Legendre nodes per piece (varexp.quadrature)
METHODS = ("auto", "dense", "sampled")  # a probe's paths: varexp.probing
SELECTIONS = ("auc", "final")
# sweep.pack (varexp.pack.plan): auto, off, or at most N runs per pack
PACK_AUTO, PACK_OFF = "auto", "off"
PACK_ALLOWED_TEXT = "must be auto, off or an integer >= 1 (the most runs per pack)"


def pack_allowed(value: object) -> bool:
    """What sweep.pack may hold: auto, off, or an integer >= 1."""
    if value in (PACK_AUTO, PACK_OFF):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class TheoryOptions:
    """`varexp theory`'s own keys (the `theory:` section)."""

    input_second_moment: float = number(1.0)  # <(x^0_i)^2>_t of the inputs
    input_correlation: float = number(0.0, minimum=-1.0, maximum=1.0)  # c of x^0, two inputs
    # Gauss-Legendre nodes per piece (non-ReLU activations); checked against half as many
    quadrature_points: int = integer(POINTS, minimum=2, maximum=1000)


@dataclass
class ProbeOptions:
    """`varexp probe`'s own keys (the `probe:` section)."""

    networks: int = integer(30)  # N random initializations
    samples: int = integer(100, minimum=2)  # T inputs in the fixed batch
    method: str = choice("auto", METHODS)  # sampled: exact O(n T^2) sampling of Gaussian MLPs
    neurons: int = integer(3, minimum=0)  # per network, saved to neurons.csv at layers 1 and L
    grad: bool = flag(True)  # grad_sq of the random linear loss L = w . x^L (paper Fig. 3)
    # H > 0: heldout.csv, a fitted init's targets on its T inputs and on H fresh ones
    heldout: int = integer(0, minimum=0)
    progress: bool = flag(True)  # a progress bar on a terminal (never in logs)


def _sync_every(value: object) -> bool:
    return value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    )


@dataclass
class TrainOptions:
    """`varexp train`'s own keys (the `train:` section; `varexp sweep` shares them)."""

    steps: int = integer(300)  # optimizer updates
    batch_size: int = integer(32, minimum=2)  # the sample variance needs 2
    ratio_every: int = integer(50)  # k: per-layer ratios on the fixed batch every k steps
    probe_samples: int = integer(100, minimum=2)  # T inputs of that batch (seeded, unaugmented)
    checkpoint_every: int = integer(100)  # steps between checkpoints (one more at the end)
    flush_seconds: float = number(30.0)  # metrics.csv and ratios.csv are also rewritten this often
    log_seconds: float = number(30.0)  # without a terminal: a progress line this often
    progress: bool = flag(True)  # a progress bar on a terminal (never in logs)
    amp: bool = flag(False)  # bf16 autocast (CUDA; on CPU it works but is slow)
    compile: bool = flag(False)  # torch.compile the training forward pass
    channels_last: bool = flag(False)  # NHWC convolutions (faster on tensor cores)
    # steps between reads of the loss on the host: each read waits for the GPU. auto: every
    # step on the CPU (where a read costs nothing), every 50 on CUDA.
    sync_every: Any = option("auto", test=_sync_every, text="must be auto or an integer >= 1")
    stop_after: int | None = integer(None, none=True)  # debug: stop here, as a kill would
    # steps between evaluations of test_loss and test_accuracy on the whole test split (each
    # costs a forward pass over it); null: none
    eval_every: int | None = integer(None, none=True)


def describe_train(cfg: object) -> str:
    """What a training run writes, and whether it evaluates on the test split (train --help)."""
    from varexp.rows import MetricsRow

    every = cfg.train.eval_every
    held_out = (
        f"every {every} steps (train.eval_every)"
        if every is not None
        else "off (train.eval_every=N: every N steps, a forward pass over the whole test split)"
    )
    return (
        f"writes metrics.csv ({', '.join(MetricsRow._fields)}), ratios.csv, summary.json and "
        f"a checkpoint to hydra.run.dir; test_loss and test_accuracy: {held_out}"
    )


@dataclass
class TrainRoot:
    """The key at the top of `varexp train`'s config (default in conf/_train.yaml)."""

    resume: bool = flag(False)  # continue the run in hydra.run.dir from its checkpoint


def learning_rates(value: object) -> bool:
    """A non-empty list of learning rates > 0 (one optimizer's grid)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            not isinstance(lr, bool) and isinstance(lr, int | float) and 0 < lr < math.inf
            for lr in value
        )
    )


def _grids(value: object) -> bool:
    return isinstance(value, dict) and all(learning_rates(grid) for grid in value.values())


def paper_lr_grids() -> dict[str, list[float]]:
    """Each optimizer record's grid (varexp.optim, read when a config is made: it imports
    these options)."""
    from varexp.optim import OPTIMIZERS

    return {name: list(o.lr_grid) for name, o in OPTIMIZERS.items()}


@dataclass
class SweepOptions:
    """`varexp sweep`'s own keys (the `sweep:` section)."""

    name: str = "default"  # the sweep's folder: outputs/sweep/<name> (the presets set their own)
    # The paper's grids (Sec. 5.2). A Cartesian sweep cannot pair each optimizer with its own
    # grid, so the sweep runs over lr_index and optim.lr picks lr_grid.<optimizer>[lr_index].
    lr_grid: dict[str, list[float]] = option(
        factory=lambda: paper_lr_grids(),
        test=_grids,
        text="must map each optimizer to a non-empty list of learning rates > 0",
    )
    lr_index: int = integer(0, minimum=0)
    # selected.csv: per arch, dataset, init and optimizer, the lr with the lowest training loss
    # averaged over seeds and over the whole run (auc: the area under the loss curve, the
    # paper's "fastest converging learning rate") or over its last select_fraction (final); a lr
    # where a seed diverged is not eligible.
    select: str = choice("auc", SELECTIONS)
    select_fraction: float = number(0.1, maximum=1.0)
    estimate: bool = flag(True)  # before the first job, time a few steps of each task
    # runs that differ only in init, optimizer and lr see the same batches: they train as one
    # batched model per job (varexp.pack), `auto` where that measured faster, `off` never, N:
    # at most N runs per pack
    pack: Any = option("auto", test=pack_allowed, text=PACK_ALLOWED_TEXT)
    dry_run: bool = flag(False)  # print the runs, the grid and the estimate, then stop


def _figures(value: object) -> bool:
    return isinstance(value, list) and len(value) > 0 and set(value) <= set(FIGURES)


def _overrides(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(e, str) for e in value)


@dataclass
class ReproduceOptions:
    """`varexp reproduce`'s own keys (the `reproduce:` section)."""

    preset: str = choice("quick", SCALES)  # the scale, set by experiment=quick|paper
    figures: list[str] = option(
        factory=lambda: list(FIGURES),
        test=_figures,
        text="must be a non-empty list from " + ", ".join(FIGURES),
    )
    extra: list[str] = option(
        factory=list, test=_overrides, text="must be a list of overrides, e.g. [device=cuda]"
    )
    dry_run: bool = flag(False)  # print the steps without running them
