"""Mean-field theory against the paper's closed-form numbers (Sec. 3.1, 3.1.1, 4)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from varexp.activations import ACTIVATIONS, LEAKY_SLOPE, get_activation
from varexp.errors import VarexpError
from varexp.theory import (
    Moments,
    cross_moment,
    gradient_slope,
    recursion,
    relu_kernel,
    relu_kernel_slope,
    sample_std_after_relu,
    second_moment,
)
from varexp.threads import one_thread


def test_kernel_at_zero_is_one_over_pi():
    assert relu_kernel(0.0) == pytest.approx(1 / math.pi, abs=1e-15)


def test_sample_std_after_one_relu_layer():
    assert round(sample_std_after_relu(), 3) == 0.826
    assert round(1 / sample_std_after_relu(), 2) == 1.21


def test_gradient_slope_is_minus_0383():
    assert gradient_slope() == pytest.approx(-math.log(1 / (1 - 1 / math.pi)))
    assert round(gradient_slope(), 3) == -0.383


def test_kernel_fixed_point_and_growth():
    assert relu_kernel(1.0) == pytest.approx(1.0, abs=1e-15)
    c = np.linspace(-1, 1, 2001)[:-1]
    assert np.all(relu_kernel(c) > c)


def test_kernel_slope_tends_to_one():
    eps = np.array([1e-2, 1e-4, 1e-6, 1e-8])
    numeric = (relu_kernel(1.0) - relu_kernel(1.0 - eps)) / eps
    assert np.all(np.diff(np.abs(1 - numeric)) < 0)
    assert numeric[-1] == pytest.approx(1.0, abs=1e-3)
    assert relu_kernel_slope(1 - 1e-12) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("rho", [-0.95, -0.3, 0.0, 0.4, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("q", [0.5, 2.0])
def test_quadrature_matches_relu_closed_form(rho, q):
    relu = get_activation("relu")
    assert cross_moment(relu, q, rho * q) == pytest.approx(q / 2 * relu_kernel(rho), abs=1e-6)
    assert second_moment(relu, q) == pytest.approx(q / 2, abs=1e-6)


def test_quadrature_recursion_matches_closed_form_recursion():
    closed = recursion(50)
    numeric = recursion(50, closed_form=False)
    assert np.max(np.abs(closed.to_numpy() - numeric.to_numpy())) < 1e-6


def test_relu_kaiming_follows_eq8():
    table = recursion(50)
    k = 0.0
    for row in table.itertuples():
        assert row.q == pytest.approx(2.0)
        assert row.m**2 == pytest.approx(2 * k)
        assert row.v**2 == pytest.approx(2 * (1 - k))
        assert row.c == pytest.approx(k)
        k = relu_kernel(k)
    assert table.ratio.is_monotonic_increasing
    assert table.v.iloc[-1] < 0.2 * table.v.iloc[0]  # decayed but not gone at depth 50 (Fig. 1)


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"tanh"}))
def test_gain_preserves_unit_second_moment(name):
    act = get_activation(name)
    assert act.gain**2 * second_moment(act, 1.0) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("name", ["relu", "linear", "tanh", "leaky_relu"])
def test_fixed_gains_are_torchs(name):
    param = 0.01 if name == "leaky_relu" else None
    assert get_activation(name).gain == pytest.approx(torch.nn.init.calculate_gain(name, param))


def test_odd_activations_keep_zero_mean_and_linear_keeps_variance():
    for name in ("tanh", "sin", "linear"):
        table = recursion(20, activation=name)
        assert table.m.abs().max() < 1e-12
    assert recursion(20, activation="linear").q.to_numpy() == pytest.approx(np.ones(20))


def test_centering_inits_have_zero_ratio_and_scale_keeps_relu_ratio():
    for init in ("scale+bias", "batchnorm"):
        table = recursion(30, init=init)
        assert np.all(table.ratio == 0) and np.allclose(table.v, 1.0)
    kaiming, scale = recursion(30), recursion(30, init="scale")
    assert np.allclose(scale.q, 1.0)
    assert np.allclose(kaiming.ratio, scale.ratio)  # ReLU is positively homogeneous


# Independent references for every activation: closed forms where they exist, otherwise the
# Gaussian integral reorganised so that no 2-D rule like varexp.theory's is needed. Each maps
# (q, q_ab) to (E[f(u)^2], E[f(u_a) f(u_b)]) for (u_a, u_b) Gaussian with variances q and
# covariance q_ab.

_erfc = np.vectorize(math.erfc, otypes=[float])


def _cdf(x):
    return 0.5 * _erfc(-np.asarray(x, dtype=float) / math.sqrt(2.0))


def _pdf(x, var=1.0):
    x = np.asarray(x, dtype=float)
    return np.exp(-0.5 * x * x / var) / math.sqrt(2 * math.pi * var)


def _composite(edges, nodes=10):
    """Composite Gauss-Legendre nodes and weights on consecutive `edges` (a dense fixed grid)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    a, b = edges[:-1, None], edges[1:, None]
    return ((a + b) / 2 + (b - a) / 2 * x).ravel(), ((b - a) / 2 * w).ravel()


def _relu_given(mu, tau):
    """E[relu(mu + tau z)], z ~ N(0, 1), tau > 0."""
    return mu * _cdf(mu / tau) + tau * _pdf(mu / tau)


def _ref_relu(q, q_ab):
    rho = q_ab / q
    return q / 2, q / (2 * math.pi) * (math.sqrt(1 - rho * rho) + (math.pi - math.acos(rho)) * rho)


def _ref_leaky_relu(q, q_ab, a=LEAKY_SLOPE):
    # f = (1 + a)/2 x + (1 - a)/2 |x|; E[u_a |u_b|] = 0 by the symmetry u -> -u, and
    # E|u_a| |u_b| = (2 q / pi) (sqrt(1 - rho^2) + rho arcsin rho)
    rho = q_ab / q
    abs_abs = 2 * q / math.pi * (math.sqrt(1 - rho * rho) + rho * math.asin(rho))
    return (1 + a * a) / 2 * q, ((1 + a) / 2) ** 2 * q_ab + ((1 - a) / 2) ** 2 * abs_abs


def _ref_linear(q, q_ab):
    return q, q_ab


def _ref_sin(q, q_ab):
    # E[cos(u_a -/+ u_b)] = exp(-(q -/+ q_ab)), and sin a sin b = (cos(a - b) - cos(a + b)) / 2
    return (1 - math.exp(-2 * q)) / 2, math.exp(-q) * math.sinh(q_ab)


def _ref_gelu(q, q_ab):
    # Given u_a = y, u_b ~ N(rho y, tau2) and, by Stein's lemma, E[gelu(u_b)] =
    # mu Phi(mu / t) + tau2 phi(mu / t) / t with mu = rho y, t = sqrt(1 + tau2): one 1-D integral
    # on a dense grid, 1000 panels across the soft kink (width 1 / s) and 1000 over the Gaussian.
    s, rho = math.sqrt(q), q_ab / q
    tau2 = q * (1 - rho * rho)
    t = math.sqrt(1 + tau2)
    a = min(10.0, 60.0 / s)
    z, w = _composite(np.union1d(np.linspace(-10, 10, 1001), np.linspace(-a, a, 1001)))
    w = w * _pdf(z)
    y = s * z
    f = y * _cdf(y)
    mu = rho * y
    given = mu * _cdf(mu / t) + tau2 * _pdf(mu / t) / t
    return float(w @ (f * f)), float(w @ (f * given))


def _ref_silu(q, q_ab):
    # silu = relu - g, g(x) = |x| sigmoid(-|x|) < 1e-14 beyond |x| = 36: the ReLU part in closed
    # form (Eq. 7 and E[relu(u_a) | u_b]), the rest on a dense grid over |u| < 36.
    s, rho = math.sqrt(q), q_ab / q
    tau = s * math.sqrt(1 - rho * rho)
    top = min(36.0, 10 * s)
    half = np.linspace(0, top, int(math.ceil(top / min(1.0, s / 3, tau / 3))) + 1)
    y, w = _composite(np.concatenate([-half[:0:-1], half]), 8)
    g = np.abs(y) / (1 + np.exp(np.abs(y)))
    wy = w * _pdf(y, q)
    x2 = q / 2 - 2 * wy @ (g * np.maximum(y, 0)) + wy @ (g * g)
    g_given = _pdf(y[None, :] - rho * y[:, None], tau * tau) @ (w * g)  # E[g(u_a) | u_b = y]
    x_ab = _ref_relu(q, q_ab)[1] - 2 * wy @ (g * _relu_given(rho * y, tau)) + wy @ (g * g_given)
    return float(x2), float(x_ab)


def _ref_relu6(q, q_ab):
    # relu6(x) = relu(x) - relu(x - 6); E[relu(u_a - j) relu(u_b - k)] is a 1-D integral over
    # u_b > k of (u_b - k) E[relu(u_a - j) | u_b], the latter in closed form (q up to ~4e3:
    # beyond, the four terms cancel to float64's resolution)
    s, rho = math.sqrt(q), q_ab / q
    tau = s * math.sqrt(1 - rho * rho)
    top = 12 * s + 6

    def shifted(j, k):
        y, w = _composite(np.linspace(k, top, 401))
        return float((w * _pdf(y, q)) @ ((y - k) * _relu_given(rho * y - j, tau)))

    y, w = _composite(
        np.concatenate(
            [np.linspace(-top, 0, 200), np.linspace(0, 6, 201)[1:], np.linspace(6, top, 201)[1:]]
        )
    )
    x2 = float((w * _pdf(y, q)) @ np.clip(y, 0, 6) ** 2)
    return x2, shifted(0, 0) - shifted(0, 6) - shifted(6, 0) + shifted(6, 6)


def _ref_tanh(q, q_ab):
    # tanh is analytic: a dense tensor grid in standardised units (q of order 1 here)
    s, rho = math.sqrt(q), q_ab / q
    z, w = _composite(np.linspace(-10, 10, 81), 8)
    w = w * _pdf(z)
    fa = np.tanh(s * z)
    fb = np.tanh(s * (rho * z[:, None] + math.sqrt(1 - rho * rho) * z[None, :])) @ w
    return float(w @ (fa * fa)), float(w @ (fa * fb))


REFERENCE = {
    "relu": _ref_relu,
    "leaky_relu": _ref_leaky_relu,
    "linear": _ref_linear,
    "sin": _ref_sin,
    "gelu": _ref_gelu,
    "silu": _ref_silu,
    "relu6": _ref_relu6,
    "tanh": _ref_tanh,
}


def _reference_gain(name):
    act = get_activation(name)
    return act.fixed_gain if act.fixed_gain else 1 / math.sqrt(REFERENCE[name](1.0, 0.0)[0])


def _reference_recursion(name, depth):
    """Kaiming, unit-variance iid inputs: per layer q, m, v, ratio from the reference moments."""
    sigma_w2 = _reference_gain(name) ** 2
    x2, x_ab, rows = 1.0, 0.0, []
    for _ in range(depth):
        q, q_ab = sigma_w2 * x2, sigma_w2 * x_ab
        m, v = math.sqrt(max(q_ab, 0.0)), math.sqrt(q - q_ab)
        rows.append((q, m, v, m / v))
        x2, x_ab = REFERENCE[name](q, q_ab)
    return np.array(rows)


def test_references_cover_every_activation():
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", ["gelu", "silu", "relu6", "sin"])
def test_gain_matches_reference(name):
    assert get_activation(name).gain == pytest.approx(_reference_gain(name), rel=1e-12)


def test_leaky_relu_reference_reduces_to_relu_and_linear():
    for q, rho in [(2.0, 0.0), (1.5, 0.7), (3.0, -0.4)]:
        assert _ref_leaky_relu(q, rho * q, 0.0) == pytest.approx(_ref_relu(q, rho * q), rel=1e-14)
        assert _ref_leaky_relu(q, rho * q, 1.0) == pytest.approx((q, rho * q), rel=1e-14)


# (q, rho) from shallow to deep: silu reaches q = 2e7 at layer 50 and 3e29 at layer 200
STATES = [
    (1.0, 0.0),
    (2.0, 0.5),
    (3.0, -0.6),
    (30.0, 0.9),
    (4e3, 0.98),
    (2e7, 0.99),
    (1e12, 0.999),
    (1e29, 0.9989),
    (1e4, 0.999999),
]


def out_of_range(name: str, q: float, rho: float) -> bool:
    """States a reference does not resolve, none of which the default gains reach: sin and tanh
    at large q (sin oscillates many times per unit of z), relu6 beyond q ~ 1e3 (cancellation),
    silu's grid at a conditional width s sqrt(1 - rho^2) below 1."""
    if name == "sin":
        return q > 3
    if name == "tanh":
        return q > 30
    if name == "relu6":
        return q > 4e3
    return name == "silu" and q * (1 - rho * rho) < 1


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_moments_match_reference(name):
    """One layer of the recursion, E[f^2], E[f_a f_b] and their difference (-> v^2), to 1e-9."""
    act = get_activation(name)
    for q, rho in STATES:
        if out_of_range(name, q, rho):
            continue
        x2, x_ab = REFERENCE[name](q, rho * q)
        y2, y_ab = Moments(act, closed_form=False)(q, rho * q)
        assert y2 == pytest.approx(x2, rel=1e-9), (q, rho)
        assert y_ab == pytest.approx(x_ab, abs=1e-9 * x2), (q, rho)
        assert y2 - y_ab == pytest.approx(x2 - x_ab, rel=1e-8, abs=1e-12 * x2), (q, rho)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_depth_50_matches_reference(name):
    """q, m, v and ratio at every layer to 1e-9 relative (measured: 1e-13 at layer 50)."""
    table = recursion(50, activation=name, closed_form=False)
    expected = _reference_recursion(name, 50)
    np.testing.assert_allclose(
        table[["q", "m", "v", "ratio"]].to_numpy(), expected, rtol=1e-9, atol=1e-12
    )


def test_gelu_and_silu_ratio_at_layer_50_is_converged():
    """The references' values (q reaches 4e3 and 2e7 there; nodes that miss the narrowing soft
    kink give 5.79 and 6.03)."""
    assert recursion(50, activation="gelu").ratio.iloc[-1] == pytest.approx(7.1719130, rel=1e-7)
    assert recursion(50, activation="silu").ratio.iloc[-1] == pytest.approx(7.8509005, rel=1e-7)


def test_unconverged_quadrature_raises_and_more_points_fix_it():
    with pytest.raises(VarexpError, match=r"layer 2: quadrature not converged .*quadrature_points"):
        recursion(5, activation="gelu", points=2)
    # sin at gain 10: q = 100, so sin(u) oscillates ~6 times per unit of z
    with pytest.raises(VarexpError, match="quadrature not converged"):
        recursion(5, activation="sin", gain=10.0)
    table = recursion(5, activation="sin", gain=10.0, points=24)  # q' = 100 (1 - e^{-2q}) / 2
    assert table.q.to_numpy() == pytest.approx([100.0, 50.0, 50.0, 50.0, 50.0], rel=1e-12)


def _simulate(name: str, width: int, samples: int, networks: int, depth: int, seed: int = 0):
    """Per network (rows) and layer (columns): sample_mean_sq and the 1/T sample_var of u^l,
    averaged over features, for MLPs of the given width with Kaiming weights of the activation's
    gain and no bias, on T = `samples` inputs iid N(0, 1) in R^width. Each layer's output is
    drawn from its exact distribution given its input (the rows of W x, W iid N(0, gain^2 /
    width), are iid N(0, gain^2 x^T x / width)), which spares the width^2 normals per layer."""
    act = get_activation(name)
    f = act.module()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(networks, width, samples, generator=gen, dtype=torch.float64)
    mean_sq, var = [], []
    with one_thread():
        for _ in range(depth):
            cov = act.gain**2 / width * x.transpose(1, 2) @ x
            z = torch.randn(networks, width, samples, generator=gen, dtype=torch.float64)
            u = z @ torch.linalg.cholesky(cov).transpose(1, 2)
            mean = u.mean(dim=2)
            mean_sq.append((mean**2).mean(dim=1))
            var.append(((u - mean[..., None]) ** 2).mean(dim=(1, 2)))
            x = f(u)
    return torch.stack(mean_sq, 1).numpy(), torch.stack(var, 1).numpy()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_finite_width_networks_agree_with_theory(name):
    """Layers 1-10 of 25 networks of width 4000 on T = 16 inputs, within 4 standard errors of
    E[sample_mean_sq] = m^2 + v^2 / T and E[sample_var] = v^2 (1 - 1/T) (Eq. 5 over T samples;
    the 1/T sample variance is biased). Finite width raises sample_var by O(layer / width) (the
    lower finite-width ratio of Sec. 3.2; measured for ReLU at layer 10: +27 / width relative,
    +0.7% here), below one standard error (~0.8%) at this width and number of networks."""
    samples, networks = 16, 25
    mean_sq, var = _simulate(name, width=4000, samples=samples, networks=networks, depth=10)
    theory = recursion(10, activation=name)
    m2, v2 = theory.m.to_numpy() ** 2, theory.v.to_numpy() ** 2
    for measured, expected in [(mean_sq, m2 + v2 / samples), (var, v2 * (1 - 1 / samples))]:
        error = measured.std(axis=0, ddof=1) / math.sqrt(networks)
        assert np.all(np.abs(measured.mean(axis=0) - expected) < 4 * error), (
            measured.mean(axis=0) - expected
        ) / error


def test_q_leaving_float_range_stops_at_that_layer():
    # ReLU at gain 100: q = 1e4 * 5e3^(l-1) passes 1.8e308 at layer 84
    with pytest.raises(
        VarexpError,
        match=r"^mean-field q overflows at layer 84 \(q=inf; layer 83: "
        r"q=2.07e\+307\): arch.activation=relu, init=kaiming, init.gain=100; ",
    ):
        recursion(200, gain=100.0)
    table = recursion(83, gain=100.0)
    assert np.isfinite(table.to_numpy()).all()
    with pytest.raises(VarexpError, match=r"^mean-field q underflows at layer 72 \(q=4.24e-310; "):
        recursion(200, gain=0.01)
    with pytest.raises(VarexpError, match=r"underflows at layer 67 .* arch.activation=gelu, "):
        recursion(200, activation="gelu", gain=0.01)
    with pytest.raises(VarexpError, match=r"overflows at layer 1 \(q=inf; theory.input_second_mo"):
        recursion(3, input_second_moment=1e308)


def test_cli_reports_overflow_in_one_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "varexp",
            "theory",
            "init.gain=100",
            "arch.depth=200",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("varexp theory: mean-field q overflows at layer 84 (q=inf; ")
    assert not (tmp_path / "theory.csv").exists()
