"""Infinite-width mean-field theory of the sample statistics (paper Sec. 3.1, Eq. 6-8).

Layer l has weights of variance sigma_w^2 / fan_in. Over networks, the pre-activations of two
distinct inputs a, b are jointly Gaussian with second moment q = sigma_w^2 <x^2> and cross
moment q_ab = sigma_w^2 <x_a x_b> (Poole et al. 2016). Since the total mean is 0, Eq. 5-6 give
m^2 = q_ab and v^2 = q - q_ab. ReLU has the closed-form kernel K (Eq. 7); any other activation is
integrated numerically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from varexp.activations import Activation, get_activation

TAIL = 12.0  # integrate the unit Gaussian over [-TAIL, TAIL]; the rest is below 1e-32
POINTS = 101


def relu_kernel(c: np.ndarray | float) -> np.ndarray | float:
    """K(c) of Eq. 7: the cosine similarity of ReLU(u_a), ReLU(u_b) for inputs of similarity c."""
    c = np.clip(c, -1.0, 1.0)
    return (np.sqrt(1.0 - c * c) + (math.pi - np.arccos(c)) * c) / math.pi


def relu_kernel_slope(c: np.ndarray | float) -> np.ndarray | float:
    """dK/dc = (pi - arccos c) / pi, which tends to 1 as c -> 1 (sub-exponential decay, 3.1.1)."""
    return (math.pi - np.arccos(np.clip(c, -1.0, 1.0))) / math.pi


def sample_std_after_relu() -> float:
    """sigma_s = sqrt(1 - K(0)) = 0.826: the sample std one Kaiming ReLU layer leaves (Sec. 4)."""
    return math.sqrt(1.0 - relu_kernel(0.0))


def gradient_slope() -> float:
    """Slope of log <(dL/dx^l)^2> vs l when each layer is rescaled by 1/sigma_s: log(sigma_s^2)."""
    return math.log(1.0 - relu_kernel(0.0))


def _pieces(kinks: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and unit-Gaussian-weighted weights on [-TAIL, TAIL], split at `kinks`.

    kinks has shape (..., k); returns nodes and weights of shape (..., (k + 1) * points). Splitting
    at the activation's kinks keeps the rule spectrally accurate: plain Gauss-Hermite converges
    only like 1/points across a ReLU kink (2.6e-3 off at 101 points).
    """
    x, w = np.polynomial.legendre.leggauss(points)
    edges = np.clip(kinks, -TAIL, TAIL)
    lo_hi = np.full(kinks.shape[:-1] + (1,), TAIL)
    edges = np.sort(np.concatenate([-lo_hi, edges, lo_hi], axis=-1), axis=-1)
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    nodes = (a + b) / 2 + (b - a) / 2 * x
    weights = (b - a) / 2 * w * np.exp(-(nodes**2) / 2) / math.sqrt(2 * math.pi)
    shape = kinks.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


def gaussian_expectation(
    f: Callable[[np.ndarray], np.ndarray], kinks: tuple[float, ...] = (), points: int = POINTS
) -> float:
    """E[f(z)] for z ~ N(0, 1), f smooth between `kinks`."""
    z, w = _pieces(np.asarray(kinks, dtype=float), points)
    return float(np.sum(w * f(z)))


def cross_moment(act: Activation, q: float, q_ab: float, points: int = POINTS) -> float:
    """E[f(u_a) f(u_b)] for (u_a, u_b) Gaussian with variances q and covariance q_ab (Eq. 7)."""
    s = math.sqrt(q)
    rho = float(np.clip(q_ab / q, -1.0, 1.0))
    kinks = np.asarray(act.kinks, dtype=float)
    z1, w1 = _pieces(kinks / s, points)
    fa = act.numpy(s * z1)
    perp = math.sqrt(max(1.0 - rho * rho, 0.0))
    if perp < 1e-12:
        return float(np.sum(w1 * fa * act.numpy(rho * s * z1)))
    # conditional on z1, u_b = s (rho z1 + perp z2); split z2 where u_b crosses a kink
    z2_kinks = (kinks[None, :] / s - rho * z1[:, None]) / perp
    z2, w2 = _pieces(z2_kinks, points)
    fb = act.numpy(s * (rho * z1[:, None] + perp * z2))
    return float(np.sum(w1 * fa * np.sum(w2 * fb, axis=1)))


def second_moment(act: Activation, q: float, points: int = POINTS) -> float:
    """E[f(u)^2] for u ~ N(0, q)."""
    s = math.sqrt(q)
    return gaussian_expectation(
        lambda z: act.numpy(s * z) ** 2, tuple(k / s for k in act.kinks), points
    )


@dataclass(frozen=True)
class Moments:
    """E[f(u)^2] and E[f(u_a) f(u_b)] of an activation, in closed form for ReLU."""

    act: Activation
    closed_form: bool = True
    points: int = POINTS

    def __call__(self, q: float, q_ab: float) -> tuple[float, float]:
        if self.closed_form and self.act.name == "relu":
            return q / 2, q / 2 * float(relu_kernel(q_ab / q))
        return second_moment(self.act, q, self.points), cross_moment(self.act, q, q_ab, self.points)


def recursion(
    depth: int,
    activation: str = "relu",
    init: str = "kaiming",
    gain: float | None = None,
    input_second_moment: float = 1.0,
    input_correlation: float = 0.0,
    closed_form: bool = True,
    points: int = POINTS,
) -> pd.DataFrame:
    """Per layer l = 1..depth: c (cosine similarity of x^{l-1}), q, m, v, ratio = m / v.

    kaiming, xavier, orthogonal: sigma_w^2 = gain^2 (square layers). scale and lsuv: sigma_w^2
    makes q = 1 (Eq. 13). scale+bias and batchnorm: every feature centred and scaled over
    samples (Eq. 12, 14), so m = 0, v = 1 and distinct inputs decorrelate before f.
    """
    act = get_activation(activation)
    moments = Moments(act, closed_form, points)
    sigma_w2 = (gain if gain is not None else act.gain) ** 2
    x2, x_ab = input_second_moment, input_correlation * input_second_moment
    rows = []
    for layer in range(1, depth + 1):
        c = x_ab / x2
        if init in ("kaiming", "xavier", "orthogonal"):
            q, q_ab = sigma_w2 * x2, sigma_w2 * x_ab
        elif init in ("scale", "lsuv"):
            q, q_ab = 1.0, c
        elif init in ("scale+bias", "batchnorm"):
            q, q_ab = 1.0, 0.0
        else:
            raise ValueError(f"init={init!r} has no mean-field theory")
        m2, v2 = q_ab, q - q_ab
        rows.append(
            dict(
                layer=layer,
                c=c,
                q=q,
                m=math.sqrt(max(m2, 0.0)),
                v=math.sqrt(max(v2, 0.0)),
                ratio=math.sqrt(max(m2, 0.0) / v2) if v2 > 0 else math.inf,
            )
        )
        x2, x_ab = moments(q, q_ab)
    return pd.DataFrame(rows, columns=["layer", "c", "q", "m", "v", "ratio"])


def check(cfg: DictConfig) -> None:
    from varexp.config import check_theory

    check_theory(cfg)


def run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from varexp.files import write_csv

    check(cfg)
    table = recursion(
        depth=cfg.arch.depth,
        activation=cfg.arch.activation,
        init=cfg.init.name,
        gain=cfg.init.get("gain"),
        input_second_moment=cfg.theory.input_second_moment,
        input_correlation=cfg.theory.input_correlation,
        points=cfg.theory.quadrature_points,
    )
    path = write_csv(table, f"{HydraConfig.get().runtime.output_dir}/theory.csv")
    last = table.iloc[-1]
    print(
        f"theory: {len(table)} layers -> {path}  (layer {int(last.layer)}: m={last.m:.4f} "
        f"v={last.v:.4f} ratio={last.ratio:.4f})"
    )
