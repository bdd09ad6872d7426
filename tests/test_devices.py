"""Which device a job gets: device=auto spreads a multirun's jobs over a machine's GPUs, and
the submitit_local launcher is handed the GPUs it would otherwise hide."""

from __future__ import annotations

import pytest
import torch

from varexp import devices
from varexp.compose import complete, gpu_overrides, parse
from varexp.errors import ConfigError
from varexp.sweep import check


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has `count` CUDA devices."""

    def have(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return have


def test_auto_is_the_cpu_without_cuda(gpus):
    gpus(0)
    assert devices.resolve("auto", job=3) == torch.device("cpu")
    assert devices.cuda_count() == 0


def test_auto_spreads_jobs_over_the_gpus(gpus):
    gpus(4)
    assert [devices.resolve("auto", job=j) for j in range(6)] == [
        torch.device(f"cuda:{j % 4}") for j in range(6)
    ]
    assert devices.resolve("auto") == torch.device("cuda")  # not a multirun job
    assert devices.resolve("cuda:2", job=1) == torch.device("cuda:2")  # named: as named
    gpus(1)  # a cluster launcher shows each job its own GPU only
    assert devices.resolve("auto", job=5) == torch.device("cuda")


def test_a_device_that_is_not_there_is_one_line(gpus):
    gpus(0)
    with pytest.raises(ConfigError, match=r"^device='cuda' is not allowed; no CUDA device"):
        devices.check("cuda")


SWEEP = [
    "arch=mlp",
    "arch.width=8",
    "arch.depth=2",
    "dataset=gaussian",
    "dataset.size=16",
    "train.steps=2",
    "train.batch_size=4",
    "train.probe_samples=4",
    "device=cpu",
    "sweep.estimate=false",
    "init=scale",
    "optim=sgd",
    "sweep.lr_index=0",
    "seed=0,1",
]


@pytest.mark.parametrize(
    "launcher, extra, cuda, expected",
    [
        ("submitit_local", [], 1, ["hydra.launcher.gpus_per_node=1"]),
        ("submitit_local", [], 0, []),  # no GPU to hand on
        ("submitit_local", ["hydra.launcher.gpus_per_node=2"], 4, []),  # the user's choice stands
        ("joblib", [], 2, []),  # joblib's workers see every GPU already
    ],
)
def test_submitit_local_gets_the_gpus(tmp_path, launcher, extra, cuda, expected):
    line = parse(
        "sweep",
        complete(
            "sweep", [*SWEEP, f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={tmp_path}"]
        ),
        check,
    )
    assert gpu_overrides(line, cuda) == expected
