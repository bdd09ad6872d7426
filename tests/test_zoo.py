"""arch=torchvision (and arch=timm where installed): models users have, probed and trained like
varexp's own, with one-line refusals of unknown names."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import config, hide_package, run_in_process, run_varexp
from torch import nn

from varexp.errors import ConfigError, VarexpError
from varexp.models import build_model
from varexp.train import check, train

SMALL = [
    "dataset=shapes",
    "dataset.train_size=256",
    "dataset.test_size=16",
    "dataset.cache=false",
    "device=cpu",
]


def test_torchvision_models_by_name():
    resnet = build_model({"name": "torchvision", "model": "resnet18"}, (3, 32, 32), 10)
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    plain = build_model(
        {"name": "torchvision", "model": "resnet18", "norm": "none"}, (3, 32, 32), 10
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    vit = build_model({"name": "torchvision", "model": "vit_b_16"}, (3, 32, 32), 10)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_names_are_one_line_with_close_matches():
    with pytest.raises(
        ConfigError,
        match=r"^arch.model='resnet81' is not allowed; not a "
        r"torchvision classification model; close matches: resnet18",
    ):
        build_model({"name": "torchvision", "model": "resnet81"}, (3, 32, 32), 10)


def test_probe_a_torchvision_model(tmp_path, capsys):
    code, err = run_in_process(
        capsys,
        "probe",
        "arch=torchvision",
        "arch.model=resnet18",
        *SMALL,
        "probe.networks=2",
        "probe.samples=16",
        f"hydra.run.dir={tmp_path}",
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "probe.csv")
    assert table.network.nunique() == 2 and table.layer.max() == 21
    names = list(table[table.network == 0].name)
    assert names[0] == "conv1" and names[-1] == "fc"
    assert names.index("layer2.0.downsample.0") == names.index("layer2.0.conv2") + 1


def test_train_a_torchvision_model_with_its_own_init(tmp_path):
    summary = train(
        config(
            "train",
            "arch=torchvision",
            "arch.model=resnet18",
            *SMALL,
            "init=default",
            "train.steps=3",
            "train.ratio_every=2",
            "train.batch_size=8",
            "train.probe_samples=8",
            "train.progress=false",
        ),
        tmp_path,
    )
    assert summary["status"] == "completed" and summary["arch"] == "resnet18"
    ratios = pd.read_csv(tmp_path / "ratios.csv")
    assert list(ratios.step.unique()) == [0, 2] and ratios.layer.max() == 21


def test_segmentation_data_is_refused_for_a_classifier():
    with pytest.raises(VarexpError, match="arch=torchvision needs a classification dataset"):
        check(config("train", "arch=torchvision", "dataset=membranes", "device=cpu"))


def test_timm_without_its_package_is_one_line(monkeypatch):
    hide_package(monkeypatch, "timm")
    with pytest.raises(
        ConfigError,
        match=r"^arch=timm needs the timm package, which is not "
        r"installed: pip install -e '\.\[timm\]'",
    ):
        build_model({"name": "timm", "model": "resnet18"}, (3, 32, 32), 10)


def test_a_sweep_over_models_keeps_them_apart(tmp_path):
    code = run_varexp(
        "sweep",
        "arch=torchvision",
        "arch.model=resnet18,squeezenet1_1",
        *SMALL,
        "init=default",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0",
        "train.steps=2",
        "train.ratio_every=1",
        "train.batch_size=8",
        "train.probe_samples=8",
        "sweep.estimate=false",
        "hydra/launcher=basic",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        check=True,
    )
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert sorted(table.arch) == ["resnet18", "squeezenet1_1"], code.stdout[-2000:]
    assert set(table.status) == {"completed"}
    assert sorted(pd.read_csv(tmp_path / "sweep" / "selected.csv").arch) == sorted(table.arch)
    assert {p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()} >= {
        "resnet18-shapes",
        "squeezenet1_1-shapes",
    }
