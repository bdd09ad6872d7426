"""An embedded offline stand-in for an electron-microscopy membrane segmentation stack: Voronoi
cells on smoothly warped coordinates, separated by dark blurred membranes of varying thickness,
with textured cell interiors, dark unlabelled organelles and noise. Labels follow the ISBI2012
convention (the model's target is membrane = 1); generated deterministically from a seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

from varexp.data.sources import generator
from varexp.threads import one_thread

CELL_AREA = 66**2  # px^2 per cell on average, about the cell size of the ISBI2012 slices


def smooth(size: int, points: int, gen: Generator, channels: int = 1) -> Tensor:
    """A smooth random field (channels, size, size) of unit-scale values: Gaussian noise on a
    coarse points x points grid, bicubically interpolated."""
    coarse = torch.randn(1, channels, points, points, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0]


def blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a 2-D image with reflected borders."""
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(x[None, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[0, 0]


def nearest_two(points: Tensor, sites: Tensor) -> tuple[Tensor, Tensor]:
    """For each point: index of its nearest site, and its distance to the Voronoi boundary with
    the second nearest, (d2^2 - d1^2) / (2 |s1 - s2|) (exact distance to their bisector)."""
    d = torch.cdist(points, sites)
    dist, index = d.topk(2, dim=1, largest=False)
    gap = (sites[index[:, 0]] - sites[index[:, 1]]).norm(dim=1).clamp_min(1e-6)
    return index[:, 0], (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2 * gap)


def slice_(size: int, gen: Generator) -> tuple[Tensor, Tensor]:
    """One float image in [0, 1] and its bool membrane map, both (size, size)."""
    cells = max(4, round(size * size / CELL_AREA))
    sites = torch.rand(cells, 2, generator=gen) * size
    span = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(span, span, indexing="ij")
    # Warping the coordinates bends the straight Voronoi edges into curved membranes.
    warp = smooth(size, 5, gen, channels=2) * (size / 40)
    points = torch.stack([yy + warp[0], xx + warp[1]], -1).view(-1, 2)
    owner, edge = nearest_two(points, sites)
    owner, edge = owner.view(size, size), edge.view(size, size)
    half_width = 1.5 + 1.5 * (smooth(size, 6, gen)[0].tanh() + 1)  # 1.5..4.5 px
    membrane = edge < half_width
    brightness = 0.55 + 0.3 * torch.rand(cells, generator=gen)
    img = brightness[owner] + 0.04 * smooth(size, 24, gen)[0]
    depth = 0.55 + 0.15 * smooth(size, 6, gen)[0].tanh()
    img = img * (1 - depth * torch.sigmoid((half_width - edge) / 0.7))
    # Organelles: dark unlabelled blobs (peaks of a fine smooth field) the model must ignore.
    organelle = smooth(size, max(4, size // 12), gen)[0] > 1.6
    img = torch.where(organelle & ~membrane, img * 0.6, img)
    img = blur(img, 1.0) + 0.05 * torch.randn(size, size, generator=gen)
    return img.clamp(0, 1), membrane


def generate(slices: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """uint8 images (slices, size, size) and bool membrane maps (True = membrane)."""
    with one_thread():
        made = [slice_(size, generator(seed, i)) for i in range(slices)]
    images = torch.stack([(img * 255).round().to(torch.uint8) for img, _ in made])
    return images, torch.stack([m for _, m in made])
