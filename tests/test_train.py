"""`varexp train`: the files a run writes, learning, resume equal to an uninterrupted run row for
row, divergence as a result, and one-line refusals of bad input that leave earlier runs intact."""

import json
import math
import shlex
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import config, run_in_process, run_varexp
from test_data import write_cifar

from varexp.data import Stream, cifar10, data_info
from varexp.data.catalog import load_source
from varexp.errors import ConfigError, VarexpError
from varexp.models import build_model
from varexp.models.base import weight_layers
from varexp.results import checkpoint
from varexp.results.checkpoint import checkpoint_path
from varexp.results.tables import METRICS, RATIOS, MetricsRow
from varexp.train import Stopped, accuracy, train
from varexp.train import check as check_train

# Tiny versions of each arch on its embedded dataset (generated on the fly, never cached).
MLP = ["arch=mlp", "arch.width=16", "arch.depth=3", "dataset=gaussian", "dataset.size=64"]
ALLCNNC = [
    "arch=allcnnc",
    "arch.channels=0.05",
    "dataset=shapes",
    "dataset.train_size=256",
    "dataset.test_size=16",
    "dataset.cache=false",
]
UNET = [
    "arch=unet",
    "arch.channels=0.0625",
    "dataset=membranes",
    "dataset.slices=3",
    "dataset.size=64",
    "dataset.crop=32",
    "dataset.val_slices=1",
    "dataset.cache=false",
]
FAST = ["device=cpu", "train.progress=false", "train.batch_size=4", "train.probe_samples=8"]


def cfg_of(*overrides: str):
    return config("train", *FAST, *overrides)


@pytest.mark.parametrize("arch", [MLP, ALLCNNC, UNET], ids=["mlp", "allcnnc", "unet"])
def test_each_arch_writes_well_formed_files(tmp_path, arch):
    cfg = cfg_of(*arch, "init=scale+bias", "init.batches=2", "train.steps=5",
                 "train.ratio_every=2", "train.checkpoint_every=2")  # fmt: skip
    summary = train(cfg, tmp_path)

    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == list(METRICS.columns)
    assert list(metrics.step) == [0, 1, 2, 3, 4]
    assert np.isfinite(metrics.loss).all() and (metrics.loss > 0).all()
    assert (metrics.lr == cfg.optim.lr).all()
    assert (metrics.epoch >= 0).all() and metrics.seconds.is_monotonic_increasing

    ratios = pd.read_csv(tmp_path / "ratios.csv")
    assert list(ratios.columns) == list(RATIOS.columns)
    info = data_info(cfg.dataset, cfg.arch)
    model = build_model(cfg.arch, info.input_shape, info.num_classes)
    names = [wl.name for wl in weight_layers(model)]
    assert list(ratios.step.unique()) == [0, 2, 4]
    for _, rows in ratios.groupby("step"):
        assert list(rows.layer) == list(range(1, len(names) + 1))
        assert list(rows.name) == names
    assert np.allclose(ratios.ratio, np.sqrt(ratios.sample_mean_sq / ratios.sample_var))
    assert (ratios.weight_grad_rms > 0).all() and (ratios.sample_var > 0).all()

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "completed" and summary["steps"] == 5
    assert summary["final_loss"] == pytest.approx(metrics.loss.iloc[-1])
    assert summary["train_seconds"] == pytest.approx(metrics.seconds.iloc[-1])
    assert (summary["arch"], summary["init"], summary["optim"]) == (
        cfg.arch.name, "scale+bias", "sgd")  # fmt: skip
    assert summary["config"]["optim.lr"] == cfg.optim.lr
    assert checkpoint_path(tmp_path).exists()


def test_step_zero_ratios_show_the_papers_decay(tmp_path):
    """At initialization, ratios.csv is the paper's Fig. 2: with kaiming the sample mean-std
    ratio of a deep ReLU MLP grows with depth (mean-field theory: 0.68 at layer 2, 2.43 at layer
    10; finite width keeps it lower, paper Fig. 2); scale+bias cancels the sample means on its
    fitting minibatches, so on the probe batch the ratio stays small."""
    last = {}
    for init in ("kaiming", "scale+bias"):
        cfg = cfg_of("arch=mlp", "arch.width=256", "arch.depth=10", "dataset=gaussian",
                     "dataset.size=512", f"init={init}", "train.batch_size=64",
                     "train.probe_samples=64", "train.steps=1")  # fmt: skip
        train(cfg, tmp_path / init)
        ratios = pd.read_csv(tmp_path / init / "ratios.csv")
        last[init] = ratios.set_index("layer").ratio
    kaiming = last["kaiming"]
    assert kaiming[2] < kaiming[5] < kaiming[10] and kaiming[10] > 2 * kaiming[2] > 1
    assert (last["scale+bias"][1:10] < 0.5).all()


def test_loss_decreases_on_shapes(tmp_path):
    cfg = cfg_of("arch=mlp", "arch.width=64", "arch.depth=2", *ALLCNNC[2:], "optim=adam",
                 "train.batch_size=32", "train.steps=60", "train.ratio_every=100")  # fmt: skip
    assert train(cfg, tmp_path)["status"] == "completed"
    loss = pd.read_csv(tmp_path / "metrics.csv").loss
    assert loss.iloc[0] > 2.0  # ~ln 10 for 10 classes at initialization
    assert loss.iloc[-10:].mean() < loss.iloc[:10].mean() - 0.3


# dropout draws from the global RNG, adam keeps moments, shapes augments: every state matters
RESUMABLE = [
    *ALLCNNC,
    "arch.dropout=0.2",
    "init=scale+bias",
    "init.batches=2",
    "optim=adam",
    "train.steps=9",
    "train.ratio_every=2",
    "train.checkpoint_every=3",
]


def test_resume_equals_uninterrupted_run_row_for_row(tmp_path):
    whole = train(cfg_of(*RESUMABLE), tmp_path / "whole")
    with pytest.raises(Stopped):  # as a kill after step 5: the last checkpoint is at step 3
        train(cfg_of(*RESUMABLE, "train.stop_after=5"), tmp_path / "cut")
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 3
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = train(cfg_of(*RESUMABLE, "resume=true"), tmp_path / "cut")

    for name in ("metrics.csv", "ratios.csv"):
        a = pd.read_csv(tmp_path / "whole" / name).drop(columns="seconds", errors="ignore")
        b = pd.read_csv(tmp_path / "cut" / name).drop(columns="seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(pd.read_csv(tmp_path / "cut" / "metrics.csv").step) == list(range(9))
    assert resumed["final_loss"] == whole["final_loss"] and resumed["steps"] == 9


def test_metrics_rows_round_trip_through_a_checkpoint(tmp_path):
    """The typed rows a run keeps are what its checkpoint gives back, field for field."""
    with pytest.raises(Stopped):
        train(cfg_of(*RESUMABLE, "train.stop_after=4", "train.eval_every=2"), tmp_path)
    saved = checkpoint.load(checkpoint_path(tmp_path))
    assert all(isinstance(row, MetricsRow) for row in saved.metrics)
    on_disk = pd.read_csv(tmp_path / "metrics.csv")
    assert list(on_disk.columns) == list(MetricsRow._fields)
    back = pd.DataFrame(saved.metrics)
    pd.testing.assert_frame_equal(on_disk, back, check_dtype=False)
    raw = torch.load(checkpoint_path(tmp_path), weights_only=True)["metrics"]
    pd.testing.assert_frame_equal(pd.DataFrame([MetricsRow.from_saved(r) for r in raw]), back)
    assert on_disk.test_loss.notna().sum() == 2  # steps 0 and 2


def test_a_checkpoint_with_rows_of_the_first_five_columns_resumes(tmp_path):
    """Checkpoints made when metrics.csv had only step, epoch, loss, lr and seconds resume: the
    later columns of their rows are empty, every row after them as an uninterrupted run's."""
    train(cfg_of(*RESUMABLE), tmp_path / "whole")
    with pytest.raises(Stopped):
        train(cfg_of(*RESUMABLE, "train.stop_after=5"), tmp_path / "old")
    path = checkpoint_path(tmp_path / "old")
    state = torch.load(path, weights_only=True)
    state["metrics"] = [tuple(row[:5]) for row in state["metrics"]]
    torch.save(state, path)
    train(cfg_of(*RESUMABLE, "resume=true"), tmp_path / "old")
    a = pd.read_csv(tmp_path / "whole" / "metrics.csv").drop(columns="seconds")
    b = pd.read_csv(tmp_path / "old" / "metrics.csv").drop(columns="seconds")
    first = ["step", "epoch", "loss", "lr"]
    pd.testing.assert_frame_equal(a[first], b[first], check_exact=True)
    later = [c for c in a.columns if c not in first]
    pd.testing.assert_frame_equal(a[later].iloc[3:], b[later].iloc[3:], check_exact=True)
    assert b[later].iloc[:3].isna().all().all()  # the old checkpoint's rows (steps 0-2)
    assert b.accuracy.iloc[3:].notna().all()
    METRICS.read_run(tmp_path / "old")  # a whole record of its steps


def test_accuracy_is_the_share_of_correct_predictions():
    """By hand: classes (the largest logit), membrane pixels (logit > 0), two-channel pixels."""
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.5, 0.2]])
    assert accuracy(logits, torch.tensor([0, 2, 2, 1])).item() == 0.75  # rows 0, 2, 3
    membrane = torch.tensor([[[[1.0, -1.0], [-2.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert accuracy(membrane, target).item() == 0.75  # all but the -2 on membrane
    two = torch.cat([-membrane, membrane], dim=1)  # the same predictions as two channels
    assert accuracy(two, target).item() == 0.75
    assert accuracy(logits, torch.tensor([1, 1, 0, 0])).item() == 0.25


EVAL = [*ALLCNNC, "optim=adam", "train.steps=8", "train.ratio_every=4",
        "train.checkpoint_every=2", "train.eval_every=2"]  # fmt: skip


def test_held_out_accuracy_every_eval_every_steps_as_computed_by_hand(tmp_path):
    """test_loss and test_accuracy at steps 0, 2, 4, 6 only (train.eval_every=2); a resumed run
    computes every column as an uninterrupted one; at step 4 the training minibatch's accuracy
    and the held-out loss and accuracy equal a plain forward pass of the checkpoint's model."""
    with pytest.raises(Stopped):
        train(cfg_of(*EVAL, "train.stop_after=5"), tmp_path / "cut")
    saved = checkpoint.load(checkpoint_path(tmp_path / "cut"))
    assert saved.step == 4
    train(cfg_of(*EVAL, "resume=true"), tmp_path / "cut")
    train(cfg_of(*EVAL), tmp_path / "whole")
    rows = METRICS.read_run(tmp_path / "cut")
    whole = METRICS.read_run(tmp_path / "whole")
    pd.testing.assert_frame_equal(rows.drop(columns="seconds"), whole.drop(columns="seconds"))
    assert list(rows.dropna(subset=["test_loss"]).step) == [0, 2, 4, 6]
    assert rows.test_accuracy.notna().tolist() == rows.test_loss.notna().tolist()

    cfg = cfg_of(*EVAL)
    info = data_info(cfg.dataset, cfg.arch)
    model = build_model(cfg.arch, info.input_shape, info.num_classes)
    model.load_state_dict(saved.model)  # after 4 updates: row 4's parameters
    stream = Stream(cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed)
    stream.load_state_dict(saved.stream)
    x, y = next(iter(stream))  # training minibatch 4
    with torch.no_grad():
        right = (model(x).argmax(1) == y).sum().item()
    assert rows.accuracy[4] == right / 4
    test = load_source(cfg.dataset, cfg.arch, "test")  # the 16 images of shapes' test split
    x, y = test.batch(torch.arange(len(test)), torch.Generator(), augment=False)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert rows.test_loss[4] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert rows.test_accuracy[4] == (out.argmax(1) == y).sum().item() / 16


def test_cifar10_held_out_accuracy_is_on_torchvisions_test_batch(tmp_path):
    """On small files in CIFAR10's on-disk format: test_accuracy is on test_batch (the split
    torchvision reads with train=False), computed here from the written arrays."""
    written = write_cifar(tmp_path / "data")
    cifar = ["arch=allcnnc", "arch.channels=0.05", "dataset=cifar10",
             f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
             "dataset.verify=false", "train.steps=3", "train.checkpoint_every=1",
             "train.eval_every=2", "train.ratio_every=2"]  # fmt: skip
    with pytest.raises(Stopped):
        train(cfg_of(*cifar, "train.stop_after=2"), tmp_path / "run")
    saved = checkpoint.load(checkpoint_path(tmp_path / "run"))
    assert saved.step == 2
    train(cfg_of(*cifar, "resume=true"), tmp_path / "run")
    rows = METRICS.read_run(tmp_path / "run")
    assert list(rows.dropna(subset=["test_accuracy"]).step) == [0, 2]

    cfg = cfg_of(*cifar)
    model = build_model(cfg.arch, (3, 32, 32), 10)
    model.load_state_dict(saved.model)
    data, labels = written["test_batch"]
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    mean, std = torch.tensor(cifar10.MEAN), torch.tensor(cifar10.STD)
    x = (images - mean[:, None, None]) / std[:, None, None]
    model.eval()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    right = (predicted == torch.tensor(labels)).sum().item()
    assert rows.test_accuracy[2] == right / len(labels)


def test_unet_held_out_pixel_accuracy_covers_every_test_pixel(tmp_path):
    """Segmentation: test_accuracy is the share of the test slice's pixels predicted right
    (membrane where the logit is > 0), over the crops that tile it, computed here by hand."""
    unet = [*UNET, "train.steps=3", "train.checkpoint_every=1", "train.eval_every=2",
            "train.ratio_every=2"]  # fmt: skip
    with pytest.raises(Stopped):
        train(cfg_of(*unet, "train.stop_after=2"), tmp_path)
    saved = checkpoint.load(checkpoint_path(tmp_path))
    train(cfg_of(*unet, "resume=true"), tmp_path)
    rows = METRICS.read_run(tmp_path)
    assert list(rows.dropna(subset=["test_accuracy"]).step) == [0, 2]

    cfg = cfg_of(*unet)
    model = build_model(cfg.arch, (1, 32, 32), None)
    model.load_state_dict(saved.model)
    model.eval()
    test = load_source(cfg.dataset, cfg.arch, "test")  # one 64x64 slice: four 32x32 tiles
    image, membrane = test.image[0], test.membrane[0]
    right, loss = 0, 0.0
    with torch.no_grad():
        for top in (0, 32):
            for left in (0, 32):
                x = image[None, None, top : top + 32, left : left + 32]
                y = membrane[None, None, top : top + 32, left : left + 32]
                out = model(x)
                right += ((out > 0) == (y > 0.5)).sum().item()
                loss += F.binary_cross_entropy_with_logits(out, y).item() / 4
    assert rows.test_accuracy[2] == right / 64**2
    assert rows.test_loss[2] == pytest.approx(loss, rel=1e-6)


def test_help_names_the_columns_and_how_to_evaluate_held_out():
    out = run_varexp("train", "--help")
    assert out.returncode == 0, out.stderr
    assert f"writes metrics.csv ({', '.join(METRICS.columns)})" in out.stdout
    assert "test_loss and test_accuracy: off (train.eval_every=N: every N steps" in out.stdout
    assert "    eval_every: null" in out.stdout
    on = run_varexp("train", "train.eval_every=50", "--help")
    assert "test_loss and test_accuracy: every 50 steps (train.eval_every)" in on.stdout


def test_no_held_out_columns_without_eval_every_and_a_clear_refusal_without_a_test_split(
    tmp_path,
):
    train(cfg_of(*MLP, "train.steps=3"), tmp_path)
    rows = METRICS.read_run(tmp_path)
    assert rows.test_loss.isna().all() and rows.test_accuracy.isna().all()
    assert rows.accuracy.between(0, 1).all()
    no_test = [o for o in UNET if o != "dataset.val_slices=1"]
    with pytest.raises(ConfigError, match=r"train.eval_every=2 evaluates on the test split.*"
                       r"dataset.val_slices=0"):  # fmt: skip
        check_train(cfg_of(*no_test, "train.eval_every=2"))


def test_resume_extends_a_completed_run_and_reruns_nothing(tmp_path):
    steps8 = [*MLP, "optim=adam", "train.steps=8", "train.ratio_every=3"]
    train(cfg_of(*steps8), tmp_path / "whole")
    train(cfg_of(*MLP, "optim=adam", "train.steps=5", "train.ratio_every=3"), tmp_path / "grown")
    train(cfg_of(*steps8, "resume=true"), tmp_path / "grown")
    for name in ("metrics.csv", "ratios.csv"):
        a = pd.read_csv(tmp_path / "whole" / name).drop(columns="seconds", errors="ignore")
        b = pd.read_csv(tmp_path / "grown" / name).drop(columns="seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "grown").iterdir()}
    summary = train(cfg_of(*steps8, "resume=true"), tmp_path / "grown")
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "grown").iterdir()} == before


def test_huge_lr_is_a_diverged_result_with_exit_0(tmp_path, capsys):
    code, err = run_in_process(capsys, "train", *MLP, *FAST, "optim.lr=1e12", "train.steps=50",
                       f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert summary["status"] == "diverged" and summary["final_loss"] is None
    # the run stops at the first non-finite loss, which is the last row
    assert not math.isfinite(metrics.loss.iloc[-1]) and np.isfinite(metrics.loss.iloc[:-1]).all()
    assert summary["diverged_at"] == metrics.step.iloc[-1] == summary["steps"] < 50


def test_reading_the_loss_every_k_steps_gives_the_same_rows(tmp_path):
    """train.sync_every (a GPU reads the loss every 50 steps, not every step): same metrics and
    ratios, row for row, and a divergence ends the run at the same step with the same rows."""
    steps = [*RESUMABLE[:-1], "train.checkpoint_every=4"]
    for name, extra in (("fine", []), ("huge", ["optim.lr=1e12", "train.steps=30"])):
        every = train(cfg_of(*steps, *extra), tmp_path / name / "1")
        chunked = train(cfg_of(*steps, *extra, "train.sync_every=7"), tmp_path / name / "7")
        assert (every["status"], every["steps"]) == (chunked["status"], chunked["steps"])
        for table in ("metrics.csv", "ratios.csv"):
            a = pd.read_csv(tmp_path / name / "1" / table).drop(columns="seconds", errors="ignore")
            b = pd.read_csv(tmp_path / name / "7" / table).drop(columns="seconds", errors="ignore")
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert every["status"] == "diverged" and 0 < every["steps"] < 30


def test_channels_last_trains_the_same_model(tmp_path):
    plain = train(cfg_of(*ALLCNNC, "train.steps=3"), tmp_path / "plain")
    nhwc = train(cfg_of(*ALLCNNC, "train.steps=3", "train.channels_last=true"), tmp_path / "nhwc")
    a, b = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("plain", "nhwc"))
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-4)
    assert plain["status"] == nhwc["status"] == "completed"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.sync_every=0", "train.sync_every=0 is not allowed; must be auto or an integer"),
        ("optim.lr=0", "optim.lr=0.0 is not allowed; must be a finite number > 0"),
        ("optim.lr=-0.1", "optim.lr=-0.1 is not allowed"),
        ("train.steps=0", "train.steps=0 is not allowed; must be an integer >= 1"),
        ("train.batch_size=1", "train.batch_size=1 is not allowed; must be an integer >= 2"),
        ("train.ratio_every=0", "train.ratio_every=0 is not allowed"),
        ("optim.momentum=1.0", "optim.momentum=1.0 is not allowed; must be a number in [0, 1)"),
        ("train.progress=maybe", "train.progress='maybe' is not allowed; must be true or false"),
        (
            "train.eval_every=0",
            "train.eval_every=0 is not allowed; must be an integer >= 1 or null",
        ),
    ],
)
def test_bad_values_are_refused_before_any_work(override, needle):
    with pytest.raises(ConfigError) as err:
        check_train(cfg_of(*MLP, override))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_input_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    code, err = run_in_process(capsys, "train", *MLP, "optim.lr=0", f"hydra.run.dir={tmp_path}")
    assert code == 2
    assert err.strip() == "varexp train: optim.lr=0 is not allowed; must be a finite number > 0"
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "summary.json").exists()


def test_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VarexpError, match=r"run directory .*file/run is not writable"):
        train(cfg_of(*MLP, "train.steps=1"), blocker / "run")


def test_refusals_leave_the_earlier_run_intact(tmp_path, capsys):
    """Without resume=true a finished run is not overwritten; a checkpoint from another config
    is refused naming every differing key; neither touches the files or Hydra's record."""
    args = [*MLP, *FAST, "optim.lr=0.01", "train.steps=3", f"hydra.run.dir={tmp_path}"]
    assert run_in_process(capsys, "train", *args)[0] == 0
    record = (tmp_path / ".hydra" / "config.yaml").read_text()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    code, err = run_in_process(capsys, "train", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "already holds a completed run; pass resume=true" in err

    code, err = run_in_process(capsys, "train", *args, "resume=true", "optim.lr=0.5", "seed=3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds results of another config: optim.lr=0.01 (now 0.5), seed=0 (now 3)" in err

    assert (tmp_path / ".hydra" / "config.yaml").read_text() == record
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files


def test_probing_changes_no_training_state(tmp_path):
    """BatchNorm running statistics are restored after each probe, so logging ratios every step
    or never gives the same model at the end."""
    finals = []
    for every in (1, 100):
        run_dir = tmp_path / str(every)
        train(cfg_of(*MLP, "init=batchnorm", "train.steps=4", f"train.ratio_every={every}"),
              run_dir)  # fmt: skip
        finals.append(torch.load(checkpoint_path(run_dir), weights_only=True)["model"])
    for key, value in finals[0].items():
        assert torch.equal(value, finals[1][key]), key


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_uninterrupted_rows(tmp_path):
    """The real thing: SIGKILL the `varexp train` process once its first checkpoint exists."""
    import os
    import subprocess
    import sys
    import time

    args = [*MLP, *FAST, "optim=adam", "train.steps=1000", "train.ratio_every=50",
            "train.checkpoint_every=100"]  # fmt: skip
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "varexp", "train", *args,
                             f"hydra.run.dir={cut}"], stderr=subprocess.DEVNULL)  # fmt: skip
    while not checkpoint_path(cut).exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    assert proc.wait() == -9 and not (cut / "summary.json").exists(), "finished before the kill"
    assert os.path.getsize(cut / "metrics.csv") > 0
    train(cfg_of(*args, "resume=true"), cut)
    train(cfg_of(*args), tmp_path / "whole")
    for name in ("metrics.csv", "ratios.csv"):
        a = pd.read_csv(tmp_path / "whole" / name).drop(columns="seconds", errors="ignore")
        b = pd.read_csv(cut / name).drop(columns="seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_ctrl_c_stops_at_a_step_with_a_checkpoint_and_says_how_to_resume(tmp_path):
    """A user's Ctrl-C (SIGINT) on `varexp train` in an empty folder: one message, a
    checkpoint at the step it stopped at, and a resume command that works as printed."""
    import os
    import shlex
    import signal
    import subprocess
    import sys

    from conftest import run_varexp

    args = [
        "train",
        *MLP,
        "device=cpu",
        "train.batch_size=4",
        "train.probe_samples=8",
        "train.steps=100000",
        "train.log_seconds=0.2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "varexp", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:  # no terminal: a banner, then progress lines
        lines.append(line)
        if "steps/s" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "train from scratch: mlp 16x3" in lines[0] and "-> " in lines[0]
    message = err.strip().splitlines()
    assert "Traceback" not in err and len(message) == 2, err
    run_dir = next((tmp_path / "outputs" / "train").iterdir())
    step = torch.load(checkpoint_path(run_dir), weights_only=True)["step"]
    assert message[0] == (
        f"varexp train: stopped at step {step}; checkpoint saved in {run_dir}; resume with:"
    )
    resume = shlex.split(message[1].strip())
    assert resume[:2] == ["varexp", "train"] and f"hydra.run.dir={run_dir}" in resume
    done = run_varexp(*resume[1:], f"train.steps={step + 3}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *_, finished, hint = done.stdout.strip().splitlines()
    assert "completed after" in finished and str(run_dir) in finished
    assert hint.startswith("next: varexp sweep arch=mlp ")
    assert list(pd.read_csv(run_dir / "metrics.csv")["step"]) == list(range(step + 3))


def test_summary_records_provenance(tmp_path):
    summary = train(cfg_of(*MLP, "train.steps=2"), tmp_path)
    record = summary["provenance"]
    assert record["torch"] == torch.__version__ and record["python"].count(".") == 2
    assert record["code"].startswith(("git ", "varexp ")) and record["device"]
    assert record["host"] and summary["started"] <= summary["finished"]


def test_last_line_names_the_sweep_of_this_task(tmp_path, monkeypatch, capsys):
    """After `varexp train` the last line is the next command: the sweep of the run's task (its
    arch, dataset and train keys kept, the swept init, optimizer and seed left out), which
    composes as printed."""
    from varexp import compose, sweep
    from varexp.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    main(["train", *MLP, *FAST, "init=scale", "optim.lr=0.01", "seed=1", "train.steps=2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("next: varexp sweep arch=mlp arch.width=16 "), last
    assert last.endswith("then varexp plot figure4")
    words = shlex.split(last.removeprefix("next: ").split("   (")[0])
    assert not {"init=scale", "optim.lr=0.01", "seed=1", "device=cpu"} & set(words)
    line = compose.parse("sweep", compose.complete("sweep", words[2:]), sweep.check)
    assert line.cfg.arch.width == 16 and line.cfg.train.steps == 2 and len(line.jobs) == 72
