"""Held-out statistics of the fitted inits (varexp.heldout, varexp.inits.heldout_stats): exact
targets on the fitting batch, a measurable departure on fresh inputs, the same law on the dense
and the exact sampled path, and probe.heldout's heldout.csv end to end."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import config, run_in_process

from varexp.data import fixed_batch
from varexp.heldout import fresh_batch, sampled_heldout
from varexp.inits import ScaleBias, initialize
from varexp.models.mlp import MLP
from varexp.results.tables import HELDOUT, PROBE


@pytest.fixture(autouse=True)
def keep_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands its arguments to Hydra


def dense_last_layer(width: int, depth: int, samples: int, networks: int) -> np.ndarray:
    """The last layer's held-out second moment of scale+bias MLPs fitted on `samples` inputs."""
    values = []
    for n in range(networks):
        g = torch.Generator().manual_seed(n)
        x, fresh = torch.randn(samples, width, generator=g), torch.randn(40, width, generator=g)
        torch.manual_seed(n)
        model = MLP(width, width, depth, "relu", "none", None)
        report = initialize(model, ScaleBias(batches=1), batches=[x], heldout=fresh)
        values.append(report.layers[-1]["heldout_second_moment"])
    return np.array(values)


def test_the_fit_is_exact_on_its_batch_and_not_on_fresh_inputs():
    """On the T fitting inputs scale+bias gives every layer second moment 1 (eps aside) and zero
    mean per feature; on fresh inputs the second moment climbs with depth in a narrow deep MLP
    fitted on few inputs (width 64, depth 20, T = 16: the geometric mean over 12 networks at
    layer 20 is 5.5, its log 5.7 standard errors above 0)."""
    torch.manual_seed(0)
    model = MLP(64, 64, 20, "relu", "none", None)
    x, fresh = torch.randn(16, 64), torch.randn(40, 64)
    layers = initialize(model, ScaleBias(batches=1), batches=[x], heldout=fresh).layers
    for entry in layers:
        assert entry["fit_second_moment"] == pytest.approx(1.0, abs=1e-3)  # eps = 1e-5
        assert entry["fit_mean_sq"] < 1e-10
        assert entry["heldout_mean_sq"] > 1e-4  # a fresh batch is not centred
    logs = np.log(dense_last_layer(64, 20, 16, 12))
    assert logs.mean() > 2 * logs.std(ddof=1) / math.sqrt(len(logs))


def test_the_sampled_path_has_the_dense_law():
    """Width 96 > 2 (T + H) is where the probe samples: the joint exact sampling on the fitting
    and fresh inputs gives the dense networks' held-out second moment (mean log at layer 10 over
    24 networks each, within 3 standard errors of their difference)."""
    width, depth, samples, networks = 96, 10, 12, 24
    dense = np.log(dense_last_layer(width, depth, samples, networks))
    sampled = []
    for n in range(networks):
        g = torch.Generator().manual_seed(100 + n)
        x, fresh = torch.randn(samples, width, generator=g), torch.randn(40, width, generator=g)
        rows = sampled_heldout(x, fresh, depth, width, "relu", "scale+bias", None, 1e-5, g)
        assert rows[0]["fit_second_moment"] == pytest.approx(1.0, abs=1e-3)
        sampled.append(float(rows[-1]["heldout_second_moment"]))
    sampled = np.log(sampled)
    error = math.hypot(dense.std(ddof=1), sampled.std(ddof=1)) / math.sqrt(networks)
    assert abs(dense.mean() - sampled.mean()) < 3 * error
    assert sampled.mean() > 2 * sampled.std(ddof=1) / math.sqrt(networks)  # and both above 1


@pytest.mark.parametrize("method", ["dense", "sampled"])
def test_probe_heldout_writes_heldout_csv_beside_probe_csv(capsys, tmp_path, method):
    code, err = run_in_process(
        capsys,
        "probe",
        "init=scale+bias",
        "arch.width=40",
        "arch.depth=5",
        "probe.samples=8",
        "probe.networks=3",
        "probe.heldout=12",
        f"probe.method={method}",
        f"hydra.run.dir={tmp_path}",
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "heldout.csv")
    assert list(table.columns) == list(HELDOUT.columns)
    assert len(table) == 3 * 5 and (table.fit_samples == 8).all()
    assert (table.heldout_samples == 12).all()
    assert np.allclose(table.fit_second_moment, 1.0, atol=1e-3)
    assert (table.fit_mean_sq < 1e-10).all() and (table.heldout_mean_sq > 0).all()
    probe = pd.read_csv(tmp_path / "probe.csv")
    assert list(probe.columns) == list(PROBE.columns)
    if method == "dense":  # the same networks as probe.csv's: the fit batch agrees
        np.testing.assert_allclose(table.fit_second_moment, probe.second_moment, rtol=1e-5)
    # the last line names heldout.csv and gives the last layer's numbers on both batches
    top = table[table.layer == 5]
    geometric = np.exp(np.log(top.heldout_second_moment).mean())
    log = (tmp_path / "probe.log").read_text()
    (line,) = [x for x in log.splitlines() if "probe: 3 networks" in x]
    assert "probe.csv, heldout.csv" in line
    assert f"on 12 fresh ones {geometric:.4g} (geometric mean)" in line


def test_heldout_needs_a_fitted_init_one_line(capsys, tmp_path):
    code, err = run_in_process(capsys, "probe", "probe.heldout=10", f"hydra.run.dir={tmp_path}")
    assert code == 2
    assert err.strip().splitlines() == [
        "varexp probe: probe.heldout=10 is not allowed; needs a data-dependent init (scale, "
        "scale+bias, lsuv); init=kaiming is not fitted to data (use probe.heldout=0)"
    ]
    assert not (tmp_path / "probe.csv").exists()


@pytest.mark.parametrize("dataset", ["gaussian", "shapes"])
def test_fresh_inputs_follow_the_probe_batch_and_are_not_in_it(dataset):
    cfg = config(
        "probe",
        "init=scale+bias",
        f"dataset={dataset}",
        "probe.samples=16",
        "probe.heldout=8",
        *(
            ["arch=allcnnc", "dataset.cache=false", "dataset.train_size=64", "dataset.test_size=8"]
            if dataset == "shapes"
            else []
        ),
    )
    x = fixed_batch(cfg.dataset, cfg.arch, 16, cfg.seed)
    fresh = fresh_batch(cfg, torch.device("cpu"))
    assert fresh.shape == (8, *x.shape[1:])
    distance = torch.cdist(fresh.flatten(1), x.flatten(1))
    assert distance.min() > 0  # no probe input among the fresh ones
