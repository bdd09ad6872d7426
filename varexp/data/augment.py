"""Batched augmentations on tensors, every random draw from one torch.Generator, so that a
minibatch is a pure function of its generator's seed (paper Sec. 5.2):

- CIFAR10: zero-pad 4 pixels per side, random 32x32 crop, optional horizontal flip.
- ISBI2012: random crop, 90-degree rotations and reflections, elastic warps (Ronneberger et
  al. 2015: random displacements on a coarse 3x3 grid, std 10 px, bicubic interpolation),
  applied identically to image and label; labels are resampled nearest-neighbour so they stay
  binary.

The random parameters (offsets, flips, displacements) are drawn on the CPU generator and moved
to the device of the images, where the ops run: the same batch on any device, up to float
rounding, and the images can stay on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor


def randint(high: Tensor | int, size: int, generator: Generator) -> Tensor:
    """Integers uniform in [0, high) (high may differ per sample), on the CPU."""
    return (torch.rand(size, generator=generator) * high).long()


def on(like: Tensor, small: Tensor) -> Tensor:
    """A small CPU tensor (random parameters, sample indices) on the device of `like`. Copying
    without blocking never waits for the device's queue: from pageable memory CUDA stages the
    bytes before the call returns, so the CPU tensor may be freed at once."""
    return small.to(like.device, non_blocking=True)


def crop_at(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Per-sample `size` x `size` windows of x (N, C, H, W) at rows top, columns left (N,)."""
    n, c = x.shape[:2]
    span = torch.arange(size, device=x.device)
    rows = (on(x, top)[:, None] + span)[:, None, :, None]
    cols = (on(x, left)[:, None] + span)[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    return x[batch, torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def pad_crop(x: Tensor, pad: int, generator: Generator) -> Tensor:
    """Zero-pad `pad` pixels per side, then a random crop of the original size, per sample."""
    n, _, h, w = x.shape
    assert h == w, "square images only"
    padded = F.pad(x, (pad, pad, pad, pad))
    return crop_at(
        padded, randint(2 * pad + 1, n, generator), randint(2 * pad + 1, n, generator), h
    )


def hflip(x: Tensor, generator: Generator) -> Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = on(x, torch.rand(x.shape[0], generator=generator) < 0.5)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def dihedral(tensors: list[Tensor], generator: Generator) -> list[Tensor]:
    """One of the 8 rotations/reflections of the square per sample, the same for every tensor of
    the list (image and label): transpose, flip rows and flip columns, each with probability 1/2,
    generate the 4 rotations by 90 degrees and the 4 reflections."""
    n = tensors[0].shape[0]
    bits = on(tensors[0], torch.rand(3, n, generator=generator)[:, :, None, None, None] < 0.5)
    out = []
    for x in tensors:
        x = torch.where(bits[0], x.transpose(-1, -2), x)
        x = torch.where(bits[1], x.flip(-2), x)
        out.append(torch.where(bits[2], x.flip(-1), x))
    return out


def window_grid(top: Tensor, left: Tensor, size: int, height: int, width: int) -> Tensor:
    """grid_sample coordinates (N, size, size, 2) of the pixels of each crop window, normalized
    to [-1, 1] over the full (height, width) image (align_corners=True); on the device of top."""
    span = torch.arange(size, dtype=torch.float32, device=top.device)
    rows = top[:, None].float() + span
    cols = left[:, None].float() + span
    gy = (2 * rows / (height - 1) - 1)[:, :, None].expand(-1, size, size)
    gx = (2 * cols / (width - 1) - 1)[:, None, :].expand(-1, size, size)
    return torch.stack([gx, gy], dim=-1)


def elastic(
    grid: Tensor, height: int, width: int, std: float, generator: Generator, points: int = 3
) -> Tensor:
    """Displace the sampling grid by a smooth random field: displacements ~ N(0, std^2) pixels on
    a coarse points x points grid spanning the whole image, interpolated bicubically to every
    pixel of the window (Ronneberger et al. 2015)."""
    n = grid.shape[0]
    coarse = on(grid, torch.randn(n, 2, points, points, generator=generator) * std)
    field = F.grid_sample(coarse, grid, mode="bicubic", padding_mode="border", align_corners=True)
    scale = on(grid, torch.tensor([2 / (width - 1), 2 / (height - 1)]))
    return grid + field.permute(0, 2, 3, 1) * scale


def sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """Resample x (N, C, H, W) at grid; borders reflect (as the network's padding does)."""
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=True)
