"""Every command README.md and the documentation (docs/) show runs as written, the way a user
types it: a separate process in a fresh folder, default output folders, no hydra.run.dir or
hydra.sweep.dir the page does not show, shrunk only by VAREXP_SMOKE=1 (every command at a token
size). The commands of one code block run in order in one folder, as a user runs them. Commands
that need the paper's data sets (absent here) or a SLURM cluster must stop with one line that
says so."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_varexp

from varexp.cli import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# the pages whose commands run: the README first, then the docs site's own pages (a link into it,
# like benchmarks.md -> bench/README.md, shows benchmark scripts, which are run by hand)
PAGES = [README] + sorted(p for p in (ROOT / "docs").rglob("*.md") if not p.is_symlink())
SMOKE_PREFIX = "VAREXP_SMOKE=1 "
# what a command needs that no test machine has -> what its one-line error must name
NEEDS = {
    r"experiment=paper\b": r"CIFAR10|ISBI|sbatch",
    r"experiment=figure2_allcnnc\b|experiment=figure4_cifar10\b": r"CIFAR10",
    r"experiment=figure2_unet\b|experiment=figure4_isbi2012\b": r"isbi2012|ISBI",
    r"submitit_slurm": r"sbatch",
}
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def code_blocks(text: str) -> list[list[str]]:
    """The shell commands of each ```bash block: comments cut, continuations joined, `&&`
    chains split."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands = []
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [c.strip() for c in line.split("&&")]
        blocks.append(commands)
    return blocks


def varexp_commands(block: list[str]) -> list[str]:
    """The varexp commands of a block; `VAREXP_SMOKE=1 ` in front is dropped, as the tests set
    it for every command."""
    return [
        c.removeprefix(SMOKE_PREFIX)
        for c in block
        if c.startswith(("varexp ", SMOKE_PREFIX + "varexp "))
    ]


def page_blocks() -> list[tuple[str, list[str]]]:
    """(page, varexp commands) of every block with a varexp command, README first."""
    return [
        (page.relative_to(ROOT).as_posix(), commands)
        for page in PAGES
        for block in code_blocks(page.read_text(encoding="utf-8"))
        if (commands := varexp_commands(block))
    ]


def varexp_blocks() -> list[tuple[str, list[str]]]:
    """The blocks to run: each runs once, so a block that another one starts with is left out
    (the README's commands open the pages' longer blocks; of equal blocks the last is kept)."""
    blocks = page_blocks()
    return [
        (page, b)
        for i, (page, b) in enumerate(blocks)
        if not any(
            other[: len(b)] == b and (len(other) > len(b) or j > i)
            for j, (_, other) in enumerate(blocks)
            if j != i
        )
    ]


def needs(command: str) -> str | None:
    """What the one-line error of a command that cannot run here must name, or None (a dry run
    needs no data)."""
    if re.search(r"\.dry_run=true\b", command):
        return None
    reasons = [why for pattern, why in NEEDS.items() if re.search(pattern, command)]
    return "|".join(reasons) or None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the session: the embedded datasets are generated once."""
    return tmp_path_factory.mktemp("data")


def test_the_readme_shows_the_design_cards_commands():
    """The README shows each of them (in a block or in its command table), and each one runs."""
    text = README.read_text(encoding="utf-8")
    shown = {c for block in code_blocks(text) for c in varexp_commands(block)}
    shown |= set(re.findall(r"`(varexp [^`]+)`", text))
    assert set(EXAMPLES) <= shown, set(EXAMPLES) - shown
    run = {c for _, block in varexp_blocks() for c in block}
    assert set(EXAMPLES) <= run, set(EXAMPLES) - run


def test_ci_installs_and_tests_as_the_readme_says():
    """.ci/run's install and test lines (after its `# README: ...` comments) are lines the
    README's blocks show."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    lines = [ci[i + 1].strip() for i, line in enumerate(ci) if line.startswith("# README:")]
    shown = {c for block in code_blocks(README.read_text(encoding="utf-8")) for c in block}
    assert len(lines) >= 2 and set(lines) <= shown, set(lines) - shown


@pytest.mark.parametrize(
    "page,block", varexp_blocks(), ids=lambda x: x if isinstance(x, str) else x[0][:60]
)
def test_readme_block_runs_as_written(page, block, tmp_path, data_dir):
    env = {"VAREXP_SMOKE": "1", "VAREXP_DATA": str(data_dir), **OFFLINE}
    for command in block:
        args = shlex.split(command)
        args = args[args.index("varexp") + 1 :]
        start = time.perf_counter()
        out = run_varexp(*args, cwd=tmp_path, env=env)
        took = time.perf_counter() - start
        print(f"{took:5.1f} s  rc {out.returncode}  {page}: {command}")
        why = needs(command)
        if why is None:
            assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
            assert "Traceback" not in out.stderr, out.stderr[-3000:]
        else:
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(lines) >= 1, f"{command}\n{out.stderr[-3000:]}"
            assert re.search(why, lines[-1]), lines[-1]
            assert "Traceback" not in out.stderr, out.stderr[-3000:]


def python_blocks() -> list[str]:
    """The Python blocks of every page, each distinct one once."""
    blocks = [
        code
        for page in PAGES
        for code in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    ]
    return list(dict.fromkeys(blocks))


@pytest.mark.parametrize("code", python_blocks(), ids=lambda c: c.splitlines()[0][:40])
def test_readme_python_runs_as_written(code, tmp_path, data_dir):
    # the code may call `varexp` as a shell command: this environment's, as an activated venv has
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "VAREXP_DATA": str(data_dir), "OMP_NUM_THREADS": "1", "PATH": path},
    )
    assert out.returncode == 0, out.stderr[-3000:]
