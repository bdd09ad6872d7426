"""Shared helpers: configs composed as the command line composes them, and `varexp` runners."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from varexp.cli import main
from varexp.compose import complete, compose_config

# an MLP of 3 layers of 16 units on 64 Gaussian inputs: a training run in about a second
TINY_MLP = ["arch=mlp", "arch.width=16", "arch.depth=3", "dataset=gaussian", "dataset.size=64"]


def config(command: str, *overrides: str) -> DictConfig:
    """The config a job of `varexp COMMAND OVERRIDES` receives (no `hydra` node)."""
    cfg = compose_config(command, complete(command, list(overrides)))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_varexp(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: float = 600,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """`varexp ARGS` as a separate process, as a user runs it (one torch thread); with `check`,
    it must exit 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "varexp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_in_process(capsys, *args: str) -> tuple[int, str]:
    """`varexp ARGS` in this process (saves the seconds of a fresh interpreter and torch):
    (exit status, stderr)."""
    capsys.readouterr()
    saved = sys.argv
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


def hide_package(monkeypatch, name: str) -> None:
    """Make `name` look not installed to importlib.util.find_spec (an optional extra)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda package, *a: None if package == name else real(package, *a),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The suite runs many short `varexp` processes: with pytest-xdist, one test process per core
    (at most 4) unless `-n` says otherwise; without it (`-p no:xdist`), one process. A test
    process that xdist started (it has `workerinput`) runs its tests itself."""
    worker = hasattr(config, "workerinput")
    if (
        config.pluginmanager.hasplugin("xdist")
        and config.option.numprocesses is None
        and not worker
    ):
        config.option.numprocesses = "auto"
        config.option.maxprocesses = config.option.maxprocesses or 4
