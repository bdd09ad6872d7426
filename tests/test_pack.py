"""varexp.pack: runs that share a data stream, trained as one batched model, give the rows they
give alone (float64 on the CPU, to rounding, for the MLP, ALL-CNN-C and UNet with every init of
the paper's Fig. 4 and both optimizers at different learning rates in one pack); a diverging or
failing run leaves its pack alone; a packed sweep resumes after a kill to the rows of an
uninterrupted one; the plan (who packs with whom, how many) and its refusals of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MLP, config, run_in_process, run_varexp
from test_sweep import job_logs, launch_here

import varexp.train
from varexp.data import data_info
from varexp.data.catalog import load_source
from varexp.errors import VarexpError
from varexp.models import ARCHITECTURES
from varexp.pack import plan as packing
from varexp.pack.plan import PACK_KEY
from varexp.pack.trainer import PackRun, train_pack
from varexp.results.checkpoint import checkpoint_path
from varexp.train import train

# small versions of the paper's three models, sized so that 100 steps in float64 take seconds
MLP = [
    *TINY_MLP,
    "train.batch_size=8",
]
ALLCNNC = [
    "arch=allcnnc",
    "arch.channels=0.1",
    "dataset=gaussian",
    "dataset.shape=[3,12,12]",
    "dataset.size=128",
    "train.batch_size=16",
]
UNET = [
    "arch=unet",
    "arch.channels=0.04",
    "dataset=membranes",
    "dataset.slices=3",
    "dataset.size=64",
    "dataset.crop=32",
    "dataset.val_slices=1",
    "dataset.cache=false",
    "dataset.augment=false",
    "train.batch_size=2",
]
FAST = ["device=cpu", "train.progress=false", "train.probe_samples=8"]
# every init of Fig. 4 (data-dependent fits per run, BatchNorm's per-run batch statistics) and
# both optimizers, each at its own learning rate, in one pack
FIG4 = [
    ("scale", "sgd", 1e-3),
    ("scale+bias", "adam", 3e-4),
    ("batchnorm", "sgd", 3e-3),
    ("batchnorm", "adam", 1e-4),
    ("scale+bias", "sgd", 1e-2),
]
STATS = ["sample_mean_sq", "sample_var", "sample_mean_sq_channel", "sample_var_channel"]


def run_cfg(arch: list[str], init: str, optim: str, lr: float, *extra: str):
    fit = ["init.batches=2"] if init != "batchnorm" else []
    return config(
        "train", *FAST, *arch, f"init={init}", *fit, f"optim={optim}", f"optim.lr={lr}", *extra
    )


def pack_of(cfgs: list, folder: Path) -> list[dict]:
    runs = []
    for k, cfg in enumerate(cfgs):
        (folder / str(k)).mkdir(parents=True)
        runs.append(PackRun(cfg, folder / str(k), data_info(cfg.dataset, cfg.arch), None))
    return train_pack(runs, verbose=False)


def relative(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    assert (np.isfinite(a) == np.isfinite(b)).all()
    return float(np.max(np.abs(a[both] - b[both]) / np.maximum(scale[both], 1e-300), initial=0.0))


def worst_difference(alone: Path, packed: Path) -> float:
    """The largest relative difference between two runs' rows: the loss, and every column of
    ratios.csv. The sample moments are compared relative to the layer's second moment (a dead
    layer's sample variance is rounding noise around 0: its relative error means nothing), the
    ratios only where the variance is more than rounding, the gradient RMS to its own size."""
    a, b = (pd.read_csv(d / "metrics.csv") for d in (alone, packed))
    assert list(a.step) == list(b.step)
    worst = relative(a.loss.to_numpy(), b.loss.to_numpy(), np.abs(a.loss.to_numpy()))
    # the accuracies count the same correct predictions; the held-out loss rounds as the loss
    for column in ("accuracy", "test_accuracy"):
        pd.testing.assert_series_equal(a[column], b[column], check_exact=True)
    test = a.test_loss.to_numpy()
    worst = max(worst, relative(test, b.test_loss.to_numpy(), np.abs(test)))
    a, b = (pd.read_csv(d / "ratios.csv") for d in (alone, packed))
    assert a[["step", "layer", "name"]].equals(b[["step", "layer", "name"]])
    for suffix in ("", "_channel"):
        moment = (a[f"sample_mean_sq{suffix}"] + a[f"sample_var{suffix}"]).to_numpy()
        for column in (f"sample_mean_sq{suffix}", f"sample_var{suffix}"):
            worst = max(worst, relative(a[column].to_numpy(), b[column].to_numpy(), moment))
        alive = (a[f"sample_var{suffix}"] > 1e-12 * moment).to_numpy()
        column = f"ratio{suffix}"
        worst = max(
            worst,
            relative(
                a[column].to_numpy()[alive],
                b[column].to_numpy()[alive],
                a[column].to_numpy()[alive],
            ),
        )
    grad = a.weight_grad_rms.to_numpy()
    return max(worst, relative(grad, b.weight_grad_rms.to_numpy(), grad))


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs on one thread, as `varexp` runs them here (a second thread on a busy
    2-core machine makes small steps many times slower: varexp.threads)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def float64(monkeypatch):
    """Models, inputs and losses in float64: every model varexp builds computes in float64 (its
    input cast on the way in), and torch.optim's state follows the default dtype."""
    real = varexp.train.build_model

    def build(*args, **kwargs):
        model = real(*args, **kwargs).double()
        model.register_forward_pre_hook(lambda m, args: tuple(a.double() for a in args))
        return model

    monkeypatch.setattr(varexp.train, "build_model", build)
    saved = torch.get_default_dtype()
    yield
    torch.set_default_dtype(saved)


def in_float64(cfgs: list) -> None:
    for cfg in cfgs:  # the data sets are made (and cached) in their own float32 first
        load_source(cfg.dataset, cfg.arch, "train")
    torch.set_default_dtype(torch.float64)


# ---------------------------------------------------------------------------------------------
# the same rows as alone


@pytest.mark.parametrize("arch", [MLP, ALLCNNC, UNET], ids=["mlp", "allcnnc", "unet"])
def test_a_packed_run_gives_the_rows_it_gives_alone(tmp_path, float64, arch):
    """100 steps in float64: loss, held-out loss and every ratios.csv column agree to 1e-9
    relative (measured: at most 1e-11), the accuracies exactly, and so do the checkpoints
    (weights, BatchNorm statistics, each optimizer's state) and the summaries."""
    steps = [
        "train.steps=100",
        "train.ratio_every=10",
        "train.checkpoint_every=40",
        "train.eval_every=15",  # at steps of its own and at steps of the ratios
    ]
    cfgs = [run_cfg(arch, init, optim, lr, *steps) for init, optim, lr in FIG4]
    in_float64(cfgs)
    alone = [train(cfg, tmp_path / "alone" / str(k), quiet=True) for k, cfg in enumerate(cfgs)]
    packed = pack_of(cfgs, tmp_path / "pack")
    for k, (one, other) in enumerate(zip(alone, packed, strict=True)):
        folder_a, folder_b = tmp_path / "alone" / str(k), tmp_path / "pack" / str(k)
        assert worst_difference(folder_a, folder_b) < 1e-9, FIG4[k]
        evaluated = pd.read_csv(folder_b / "metrics.csv").dropna(subset=["test_accuracy"])
        assert list(evaluated.step) == list(range(0, 100, 15))
        assert one["status"] == other["status"] == "completed" and other["steps"] == 100
        assert other["config"] == one["config"]
        a, b = (torch.load(checkpoint_path(f), weights_only=True) for f in (folder_a, folder_b))
        assert a["step"] == b["step"] and a["stream"] == b["stream"]
        assert a["model"].keys() == b["model"].keys()
        for key, value in a["model"].items():
            # (atol: a conv's bias before BatchNorm has no effect, and no gradient but
            # rounding: it stays at rounding level, 1e-11)
            assert torch.allclose(value.double(), b["model"][key].double(), rtol=1e-9, atol=1e-9), (
                FIG4[k],
                key,
            )
        state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
        assert state_a.keys() == state_b.keys()
        for param, entries in state_a.items():
            assert entries.keys() == state_b[param].keys()
            for name, value in entries.items():
                assert value.dtype == state_b[param][name].dtype
                assert torch.allclose(value, state_b[param][name], rtol=1e-9, atol=1e-9)
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


def test_float32_packs_follow_the_same_curve(tmp_path):
    """In float32 the packed and the lone runs round differently and drift apart slowly: over
    100 steps of the MLP the loss agrees to 1e-4 relative (measured: about 1e-6)."""
    cfgs = [
        run_cfg(MLP, init, optim, lr, "train.steps=100", "train.ratio_every=50")
        for init, optim, lr in FIG4
    ]
    for k, cfg in enumerate(cfgs):
        train(cfg, tmp_path / "alone" / str(k), quiet=True)
    pack_of(cfgs, tmp_path / "pack")
    for k in range(len(cfgs)):
        a, b = (pd.read_csv(tmp_path / d / str(k) / "metrics.csv") for d in ("alone", "pack"))
        assert relative(a.loss.to_numpy(), b.loss.to_numpy(), a.loss.to_numpy()) < 1e-4


# ---------------------------------------------------------------------------------------------
# a run that diverges or fails


def test_a_diverging_run_leaves_its_pack_alone(tmp_path):
    """A run with a huge lr diverges at the step it diverges at alone, with the same rows up to
    it; the other runs of its pack give exactly the rows they give in a pack without it."""
    steps = ["train.steps=30", "train.ratio_every=5", "train.checkpoint_every=10"]
    good = [
        run_cfg(MLP, "scale", "sgd", 1e-2, *steps),
        run_cfg(MLP, "batchnorm", "adam", 1e-3, *steps),
    ]
    huge = run_cfg(MLP, "scale+bias", "sgd", 1e6, *steps)
    alone = train(huge, tmp_path / "alone", quiet=True)
    assert alone["status"] == "diverged"
    with_it = pack_of([good[0], huge, good[1]], tmp_path / "with")
    pack_of(good, tmp_path / "without")
    diverged = with_it[1]
    assert diverged["status"] == "diverged"
    assert diverged["diverged_at"] == alone["diverged_at"] and diverged["steps"] == alone["steps"]
    for name in ("metrics.csv", "ratios.csv"):
        a = pd.read_csv(tmp_path / "alone" / name).drop(columns="seconds", errors="ignore")
        b = pd.read_csv(tmp_path / "with" / "1" / name).drop(columns="seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    for k, j in ((0, 0), (2, 1)):
        assert with_it[k]["status"] == "completed" and with_it[k]["steps"] == 30
        for name in ("metrics.csv", "ratios.csv"):
            a, b = (
                pd.read_csv(tmp_path / d / str(i) / name).drop(columns="seconds", errors="ignore")
                for d, i in (("with", k), ("without", j))
            )
            pd.testing.assert_frame_equal(a, b, check_exact=True)


SIZES = [
    "arch=mlp",
    "arch.width=16",
    "arch.depth=3",
    "dataset=gaussian",
    "dataset.size=64",
    "train.steps=8",
    "train.batch_size=8",
    "train.ratio_every=2",
    "train.probe_samples=8",
    "train.checkpoint_every=2",
    "train.progress=false",
    "device=cpu",
    "sweep.estimate=false",
]
GRID = ["init=scale,scale+bias,batchnorm", "optim=sgd,adam", "sweep.lr_index=0,3", "seed=0"]


def sweep_here(tmp_path: Path, folder: str, *extra: str) -> list[str]:
    return [
        "sweep",
        *SIZES,
        *GRID,
        f"hydra.sweep.dir={tmp_path / folder}",
        "hydra/launcher=basic",
        *extra,
    ]


def rows(folder: Path) -> dict[str, pd.DataFrame]:
    """Every run's metrics.csv and ratios.csv under a sweep folder, without the timings."""
    out = {}
    for path in sorted(folder.rglob("metrics.csv")) + sorted(folder.rglob("ratios.csv")):
        out[str(path.relative_to(folder))] = pd.read_csv(path).drop(
            columns="seconds", errors="ignore"
        )
    return out


def assert_same_rows(a: Path, b: Path, **tolerance) -> None:
    left, right = rows(a), rows(b)
    assert left.keys() == right.keys() and len(left) == 24
    for name, frame in left.items():
        pd.testing.assert_frame_equal(frame, right[name], **(tolerance or {"check_exact": True}))


def test_a_run_whose_init_fails_is_failed_and_its_pack_completes(tmp_path, monkeypatch, capsys):
    real = varexp.train.initialize

    def fail_scale_bias(model, init, *args, **kwargs):
        if init.name == "scale+bias":
            raise VarexpError("init=scale+bias: layer layer2 is dead (simulated)")
        return real(model, init, *args, **kwargs)

    monkeypatch.setattr(varexp.train, "initialize", fail_scale_bias)
    with pytest.raises(SystemExit) as exit_:
        launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "sweep"))
    assert exit_.value.code == 1
    out = capsys.readouterr()
    assert "1 pack of 12" in out.out
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    failed = table[table["init"] == "scale+bias"]
    assert len(table) == 12 and (failed["status"] == "failed").all() and len(failed) == 4
    assert (table[table["init"] != "scale+bias"]["status"] == "completed").all()
    for row in failed.itertuples():
        folder = tmp_path / "sweep" / row.run_dir
        summary = pd.read_json(folder / "summary.json", typ="series")
        assert summary["status"] == "failed" and "is dead (simulated)" in summary["error"]
        assert "is dead (simulated)" in (folder / "sweep.log").read_text()
    assert "4 of 12 runs did not finish" in out.err


def test_runs_refused_inside_a_pack_are_failed_and_the_sweep_exits_non_zero(
    tmp_path, monkeypatch, capsys
):
    """Inside a pack each run is refused as its own job would be: a finished run that cannot
    continue to the new train.steps (its checkpoint deleted) and a folder where a stray file
    appeared after the launch's checks are failed in sweep.csv, their folders untouched; the
    other runs of the pack train; exit 1."""
    import varexp.sweep

    sweep = tmp_path / "sweep"
    narrow = [
        *SIZES,
        "init=scale,scale+bias",
        "optim=sgd",
        "sweep.lr_index=0,3",
        "seed=0",
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=basic",
    ]
    launch_here(monkeypatch, tmp_path, "sweep", *narrow)
    lost = "mlp-gaussian/scale+bias/sgd/lr=0.0003/seed=0"
    (sweep / lost / "checkpoint.pt").unlink()
    kept = {
        p: p.read_bytes() for p in (sweep / lost).rglob("*") if p.is_file() and p.suffix != ".log"
    }
    stray = "mlp-gaussian/batchnorm/sgd/lr=0.01/seed=0"
    real_prepare = varexp.sweep.prepare

    def then_a_stray_file(line):  # after the launch's checks, before the pack job runs
        real_prepare(line)
        (sweep / stray).mkdir(parents=True)
        (sweep / stray / "notes.txt").write_text("mine")

    monkeypatch.setattr(varexp.sweep, "prepare", then_a_stray_file)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        launch_here(
            monkeypatch,
            tmp_path,
            "sweep",
            *narrow,
            "init=scale,scale+bias,batchnorm",
            "train.steps=10",
        )
    assert exit_.value.code == 1
    out = capsys.readouterr()
    assert "6 runs in 1 job: 1 pack of 6" in out.out
    table = pd.read_csv(sweep / "sweep.csv").set_index("run_dir")
    assert table["status"].to_dict() == {
        **{d: "completed" for d in table.index},
        lost: "failed",
        stray: "failed",
    }
    assert (table.loc[table["status"] == "completed", "steps"] == 10).all()
    assert out.err.strip().splitlines()[-1].startswith("varexp sweep: 2 of 6 runs did not finish; ")
    assert {p: p.read_bytes() for p in kept} == kept  # .hydra/config.yaml and summary included
    assert sorted(p.name for p in (sweep / stray).iterdir()) == ["notes.txt", "sweep.log"]
    assert "holds results made without a record" in (sweep / stray / "sweep.log").read_text()


def test_packs_and_runs_alone_report_under_the_plans_job_numbers(tmp_path, monkeypatch, capsys):
    """The launch numbers a sweep's packs and lone runs in its own order (the longest first),
    the plan its runs in the grid's: every run's outcome is recorded under its plan number, so
    a sweep whose lone runs come first in the grid ends with every run completed, exit 0."""
    sweep = tmp_path / "sweep"
    # per seed, 3 runs in packs of at most 2: jobs [0, 1], [2], [3, 4], [5] in the grid,
    # launched as #0 [0, 1], #1 [3, 4], #2 [2], #3 [5]
    launch_here(
        monkeypatch,
        tmp_path,
        "sweep",
        *SIZES,
        "init=scale,scale+bias,batchnorm",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0,1",
        "sweep.pack=2",
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=basic",
    )
    out = capsys.readouterr().out
    assert "6 runs in 4 jobs: 2 packs of 2, 2 runs alone" in out
    assert "sweep: 6 runs (6 completed)" in out
    plan = json.loads((sweep / ".plan.json").read_text())
    outcomes = {int(p.stem): json.loads(p.read_text()) for p in (sweep / ".launch").glob("*.json")}
    assert sorted(outcomes) == list(range(6))
    assert [outcomes[i]["run_dir"] for i in range(6)] == [j["run_dir"] for j in plan["jobs"]]


# ---------------------------------------------------------------------------------------------
# stopped and resumed


def test_a_stopped_pack_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """train.stop_after stops a pack as a kill would (each run keeps its last checkpoint);
    the same command again continues every run from it to the uninterrupted rows; a third
    launch trains nothing."""
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "whole"))
    with pytest.raises(SystemExit) as stopped:
        launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "cut", "train.stop_after=5"))
    assert stopped.value.code == 2
    cut = tmp_path / "cut"
    assert not list(cut.rglob("summary.json"))
    assert {torch.load(p, weights_only=True)["step"] for p in cut.rglob("checkpoint.pt")} == {4}
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "cut"))
    assert job_logs(cut).count("from its checkpoint") == 12
    assert_same_rows(tmp_path / "whole", cut)
    files = sorted(cut.rglob("checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in files]
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "cut"))
    assert [p.stat().st_mtime_ns for p in files] == stamps


@pytest.mark.slow
def test_runs_at_different_steps_join_the_pack_at_theirs(tmp_path, monkeypatch, float64):
    """A sweep stopped while its runs trained alone (sweep.pack=off: the first run has a
    checkpoint at step 2, the others nothing), then run packed: the first run joins the pack
    when the pack reaches step 2, and every run ends with the uninterrupted rows (float64)."""
    in_float64([config("sweep", *SIZES[:5])])
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "whole"))
    with pytest.raises(SystemExit):
        launch_here(
            monkeypatch,
            tmp_path,
            *sweep_here(tmp_path, "cut", "train.stop_after=3", "sweep.pack=off"),
        )
    cut = tmp_path / "cut"
    assert [torch.load(p, weights_only=True)["step"] for p in cut.rglob("checkpoint.pt")] == [2]
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "cut"))
    assert job_logs(cut).count("from its checkpoint") == 1
    for name, frame in rows(tmp_path / "whole").items():
        other = rows(cut)[name]
        for column in frame.columns.drop("name", errors="ignore"):
            assert (
                relative(
                    frame[column].to_numpy(float),
                    other[column].to_numpy(float),
                    np.abs(frame[column].to_numpy(float)) + 1e-12,
                )
                < 1e-9
            ), name


@pytest.mark.slow
def test_ctrl_c_and_sigkill_of_a_packed_sweep_then_resume(tmp_path):
    """A user's Ctrl-C of a packed sweep stops it at a step with every run's checkpoint (one
    line, exit 2, as a sweep of lone runs), and so does SIGTERM; SIGKILL of the next launch
    keeps the checkpoints; the same command again gives every run the rows of an uninterrupted
    sweep."""
    args = [
        *sweep_here(tmp_path, "cut")[0:1],
        *SIZES,
        *GRID,
        "train.steps=3000",
        "train.ratio_every=500",
        "train.checkpoint_every=200",
        "train.log_seconds=0.2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "varexp",
                *args,
                f"hydra.sweep.dir={tmp_path / 'cut'}",
                "hydra/launcher=basic",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            if "pack step" in line and "steps/s" in line:
                break
        if sig == signal.SIGKILL:  # once a second round of checkpoints is on disk
            start = time.monotonic()
            while time.monotonic() - start < 60 and not any(
                torch.load(p, weights_only=True)["step"] >= 1000
                for p in (tmp_path / "cut").rglob("checkpoint.pt")
            ):
                time.sleep(0.2)
        proc.send_signal(sig)
        out = proc.communicate(timeout=120)[0]
        if sig != signal.SIGKILL:
            assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
            assert "stopped at step" in out and "checkpoints of the pack's 12" in out
        else:
            assert proc.returncode == -9
        assert not list((tmp_path / "cut").rglob("summary.json"))
    steps = {
        torch.load(p, weights_only=True)["step"] for p in (tmp_path / "cut").rglob("checkpoint.pt")
    }
    assert min(steps) > 0
    run_varexp(
        *args,
        f"hydra.sweep.dir={tmp_path / 'cut'}",
        "hydra/launcher=basic",
        cwd=tmp_path,
        check=True,
    )
    run_varexp(
        *args,
        f"hydra.sweep.dir={tmp_path / 'whole'}",
        "hydra/launcher=basic",
        cwd=tmp_path,
        check=True,
    )
    assert_same_rows(tmp_path / "whole", tmp_path / "cut")


# ---------------------------------------------------------------------------------------------
# the plan, and bad input


@pytest.mark.slow
def test_packed_and_unpacked_sweeps_make_the_same_tables(tmp_path, monkeypatch, capsys):
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "packed"))
    packed_out = capsys.readouterr().out
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "alone", "sweep.pack=off"))
    alone_out = capsys.readouterr().out
    assert "12 runs in 1 job: 1 pack of 12" in packed_out
    assert "12 runs, each its own job (not packed)" in alone_out
    a, b = (
        pd.read_csv(tmp_path / d / "sweep.csv").drop(columns="seconds") for d in ("packed", "alone")
    )
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)
    assert_same_rows(tmp_path / "packed", tmp_path / "alone", rtol=1e-4, atol=1e-7)
    for folder in (tmp_path / "packed").glob("mlp-gaussian/*/*/*/seed=0"):
        twin = tmp_path / "alone" / folder.relative_to(tmp_path / "packed")
        for name in ("config.yaml", "overrides.yaml"):
            left = (folder / ".hydra" / name).read_text()
            right = (twin / ".hydra" / name).read_text()
            assert left == right.replace("pack: 'off'", "pack: auto").replace(
                "- sweep.pack=off\n", ""
            )
        assert (folder / "run.json").is_file() and (folder / "sweep.log").is_file()


def jobs_of(*swept: str) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(swept))
    return [list(j) for j in BasicSweeper.split_arguments(parsed, None)[0]]


def test_jobs_pack_only_with_jobs_that_share_their_data_stream():
    jobs = jobs_of(
        "init=scale,batchnorm",
        "optim=sgd,adam",
        "sweep.lr_index=0,1",
        "seed=0,1",
        "train.batch_size=8,16",
    )
    groups = packing.groups_of(jobs)
    assert len(groups) == 4 and all(len(g) == 8 for g in groups)
    for group in groups:
        shared = {
            tuple(o for o in jobs[i] if o.split("=")[0] in ("seed", "train.batch_size"))
            for i in group
        }
        assert len(shared) == 1
    cfg = config("sweep", *SIZES)
    plan = packing.plan(3, jobs, lambda i: cfg)
    # 8 runs in even packs of at most 3, the longest jobs first
    assert [len(p) for p in plan.packs] == [3] * 8 + [2] * 4
    assert sorted(i for p in plan.packs for i in p) == list(range(32))
    assert "4 groups of runs that differ in more than init" in plan.text()
    assert packing.plan(100, jobs, lambda i: cfg).packs == groups  # N above the runs: one pack
    assert packing.plan("off", jobs, lambda i: cfg).packs == [[i] for i in range(32)]
    dropout = config("sweep", "arch.dropout=0.2")
    not_packed = packing.plan(8, jobs, lambda i: dropout)
    assert not not_packed.packed and "runs with arch.dropout=0.2 not packed" in not_packed.text()


def test_auto_packs_small_mlp_steps_on_the_cpu_only():
    jobs = jobs_of("init=scale,batchnorm", "optim=sgd,adam")
    small = config("sweep", *SIZES)
    assert packing.plan("auto", jobs, lambda i: small).packs == [[0, 1, 2, 3]]
    wide = config("sweep", *SIZES, "arch.width=1000")  # compute-bound: the stack loses
    assert packing.step_macs(wide) > ARCHITECTURES["mlp"].cpu_pack_macs
    plan = packing.plan("auto", jobs, lambda i: wide)
    assert not plan.packed and "one mlp step costs" in plan.text()
    assert "compute-bound on the CPU (packs pay below 10M)" in plan.text()
    # the conv models: the default sweep's ALL-CNN-C and the quick Fig. 4's UNet run alone on
    # the CPU, as with sweep.pack=off, and the plan says why; sweep.pack=N still packs them
    for task, said in (
        ("task=shapes", "ALL-CNN-C runs not packed on the CPU"),
        ("task=membranes", "UNet runs not packed on the CPU"),
    ):
        cfg = config("sweep", task)
        plan = packing.plan("auto", jobs, lambda i, cfg=cfg: cfg)
        assert plan.packs == [[0], [1], [2], [3]] and said in plan.text(), plan.text()
        assert packing.plan(4, jobs, lambda i, cfg=cfg: cfg).packs == [[0, 1, 2, 3]]
    # where a launcher runs jobs side by side, one pack per core
    assert [len(p) for p in packing.plan("auto", jobs, lambda i: small, "joblib", 2).packs] == [
        2,
        2,
    ]


def test_a_preset_with_its_own_sweeper_keeps_it_and_is_never_packed(tmp_path, monkeypatch, capsys):
    """`varexp sweep` launches through the packing sweeper unless the preset picks another:
    experiment=optuna_lr searches with Optuna's, its trials each a run of its own."""
    pytest.importorskip("optuna")
    from varexp.compose import compose_config

    def sweeper(*overrides: str) -> str:
        return str(compose_config("sweep", list(overrides)).hydra.sweeper._target_)

    assert sweeper().endswith(".PackSweeper")
    assert sweeper("experiment=figure4_quick").endswith(".PackSweeper")
    assert sweeper("experiment=optuna_lr").endswith(".OptunaSweeper")
    folder = tmp_path / "search"
    launch_here(
        monkeypatch,
        tmp_path,
        "sweep",
        "experiment=optuna_lr",
        *SIZES[:-1],
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={folder}",
    )
    out = capsys.readouterr().out
    assert "packs (" not in out and PACK_KEY not in job_logs(folder)
    assert len(list(folder.rglob("summary.json"))) == 2


def test_the_slurm_launcher_submits_packs(tmp_path, monkeypatch, capsys):
    """hydra/launcher=submitit_slurm submits a pack as one job: here its executor runs each
    submitted job in this process (no cluster) through the launcher's own job function; every
    run of the pack completes in its own folder."""
    import submitit

    submitted: list[list[str]] = []

    class HereExecutor:
        def __init__(self, cluster: str, folder: str, **options: object):
            assert cluster == "slurm"

        def update_parameters(self, **params: object) -> None:
            assert params["slurm_partition"] == "gpu"

        def map_array(self, job, *arguments):
            submitted.extend(arguments[0])
            done = [job(*one) for one in zip(*arguments, strict=True)]
            return [SimpleNamespace(results=lambda d=d: [d]) for d in done]

    monkeypatch.setattr(submitit, "AutoExecutor", HereExecutor)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="42"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    launch_here(
        monkeypatch,
        tmp_path,
        "sweep",
        *SIZES,
        *GRID,
        f"hydra.sweep.dir={tmp_path / 'slurm'}",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
    )
    assert "12 runs in 1 job: 1 pack of 12" in capsys.readouterr().out
    assert len(submitted) == 1 and any(o.startswith("+packed_runs=") for o in submitted[0])
    table = pd.read_csv(tmp_path / "slurm" / "sweep.csv")
    assert len(table) == 12 and (table["status"] == "completed").all()
    assert job_logs(tmp_path / "slurm").count("pack of 12 runs on cpu") == 12


def test_auto_on_a_cluster_packs_for_the_gpus_its_jobs_get(monkeypatch):
    """The nodes of submitit_slurm are not this machine: auto packs for the device the config
    asks for (device=cuda, or device=auto with GPUs per job), and leaves the memory check to
    the pack job on the node."""
    from varexp.compose import complete, compose_config

    def slurm(*extra: str):
        return compose_config(
            "sweep", complete("sweep", [*SIZES, "hydra/launcher=submitit_slurm", *extra])
        )

    monkeypatch.setattr(
        packing.memory,
        "available",
        lambda device: pytest.fail("the memory of the launching machine is not the nodes'"),
    )
    jobs = jobs_of(
        "init=scale,scale+bias,batchnorm", "optim=sgd,adam", "sweep.lr_index=0,1,2,3", "seed=0,1,2"
    )
    for extra in (["device=auto", "hydra.launcher.gpus_per_node=1"], ["device=cuda"]):
        cfg = slurm(*extra)
        plan = packing.plan("auto", jobs, lambda i, cfg=cfg: cfg, "submitit_slurm")
        assert plan.text().startswith("72 runs in 3 jobs: 3 packs of 24"), extra
    unknown = slurm("device=auto")
    plan = packing.plan("auto", jobs, lambda i: unknown, "submitit_slurm")
    assert not plan.packed and "the cluster's device is not known here" in plan.text()
    assert [len(p) for p in packing.plan(8, jobs, lambda i: unknown, "submitit_slurm").packs] == [
        8
    ] * 9


def test_a_pack_that_does_not_fit_is_split_with_one_line(monkeypatch):
    jobs = jobs_of("init=scale,batchnorm", "optim=sgd,adam", "sweep.lr_index=0,1,2")
    cfg = config("sweep", *SIZES)
    per_run = packing.run_bytes(cfg)
    monkeypatch.setattr(packing.memory, "available", lambda device: 5 * per_run / 0.9 + 1)
    plan = packing.plan(12, jobs, lambda i: cfg)
    assert [len(p) for p in plan.packs] == [4, 4, 4]
    note = next(n for n in plan.notes if "would need" in n)
    assert note.startswith("a pack of 12 runs would need about ") and "packs of at most 5" in note


@pytest.mark.slow
def test_a_pack_job_that_does_not_fit_here_trains_its_runs_in_smaller_packs(
    tmp_path, monkeypatch, capsys
):
    """The plan cut packs to the memory of the launching machine; the job checks the memory
    where it runs, and a pack that does not fit there is trained as smaller packs, one after
    another, with one line, to the same rows."""
    import varexp.pack.job

    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "whole", "sweep.pack=12"))
    monkeypatch.setattr(varexp.pack.job, "fitting", lambda cfg, runs, device: 5)
    launch_here(monkeypatch, tmp_path, *sweep_here(tmp_path, "split", "sweep.pack=12"))
    assert "12 runs in 1 job: 1 pack of 12" in capsys.readouterr().out
    assert (
        job_logs(tmp_path / "split").count(
            "a pack of 12 runs does not fit in the memory free on cpu: 3 packs of at most 4, one "
            "after another"
        )
        >= 1
    )
    assert_same_rows(tmp_path / "whole", tmp_path / "split")


def test_pack_overrides_round_trip():
    members = [
        (0, []),
        (3, ["init=scale+bias", "optim.lr=1e-3"]),
        (7, ["x='a b'", 'y="c,d"', "z=e\\f", "w=100%"]),
    ]
    override = packing.encode(members)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    assert parsed.key_or_group == "packed_runs"
    assert packing.decode(parsed.value()) == members
    lead = ["init=scale", "optim=sgd", "optim.lr=0.1", "seed=0"]
    assert packing.member_overrides(lead, members[1][1]) == [
        "init=scale+bias",
        "optim=sgd",
        "optim.lr=1e-3",
        "seed=0",
    ]


@pytest.mark.parametrize(
    "value, shown", [("0", "0"), ("-1", "-1"), ("abc", "'abc'"), ("1.5", "1.5"), ("true", "True")]
)
def test_bad_pack_values_are_one_line_exit_2(tmp_path, capsys, value, shown):
    code, err = run_in_process(
        capsys, "sweep", *SIZES, f"sweep.pack={value}", f"hydra.sweep.dir={tmp_path / 's'}"
    )
    assert code == 2 and err.strip().splitlines() == [
        f"varexp sweep: sweep.pack={shown} is not allowed; must be auto, off or an integer >= 1 "
        "(the most runs per pack)"
    ]
    assert not (tmp_path / "s").exists()


def test_the_dry_run_says_how_runs_are_packed(monkeypatch, capsys, tmp_path):
    from varexp.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    monkeypatch.chdir(tmp_path)
    dry = ["sweep.dry_run=true", "sweep.estimate=false"]
    with pytest.raises(SystemExit) as done:
        main(["sweep", *dry, *SIZES])
    assert done.value.code == 0
    assert "packs (sweep.pack=auto): 72 runs in 3 jobs: 3 packs of 24" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sweep", *dry])  # the default task: ALL-CNN-C, not packed on the CPU
    assert (
        "72 runs, each its own job (not packed); sweep.pack=auto: ALL-CNN-C runs not "
        "packed on the CPU"
    ) in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # a dry run leaves nothing
