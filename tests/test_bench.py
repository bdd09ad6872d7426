"""The benchmark scripts as a user meets them (they are run by hand, never timed here): without
CUDA the GPU benchmark says so in one line, and the first Ctrl-C ends a benchmark in one line."""

import importlib.util
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import varexp.stop
from varexp.stop import StopRequests, run_benchmark
from varexp.train import Interrupted

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture
def bench_gpu(monkeypatch):
    """bench/bench_gpu.py as a module, with no Ctrl-C seen yet in this process."""
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(varexp.stop, "_ctrl_c", False)
    return module


def run(module, monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["bench/bench_gpu.py", *args])
    with pytest.raises(SystemExit) as exit_:
        run_benchmark(module.main)
    return exit_.value.code


def test_gpu_benchmark_without_cuda_is_one_line_and_exit_2(bench_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trained = []
    monkeypatch.setattr(bench_gpu, "varexp_train", lambda cfg: trained.append(cfg))
    assert run(bench_gpu, monkeypatch) == 2
    out, err = capsys.readouterr()
    assert out == "" and trained == []  # nothing started
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("bench_gpu: no CUDA device here") and "--quick --device cpu" in err


def ctrl_c_in_training(cfg):
    """What train() does at a user's first Ctrl-C: StopRequests takes the signal, the run stops
    at its next step with a checkpoint."""
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
    raise Interrupted(3, Path("run"))


def ctrl_c_kills_the_compiler(cfg):
    """The same key press also ends torch.compile's compiler, whose error comes up instead."""
    with StopRequests():
        os.kill(os.getpid(), signal.SIGINT)
    raise RuntimeError("CppCompileError: C++ compile error")


@pytest.mark.parametrize("train", [ctrl_c_in_training, ctrl_c_kills_the_compiler])
def test_first_ctrl_c_ends_the_benchmark_in_one_line(bench_gpu, monkeypatch, capsys, train):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    calls = []
    monkeypatch.setattr(bench_gpu, "varexp_train", lambda cfg: calls.append(cfg) or train(cfg))
    assert run(bench_gpu, monkeypatch, "--quick", "--no-probe") == 130
    out, err = capsys.readouterr()
    assert len(calls) == 1  # no next case started
    assert "failed" not in out
    assert err.strip() == "bench_gpu: interrupted; the rows printed above are complete"


def test_a_case_that_fails_without_ctrl_c_is_a_failed_row(bench_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")

    def no_compiler(cfg):
        raise RuntimeError("CppCompileError: C++ compile error")

    monkeypatch.setattr(bench_gpu, "varexp_train", no_compiler)
    monkeypatch.setattr(
        sys, "argv", ["bench/bench_gpu.py", "--quick", "--no-probe", "--variants", "fp32,compile"]
    )
    run_benchmark(bench_gpu.main)
    rows = [r for r in capsys.readouterr().out.splitlines() if "failed: RuntimeError" in r]
    assert len(rows) == 2 * 2  # both models, both variants: the benchmark carried on
