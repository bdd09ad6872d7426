"""`varexp probe` end to end: probe.csv and neurons.csv as the README defines them, the dense and
sampled paths, and one-line errors for bad input."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_in_process
from omegaconf import OmegaConf

from varexp import memory, probing
from varexp.probing import choose_method
from varexp.results.tables import PROBE


@pytest.fixture(autouse=True)
def keep_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands its arguments to Hydra


def probe(capsys, tmp_path: Path, *args: str) -> tuple[pd.DataFrame, Path]:
    code, err = run_in_process(
        capsys,
        "probe",
        "arch.width=24",
        "arch.depth=6",
        "probe.samples=8",
        "probe.networks=3",
        f"hydra.run.dir={tmp_path}",
        *args,
    )
    assert code == 0, err
    assert "it/s" not in err and "net/s" not in err  # no progress bar off a terminal
    return pd.read_csv(tmp_path / "probe.csv"), tmp_path


@pytest.mark.parametrize("method", ["dense", "sampled"])
def test_probe_csv_columns_rows_and_neurons(capsys, tmp_path, method):
    table, run_dir = probe(capsys, tmp_path, f"probe.method={method}", "probe.neurons=2")
    assert list(table.columns) == list(PROBE.columns)
    assert list(table.columns) == [
        "network",
        "layer",
        "name",
        "features",
        "sample_mean_sq",
        "sample_var",
        "ratio",
        "second_moment",
        "grad_sq",
        "effective_samples",
        "sample_mean_sq_channel",
        "sample_var_channel",
        "ratio_channel",
    ]
    # an MLP has one convention; effective samples lie in 1..T
    assert np.allclose(table.ratio_channel, table.ratio)
    assert table.effective_samples.between(1, 8).all()
    assert len(table) == 3 * 6
    assert sorted(table.network.unique()) == [0, 1, 2]
    assert list(table[table.network == 1].layer) == list(range(1, 7))
    assert (table.features == 24).all() and (table.name == "layer" + table.layer.astype(str)).all()
    assert np.allclose(table.second_moment, table.sample_mean_sq + table.sample_var)
    assert np.allclose(table.ratio, np.sqrt(table.sample_mean_sq / table.sample_var))
    top = table[table.layer == 6].grad_sq  # dL/dx^L = w ~ N(0, 1): mean of 24 squares
    assert top.between(0.2, 3.0).all()
    neurons = pd.read_csv(run_dir / "neurons.csv")
    assert list(neurons.columns) == ["network", "layer", "neuron", "sample", "value"]
    assert len(neurons) == 3 * 2 * 2 * 8  # networks x layers {1, L} x neurons x samples
    assert set(neurons.layer) == {1, 6}
    assert neurons.neuron.between(0, 23).all()


@pytest.mark.parametrize("method", ["dense", "sampled"])
def test_scale_bias_rows_have_zero_mean_unit_variance(capsys, tmp_path, method):
    args = ("init=scale+bias", f"probe.method={method}", "probe.neurons=0")
    table, _ = probe(capsys, tmp_path, *args)
    assert table.sample_mean_sq.max() < 1e-8
    assert np.allclose(table.sample_var, 1.0, atol=1e-4)  # eps = 1e-5 in Eq. 13-14
    assert not (tmp_path / "neurons.csv").exists()


def test_networks_differ_but_share_the_batch_and_runs_repeat(capsys, tmp_path):
    a, _ = probe(capsys, tmp_path / "a", "probe.method=dense")
    b, _ = probe(capsys, tmp_path / "b", "probe.method=dense")
    pd.testing.assert_frame_equal(a, b)  # seeded from (seed, network)
    layer1 = a[a.layer == 1]  # same inputs: layer-1 second moments differ only through W
    assert layer1.ratio.nunique() == 3


def test_sampled_probe_csv_is_the_same_on_one_thread_or_two(capsys, tmp_path):
    """The sampled path runs one network per thread; network i draws from its own seed."""
    one, _ = probe(capsys, tmp_path / "one", "probe.method=sampled", "threads=1")
    two, _ = probe(capsys, tmp_path / "two", "probe.method=sampled", "threads=2")
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert (tmp_path / "one" / "probe.csv").read_bytes() == (
        tmp_path / "two" / "probe.csv"
    ).read_bytes()


def test_sampled_batches_shrink_to_the_free_memory(monkeypatch):
    """The networks in flight never need more than the pre-run estimate allows (90% of the
    free memory), however many threads and networks there are."""
    cfg = OmegaConf.create(
        {
            "arch": {
                "name": "mlp",
                "width": 3000,
                "depth": 50,
                "norm": "none",
                "activation": "relu",
            },
            "dataset": {"name": "gaussian"},
            "init": {"name": "kaiming"},
            "probe": {"networks": 30, "samples": 100, "grad": True, "neurons": 3},
        }
    )
    per_network = probing.sampled_network_bytes(cfg)
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available", lambda device: 100 * per_network)
    roomy = probing.sampled_plan(cfg, cpu, threads=2)
    assert (roomy.workers, roomy.batch) == (2, 8)
    monkeypatch.setattr(memory, "available", lambda device: 4 * per_network)
    tight = probing.sampled_plan(cfg, cpu, threads=2)
    assert (tight.workers, tight.batch) == (2, 1)  # 3 would fit, 2 workers take 1 each
    assert tight.bytes <= memory.USABLE * 4 * per_network
    monkeypatch.setattr(memory, "available", lambda device: 0.5 * per_network)
    assert probing.sampled_plan(cfg, cpu, threads=2).bytes == per_network  # check refuses it


def test_auto_method_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = OmegaConf.create(
        {
            "arch": {"name": "mlp", "width": 201, "depth": 50, "norm": "none"},
            "init": {"name": "kaiming"},
            "probe": {"method": "auto", "samples": 100},
        }
    )
    assert choose_method(cfg, cpu) == "sampled"
    cfg.arch.width = 200  # below the measured CPU crossover, about 2 T: dense is faster
    assert choose_method(cfg, cpu) == "dense"
    cfg.arch.width = 100  # width <= T: dense only
    assert choose_method(cfg, cpu) == choose_method(cfg, cuda) == "dense"
    cfg.arch.width = 3000  # a GPU runs the dense products faster while the weights fit
    assert (choose_method(cfg, cpu), choose_method(cfg, cuda)) == ("sampled", "dense")
    cfg.arch.width = 8000  # 50 x 8000^2 float32 weights: 12.8 GB
    assert choose_method(cfg, cuda) == "sampled"
    cfg.arch.width, cfg.init.name = 3000, "orthogonal"  # not exact on the sampled path
    assert choose_method(cfg, cpu) == choose_method(cfg, cuda) == "dense"


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("probe.networks=0", "probe.networks=0 is not allowed"),
        ("probe.samples=1", "probe.samples=1 is not allowed; must be an integer >= 2"),
        ("arch.width=-3", "arch.width=-3 is not allowed"),
        ("init=orthogonal probe.method=sampled", "probe.method='sampled' is not allowed"),
        (
            "arch.width=2000000 arch.depth=1000",
            "varexp probe: one network needs about 814 GB "
            "(the sampled path keeps 1000 layer outputs of 2000000 x 100 for the backward pass)",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, arg, needle):
    code, err = run_in_process(capsys, "probe", *arg.split(), f"hydra.run.dir={tmp_path}")
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "probe.csv").exists()
