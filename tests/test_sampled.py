"""The exact O(n T^2) sampled MLP against the dense reference (nn.Linear + varexp.inits), the
infinite-width theory (paper Fig. 2 left) and the gradient slopes (paper Fig. 3)."""

import numpy as np
import pandas as pd
import pytest
import torch

from varexp.inits import INITS, initialize
from varexp.models.mlp import MLP
from varexp.results.aggregate import grad_slope as fitted_grad_slope
from varexp.sampled import cut, sampled_mlp, sampled_mlps, sampled_probe
from varexp.stats import network_stats
from varexp.theory import gradient_slope, recursion
from varexp.threads import one_thread

KEYS = ("ratio", "second_moment", "sample_var", "grad_sq", "effective_samples")


@pytest.fixture(autouse=True)
def single_thread():
    """Small matrices: one thread is faster, and far faster on a loaded 2-core machine."""
    with one_thread():
        yield


def dense(x: torch.Tensor, depth: int, width: int, init: str, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    model = MLP(x.shape[1], width, depth, "relu", "batchnorm" if init == "batchnorm" else "none")
    options = {"name": init} | ({"batches": 1} if INITS[init].fit is not None else {})
    initialize(model, options, "relu", batches=[x])
    return network_stats(model, x, grad=True, generator=torch.Generator().manual_seed(seed))[0]


def sampled(x: torch.Tensor, depth: int, width: int, init: str, seed: int) -> list[dict]:
    return sampled_mlp(x, depth, width, init=init, generator=torch.Generator().manual_seed(seed))[0]


def collect(path, x, depth, width, init, networks, grad=True) -> dict[str, np.ndarray]:
    """(networks, layers) array per statistic; grad_sq as its log, which is near Gaussian."""
    runs = [path(x, depth, width, init, seed) for seed in range(networks)]
    out = {k: np.array([[r[k].item() for r in rows] for rows in runs]) for k in KEYS}
    out["grad_sq"] = np.log(out["grad_sq"])
    return out


def max_z(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |difference of per-layer means| in standard errors (Welch)."""
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return float(np.max(np.abs(a.mean(0) - b.mean(0)) / se))


@pytest.mark.parametrize(
    "init, width, samples, keys",
    [
        ("kaiming", 120, 40, ("ratio", "second_moment", "grad_sq", "effective_samples")),
        ("scale+bias", 120, 40, ("grad_sq", "effective_samples")),
        ("batchnorm", 120, 40, ("grad_sq",)),
        ("kaiming", 40, 3, ("ratio", "second_moment", "grad_sq")),  # T tiny
        ("kaiming", 20, 30, ("ratio", "second_moment", "grad_sq")),  # n <= T: no Q_perp part
    ],
)
def test_sampled_matches_dense_in_distribution(init, width, samples, keys):
    x = torch.randn(samples, width, generator=torch.Generator().manual_seed(0))
    d = collect(dense, x, 12, width, init, 24)
    s = collect(sampled, x, 12, width, init, 24)
    for key in keys:  # 12 layers x up to 3 statistics: |z| < 4 fails by chance with p < 0.003
        assert max_z(d[key], s[key]) < 4.0, key
    if init != "kaiming":  # both normalize every feature over the batch (Eq. 12, 14)
        for run in (d, s):
            assert np.abs(run["ratio"]).max() < 1e-3
            assert np.abs(run["sample_var"] - 1).max() < 1e-3


def test_sampled_layer_one_is_exact_for_a_known_input():
    # one Kaiming layer on x: u_i ~ N(0, (2/n) X^T X) over networks, so <u_i^2>_t averages to
    # 2 mean_t |x_t|^2 / n exactly
    x = torch.randn(10, 500, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    m2 = [
        sampled_mlp(x, 1, 500, generator=gen, grad=False)[0][0]["second_moment"].item()
        for _ in range(200)
    ]
    expected = 2 * x.double().square().sum(1).mean().item() / 500
    assert np.mean(m2) == pytest.approx(expected, rel=4 * np.std(m2) / np.sqrt(200) / expected)


def test_finite_width_ratio_approaches_theory_from_below():
    """Paper Fig. 2 left: theory is an upper bound that wider networks approach."""
    theory = recursion(50).ratio.to_numpy()
    x = torch.randn(100, 1000, generator=torch.Generator().manual_seed(0))
    gaps = {}
    for width in (100, 300, 1000):
        gen = torch.Generator().manual_seed(width)
        ratios = np.array(
            [
                [
                    r["ratio"].item()
                    for r in sampled_mlp(x[:, :width], 50, width, generator=gen, grad=False)[0]
                ]
                for _ in range(12)
            ]
        )
        mean, se = ratios.mean(0), ratios.std(0, ddof=1) / np.sqrt(12)
        gaps[width] = theory - mean
        for layer in (10, 25, 50):  # below the theory (within noise where it has caught up)
            assert mean[layer - 1] < theory[layer - 1] + 3 * se[layer - 1], (width, layer)
    for layer in (25, 50):
        assert gaps[100][layer - 1] > gaps[300][layer - 1] > gaps[1000][layer - 1] > 0, layer
    assert abs(gaps[1000][9]) < abs(gaps[100][9])


def grad_slope(init: str, width: int, networks: int) -> float:
    """Fitted slope of log(mean over networks of grad_sq) vs layer, layers 1..L-1 (Fig. 3)."""
    x = torch.randn(100, width, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    table = pd.DataFrame(
        [
            {"network": i, "layer": layer, "grad_sq": r["grad_sq"].item()}
            for i in range(networks)
            for layer, r in enumerate(sampled_mlp(x, 50, width, init=init, generator=gen)[0], 1)
        ]
    )
    return fitted_grad_slope(table)


def test_gradient_slope_at_moderate_width():
    """Kaiming keeps gradients flat; BatchNorm makes them grow by 1 / (1 - 1/pi) per layer down
    (paper Sec. 4: slope -0.383). Measured at width 300: kaiming -0.005, batchnorm -0.385."""
    assert abs(grad_slope("kaiming", 300, 12)) < 0.02
    assert grad_slope("batchnorm", 300, 12) == pytest.approx(gradient_slope(), abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize(
    "init, paper", [("scale+bias", -0.379), ("batchnorm", -0.381), ("kaiming", 0.0)]
)
def test_gradient_slope_at_paper_scale(init, paper):
    """Paper Fig. 3: width 3000, 30 networks, T = 100, depth 50."""
    assert grad_slope(init, 3000, 30) == pytest.approx(paper, abs=0.02)


@pytest.mark.parametrize(
    "init, activation",
    [("kaiming", "relu"), ("scale+bias", "relu"), ("batchnorm", "relu"), ("xavier", "tanh")],
)
def test_a_networks_numbers_do_not_depend_on_its_batch(init, activation):
    """Network i draws from its own generator: alone, in one batch with the others, or in
    batches of 2 on two worker threads, every number is the same to the bit."""
    x = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))

    def generators():
        return [torch.Generator().manual_seed(100 + i) for i in range(5)]

    options = dict(activation=activation, init=init, keep_u=(1, 6))
    alone = [sampled_mlps(x, 6, 40, [g], **options)[0] for g in generators()]
    together = sampled_mlps(x, 6, 40, generators(), **options)
    threaded = sorted(
        sampled_probe(x, 6, 40, generators(), batch=2, threads=2, **options),
        key=lambda result: result[0],
    )
    for i, (rows, kept) in enumerate(alone):
        for other_rows, other_kept in (together[i], threaded[i][1:]):
            for row, other in zip(rows, other_rows, strict=True):
                for key in (*KEYS, "sample_mean_sq", "ratio_channel"):
                    assert torch.equal(row[key], other[key]), (i, row["layer"], key)
            assert all(torch.equal(kept[layer], other_kept[layer]) for layer in (1, 6))
    assert together[0][0][2]["ratio"] != together[1][0][2]["ratio"]  # the networks differ


def test_repeated_samples_match_dense_in_distribution():
    """Every sample twice: X^T X is singular at every layer (the factor and the backward's
    projection come from its eigendecomposition)."""
    base = torch.randn(12, 60, generator=torch.Generator().manual_seed(5))
    x = torch.cat([base, base])
    d = collect(dense, x, 8, 60, "kaiming", 24)
    s = collect(sampled, x, 8, 60, "kaiming", 24)
    for key in ("ratio", "second_moment", "grad_sq", "effective_samples"):
        assert max_z(d[key], s[key]) < 4.0, key


def test_rank_deficient_inputs_are_sampled_on_their_span():
    """Repeated samples and fewer features than samples make X^T X singular: the factor comes
    from its eigendecomposition, and the outputs keep the law of W X (layer 1 of Kaiming:
    E <u_i^2>_t = 2 mean_t |x_t|^2 / n) with finite gradients."""
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    x = torch.cat([base, base])  # T = 8 samples of 6 features, rank 4
    gen = torch.Generator().manual_seed(2)
    runs = [sampled_mlp(x, 3, 50, generator=gen) for _ in range(300)]
    m2 = np.array([rows[0]["second_moment"].item() for rows, _ in runs])
    expected = 2 * x.double().square().sum(1).mean().item() / 6
    assert m2.mean() == pytest.approx(expected, abs=4 * m2.std() / np.sqrt(len(m2)))
    assert all(np.isfinite([r["grad_sq"].item() for r in rows]).all() for rows, _ in runs)


@pytest.mark.parametrize(
    "networks, batch, workers",
    [(30, 8, 2), (30, 1, 2), (5, 8, 2), (1, 8, 4), (7, 3, 4), (30, 30, 1)],
)
def test_networks_are_cut_into_even_batches_for_the_workers(networks, batch, workers):
    pieces = cut(networks, batch, workers)
    assert [i for piece in pieces for i in piece] == list(range(networks))
    sizes = [len(piece) for piece in pieces]
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
    assert len(pieces) % workers == 0 or len(pieces) == networks
