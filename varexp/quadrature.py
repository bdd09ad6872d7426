"""Expectations over Gaussians by Gauss-Legendre pieces that follow where the integrand bends
(used by varexp.theory for the mean-field moments and by varexp.activations for their gains).

A piece holds a function analytic well beyond its ends, where Gauss-Legendre converges
geometrically in the nodes per piece. The pieces of a row are laid out around its centres (0 and
an activation's kinks, in standardised units): each centre is an edge, with edges at GRADE^j
feature-widths on either side up to REACH widths or unit distance, plus the fixed FAR edges for
the Gaussian weight, on [-TAIL, TAIL]. A fixed layout rather than adaptive subdivision keeps a
layer of the theory to a few vectorised numpy calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np

from varexp.options.sections import POINTS

TAIL = 10.0  # integrate the unit Gaussian over [-TAIL, TAIL]: z^2 beyond it weighs 1.5e-21
FAR = (1.0, 2.0, 3.0, 4.5, 6.5)  # fixed edges (and their negatives): the Gaussian weight's pieces
GRADE = 2.5  # ratio of successive piece widths away from a feature
REACH = 40.0  # bend-widths beyond which each activation is its asymptote (silu, slowest: 2e-16)


@cache
def _legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(points)


def edges(centres: np.ndarray, widths: tuple[float, ...]) -> np.ndarray:
    """Piece edges in [-TAIL, TAIL] for each row of centres (rows, k), sorted along the row.

    Around each centre: the centre itself (a kink must be an edge) and, for each feature width
    w, offsets w * GRADE^j on both sides while below 1 and REACH * w: a piece at distance d from
    a feature is at most (GRADE - 1) d wide while the feature shapes the integrand. Beyond that
    the integrand is its asymptote (polynomial or constant) times the Gaussian weight, whose
    pieces are the fixed FAR edges.
    """
    steps = GRADE ** np.arange(math.ceil(math.log(REACH, GRADE)))
    offsets = np.concatenate([w * steps[w * steps < 1] for w in widths])
    pattern = np.concatenate([-offsets, [0.0], offsets])
    far = np.array((0.0, *FAR, TAIL))
    fixed = np.broadcast_to(np.concatenate([-far[:0:-1], far]), (len(centres), 2 * far.size - 1))
    graded = np.clip((centres[:, :, None] + pattern).reshape(len(centres), -1), -TAIL, TAIL)
    return np.sort(np.concatenate([fixed, graded], axis=1), axis=1)


def rule(edges: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and unit-Gaussian-weighted weights, shape (pieces, points), over the
    non-empty pieces between consecutive edges of each row (clipping leaves empty ones), and
    the row of each piece."""
    x, w = _legendre(points)
    row, piece = np.nonzero(edges[:, 1:] > edges[:, :-1])
    a, b = edges[row, piece], edges[row, piece + 1]
    half = ((b - a) / 2)[:, None]
    z = half * x
    z += ((a + b) / 2)[:, None]
    weights = z * z
    weights *= -0.5
    np.exp(weights, out=weights)
    weights *= half * (w / math.sqrt(2 * math.pi))
    return z, weights, row


def gaussian_expectation(
    f: Callable[[np.ndarray], np.ndarray],
    kinks: tuple[float, ...] = (),
    points: int = POINTS,
    widths: tuple[float, ...] = (1.0,),
) -> float:
    """E[f(z)] for z ~ N(0, 1), f smooth between `kinks` and varying on the scales `widths`
    near 0 and near each kink (the pieces of the module docstring)."""
    centres = np.asarray((0.0, *kinks), dtype=float)[None, :]
    z, w, _ = rule(edges(centres, widths), points)
    return float(np.sum(w * f(z)))
