"""iid N(0, 1) inputs (the paper's setting for Fig. 1-3). For training, a finite seeded set with
random targets: a memorization task with nothing to generalize."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from varexp.data.sources import Tensors, generator
from varexp.models import architecture

CLASSES = 10


def input_shape(dataset: DictConfig, arch: DictConfig) -> tuple[int, ...]:
    """dataset.shape, or when null the architecture's natural input (its record's)."""
    if dataset.shape is not None:
        return tuple(int(n) for n in dataset.shape)
    return tuple(architecture(arch.name).natural_shape(arch))


def task(arch: DictConfig) -> str:
    """Gaussian data adapts to the architecture: the task it is built for."""
    return architecture(arch.name).task


def draw(samples: int, shape: tuple[int, ...], norm_spread: float, gen: torch.Generator) -> Tensor:
    """`samples` inputs z_t ~ iid N(0, 1), each times g_t = exp(s n_t - s^2) with n_t ~ N(0, 1)
    and s = norm_spread: E[g_t^2] = 1, so the average second moment stays 1 while s > 0
    spreads the inputs' norms (a few inputs then carry most of the sample variance, which
    lowers the effective samples: a way to vary them at fixed width and T). s = 0: the paper's
    iid N(0, 1) inputs, the same draws as without the option."""
    x = torch.randn((samples, *shape), generator=gen)
    if norm_spread > 0:
        g = torch.exp(norm_spread * torch.randn(samples, generator=gen) - norm_spread**2)
        x *= g.reshape(-1, *[1] * len(shape))
    return x


def load(
    size: int, shape: tuple[int, ...], task: str, seed: int, norm_spread: float = 0.0
) -> dict[str, Tensors]:
    """Train and test sets of `size` inputs each (`draw`); targets are uniform class ids, or for
    segmentation binary maps (size, 1, H, W) with each pixel 0 or 1 at random."""
    splits = {}
    for code, split in enumerate(("train", "test")):
        gen = generator(seed, code)
        x = draw(size, shape, norm_spread, gen)
        if task == "segmentation":
            y = (torch.rand((size, 1, *shape[1:]), generator=gen) < 0.5).float()
        else:
            y = torch.randint(CLASSES, (size,), generator=gen)
        splits[split] = Tensors(x, y)
    return splits
