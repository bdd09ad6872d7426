"""Sample statistics (paper Eq. 4, 9), layer recording and grad_sq."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from varexp.models.base import Unit
from varexp.models.mlp import MLP
from varexp.stats import Recorder, network_stats, sample_stats


def test_sample_stats_biased_estimator_by_hand():
    # two samples, two features: means (1, 3), biased variances (1, 4)
    u = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
    s = {k: v.item() for k, v in sample_stats(u).items()}
    assert s["sample_mean_sq"] == pytest.approx((1 + 9) / 2)
    assert s["sample_var"] == pytest.approx((1 + 4) / 2)
    assert s["ratio"] == pytest.approx(math.sqrt(5 / 2.5))
    assert s["second_moment"] == pytest.approx(((0 + 4) / 2 + (1 + 25) / 2) / 2)


def test_sample_stats_flattens_conv_features_and_uses_float64():
    g = np.random.default_rng(0)
    u = g.normal(3.0, 0.01, size=(7, 4, 5, 6)).astype(np.float32)
    flat = u.reshape(7, -1).astype(np.float64)
    mean, var = flat.mean(0), flat.var(0)  # numpy's var is the biased 1/T estimator
    s = sample_stats(torch.from_numpy(u))
    assert all(v.dtype == torch.float64 and v.dim() == 0 for v in s.values())
    assert s["sample_mean_sq"].item() == pytest.approx(np.mean(mean**2), rel=1e-12)
    # a large mean over a tiny spread: centring first keeps the variance accurate
    assert s["sample_var"].item() == pytest.approx(np.mean(var), rel=1e-9)


def test_channel_statistics_pool_samples_and_positions():
    g = np.random.default_rng(1)
    # per-position means differ: the channel convention sees them as spread, not mean
    u = g.normal(0, 1, size=(9, 3, 4, 5)) + g.normal(0, 2, size=(1, 3, 4, 5)) + 1.5
    s = sample_stats(torch.from_numpy(u))
    pooled = u.transpose(1, 0, 2, 3).reshape(3, -1)
    mean_c, var_c = pooled.mean(1), pooled.var(1)
    assert s["sample_mean_sq_channel"].item() == pytest.approx(np.mean(mean_c**2), rel=1e-12)
    assert s["sample_var_channel"].item() == pytest.approx(np.mean(var_c), rel=1e-12)
    assert s["ratio_channel"].item() == pytest.approx(
        math.sqrt(np.mean(mean_c**2) / np.mean(var_c)), rel=1e-12
    )
    # the same second moment, split differently between mean and spread
    assert (s["sample_mean_sq_channel"] + s["sample_var_channel"]).item() == pytest.approx(
        s["second_moment"].item(), rel=1e-12
    )
    assert s["ratio_channel"] < s["ratio"]


def test_linear_layers_have_one_convention():
    u = torch.randn(11, 7, dtype=torch.float64) + 3
    s = sample_stats(u)
    for stat in ("sample_mean_sq", "sample_var", "ratio"):
        assert s[f"{stat}_channel"].item() == pytest.approx(s[stat].item(), rel=1e-12)


def test_effective_samples_counts_the_samples_that_carry_the_spread():
    T = 10
    spread = torch.zeros(T, 6, dtype=torch.float64)
    assert sample_stats(spread + torch.randn(T, 6) * 1e-3)["effective_samples"].item() > 5
    one = spread.clone()
    one[0] = 5.0  # one sample far from the others (mean 0.5): it holds the centred signal
    distances = np.array([6 * 4.5**2] + [6 * 0.5**2] * (T - 1))
    assert sample_stats(one)["effective_samples"].item() == pytest.approx(
        distances.sum() ** 2 / np.square(distances).sum(), rel=1e-12
    )  # 1.23
    g = torch.Generator().manual_seed(0)
    even = torch.randn(2000, 50, generator=g, dtype=torch.float64)
    # iid Gaussian samples: s_t is 50 chi^2_50-distributed, E[s]^2 / E[s^2] = 50 / 52
    assert sample_stats(even)["effective_samples"].item() == pytest.approx(2000 * 50 / 52, rel=0.02)


def conv_model() -> nn.Module:
    return nn.Sequential(
        Unit(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        Unit(nn.Conv2d(4, 2, 3, stride=2, padding=1), None, nn.ReLU()),
        Unit(nn.ConvTranspose2d(2, 5, 2, stride=2)),
    )


def test_recorder_sees_u_after_norm_and_x_per_layer_of_a_conv_net():
    torch.manual_seed(0)
    model, x = conv_model().train(), torch.randn(16, 3, 8, 8)
    with Recorder(model, keep_u=(2,)) as rec:
        out = model(x)
    assert [rec.features[i] for i in (1, 2, 3)] == [4 * 8 * 8, 2 * 4 * 4, 5 * 8 * 8]
    # layer 1's u is the BatchNorm output: batch mean 0 per channel, unit variance per channel
    u1 = model[0].norm(model[0].layer(x))
    assert rec.stats[1]["ratio"].item() == pytest.approx(sample_stats(u1)["ratio"].item(), abs=1e-6)
    assert rec.stats[1]["second_moment"].item() == pytest.approx(1.0, abs=1e-3)
    u2 = model[1].layer(model[0](x))
    assert torch.allclose(rec.u[2], u2.reshape(16, -1))
    assert rec.x[3].node is out.grad_fn  # x^3 is kept as where it enters the graph
    assert not model[0]._forward_hooks  # hooks removed on exit


def test_grad_sq_of_a_linear_net_matches_the_explicit_chain_rule():
    torch.manual_seed(1)
    model = MLP(6, 5, 2, activation="linear")
    x = torch.randn(9, 6)
    rows, _ = network_stats(model, x, grad=True, generator=torch.Generator().manual_seed(7))
    w = torch.randn(5, generator=torch.Generator().manual_seed(7))
    # L = sum_t w . x^2_t: dL/dx^2_t = w, dL/dx^1_t = W2^T w for every sample t
    expected_top = w.double().square().mean()
    expected_1 = (model.layer2.layer.weight.T @ w).double().square().mean()
    assert rows[1]["grad_sq"].item() == pytest.approx(expected_top.item(), rel=1e-6)
    assert rows[0]["grad_sq"].item() == pytest.approx(expected_1.item(), rel=1e-5)
    assert [r["name"] for r in rows] == ["layer1", "layer2"]


def test_network_stats_uses_batch_statistics_and_restores_mode():
    torch.manual_seed(2)
    model = MLP(20, 30, 3, norm="batchnorm").eval()
    rows, _ = network_stats(model, torch.randn(50, 20) * 3 + 1, grad=False)
    assert not model.training
    for r in rows:  # BatchNorm on the batch itself (paper Eq. 12): mean 0, variance 1 - eps
        assert r["sample_mean_sq"].item() < 1e-12
        assert r["sample_var"].item() == pytest.approx(1.0, abs=1e-3)
        assert r["grad_sq"] is None
