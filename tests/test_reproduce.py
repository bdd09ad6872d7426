"""`varexp reproduce`: the plan of steps, reuse of finished steps, and REPORT.md's numbers."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from varexp.report import kernel_claims, write_report
from varexp.reproduce import DONE, plan
from varexp.sampled import sampled_mlp

QUICK = OmegaConf.create(
    {
        "reproduce": {
            "extra": ["device=cpu"],
            "preset": "quick",
            "figures": ["figure1", "figure2", "figure3", "figure4"],
        }
    }
)


def test_plan_runs_theory_probes_sweeps_then_plots(tmp_path):
    steps = plan(QUICK, tmp_path)
    commands = [s.args[0] for s in steps]
    assert commands == ["theory"] + ["probe"] * 5 + ["sweep"] + ["plot"] * 4
    assert all(s.args[-1] == "device=cpu" for s in steps)
    sweep = steps[6]
    assert f"hydra.sweep.dir={tmp_path / 'figure4' / 'figure4_quick'}" in sweep.args
    assert steps[-1].args[:3] == ["plot", "figure4", f"results={tmp_path / 'figure4'}"]


def test_finished_steps_are_reused_but_plots_rerun(tmp_path):
    steps = plan(QUICK, tmp_path)
    assert not any(s.done for s in steps)
    for step in steps:
        step.out.mkdir(parents=True)
        (step.out / DONE).write_text(step.command + "\n")
    assert [s.done for s in steps] == [True] * 7 + [False] * 4


def test_a_step_whose_command_changed_is_rerun(tmp_path):
    steps = plan(QUICK, tmp_path)
    for step in steps:
        step.out.mkdir(parents=True)
        (step.out / DONE).write_text(step.command + "\n")
    seed7 = OmegaConf.merge(QUICK, {"reproduce": {"extra": ["device=cpu", "seed=7"]}})
    again = plan(seed7, tmp_path)
    assert not any(s.done for s in again)
    assert [s.changed for s in again] == [True] * 7 + [False] * 4


def test_a_step_made_at_the_smoke_size_is_rerun_at_full_size(tmp_path, monkeypatch):
    """VAREXP_SMOKE=1 runs every step at a token size: a later run without it must not reuse
    a 2-network probe as the result (nor the other way round)."""
    import varexp.reproduce

    ran = []
    monkeypatch.setattr(
        varexp.reproduce.subprocess,
        "run",
        lambda command, **_: ran.append(command) or subprocess.CompletedProcess(command, 0),
    )
    monkeypatch.setenv("VAREXP_SMOKE", "1")
    for step in plan(QUICK, tmp_path):
        varexp.reproduce.execute(step)
    probe = next(s for s in plan(QUICK, tmp_path) if s.args[0] == "probe")
    assert "probe.networks=2" in (probe.out / DONE).read_text()
    assert all(s.done for s in plan(QUICK, tmp_path) if not s.always)  # smoke again: reused
    monkeypatch.delenv("VAREXP_SMOKE")
    again = plan(QUICK, tmp_path)
    # theory has no token size; the probes and the sweep do
    assert [s.done for s in again] == [True] + [False] * 10
    assert [s.changed for s in again] == [False] + [True] * 6 + [False] * 4
    for step in again[1:]:
        varexp.reproduce.execute(step)
    assert all(s.done for s in plan(QUICK, tmp_path) if not s.always)
    monkeypatch.setenv("VAREXP_SMOKE", "1")
    assert [s.done for s in plan(QUICK, tmp_path)] == [True] + [False] * 10


def test_a_smoke_report_says_so_at_the_top(tmp_path):
    smoke = write_report(tmp_path, "quick", smoke=True).read_text()
    assert smoke.index("Made with VAREXP_SMOKE=1") < smoke.index("| paper section |")
    assert "Made with VAREXP_SMOKE=1" not in write_report(tmp_path, "quick").read_text()


def fake_probe(where: Path, init: str, width: int, networks: int) -> None:
    """A probe.csv from the sampled MLP (depth 12) with the run config plot and report read."""
    x = torch.randn(64, width)
    rows = []
    for net in range(networks):
        for layer, stats in enumerate(sampled_mlp(x, 12, width, init=init)[0], 1):
            numbers = {k: float(v) for k, v in stats.items() if k != "name"}
            rows.append(
                {
                    "network": net,
                    "layer": layer,
                    "name": f"layer{layer}",
                    "features": width,
                    **numbers,
                }
            )
    (where / ".hydra").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(where / "probe.csv", index=False)
    OmegaConf.save(
        {
            "arch": {"name": "mlp", "width": width, "depth": 12},
            "init": {"name": init},
            "dataset": {"name": "gaussian"},
        },
        where / ".hydra" / "config.yaml",
    )


def test_report_measures_the_claims_from_probes(tmp_path):
    for init in ("kaiming", "batchnorm"):
        fake_probe(tmp_path / "figure3" / f"init={init}", init, 400, 6)
    for width in (100, 400):
        fake_probe(tmp_path / "figure2" / f"arch.width={width}", "kaiming", width, 6)
    report = write_report(tmp_path, "test").read_text()
    row = next(line for line in report.splitlines() if "sigma_s = sqrt" in line)
    cells = [c.strip() for c in row.split("|")]
    measured, distance = float(cells[4]), float(cells[6])
    assert measured == pytest.approx(0.826, abs=0.03)
    # the distance column is (ours - sqrt(1 - 1/pi)) / SE, and the verdict follows it
    sigma = next(c for c in kernel_claims(tmp_path) if c.claim.startswith("sigma_s"))
    assert sigma.distance == pytest.approx((sigma.ours - math.sqrt(1 - 1 / math.pi)) / sigma.error)
    assert distance == pytest.approx(sigma.distance, abs=0.05)  # printed to one decimal
    assert cells[7] == ("**matches**" if abs(distance) <= 2 else "**differs**")
    assert "slope of log grad_sq vs layer, batchnorm" in report
    assert "the gap to the theory shrinks at every step in width" in report
    assert "| K(0) = 1/pi (Eq. 7): quadrature vs the closed form" in report


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            "reproduce.dry_run=maybe",
            "reproduce.dry_run='maybe' is not allowed; must be true or false",
        ),
        ("reproduce.figures=[figure9]", "reproduce.figures=['figure9'] is not allowed"),
        (
            "reproduce.figure3=[x]",
            "reproduce.figure3 is not a key of reproduce; did you mean "
            "reproduce.figures? its keys: preset",
        ),
    ],
)
def test_bad_reproduce_keys_are_one_line(tmp_path, override, needle):
    out = subprocess.run(
        [sys.executable, "-m", "varexp", "reproduce", override, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "theory").exists()


def test_dry_run_says_which_steps_would_rerun_after_the_command_changed(tmp_path):
    from varexp.results import write_record

    write_record(tmp_path, "reproduce", {"reproduce.preset": "quick"})  # as a run leaves it
    steps = plan(QUICK, tmp_path)
    for step in steps:
        step.out.mkdir(parents=True)
        (step.out / DONE).write_text(step.command + "\n")
    args = [
        sys.executable,
        "-m",
        "varexp",
        "reproduce",
        "reproduce.dry_run=true",
        "device=cpu",
        f"hydra.run.dir={tmp_path}",
    ]
    same = subprocess.run([*args, 'reproduce.extra=["device=cpu"]'], capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    assert same.stdout.count("(done, reused)") == 7
    # the steps left (plots, probes of no preset above) with their time, measured here
    assert re.search(r"estimate: about \d+ (s|min) for \d+ steps", same.stdout), same.stdout
    changed = subprocess.run(
        [*args, 'reproduce.extra=["device=cpu","seed=7"]'], capture_output=True, text=True
    )
    assert changed.stdout.count("(made with another command or size: rerun") == 7
    assert "varexp sweep experiment=figure4_quick" in changed.stdout
    assert (
        not (tmp_path / "REPORT.md").exists() and not (tmp_path / "theory" / "theory.csv").exists()
    )  # a dry run runs nothing
