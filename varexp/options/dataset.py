"""The options of each dataset (config group `dataset`; loading them: varexp.data.catalog)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from varexp.schema import choice, flag, integer, number, option

PIPELINES = ("auto", "host", "device")  # where training batches are cut: see stream.py


def _workers(value: object) -> bool:
    return value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    )


def _shape(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    )


def _crop(value: object) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and value >= 16 and value % 16 == 0
    )


def workers() -> object:
    return option("auto", test=_workers, text="must be auto or an integer >= 0")


def pipeline() -> str:
    return choice("auto", PIPELINES)


def crop(default: int) -> int:
    return option(
        default, test=_crop, text="must be a positive multiple of 16 (UNet pools 4 times)"
    )


@dataclass
class Gaussian:
    """iid N(0, 1) inputs (the paper's Fig. 1-3). Probes draw a fresh batch from `seed`;
    training uses a finite set of `size` inputs with random targets (10 classes; random binary
    maps for unet): a memorization task."""

    name: str = choice("gaussian", ("gaussian",))
    shape: list[int] | None = option(
        None, test=_shape, none=True, text="must be null or a list of positive integers"
    )
    size: int = integer(1000)  # inputs per split for training
    seed: int = integer(0, minimum=0)  # of the training set (the run's seed orders batches)
    # s > 0: input t scaled by exp(s n_t - s^2), n_t ~ N(0, 1) (varexp.data.gaussian.draw)
    norm_spread: float = number(0.0, minimum=0.0, maximum=5.0)
    workers: Any = workers()
    pipeline: str = pipeline()


@dataclass
class CIFAR10:
    """CIFAR10 through torchvision (50000 train / 10000 test, 32x32 RGB, 10 classes), normalized
    per channel. Augmentation as in the paper (Sec. 5.2): zero-pad 4 px per side, random 32x32
    crop."""

    name: str = choice("cifar10", ("cifar10",))
    root: str | None = None  # holds cifar-10-batches-py/; null = $VAREXP_DATA (data_dir())
    download: bool = flag(True)  # fetch the 170 MB archive when no CIFAR10 file is there
    verify: bool = flag(True)  # torchvision's MD5 check of every file; false: a custom copy
    augment: bool = flag(True)  # pad-and-crop on the train split
    flip: bool = flag(False)  # random horizontal flips (not in the paper)
    workers: Any = workers()
    pipeline: str = pipeline()


@dataclass
class ISBI2012:
    """ISBI 2012 EM segmentation challenge: train-volume.tif and train-labels.tif (30 slices of
    512x512, uint8; labels 255 = cell interior, 0 = membrane); the model's target is membrane =
    1. No automatic download (see the README). Augmentation as in the paper (Sec. 5.2):
    90-degree rotations, reflections, elastic warps (Ronneberger et al. 2015), on random crops."""

    name: str = choice("isbi2012", ("isbi2012",))
    root: str | None = None  # holds the two TIFFs; null = $VAREXP_DATA/isbi2012
    crop: int = crop(128)  # side of the square crops (training and probes); 512 = whole slice
    val_slices: int = integer(0, minimum=0)  # the last slices held out; 0 = train on all
    augment: bool = flag(True)
    elastic_std: float = number(10.0, minimum=0.0)  # px, on a coarse 3x3 grid; 0 = no warps
    workers: Any = workers()
    pipeline: str = pipeline()


@dataclass
class Shapes:
    """Embedded, offline: 32x32 RGB images of 10 procedural shapes (disk, ring, square, frame,
    diamond, triangle, plus, cross, hbar, vbar) with random colours, striped textures and noise,
    generated from `seed`; CIFAR10's format and label convention."""

    name: str = choice("shapes", ("shapes",))
    train_size: int = integer(10000)
    test_size: int = integer(2000)
    seed: int = integer(0, minimum=0)  # of the generated images (the run's seed orders batches)
    augment: bool = flag(True)  # pad 4 px and crop back at random, as for cifar10
    flip: bool = flag(False)
    cache: bool = flag(True)  # keep the generated arrays under data_dir()/generated
    workers: Any = workers()
    pipeline: str = pipeline()


@dataclass
class Membranes:
    """Embedded, offline: EM-like grayscale slices (Voronoi cells, dark blurred membranes of
    varying thickness, textured interiors, dark unlabelled organelles, noise) with binary
    membrane maps, generated from `seed`; ISBI2012's format and target (membrane = 1)."""

    name: str = choice("membranes", ("membranes",))
    slices: int = integer(30, minimum=2)
    size: int = integer(512, minimum=16)  # slice side in pixels
    seed: int = integer(0, minimum=0)
    crop: int = crop(128)
    val_slices: int = integer(0, minimum=0)
    augment: bool = flag(True)
    elastic_std: float = number(10.0, minimum=0.0)
    cache: bool = flag(True)  # keep the generated stack under data_dir()/generated
    workers: Any = workers()
    pipeline: str = pipeline()


DATASETS: dict[str, type] = {
    "gaussian": Gaussian,
    "cifar10": CIFAR10,
    "isbi2012": ISBI2012,
    "shapes": Shapes,
    "membranes": Membranes,
}
