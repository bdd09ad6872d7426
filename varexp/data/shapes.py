"""An embedded offline stand-in for a 10-class 32x32 RGB object-recognition dataset: each image
shows one procedural shape (the class) with a random position, size, tilt, colours, striped
textures on shape and background, and pixel noise; generated deterministically from a seed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

from varexp.data.sources import generator
from varexp.threads import one_thread

CLASSES = (
    "disk", "ring", "square", "frame", "diamond", "triangle", "plus", "cross", "hbar", "vbar",
)  # fmt: skip
SIZE = 32


def pixel_grid() -> tuple[Tensor, Tensor]:
    span = torch.arange(SIZE, dtype=torch.float32)
    return torch.meshgrid(span, span, indexing="ij")


def mask(kind: int, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Inside of shape `kind` in shape-centred coordinates u (right), v (down); r: its radius."""
    d2, box = u**2 + v**2, torch.maximum(u.abs(), v.abs())
    p, q = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
    arm, bar = 0.3 * r, 0.35 * r
    return [
        lambda: d2 < r**2,
        lambda: (d2 < r**2) & (d2 > (0.55 * r) ** 2),
        lambda: box < 0.8 * r,
        lambda: (box < 0.8 * r) & (box > 0.45 * r),
        lambda: u.abs() + v.abs() < r,
        lambda: (v < 0.5 * r) & (math.sqrt(3) * u.abs() - v < r),
        lambda: ((u.abs() < arm) & (v.abs() < r)) | ((v.abs() < arm) & (u.abs() < r)),
        lambda: ((p.abs() < arm) & (q.abs() < r)) | ((q.abs() < arm) & (p.abs() < r)),
        lambda: (u.abs() < r) & (v.abs() < bar),
        lambda: (v.abs() < r) & (u.abs() < bar),
    ][kind]()


def stripes(n: int, gen: Generator) -> Tensor:
    """Random sinusoidal gratings (n, 1, SIZE, SIZE) around 1: amplitude up to 0.3, period
    4..20 px, any orientation and phase."""
    y, x = pixel_grid()
    amp, freq, angle, phase = torch.rand(4, n, 1, 1, generator=gen)
    freq = 1 / (4 + 16 * freq)
    angle, phase = angle * math.pi, phase * 2 * math.pi
    wave = torch.sin(2 * math.pi * freq * (x * angle.cos() + y * angle.sin()) + phase)
    return (1 + 0.3 * amp * wave)[:, None]


def blur(x: Tensor) -> Tensor:
    """Separable [1, 2, 1] / 4 blur with replicated borders (softens the shapes' edges)."""
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = 0.25 * x[..., :-2, :] + 0.5 * x[..., 1:-1, :] + 0.25 * x[..., 2:, :]
    return 0.25 * x[..., :-2] + 0.5 * x[..., 1:-1] + 0.25 * x[..., 2:]


def generate(n: int, seed: int, split: int = 0, chunk: int = 500) -> tuple[Tensor, Tensor]:
    """n uint8 images (n, 3, 32, 32) and their class ids (n,), a pure function of the arguments
    (split: 0 train, 1 test); made in chunks small enough to stay in the CPU cache, chunk i from
    its own generator."""
    with one_thread():
        parts = [
            generate_chunk(min(chunk, n - start), generator(seed, split, start // chunk))
            for start in range(0, n, chunk)
        ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def generate_chunk(n: int, gen: Generator) -> tuple[Tensor, Tensor]:
    labels = torch.randint(len(CLASSES), (n,), generator=gen)
    cx, cy, radius, tilt = torch.rand(4, n, 1, 1, generator=gen)
    radius = 6 + 5 * radius
    cx, cy = 10 + 12 * cx, 10 + 12 * cy
    tilt = (tilt - 0.5) * math.radians(30)  # +-15 degrees keeps square/diamond, plus/cross apart
    y, x = pixel_grid()
    dx, dy = x - cx, y - cy
    u = tilt.cos() * dx + tilt.sin() * dy
    v = -tilt.sin() * dx + tilt.cos() * dy
    inside = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    for kind in range(len(CLASSES)):
        sel = labels == kind
        inside[sel] = mask(kind, u[sel], v[sel], radius[sel])
    # Random colours, a dark shape on a light background or the reverse, so that every shape
    # stands out by at least 0.3 in each channel.
    light = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    dark = 0.35 * torch.rand(n, 3, 1, 1, generator=gen)
    bright = 0.65 + 0.35 * torch.rand(n, 3, 1, 1, generator=gen)
    background, foreground = torch.where(light, bright, dark), torch.where(light, dark, bright)
    back = background * stripes(n, gen)
    front = foreground * stripes(n, gen)
    img = torch.where(inside[:, None], front, back)
    img = blur(img)
    noise = 0.03 + 0.09 * torch.rand(n, 1, 1, 1, generator=gen)
    img = img + noise * torch.randn(img.shape, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1] (for normalization)."""
    x = images.float() / 255
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())
