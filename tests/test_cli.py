"""The command line as a user meets it: subcommands, Hydra overrides, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def varexp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "varexp", *args], capture_output=True, text=True, cwd=cwd
    )


def test_help_lists_every_subcommand():
    out = varexp("--help")
    assert out.returncode == 0
    for command in ("theory", "probe", "train", "sweep", "plot", "reproduce"):
        assert f"  {command} " in out.stdout


def test_theory_writes_csv_into_run_dir(tmp_path):
    out = varexp("theory", "arch.depth=7", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "theory.csv")
    assert list(table.columns) == ["layer", "c", "q", "m", "v", "ratio"]
    assert list(table.layer) == list(range(1, 8))
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_init_scale_plus_bias_parses_as_written(tmp_path):
    out = varexp("theory", "init=scale+bias", "arch.depth=3", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "name: scale+bias" in out.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["arch=nope"], "arch='nope' is not an option; choose one of"),
        (["init=kaimin"], "init='kaimin' is not an option"),
        (["arch.depth=0"], "arch.depth=0 is not allowed"),
        (["arch.width=-5"], "arch.width=-5 is not allowed"),
        (["arch.activation=swish"], "arch.activation='swish' is not allowed; choose one of relu"),
        (["device=tpu"], "device='tpu' is not allowed; choose one of auto, cpu, cuda"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, needle):
    out = varexp("theory", *args, f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "theory.csv").exists()


def test_unknown_command():
    out = varexp("fit")
    assert out.returncode == 2 and "unknown command 'fit'" in out.stderr


def test_unwritable_run_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = varexp("theory", f"hydra.run.dir={blocker / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"varexp theory: hydra.run.dir={blocker / 'run'} is not writable "
        f"({blocker} is not a writable folder)"
    )
    assert blocker.read_text() == "not a directory"
