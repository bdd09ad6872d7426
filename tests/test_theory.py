"""Mean-field theory against the paper's closed-form numbers (Sec. 3.1, 3.1.1, 4)."""

import math

import numpy as np
import pytest
import torch

from varexp.activations import ACTIVATIONS, get_activation
from varexp.theory import (
    cross_moment,
    gradient_slope,
    recursion,
    relu_kernel,
    relu_kernel_slope,
    sample_std_after_relu,
    second_moment,
)


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
