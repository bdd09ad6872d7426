"""The configs ship inside the wheel: build it, install it into a fresh virtual environment and
run `varexp theory` from another directory."""

import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.mark.slow  # builds a wheel and a virtual environment (about 20 s)
def test_wheel_finds_its_configs(tmp_path):
    run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--outdir",
        tmp_path / "dist",
        ROOT,
    )
    wheel = next((tmp_path / "dist").glob("varexp-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # borrow torch & co. from this environment (a path line, so its editable varexp is not seen)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib.stdout.strip(), "deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import varexp.conf; print(varexp.conf.__file__)", cwd=elsewhere)
    assert str(venv) in where.stdout
    run(venv / "bin" / "varexp", "theory", "arch.depth=4", "hydra.run.dir=out", cwd=elsewhere)
    assert list(pd.read_csv(elsewhere / "out" / "theory.csv").layer) == [1, 2, 3, 4]
    # the search space of the optuna_lr preset, a config group below hydra/, ships too
    shown = run(venv / "bin" / "varexp", "sweep", "experiment=optuna_lr", "--help", cwd=elsewhere)
    assert "optim.lr=tag(log, interval(1e-5, 1e-1))" in shown.stdout
