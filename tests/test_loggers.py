"""Loggers: tensorboard (event files with the rows of metrics.csv and ratios.csv, the final
parameters' ratios and the run's hyperparameters), mlflow (a SQLite or folder store) and wandb
(offline), each continued on resume without a repeated step; csv (the default) writes none."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_MLP, config, hide_package, run_in_process

import varexp
from varexp.data import data_info, fixed_batch
from varexp.errors import ConfigError, VarexpError
from varexp.models import build_model
from varexp.results import checkpoint
from varexp.sweep import calibrate
from varexp.train import Stopped, check, train

MLP = [
    *TINY_MLP,
    "device=cpu",
    "train.progress=false",
    "train.batch_size=4",
    "train.probe_samples=8",
    "train.steps=8",
    "train.ratio_every=2",
    "train.checkpoint_every=3",
]


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def final_ratios(folder: Path) -> pd.DataFrame:
    """The ratios of the model a run ended with (its last checkpoint) on its probe batch,
    measured here with varexp.probe."""
    cfg = config("train", *MLP)
    x = fixed_batch(cfg.dataset, cfg.arch, cfg.train.probe_samples, cfg.seed)
    model = build_model(cfg.arch, tuple(x.shape[1:]), data_info(cfg.dataset, cfg.arch).num_classes)
    model.load_state_dict(checkpoint.load(folder / "checkpoint.pt").model)
    return varexp.probe(model, x, grad=False)


def test_tensorboard_holds_the_csv_rows(tmp_path):
    pytest.importorskip("tensorboard")
    train(config("train", *MLP, "logger=tensorboard", "train.eval_every=3"), tmp_path)
    events = scalars(tmp_path / "tensorboard")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert [s for s, _ in events["train/loss"]] == list(metrics.step)
    assert [v for _, v in events["train/loss"]] == pytest.approx(list(metrics.loss), rel=1e-6)
    assert [v for _, v in events["train/accuracy"]] == pytest.approx(list(metrics.accuracy))
    held_out = metrics.dropna(subset=["test_accuracy"])  # steps 0, 3, 6: nothing between
    for column, tag in (("test_loss", "test/loss"), ("test_accuracy", "test/accuracy")):
        assert [s for s, _ in events[tag]] == list(held_out.step) == [0, 3, 6]
        assert [v for _, v in events[tag]] == pytest.approx(list(held_out[column]), rel=1e-6)
    assert events["train/lr"] == [(0, pytest.approx(metrics.lr.iloc[0], rel=1e-6))]  # no change
    ratios = pd.read_csv(tmp_path / "ratios.csv")
    first = ratios[ratios.layer == 1]
    # and at step 8 the final parameters' ratio
    assert [s for s, _ in events["ratio/01_layer1"]] == [*first.step, 8]
    assert [v for _, v in events["ratio/01_layer1"][:-1]] == pytest.approx(
        list(first.ratio), rel=1e-6
    )
    assert len([t for t in events if t.startswith("weight_grad_rms/")]) == ratios.layer.nunique()


def test_tensorboard_ends_with_the_final_ratios_and_the_hparams(tmp_path):
    """After the last update (step 8, which no metrics row describes) the ratios of the final
    parameters; the run's identifying keys as hparams with its final loss as their metric."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    summary = train(config("train", *MLP, "logger=tensorboard"), tmp_path)
    events = scalars(tmp_path / "tensorboard")
    final = final_ratios(tmp_path)
    for layer, row in final.iterrows():
        tag = f"{layer + 1:02d}_{row['name']}"
        assert events[f"ratio/{tag}"][-1] == (8, pytest.approx(row.ratio, rel=1e-5))
        assert events[f"ratio_channel/{tag}"][-1] == (8, pytest.approx(row.ratio_channel, rel=1e-5))
        assert events[f"weight_grad_rms/{tag}"][-1][0] == 6  # no gradient after the last step
    assert events["hparam/final_loss"] == [(8, pytest.approx(summary["final_loss"], rel=1e-6))]
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.003)
    assert start.hparams["init.name"].string_value == "kaiming"
    assert start.hparams["arch.width"].number_value == 16
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/final_loss"]


def test_resume_continues_the_events_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    with pytest.raises(Stopped):  # as a kill after step 5: the checkpoint is at step 3
        train(config("train", *MLP, "logger=tensorboard", "train.stop_after=5"), tmp_path)
    train(config("train", *MLP, "logger=tensorboard", "resume=true"), tmp_path)
    events = scalars(tmp_path / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == list(range(8))
    assert [s for s, _ in events["ratio/01_layer1"]] == [0, 2, 4, 6, 8]
    # a finished run continued to more steps: its end (final ratios, hparams) is purged
    train(config("train", *MLP, "logger=tensorboard", "resume=true", "train.steps=10"), tmp_path)
    events = scalars(tmp_path / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == list(range(10))
    assert [s for s, _ in events["ratio/01_layer1"]] == [0, 2, 4, 6, 8, 10]
    assert [s for s, _ in events["hparam/final_loss"]] == [10]


def test_csv_logger_writes_no_events(tmp_path):
    train(config("train", *MLP), tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_without_its_package_is_one_line(monkeypatch):
    hide_package(monkeypatch, "tensorboard")
    with pytest.raises(
        ConfigError,
        match=r"^logger=tensorboard needs the tensorboard package, "
        r"which is not installed: pip install -e '\.\[tensorboard\]'",
    ):
        check(config("train", *MLP, "logger=tensorboard"))


# ---------------------------------------------------------------------------------------------
# mlflow and wandb


def mlflow_history(uri: str, experiment: str = "varexp") -> tuple[list, object]:
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return runs, client


@pytest.mark.parametrize("store", ["sqlite", "folder"])
def test_mlflow_resumes_without_repeating_a_step(tmp_path, store, monkeypatch):
    """A kill after step 5 (checkpoint at 3), then resume: one MLflow run, every step once, the
    values of metrics.csv and ratios.csv, the identifying keys as params, the final loss."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else str(tmp_path / "mlruns")
    run = ["logger=mlflow", f"logger.tracking_uri={uri}"]
    folder = tmp_path / "run"
    with pytest.raises(Stopped):
        train(config("train", *MLP, *run, "train.stop_after=5"), folder)
    summary = train(config("train", *MLP, *run, "resume=true"), folder)
    runs, client = mlflow_history(uri if store == "sqlite" else (tmp_path / "mlruns").as_uri())
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    loss = client.get_metric_history(run_id, "train/loss")
    metrics = pd.read_csv(folder / "metrics.csv")
    assert sorted(m.step for m in loss) == list(range(8))
    assert [m.value for m in sorted(loss, key=lambda m: m.step)] == pytest.approx(
        list(metrics.loss), rel=1e-6
    )
    ratio = sorted(client.get_metric_history(run_id, "ratio/01_layer1"), key=lambda m: m.step)
    ratios = pd.read_csv(folder / "ratios.csv").query("layer == 1")
    assert [m.step for m in ratio] == [0, 2, 4, 6, 8]
    assert [m.value for m in ratio[:-1]] == pytest.approx(list(ratios.ratio), rel=1e-6)
    assert ratio[-1].value == pytest.approx(final_ratios(folder).ratio.iloc[0], rel=1e-5)
    assert runs[0].data.params["optim.lr"] == "0.003"
    assert runs[0].data.metrics["final_loss"] == pytest.approx(summary["final_loss"])


def wandb_history(folder: Path) -> list[tuple[int, dict]]:
    """Every history row in the W&B offline run files under folder, in the order written
    (read from wandb's record log: 7-byte header, 32 KiB blocks of checksummed chunks)."""
    proto = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    rows = []
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buffer = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if left < 7 or (length == 0 and kind == 0):  # the rest of a block is padding
                pos += left
                continue
            buffer += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a whole record, or the last chunk of one
                record = proto.Record.FromString(buffer)
                buffer = b""
                if record.WhichOneof("record_type") == "history":
                    rows.append(
                        (
                            record.history.step.num,
                            {
                                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item
                            },
                        )
                    )
    return rows


def test_wandb_offline_resumes_without_repeating_a_step(tmp_path, monkeypatch):
    """A kill after step 5 (checkpoint at 3), then resume: two offline run files of one W&B run
    (`wandb sync` joins them), every step once, the values of metrics.csv and ratios.csv."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = ["logger=wandb", "logger.mode=offline"]
    with pytest.raises(Stopped):
        train(config("train", *MLP, *run, "train.stop_after=5"), tmp_path)
    train(config("train", *MLP, *run, "resume=true"), tmp_path)
    wandb.teardown()  # wandb's service writes the files after run.finish(); as at a CLI's exit
    history = wandb_history(tmp_path)
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 2  # the first try, the resume
    assert [step for step, _ in history] == list(range(9))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert [row["train/loss"] for _, row in history[:8]] == pytest.approx(
        list(metrics.loss), rel=1e-6
    )
    assert [row["train/accuracy"] for _, row in history[:8]] == pytest.approx(
        list(metrics.accuracy)
    )
    ratios = pd.read_csv(tmp_path / "ratios.csv").query("layer == 1")
    assert [row["ratio/01_layer1"] for step, row in history if step % 2 == 0] == pytest.approx(
        [*ratios.ratio, final_ratios(tmp_path).ratio.iloc[0]], rel=1e-5
    )


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_logger_without_its_package_is_one_line(monkeypatch, capsys, tmp_path, name):
    hide_package(monkeypatch, name)
    code, err = run_in_process(capsys, "train", *MLP, f"logger={name}", f"hydra.run.dir={tmp_path}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].endswith(
        f"logger={name} needs the {name} package, which is not installed: "
        f"pip install -e '.[{name}]' (or pip install {name})"
    ), err
    assert not (tmp_path / "metrics.csv").exists()


def test_an_mlflow_store_that_cannot_open_is_one_line(tmp_path):
    pytest.importorskip("mlflow")
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    with pytest.raises(VarexpError, match=r"^logger=mlflow could not open the store sqlite:"):
        train(
            config("train", *MLP, "logger=mlflow", f"logger.tracking_uri={uri}"), tmp_path / "run"
        )


def test_a_sweeps_timing_run_logs_nowhere(tmp_path):
    """The few steps `varexp sweep` times before its first job are nobody's result."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    calibrate(config("sweep", *MLP, "logger=mlflow", f"logger.tracking_uri={uri}"), 1)
    assert not (tmp_path / "mlflow.db").exists()
