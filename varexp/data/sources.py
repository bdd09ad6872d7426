"""In-memory datasets and how one minibatch is cut from them. A source maps sample indices and a
seeded generator to a batch (x float32, y), so a batch is a pure function of its seed. A source
lives on one device (`to`); the indices and the generator stay on the CPU, and the batch is cut
where the data is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch import Generator, Tensor

from varexp.data.augment import (
    crop_at,
    dihedral,
    elastic,
    hflip,
    on,
    pad_crop,
    randint,
    sample,
    window_grid,
)
from varexp.errors import VarexpError


def generator(*keys: int) -> Generator:
    """A torch generator seeded by a hash of the keys, e.g. (seed, purpose, batch index): nearby
    keys give unrelated streams."""
    state = np.random.SeedSequence(list(keys)).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class Source(Protocol):
    def __len__(self) -> int: ...

    def batch(self, index: Tensor, gen: Generator, augment: bool) -> tuple[Tensor, Tensor]: ...

    def to(self, device: torch.device) -> Source: ...

    def held_out(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    @property
    def nbytes(self) -> int: ...


S = TypeVar("S", bound="OnDevice")


class OnDevice:
    """For the dataclass sources below: moving one to a device moves its tensor fields."""

    def tensors(self) -> dict[str, Tensor]:
        items = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: value for name, value in items if isinstance(value, Tensor)}

    def to(self: S, device: torch.device) -> S:
        return replace(self, **{k: t.to(device) for k, t in self.tensors().items()})

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors().values())


@dataclass(frozen=True)
class Tensors(OnDevice):
    """Ready float inputs with their targets (gaussian): no augmentation, no normalization."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: Tensor, gen: Generator, augment: bool) -> tuple[Tensor, Tensor]:
        index = on(self.x, index)
        return self.x[index], self.y[index]

    def held_out(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every sample once, in order, in batches of up to batch_size (an evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


@dataclass(frozen=True)
class Images(OnDevice):
    """uint8 images (N, C, H, W) with class ids (N,); normalization by per-channel mean and std
    (C,); augmentation: zero-pad `pad` pixels per side and crop back at random (paper Sec. 5.2),
    optional flip."""

    images: Tensor
    labels: Tensor
    mean: Tensor
    std: Tensor
    pad: int = 4
    flip: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor, gen: Generator, augment: bool) -> tuple[Tensor, Tensor]:
        index = on(self.images, index)
        x = self.images[index].float() / 255
        if augment:
            # Pad before normalizing: the padding is black pixels, as in torchvision's
            # RandomCrop(32, padding=4) -> ToTensor -> Normalize recipe.
            x = pad_crop(x, self.pad, gen)
            if self.flip:
                x = hflip(x, gen)
        return (x - self.mean[:, None, None]) / self.std[:, None, None], self.labels[index]

    def held_out(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every image once, in order, unaugmented, in batches of up to batch_size."""
        for start in range(0, len(self), batch_size):
            index = torch.arange(start, min(start + batch_size, len(self)))
            yield self.batch(index, torch.Generator(), augment=False)  # (draws nothing)


@dataclass(frozen=True)
class Volume(OnDevice):
    """A stack of grayscale slices (S, H, W), already normalized, with membrane maps (S, H, W)
    in {0, 1}. A sample is a `crop` x `crop` window of slice `index` at a random position;
    augmentation warps it elastically (std `elastic_std` px) and applies one of the 8 rotations
    and reflections, identically to image and label."""

    image: Tensor
    membrane: Tensor
    crop: int
    elastic_std: float

    def __len__(self) -> int:
        return len(self.image)

    def batch(self, index: Tensor, gen: Generator, augment: bool) -> tuple[Tensor, Tensor]:
        n, (_, h, w) = len(index), self.image.shape
        top = on(self.image, randint(h - self.crop + 1, n, gen))
        left = on(self.image, randint(w - self.crop + 1, n, gen))
        index = on(self.image, index)
        x, y = self.image[index, None], self.membrane[index, None]
        if augment and self.elastic_std > 0:
            grid = elastic(window_grid(top, left, self.crop, h, w), h, w, self.elastic_std, gen)
            x, y = sample(x, grid, "bilinear"), sample(y, grid, "nearest")
        else:
            x, y = crop_at(x, top, left, self.crop), crop_at(y, top, left, self.crop)
        if augment:
            x, y = dihedral([x, y], gen)
        return x, y

    def held_out(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Unaugmented crops that tile every slice (the last row and column of tiles flush
        with its far edges, overlapping the one before where the side is not a multiple of
        the crop), in order, in batches of up to batch_size: every pixel is predicted."""
        _, h, w = self.image.shape
        tops = sorted({*range(0, h - self.crop + 1, self.crop), h - self.crop})
        lefts = sorted({*range(0, w - self.crop + 1, self.crop), w - self.crop})
        tiles = torch.tensor(
            [(i, t, left) for i in range(len(self)) for t in tops for left in lefts]
        )
        for part in tiles.split(batch_size):
            index, top, left = on(self.image, part).unbind(1)
            x, y = self.image[index, None], self.membrane[index, None]
            yield crop_at(x, top, left, self.crop), crop_at(y, top, left, self.crop)


def volume_splits(
    image: Tensor, membrane: Tensor, crop: int, val_slices: int, elastic_std: float, name: str
) -> dict[str, Volume]:
    """Hold out the last `val_slices` slices as the test split (none for 0: every slice trains);
    normalize both with the training slices' mean and std. image: uint8 (S, H, W); membrane:
    bool (S, H, W)."""
    s, h, w = image.shape
    if val_slices >= s:
        raise VarexpError(
            f"dataset.val_slices={val_slices} leaves no training slices; {name} has {s} slices"
        )
    if crop > min(h, w):
        raise VarexpError(f"dataset.crop={crop} is larger than the {h}x{w} slices of {name}")
    x = image.float() / 255
    train = x[: s - val_slices]
    x = (x - train.mean()) / train.std().clamp_min(1e-8)
    m = membrane.float()
    cut = s - val_slices
    splits = {"train": Volume(x[:cut].contiguous(), m[:cut].contiguous(), crop, elastic_std)}
    if val_slices > 0:
        splits["test"] = Volume(x[cut:].contiguous(), m[cut:].contiguous(), crop, elastic_std)
    return splits
