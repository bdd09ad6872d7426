"""iid N(0, 1) inputs (the paper's setting for Fig. 1-3). For training, a finite seeded set with
random targets: a memorization task with nothing to generalize."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from varexp.data.sources import Tensors, generator

# The natural input of each architecture when dataset.shape is null; the mlp's is (arch.width,),
# the paper's Eq. 1 network of equal widths.
NATURAL_SHAPE = {"allcnnc": (3, 32, 32), "unet": (1, 64, 64)}
CLASSES = 10


def input_shape(dataset: DictConfig, arch: DictConfig) -> tuple[int, ...]:
    if dataset.shape is not None:
        return tuple(int(n) for n in dataset.shape)
    if arch.name == "mlp":
        return (int(arch.width),)
    return NATURAL_SHAPE.get(arch.name, (3, 32, 32))


def task(arch: DictConfig) -> str:
    return "segmentation" if arch.name == "unet" else "classification"


def load(size: int, shape: tuple[int, ...], task: str, seed: int) -> dict[str, Tensors]:
    """Train and test sets of `size` inputs each; targets are uniform class ids, or for
    segmentation binary maps (size, 1, H, W) with each pixel 0 or 1 at random."""
    splits = {}
    for code, split in enumerate(("train", "test")):
        gen = generator(seed, code)
        x = torch.randn((size, *shape), generator=gen)
        if task == "segmentation":
            y = (torch.rand((size, 1, *shape[1:]), generator=gen) < 0.5).float()
        else:
            y = torch.randint(CLASSES, (size,), generator=gen)
        splits[split] = Tensors(x, y)
    return splits
