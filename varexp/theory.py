"""Infinite-width mean-field theory of the sample statistics (paper Sec. 3.1, Eq. 6-8).

Layer l has weights of variance sigma_w^2 / fan_in. Over networks, the pre-activations of two
distinct inputs a, b are jointly Gaussian with second moment q = sigma_w^2 <x^2> and cross
moment q_ab = sigma_w^2 <x_a x_b> (Poole et al. 2016). Since the total mean is 0, Eq. 5-6 give
m^2 = q_ab and v^2 = q - q_ab. ReLU has the closed-form kernel K (Eq. 7); any other activation is
integrated numerically.

Quadrature (varexp.quadrature). Write u_a = s z1 and u_b = s (rho z1 + perp z2) with s = sqrt(q),
rho = q_ab / q, perp = sqrt(1 - rho^2) and z1, z2 iid N(0, 1): E[f(u_a) f(u_b)] is the integral
of f(s z1) E[f(u_b) | z1] over z1, the inner one over z2, each done with Gauss-Legendre pieces.
Every activation here bends on the unit scale of its argument around u = 0 and its declared kinks
and is its asymptote (linear or constant) farther away, except sin, which keeps oscillating on
that scale (at the q of order 1 its gain keeps). In standardised units a bend is 1/s wide in z1
and 1/(s perp) in z2, and s grows without bound with depth for gelu and silu (their gain exceeds
sqrt 2 while they tend to ReLU at large q: q ~ 4e3 and 2e7 by layer 50), so nodes at fixed
places miss it. Here the pieces follow the bends (centres 0 and the kinks, in z2 where u_b
crosses them, with those widths); the outer rule also follows E[f(u_b) | z1], which bends over
perp / |rho|. With POINTS nodes per piece the moments agree with closed forms and independent
integrals to 1e-13 typically, 1e-9 at worst (tests/test_theory.py), at any q and for a number of
pieces bounded independently of q; depth 200 takes under a second (bench/bench_theory.py).

Convergence check: each layer is computed with POINTS // 2 and POINTS nodes per piece; if that
doubling moves E[f^2], E[f_a f_b] or their difference (hence the next v^2) by more than RTOL, the
recursion stops with an error naming the layer (sin at a large init.gain, for instance) instead
of returning unconverged numbers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from varexp import devices
from varexp.activations import Activation, get_activation
from varexp.errors import VarexpError
from varexp.inits import INITS, centred
from varexp.quadrature import POINTS, edges, gaussian_expectation, rule
from varexp.results import claim
from varexp.results.tables import THEORY
from varexp.schema import Common, validate
from varexp.threads import one_thread

RTOL = 1e-6  # largest relative change allowed when the nodes per piece are doubled


class QuadratureError(VarexpError):
    """Doubling the Gauss-Legendre nodes per piece moved a moment by more than RTOL."""


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


def second_moment(act: Activation, q: float, points: int = POINTS) -> float:
    """E[f(u)^2] for u ~ N(0, q)."""
    s = math.sqrt(q)
    kinks = tuple(k / s for k in act.kinks)
    return q * gaussian_expectation(lambda z: (act.numpy(s * z) / s) ** 2, kinks, points, (1 / s,))


def _moments(act: Activation, q: float, q_ab: float, points: int) -> tuple[float, float]:
    """E[f(u_a)^2] and E[f(u_a) f(u_b)], both on the same z1 nodes so that their difference (the
    next v^2) shares the outer rule's error. f is evaluated as f(s z) / s so that nothing
    overflows before q itself does."""
    s = math.sqrt(q)
    rho = min(max(q_ab / q, -1.0), 1.0)
    perp = math.sqrt(1.0 - rho * rho)
    kinks = np.asarray(act.kinks, dtype=float) / s
    features = np.concatenate([[0.0], kinks])
    centres, widths = features, (1 / s,)
    if rho != 0:
        # E[f(u_b) | z1] is f smoothed over a width perp / |rho| about each z1 = k / (s rho)
        centres, widths = np.concatenate([features, kinks / rho]), (1 / s, perp / abs(rho))
    z1, w1, _ = rule(edges(centres[None, :], widths), points)
    z1, w1 = z1.ravel(), w1.ravel()
    fa = act.numpy(s * z1) / s
    if perp == 0.0:
        fb = act.numpy(rho * s * z1) / s
    else:
        # given z1, u_b crosses feature k at z2 = (k - rho z1) / perp, over a width 1 / (s perp)
        inner = edges((features[None, :] - rho * z1[:, None]) / perp, (1 / (s * perp),))
        z2, w2, row = rule(inner, points)
        fb = act.numpy((s * rho) * z1[row, None] + (s * perp) * z2)
        # dividing by each row's quadrature mass (1 up to the rule's error) cancels the error
        # that is proportional to E[f(u_b) | z1] itself, which would otherwise swamp
        # E[f(u_a)^2] - E[f(u_a) f(u_b)] when perp is small
        mass = np.bincount(row, w2 @ np.ones(points), z1.size)
        fb = np.bincount(row, np.einsum("ij,ij->i", w2, fb), z1.size) / (s * mass)
    return q * float(w1 @ (fa * fa)), q * float(w1 @ (fa * fb))


def cross_moment(act: Activation, q: float, q_ab: float, points: int = POINTS) -> float:
    """E[f(u_a) f(u_b)] for (u_a, u_b) Gaussian with variances q and covariance q_ab (Eq. 7)."""
    return _moments(act, q, q_ab, points)[1]


def _change(fine: float, coarse: float, scale: float) -> float:
    if fine == coarse:
        return 0.0
    return abs(fine - coarse) / scale if scale > 0 else math.inf


@dataclass(frozen=True)
class Moments:
    """E[f(u)^2] and E[f(u_a) f(u_b)] of an activation, in closed form for ReLU; numerically
    with `points` Gauss-Legendre nodes per piece, checked against points // 2."""

    act: Activation
    closed_form: bool = True
    points: int = POINTS

    def __call__(self, q: float, q_ab: float) -> tuple[float, float]:
        if self.closed_form and self.act.name == "relu":
            return q / 2, q / 2 * float(relu_kernel(q_ab / q))
        x2, x_ab = _moments(self.act, q, q_ab, self.points)
        coarse = max(self.points // 2, 1)
        c2, c_ab = _moments(self.act, q, q_ab, coarse)
        # float64 resolves the difference (v^2 of the next layer) only to ~1e-16 x2 / (x2 - x_ab):
        # below x2 - x_ab = 1e-9 x2 the check on it becomes an absolute one
        v2, c_v2 = x2 - x_ab, c2 - c_ab
        changes = {
            "E[f(u)^2]": _change(x2, c2, x2),
            "E[f(u_a) f(u_b)]": _change(x_ab, c_ab, x2),
            "E[f(u)^2] - E[f(u_a) f(u_b)]": _change(v2, c_v2, max(v2, 1e-9 * x2)),
        }
        name, worst = max(changes.items(), key=lambda item: item[1])
        if not worst <= RTOL:
            raise QuadratureError(
                f"quadrature not converged at q={q:.3g}, c={q_ab / q:.6f}: {coarse} -> "
                f"{self.points} Gauss-Legendre nodes per piece moves {name} by {worst:.2g} "
                f"(relative; tolerance {RTOL:g})"
            )
        return x2, x_ab


def _row(layer: int, c: float, q: float, q_ab: float) -> dict[str, float]:
    m2, v2 = max(q_ab, 0.0), q - q_ab
    ratio = math.sqrt(m2 / v2) if v2 > 0 else math.inf
    return dict(layer=layer, c=c, q=q, m=math.sqrt(m2), v=math.sqrt(max(v2, 0.0)), ratio=ratio)


def recursion(
    depth: int,
    activation: str = "relu",
    init: str = "kaiming",
    gain: float | None = None,
    input_second_moment: float = 1.0,
    input_correlation: float = 0.0,
    closed_form: bool = True,
    points: int = POINTS,
    norm: str = "none",
) -> pd.DataFrame:
    """Per layer l = 1..depth: c (cosine similarity of x^{l-1}), q, m, v, ratio = m / v.

    Each init's mean-field map (varexp.inits.INITS) gives q and q_ab of a layer from the
    moments of its input: kaiming, xavier, orthogonal: sigma_w^2 = gain^2 (square layers);
    scale and lsuv: q = 1 (Eq. 13); scale+bias: every feature centred and scaled over samples
    (Eq. 14), so m = 0, v = 1 and distinct inputs decorrelate before f; BatchNorm units
    (norm=batchnorm, Eq. 12) do the same whatever the init.

    Raises VarexpError, naming the layer, where q leaves floating-point range (overflows to inf
    or falls below the smallest normal double) or the quadrature does not converge.
    """
    act = get_activation(activation)
    moments = Moments(act, closed_form, points)
    law = centred if norm == "batchnorm" else INITS[init].mean_field
    if law is None:
        raise VarexpError(
            f"init={init} has no mean-field law (it keeps the model's own init); "
            "choose one of " + ", ".join(n for n, i in INITS.items() if i.mean_field is not None)
        )
    g = gain if gain is not None else act.gain
    setting = f"arch.activation={activation}, init={init}, init.gain={g:.6g}"
    x2, x_ab = input_second_moment, input_correlation * input_second_moment
    rows: list[dict[str, float]] = []
    with one_thread():  # torch's erf (gelu) on small arrays: threads only stall on a busy CPU
        for layer in range(1, depth + 1):
            q, q_ab = law(g * g, x2, x_ab)
            if not sys.float_info.min <= q < math.inf:
                what = "underflows" if q < 1 else "overflows"
                before = (
                    f"; layer {layer - 1}: q={rows[-1]['q']:.3g}"
                    if rows
                    else f"; theory.input_second_moment={input_second_moment:.3g}"
                )
                raise VarexpError(
                    f"mean-field q {what} at layer {layer} (q={q:.3g}{before}): {setting}; "
                    "lower arch.depth or bring init.gain closer to the activation's gain"
                )
            rows.append(_row(layer, x_ab / x2, q, q_ab))
            if layer < depth:
                try:
                    x2, x_ab = moments(q, q_ab)
                except QuadratureError as error:
                    raise VarexpError(
                        f"mean-field layer {layer + 1}: {error}; {setting}; "
                        "raise theory.quadrature_points"
                    ) from None
    return pd.DataFrame(rows, columns=list(THEORY.columns))


def check(cfg: DictConfig) -> None:
    validate(cfg, Common)
    devices.check(cfg.device)


def run(cfg: DictConfig) -> None:

    check(cfg)
    table = recursion(  # before claiming the folder: a recursion that fails leaves it untouched
        depth=cfg.arch.depth,
        activation=cfg.arch.activation,
        init=cfg.init.name,
        gain=cfg.init.get("gain"),
        input_second_moment=cfg.theory.input_second_moment,
        input_correlation=cfg.theory.input_correlation,
        points=cfg.theory.quadrature_points,
        norm=cfg.arch.norm,
    )
    with claim("theory", cfg) as out_dir:
        path = THEORY.write(table, out_dir)
    last = table.iloc[-1]
    print(
        f"theory: {len(table)} layers -> {path}  (layer {int(last.layer)}: m={last.m:.4f} "
        f"v={last.v:.4f} ratio={last.ratio:.4f})"
    )
