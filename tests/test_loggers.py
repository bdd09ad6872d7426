"""logger=tensorboard: event files a TensorBoard reads, with the rows of metrics.csv and
ratios.csv, continued (not duplicated) on resume; csv (the default) writes none."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import config, hide_package

from varexp.errors import ConfigError
from varexp.train import Stopped, check, train

MLP = ["arch=mlp", "arch.width=16", "arch.depth=3", "dataset=gaussian", "dataset.size=64",
       "device=cpu", "train.progress=false", "train.batch_size=4", "train.probe_samples=8",
       "train.steps=8", "train.ratio_every=2", "train.checkpoint_every=3"]


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_the_csv_rows(tmp_path):
    pytest.importorskip("tensorboard")
    train(config("train", *MLP, "logger=tensorboard"), tmp_path)
    events = scalars(tmp_path / "tensorboard")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert [s for s, _ in events["train/loss"]] == list(metrics.step)
    assert [v for _, v in events["train/loss"]] == pytest.approx(list(metrics.loss), rel=1e-6)
    assert events["train/lr"] == [(0, pytest.approx(metrics.lr.iloc[0], rel=1e-6))]  # no change
    ratios = pd.read_csv(tmp_path / "ratios.csv")
    first = ratios[ratios.layer == 1]
    assert [s for s, _ in events["ratio/01_layer1"]] == list(first.step)
    assert [v for _, v in events["ratio/01_layer1"]] == pytest.approx(list(first.ratio), rel=1e-6)
    assert len([t for t in events if t.startswith("weight_grad_rms/")]) == ratios.layer.nunique()


def test_resume_continues_the_events_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    with pytest.raises(Stopped):  # as a kill after step 5: the checkpoint is at step 3
        train(config("train", *MLP, "logger=tensorboard", "train.stop_after=5"), tmp_path)
    train(config("train", *MLP, "logger=tensorboard", "resume=true"), tmp_path)
    steps = [s for s, _ in scalars(tmp_path / "tensorboard")["train/loss"]]
    assert steps == list(range(8))


def test_csv_logger_writes_no_events(tmp_path):
    train(config("train", *MLP), tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_without_its_package_is_one_line(monkeypatch):
    hide_package(monkeypatch, "tensorboard")
    with pytest.raises(ConfigError, match=r"^logger=tensorboard needs the tensorboard package, "
                       r"which is not installed: pip install -e '\.\[tensorboard\]'"):
        check(config("train", *MLP, "logger=tensorboard"))
