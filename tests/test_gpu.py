"""Every command once on CUDA at small size: `pytest -m gpu` on a GPU machine (a few minutes on
one GPU). Skipped without CUDA, so CI (CPU only) never runs it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import run_varexp

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL_CNN = [
    "task=shapes",
    "arch.channels=0.25",
    "train.steps=60",
    "train.ratio_every=20",
    "train.batch_size=128",
    "device=cuda",
]
SMALL_UNET = [
    "task=membranes",
    "arch.channels=0.25",
    "train.steps=30",
    "train.ratio_every=10",
    "dataset.crop=128",
    "device=cuda",
]


def ok(*args: str, cwd, **kwargs):
    return run_varexp(*args, cwd=cwd, check=True, timeout=300, **kwargs)


def summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_theory_and_probe_on_cuda(tmp_path):
    ok("theory", "device=cuda", f"hydra.run.dir={tmp_path / 't'}", cwd=tmp_path)
    for method in ("dense", "sampled"):
        ok(
            "probe",
            "arch.width=512",
            "arch.depth=20",
            "probe.networks=3",
            "device=cuda",
            f"probe.method={method}",
            f"hydra.run.dir={tmp_path / method}",
            cwd=tmp_path,
        )
    dense, sampled = (pd.read_csv(tmp_path / m / "probe.csv") for m in ("dense", "sampled"))
    assert len(dense) == len(sampled) == 60
    for arch in (["experiment=figure2_allcnnc_quick"], ["experiment=figure2_unet_quick"]):
        ok(
            "probe",
            *arch,
            "device=cuda",
            "probe.networks=2",
            f"hydra.run.dir={tmp_path / arch[0]}",
            cwd=tmp_path,
        )


@pytest.mark.parametrize(
    "options",
    [[], ["train.amp=true"], ["train.channels_last=true"], ["train.compile=true"]],
    ids=["fp32", "bf16", "nhwc", "compile"],
)
def test_train_allcnnc_on_cuda(tmp_path, options):
    ok("train", *SMALL_CNN, "init=scale+bias", *options, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    s = summary(tmp_path)
    assert s["status"] == "completed" and s["device"].startswith("cuda")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.step) == list(range(60))
    assert metrics.loss.iloc[-10:].mean() < metrics.loss.iloc[:10].mean()  # it learns


def test_train_unet_on_cuda_resumes(tmp_path):
    proc = run_varexp(
        "train",
        *SMALL_UNET,
        "init=lsuv",
        "optim=adam",
        "train.checkpoint_every=10",
        "train.stop_after=15",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and "stopped after step 15" in proc.stderr
    ok(
        "train",
        *SMALL_UNET,
        "init=lsuv",
        "optim=adam",
        "train.checkpoint_every=10",
        "resume=true",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert summary(tmp_path)["steps"] == 30
    assert list(pd.read_csv(tmp_path / "metrics.csv").step) == list(range(30))


def test_joblib_sweep_with_workers_shares_the_gpu(tmp_path):
    out = ok(
        "sweep",
        "task=shapes",
        "arch.channels=0.125",
        "train.steps=20",
        "train.ratio_every=10",
        "init=scale,batchnorm",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0,1",
        "dataset.workers=2",
        "dataset.pipeline=host",
        "hydra.launcher.n_jobs=4",
        "sweep.estimate=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(table.status) == ["completed"] * 4, out.stdout[-2000:]
    devices = {summary(p.parent)["device"] for p in (tmp_path / "sweep").rglob("summary.json")}
    assert all(d.startswith("cuda") for d in devices)


def test_reproduce_quick_on_cuda(tmp_path):
    ok(
        "reproduce",
        "experiment=quick",
        "device=cuda",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
        env={"VAREXP_SMOKE": "1"},
    )
    assert (tmp_path / "r" / "REPORT.md").stat().st_size > 0


PACKED = [
    "task=shapes",
    "arch.channels=0.25",
    "train.steps=60",
    "train.ratio_every=20",
    "train.batch_size=128",
    "device=cuda",
    "init=scale,scale+bias,batchnorm",
    "optim=sgd,adam",
    "sweep.lr_index=1",
    "seed=0",
    "sweep.estimate=false",
    "hydra/launcher=basic",
]


@pytest.mark.parametrize(
    "options", [[], ["train.amp=true"], ["train.channels_last=true"]], ids=["fp32", "bf16", "nhwc"]
)
def test_a_packed_sweep_on_cuda_follows_the_runs_alone(tmp_path, options):
    """sweep.pack=6 against sweep.pack=off on the GPU: every run completes, in one pack, and
    its loss curve follows the lone run's (cuDNN's TF32 convolutions round differently in a
    grouped convolution: the printed differences are what bench/README.md records)."""
    packed = ok(
        "sweep",
        *PACKED,
        *options,
        "sweep.pack=6",
        f"hydra.sweep.dir={tmp_path / 'p'}",
        cwd=tmp_path,
    )
    assert "6 runs in 1 job: 1 pack of 6" in packed.stdout
    ok(
        "sweep",
        *PACKED,
        *options,
        "sweep.pack=off",
        f"hydra.sweep.dir={tmp_path / 'o'}",
        cwd=tmp_path,
    )
    worst = 0.0
    for metrics in sorted((tmp_path / "o").rglob("metrics.csv")):
        twin = tmp_path / "p" / metrics.relative_to(tmp_path / "o")
        assert summary(twin.parent)["status"] == "completed"
        assert summary(twin.parent)["device"].startswith("cuda")
        a, b = pd.read_csv(metrics).loss, pd.read_csv(twin).loss
        worst = max(worst, float(((a - b).abs() / a.abs()).max()))
        assert abs(a.iloc[-20:].mean() - b.iloc[-20:].mean()) < 0.05 * a.iloc[-20:].mean()
        assert ((a.iloc[:5] - b.iloc[:5]).abs() / a.iloc[:5] < 1e-2).all()
    print(
        f"packed vs alone on {torch.cuda.get_device_name()} {options}: largest relative loss "
        f"difference over 60 steps {worst:.2e}"
    )
