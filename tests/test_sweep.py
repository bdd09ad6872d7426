"""`varexp sweep`: the lr grid per optimizer, selection by the tail-mean criterion (diverged lrs
skipped), and end to end a tiny sweep through the basic, joblib and submitit_local launchers that
writes sweep.csv, selected.csv and figure4, and does no training when re-run."""

import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import config, run_varexp
from test_figure4 import fake_run

from varexp.cli import main
from varexp.errors import ConfigError
from varexp.figures import FIGURES
from varexp.results import find_results
from varexp.results.aggregate import criterion
from varexp.results.tables import SELECTED, SWEEP
from varexp.sweep import check_sweep, select

# ---------------------------------------------------------------------------------------------
# unit: grid, criterion, selection


def sweep_cfg(*overrides: str):
    return config("sweep", *overrides)


@pytest.mark.parametrize("optim, grid", [("sgd", [3e-4, 1e-3, 3e-3, 1e-2]),
                                         ("adam", [3e-5, 1e-4, 3e-4, 1e-3])])
def test_lr_comes_from_the_optimizers_own_grid(optim, grid):
    lrs = [sweep_cfg(f"optim={optim}", f"sweep.lr_index={i}").optim.lr for i in range(4)]
    assert lrs == grid


def test_bad_sweep_keys_fail_with_one_line():
    with pytest.raises(ConfigError, match=r"sweep.select_fraction=0.0 .*\(0, 1\]"):
        check_sweep(sweep_cfg("sweep.select_fraction=0"))
    with pytest.raises(ConfigError, match=r"sweep.lr_index=4 .*0\.\.3"):
        check_sweep(sweep_cfg("sweep.lr_index=4"))
    with pytest.raises(ConfigError, match=r"sweep.lr_grid.sgd=.*> 0"):
        check_sweep(sweep_cfg("sweep.lr_grid.sgd=[0.1,-1]"))


def test_criterion_is_the_mean_of_the_last_fraction_of_steps():
    losses = pd.Series(np.arange(100, dtype=float))
    assert criterion(losses, 0.1) == pytest.approx(np.mean(np.arange(90, 100)))
    assert criterion(losses, 1.0) == pytest.approx(49.5)
    assert criterion(losses, 1e-6) == 99.0  # at least the last step


def test_selection_skips_a_lr_where_any_seed_diverged(tmp_path):
    rows = []
    # lr 1e-2 has the lowest loss on seed 0 but diverges on seed 1: not eligible
    for lr, seed, value, status in [(1e-3, 0, 0.5, "completed"), (1e-3, 1, 0.7, "completed"),
                                    (3e-3, 0, 0.4, "completed"), (3e-3, 1, 0.9, "completed"),
                                    (1e-2, 0, 0.1, "completed"), (1e-2, 1, np.nan, "diverged"),
                                    (3e-4, 0, 0.2, "failed"), (3e-4, 1, np.nan, "incomplete")]:
        rows.append(dict(arch="mlp", dataset="shapes", init="scale", optim="sgd", lr=lr,
                         seed=seed, status=status, criterion=value))
    selected = select(pd.DataFrame(rows), 0.1)
    assert list(selected.columns) == list(SELECTED.columns)
    row = selected.iloc[0]
    # 1e-3 (mean 0.6) beats 3e-3 (0.65); 3e-4's only completed-looking row is "failed"
    assert (row.lr, row.criterion, row.runs) == (1e-3, pytest.approx(0.6), 2)
    assert row.criterion_std == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_tables_from_run_directories(tmp_path):
    from varexp.sweep import write_tables

    fake_run(tmp_path, lr=1e-3, rate=0.1)
    fake_run(tmp_path, lr=1e-2, rate=0.2, status="diverged")
    (tmp_path / "mlp-shapes/scale/sgd/lr=0.1/seed=0/.hydra").mkdir(parents=True)
    (tmp_path / "mlp-shapes/scale/sgd/lr=0.1/seed=0/.hydra/config.yaml").write_text(
        "seed: 0\narch: {name: mlp}\ndataset: {name: shapes}\ninit: {name: scale}\n"
        "optim: {name: sgd, lr: 0.1}\n")
    sweep_csv, selected_csv = write_tables(tmp_path, 0.25)
    table = pd.read_csv(sweep_csv)
    assert list(table.columns) == list(SWEEP.columns)
    assert dict(zip(table["lr"], table["status"], strict=True)) == {
        1e-3: "completed", 1e-2: "diverged", 0.1: "incomplete"}
    done = table[table["status"] == "completed"].iloc[0]
    steps = np.arange(30, 40)  # last 25% of 40 steps (rows 0..39)
    assert done.criterion == pytest.approx(np.exp(-0.1 * steps).mean())
    selected = pd.read_csv(selected_csv)
    assert list(selected["lr"]) == [1e-3]


# ---------------------------------------------------------------------------------------------
# end to end: `varexp sweep` and `varexp plot figure4` as a user runs them

# 2 inits x 2 lrs (one forced to diverge) x 2 seeds of a tiny MLP on 64 gaussian inputs
HUGE_LR = 1e10
SIZES = ["arch=mlp", "arch.width=16", "arch.depth=3", "dataset=gaussian", "dataset.size=64",
         "train.steps=6", "train.batch_size=8", "train.ratio_every=3", "train.probe_samples=8",
         "train.checkpoint_every=3", "train.progress=false", "device=cpu"]
TINY = [*SIZES, "init=scale,scale+bias", "optim=sgd", "sweep.lr_index=0,1", "seed=0,1",
        "sweep.select=final", f"sweep.lr_grid.sgd=[0.001,{HUGE_LR}]"]


def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    """The tiny sweep, one job at a time in this process unless `extra` names a launcher."""
    return ["sweep", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=basic",
            *extra]


def launch_here(monkeypatch, tmp_path: Path, *args: str) -> None:
    """`varexp ARGS` in this process from tmp_path, its SystemExit let through (saves the
    interpreter and torch start-up per launch)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    main(list(args))


def job_logs(sweep_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(sweep_dir.rglob("sweep.log")))


def assert_tiny_sweep(sweep_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert len(table) == 8 and list(table.columns) == list(SWEEP.columns)
    assert set(table["run_dir"]) == {f"mlp-gaussian/{i}/sgd/lr={lr}/seed={s}"
                                     for i in ("scale", "scale+bias") for lr in (0.001, HUGE_LR)
                                     for s in (0, 1)}
    huge = table["lr"] == HUGE_LR
    assert (table[huge]["status"] == "diverged").all()
    assert (table[~huge]["status"] == "completed").all() and (table[~huge]["steps"] == 6).all()
    for row in table[~huge].itertuples():  # criterion: mean loss of the last 10% = the last step
        metrics = pd.read_csv(sweep_dir / row.run_dir / "metrics.csv")
        assert list(metrics["step"]) == list(range(6))
        assert row.criterion == pytest.approx(metrics["loss"].iloc[-1])
    selected = pd.read_csv(sweep_dir / "selected.csv")
    assert list(selected["init"]) == ["scale", "scale+bias"]
    assert (selected["lr"] == 0.001).all() and (selected["runs"] == 2).all()
    for row in selected.itertuples():
        mine = table[(table["init"] == row.init) & ~huge]
        assert row.criterion == pytest.approx(mine["criterion"].mean())
    return table


def test_tiny_sweep_resumes_skips_and_plots(tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "sweep"
    # an interrupted first job: `train.stop_after` stops it as a kill would, checkpoint at step 3
    with pytest.raises(SystemExit) as stopped:
        launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path, "train.stop_after=3"))
    assert stopped.value.code == 2 and "stopped after step 3" in capsys.readouterr().err
    first = sweep_dir / "mlp-gaussian/scale/sgd/lr=0.001/seed=0"
    assert (first / "checkpoint.pt").exists() and not (first / "summary.json").exists()

    launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path))
    assert f"continue {first} from its checkpoint" in job_logs(first)
    table = assert_tiny_sweep(sweep_dir)
    files = sorted(sweep_dir.rglob("metrics.csv")) + sorted(sweep_dir.rglob("checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in files]

    skipped = job_logs(sweep_dir).count("skip ")  # (a pack's runs that diverged early)
    launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path))
    assert job_logs(sweep_dir).count("skip ") - skipped == 8
    assert [p.stat().st_mtime_ns for p in files] == stamps  # no training
    pd.testing.assert_frame_equal(pd.read_csv(sweep_dir / "sweep.csv"), table)

    launch_here(monkeypatch, tmp_path, "plot", "figure4", f"results={sweep_dir}",
                   f"hydra.run.dir={tmp_path / 'fig'}")
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 0
    assert (tmp_path / "fig" / "figure4.pdf").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_tiny_sweep_through_launcher(tmp_path, launcher):
    """The same sweep through a parallel launcher, its jobs (two packs of four runs) starting
    DataLoader workers of their own, gives the same tables (CPU, same seeds)."""
    basic = tmp_path / "basic"
    basic.mkdir()
    run_varexp(*sweep_args(basic), cwd=basic, check=True)
    start = time.perf_counter()
    out = run_varexp(*sweep_args(tmp_path, f"hydra/launcher={launcher}", "dataset.workers=1"),
                     cwd=tmp_path, check=True)
    print(f"{launcher}: {time.perf_counter() - start:.1f} s")
    # the launcher launched the runs of each seed as one pack job
    assert "8 runs in 2 jobs: 2 packs of 4" in out.stdout
    assert job_logs(tmp_path / "sweep").count("pack of 4 runs on cpu") == 8
    table = assert_tiny_sweep(tmp_path / "sweep")
    reference = pd.read_csv(basic / "sweep" / "sweep.csv")
    pd.testing.assert_frame_equal(table.drop(columns="seconds"),
                                  reference.drop(columns="seconds"))
    run_varexp(*sweep_args(tmp_path, f"hydra/launcher={launcher}"), cwd=tmp_path, check=True)
    assert job_logs(tmp_path / "sweep").count("skip ") == 8


def test_plot_figure4_draws_the_default_sweep(tmp_path, monkeypatch, capsys):
    """`varexp sweep` then `varexp plot figure4`, as written: the sweep's own grid (no preset)
    is what figure4 draws when no preset made results."""
    outputs = tmp_path / "outputs"
    launch_here(monkeypatch, tmp_path, "sweep", *SIZES, "init=scale", "optim=sgd",
                "sweep.lr_index=0", "seed=0", "sweep.estimate=false", "hydra/launcher=basic")
    assert find_results(FIGURES["figure4"], None, outputs) == [
        outputs / "sweep" / "default" / "selected.csv"]
    launch_here(monkeypatch, tmp_path, "plot", "figure4", f"hydra.run.dir={tmp_path / 'fig'}")
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 0


def test_bad_value_stops_the_sweep_before_any_job(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path, "train.steps=0"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip().splitlines() == [
        "varexp sweep: train.steps=0 is not allowed; must be an integer >= 1"]
    assert not (tmp_path / "sweep").exists()


def test_joblib_sweep_with_dataloader_workers_and_shared_cores(tmp_path):
    """joblib's worker processes start DataLoader workers of their own, and the jobs that run
    side by side share the cores."""
    from varexp.threads import available_cores

    args = [*SIZES, "init=scale", "optim=sgd", "sweep.lr_index=0", "seed=0,1,2,3",
            "dataset.workers=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "sweep.estimate=false"]
    out = run_varexp("sweep", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     check=True)
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(table["status"]) == ["completed"] * 4, out.stdout[-2000:]
    assert "sweep: 4 runs (4 completed)" in out.stdout
    threads = {int(t) for t in re.findall(r"(\d+) thread\(s\)", job_logs(tmp_path / "sweep"))}
    assert threads and max(threads) <= max(1, available_cores() // 2)


def test_crashed_runs_are_failed_and_the_sweep_exits_non_zero(tmp_path, monkeypatch, capsys):
    """Runs trained alone (sweep.pack=off) that crash while training; tests/test_pack.py has
    the packed runs' failures."""
    import varexp.train

    real_loop = varexp.train.Trainer.loop

    def crash_for_scale_bias(self, stop):
        if self.cfg.init.name == "scale+bias":
            raise RuntimeError("simulated crash")
        return real_loop(self, stop)

    monkeypatch.setattr(varexp.train.Trainer, "loop", crash_for_scale_bias)
    with pytest.raises(SystemExit) as exit_:
        launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path, "sweep.estimate=false",
                                                       "sweep.pack=off"))
    assert exit_.value.code == 1
    err = capsys.readouterr()
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    failed = table[table["init"] == "scale+bias"]
    assert (failed["status"] == "failed").all() and len(failed) == 4
    assert (table[table["init"] == "scale"]["status"] != "failed").all()
    assert "sweep: 8 runs (2 completed, 2 diverged, 4 failed)" in err.out
    assert err.err.strip().startswith("varexp sweep: 4 of 8 runs did not finish; see ")
    assert "scale+bias/sgd/lr=0.001/seed=0/sweep.log" in err.err


def test_figure4_of_a_sweep_whose_runs_all_failed_is_one_line(tmp_path):
    from test_figure4 import fake_sweep

    from varexp.errors import VarexpError
    from varexp.plot.figure4 import make
    from varexp.sweep import write_tables

    fake_sweep(tmp_path / "s")
    for summary in (tmp_path / "s").rglob("summary.json"):
        summary.write_text('{"status": "failed", "error": "RuntimeError: boom"}')
    write_tables(tmp_path / "s", 0.1)
    with pytest.raises(VarexpError, match="no learning rate was selected in .*: no run "
                                          "completed there"):
        make(str(tmp_path), "unused", tmp_path / "out")


def test_selection_rule_auc_is_the_mean_of_the_whole_curve_and_final_its_tail():
    from varexp.sweep import selection_fraction

    assert selection_fraction(sweep_cfg()) == 1.0  # auc, the default: the paper's "fastest"
    assert selection_fraction(sweep_cfg("sweep.select=final", "sweep.select_fraction=0.2")) == 0.2
    with pytest.raises(ConfigError, match=r"sweep.select='best' is not allowed; choose one of "
                                          "auc, final"):
        check_sweep(sweep_cfg("sweep.select=best"))
    # a fast start and a slow finish against a slow start and a fast finish
    fast = pd.Series([1.0, 0.2, 0.2, 0.2, 0.19])
    slow = pd.Series([1.0, 0.9, 0.6, 0.3, 0.1])
    assert criterion(fast, 1.0) < criterion(slow, 1.0)  # auc: fast converges first
    assert criterion(fast, 0.2) > criterion(slow, 0.2)  # final: slow ends lower


@pytest.mark.slow
def test_a_timed_out_submitit_job_is_requeued_and_resumes(tmp_path):
    """submitit_local with timeout_min=1 signals the job 30 s before its time is up; Hydra's
    submitit launcher requeues it, and the run continues from its last checkpoint to the same
    rows as a run that was never stopped (about 2 min)."""
    args = ["sweep", *SIZES, "train.steps=20000", "train.ratio_every=5000",
            "train.checkpoint_every=1000", "init=kaiming", "optim=sgd", "sweep.lr_index=0",
            "seed=0", "sweep.estimate=false"]
    run_varexp(*args, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1",
               f"hydra.sweep.dir={tmp_path / 'requeued'}", cwd=tmp_path, check=True)
    run_varexp(*args, "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path / 'whole'}",
               cwd=tmp_path, check=True)
    logs = "".join(p.read_text() for p in (tmp_path / "requeued" / ".submitit").rglob("*.out"))
    assert "Requeued job" in logs and "from its checkpoint" in logs
    run = "mlp-gaussian/kaiming/sgd/lr=0.0003/seed=0"
    a, b = (pd.read_csv(tmp_path / d / run / "metrics.csv").drop(columns="seconds")
            for d in ("requeued", "whole"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.step) == list(range(20000))
