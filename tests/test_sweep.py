"""`varexp sweep`: the lr grid per optimizer, selection by the tail-mean criterion (diverged lrs
skipped), and end to end a tiny sweep through the basic, joblib and submitit_local launchers that
writes sweep.csv, selected.csv and figure4, and does no training when re-run."""

import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MLP, config, run_varexp
from test_figure4 import fake_run

from varexp.cli import main
from varexp.errors import ConfigError
from varexp.figures import FIGURES
from varexp.results import find_results
from varexp.results.aggregate import criterion
from varexp.results.tables import SELECTED, SWEEP, best_settings
from varexp.sweep import check_sweep, select

# ---------------------------------------------------------------------------------------------
# unit: grid, criterion, selection


def sweep_cfg(*overrides: str):
    return config("sweep", *overrides)


@pytest.mark.parametrize(
    "optim, grid", [("sgd", [3e-4, 1e-3, 3e-3, 1e-2]), ("adam", [3e-5, 1e-4, 3e-4, 1e-3])]
)
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
    for lr, seed, value, status in [
        (1e-3, 0, 0.5, "completed"),
        (1e-3, 1, 0.7, "completed"),
        (3e-3, 0, 0.4, "completed"),
        (3e-3, 1, 0.9, "completed"),
        (1e-2, 0, 0.1, "completed"),
        (1e-2, 1, np.nan, "diverged"),
        (3e-4, 0, 0.2, "failed"),
        (3e-4, 1, np.nan, "incomplete"),
    ]:
        rows.append(
            dict(
                arch="mlp",
                dataset="shapes",
                init="scale",
                optim="sgd",
                lr=lr,
                seed=seed,
                status=status,
                criterion=value,
            )
        )
    selected = select(pd.DataFrame(rows), 0.1)
    assert list(selected.columns) == list(SELECTED.columns)
    row = selected.iloc[0]
    # 1e-3 (mean 0.6) beats 3e-3 (0.65); 3e-4's only completed-looking row is "failed"
    assert (row.lr, row.criterion, row.runs) == (1e-3, pytest.approx(0.6), 2)
    assert row.criterion_std == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_a_selected_lr_at_the_edge_of_what_finished_is_marked():
    """lr_at_edge says when the best lr is not bracketed: the smallest or largest lr with a run
    that finished (a diverged larger lr brackets it; a crashed one does not)."""

    def table(runs):
        return pd.DataFrame(
            [
                dict(
                    arch="mlp",
                    dataset="shapes",
                    init="scale",
                    optim="sgd",
                    lr=lr,
                    seed=0,
                    status=status,
                    criterion=value,
                )
                for lr, value, status in runs
            ]
        )

    def edge(runs):
        return select(table(runs), 1.0).iloc[0].lr_at_edge

    middle = [(1e-3, 0.5, "completed"), (3e-3, 0.4, "completed"), (1e-2, 0.6, "completed")]
    assert edge(middle) == ""
    assert edge([(1e-3, 0.5, "completed"), (3e-3, 0.6, "completed")]) == "low"
    assert edge([(1e-3, 0.5, "completed"), (3e-3, 0.4, "completed")]) == "high"
    assert (
        edge([(1e-3, 0.5, "completed"), (3e-3, 0.4, "completed"), (1e-2, np.nan, "diverged")]) == ""
    )
    assert (
        edge([(1e-3, 0.5, "completed"), (3e-3, 0.4, "completed"), (1e-2, np.nan, "failed")])
        == "high"
    )
    assert edge([(1e-3, 0.5, "completed")]) == "both"


def test_the_best_settings_table_says_whether_the_next_lr_is_distinguishable():
    rows = []
    for init, lr, values in [
        ("scale", 1e-3, [0.50, 0.52, 0.51]),
        ("scale", 3e-3, [0.60, 0.62, 0.61]),
        ("scale", 1e-2, [0.05, np.nan, 0.05]),  # diverged on a seed
        ("scale+bias", 1e-3, [0.50, 0.60, 0.40]),
        ("scale+bias", 3e-3, [0.52, 0.62, 0.42]),
    ]:
        for seed, value in enumerate(values):
            rows.append(
                dict(
                    arch="mlp",
                    dataset="shapes",
                    init=init,
                    optim="sgd",
                    lr=lr,
                    seed=seed,
                    status="diverged" if np.isnan(value) else "completed",
                    criterion=value,
                )
            )
    runs = pd.DataFrame(rows)
    text = best_settings(runs, select(runs, 1.0))
    lines = text.splitlines()
    assert lines[0] == (
        "best settings (mean training loss over the whole run; +- std over "
        "seeds; arch=mlp, dataset=shapes, optim=sgd):"
    )
    scale = next(line for line in lines if " scale " in line)
    bias = next(line for line in lines if "scale+bias" in line)
    # 0.51 +- 0.01 vs 0.61 +- 0.01 over 3 seeds: a gap of 0.1 / sqrt(2 * 0.01**2 / 3) = 12.2 se
    assert "0.001" in scale and "0.51 +- 0.01" in scale and " 3 " in scale
    assert "0.003: 0.61 (distinguishable, 12.2 se)" in scale
    # 0.50 +- 0.10 vs 0.52 +- 0.10: 0.02 / 0.0816 = 0.2 se
    assert "0.5 +- 0.1" in bias and "0.003: 0.52 (not distinguishable, 0.2 se)" in bias

    one_seed = runs[runs["seed"] == 0]
    text = best_settings(one_seed, select(one_seed, 1.0))
    assert "0.01 " in text and "0.001: 0.5 (one seed: no spread to judge by)" in text
    assert best_settings(runs.iloc[:0], select(runs.iloc[:0], 1.0)).startswith(
        "best settings: none"
    )


def test_tables_from_run_directories(tmp_path):
    from varexp.sweep import write_tables

    fake_run(tmp_path, lr=1e-3, rate=0.1)
    fake_run(tmp_path, lr=1e-2, rate=0.2, status="diverged")
    (tmp_path / "mlp-shapes/scale/sgd/lr=0.1/seed=0/.hydra").mkdir(parents=True)
    (tmp_path / "mlp-shapes/scale/sgd/lr=0.1/seed=0/.hydra/config.yaml").write_text(
        "seed: 0\narch: {name: mlp}\ndataset: {name: shapes}\ninit: {name: scale}\n"
        "optim: {name: sgd, lr: 0.1}\n"
    )
    sweep_csv, selected_csv = write_tables(tmp_path, 0.25)
    table = pd.read_csv(sweep_csv)
    assert list(table.columns) == list(SWEEP.columns)
    assert dict(zip(table["lr"], table["status"], strict=True)) == {
        1e-3: "completed",
        1e-2: "diverged",
        0.1: "incomplete",
    }
    done = table[table["status"] == "completed"].iloc[0]
    steps = np.arange(30, 40)  # last 25% of 40 steps (rows 0..39)
    assert done.criterion == pytest.approx(np.exp(-0.1 * steps).mean())
    selected = pd.read_csv(selected_csv)
    assert list(selected["lr"]) == [1e-3]


# ---------------------------------------------------------------------------------------------
# end to end: `varexp sweep` and `varexp plot figure4` as a user runs them

# 2 inits x 2 lrs (one forced to diverge) x 2 seeds of a tiny MLP on 64 gaussian inputs
HUGE_LR = 1e10
SIZES = [
    *TINY_MLP,
    "train.steps=6",
    "train.batch_size=8",
    "train.ratio_every=3",
    "train.probe_samples=8",
    "train.checkpoint_every=3",
    "train.progress=false",
    "device=cpu",
]
TINY = [
    *SIZES,
    "init=scale,scale+bias",
    "optim=sgd",
    "sweep.lr_index=0,1",
    "seed=0,1",
    "sweep.select=final",
    f"sweep.lr_grid.sgd=[0.001,{HUGE_LR}]",
]


def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    """The tiny sweep, one job at a time in this process unless `extra` names a launcher."""
    return ["sweep", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=basic", *extra]


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
    assert set(table["run_dir"]) == {
        f"mlp-gaussian/{i}/sgd/lr={lr}/seed={s}"
        for i in ("scale", "scale+bias")
        for lr in (0.001, HUGE_LR)
        for s in (0, 1)
    }
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

    launch_here(
        monkeypatch,
        tmp_path,
        "plot",
        "figure4",
        f"results={sweep_dir}",
        f"hydra.run.dir={tmp_path / 'fig'}",
    )
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
    out = run_varexp(
        *sweep_args(tmp_path, f"hydra/launcher={launcher}", "dataset.workers=1"),
        cwd=tmp_path,
        check=True,
    )
    print(f"{launcher}: {time.perf_counter() - start:.1f} s")
    # the launcher launched the runs of each seed as one pack job
    assert "8 runs in 2 jobs: 2 packs of 4" in out.stdout
    assert job_logs(tmp_path / "sweep").count("pack of 4 runs on cpu") == 8
    table = assert_tiny_sweep(tmp_path / "sweep")
    reference = pd.read_csv(basic / "sweep" / "sweep.csv")
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), reference.drop(columns="seconds"))
    run_varexp(*sweep_args(tmp_path, f"hydra/launcher={launcher}"), cwd=tmp_path, check=True)
    assert job_logs(tmp_path / "sweep").count("skip ") == 8


# one run of the grid, in this process
ONE_RUN = ["init=scale", "optim=sgd", "sweep.lr_index=0", "seed=0", "sweep.estimate=false",
           "hydra/launcher=basic"]  # fmt: skip


def test_plot_figure4_draws_the_default_sweep(tmp_path, monkeypatch, capsys):
    """`varexp sweep` then `varexp plot figure4`, as written: the sweep's own grid (no preset)
    is what figure4 draws when no preset made results."""
    outputs = tmp_path / "outputs"
    capsys.readouterr()
    launch_here(monkeypatch, tmp_path, "sweep", *SIZES, *ONE_RUN)
    assert find_results(FIGURES["figure4"], None, outputs) == [
        outputs / "sweep" / "default" / "selected.csv"
    ]
    # its last line names the next command, with the sweep's folder, as a user can paste it
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "next: varexp plot figure4 results=outputs/sweep/default"
    )
    launch_here(monkeypatch, tmp_path, "plot", "figure4", f"hydra.run.dir={tmp_path / 'fig'}")
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 0


def test_the_next_command_after_a_sweep_draws_it_as_printed(tmp_path, monkeypatch, capsys):
    """A sweep folder that needs quoting, for Hydra (a space, an '=') and for the shell."""
    capsys.readouterr()
    launch_here(
        monkeypatch, tmp_path, "sweep", *SIZES, *ONE_RUN, 'hydra.sweep.dir="my sweeps/lr=any"'
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == """next: varexp plot figure4 'results="my sweeps/lr=any"'""", last
    words = shlex.split(last.removeprefix("next: "))  # as the shell splits it
    launch_here(monkeypatch, tmp_path, *words[1:], f"hydra.run.dir={tmp_path / 'fig'}")
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 0


def test_bad_value_stops_the_sweep_before_any_job(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        launch_here(monkeypatch, tmp_path, *sweep_args(tmp_path, "train.steps=0"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip().splitlines() == [
        "varexp sweep: train.steps=0 is not allowed; must be an integer >= 1"
    ]
    assert not (tmp_path / "sweep").exists()


def test_joblib_sweep_with_dataloader_workers_and_shared_cores(tmp_path):
    """joblib's worker processes start DataLoader workers of their own, and the jobs that run
    side by side share the cores."""
    from varexp.threads import available_cores

    args = [
        *SIZES,
        "init=scale",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0,1,2,3",
        "dataset.workers=1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "sweep.estimate=false",
    ]
    out = run_varexp(
        "sweep", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, check=True
    )
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
        launch_here(
            monkeypatch, tmp_path, *sweep_args(tmp_path, "sweep.estimate=false", "sweep.pack=off")
        )
    assert exit_.value.code == 1
    err = capsys.readouterr()
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    failed = table[table["init"] == "scale+bias"]
    assert (failed["status"] == "failed").all() and len(failed) == 4
    assert (table[table["init"] == "scale"]["status"] != "failed").all()
    assert "sweep: 8 runs (2 completed, 2 diverged, 4 failed)" in err.out
    # one line says what went wrong, after the progress display's (stderr, as tqdm's)
    last = err.err.strip().splitlines()
    assert last[-1].startswith("varexp sweep: 4 of 8 runs did not finish; see ")
    assert all(line.startswith("sweep: ") for line in last[:-1]), err.err
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
    with pytest.raises(
        VarexpError, match="no learning rate was selected in .*: no run completed there"
    ):
        make(str(tmp_path), "unused", tmp_path / "out")


def test_selection_rule_auc_is_the_mean_of_the_whole_curve_and_final_its_tail():
    from varexp.sweep import selection_fraction

    assert selection_fraction(sweep_cfg()) == 1.0  # auc, the default: the paper's "fastest"
    assert selection_fraction(sweep_cfg("sweep.select=final", "sweep.select_fraction=0.2")) == 0.2
    with pytest.raises(
        ConfigError,
        match=r"sweep.select='best' is not allowed; choose one of "
        "auc, final",
    ):
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
    args = [
        "sweep",
        *SIZES,
        "train.steps=20000",
        "train.ratio_every=5000",
        "train.checkpoint_every=1000",
        "init=kaiming",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0",
        "sweep.estimate=false",
    ]
    run_varexp(
        *args,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=1",
        f"hydra.sweep.dir={tmp_path / 'requeued'}",
        cwd=tmp_path,
        check=True,
    )
    run_varexp(
        *args,
        "hydra/launcher=basic",
        f"hydra.sweep.dir={tmp_path / 'whole'}",
        cwd=tmp_path,
        check=True,
    )
    logs = "".join(p.read_text() for p in (tmp_path / "requeued" / ".submitit").rglob("*.out"))
    assert "Requeued job" in logs and "from its checkpoint" in logs
    run = "mlp-gaussian/kaiming/sgd/lr=0.0003/seed=0"
    a, b = (
        pd.read_csv(tmp_path / d / run / "metrics.csv").drop(columns="seconds")
        for d in ("requeued", "whole")
    )
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.step) == list(range(20000))


# ---------------------------------------------------------------------------------------------
# the verdict of a launch, widened sweeps, damaged runs


def sweep_here(monkeypatch, tmp_path: Path, *args: str) -> int:
    """A tiny basic-launcher sweep into tmp_path/sweep in this process: its exit status."""
    try:
        launch_here(
            monkeypatch,
            tmp_path,
            "sweep",
            *SIZES,
            "optim=sgd",
            "sweep.lr_index=0",
            "sweep.estimate=false",
            "hydra/launcher=basic",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *args,
        )
    except SystemExit as exit_:
        return exit_.code
    return 0


RUN = "mlp-gaussian/{init}/sgd/lr=0.0003/seed={seed}"


def test_a_widened_sweep_tables_all_its_runs(tmp_path, monkeypatch, capsys):
    """More seeds and inits into a sweep's own folder: every run is in its tables; a narrower
    launch after it counts its own runs in its progress lines."""
    sweep = tmp_path / "sweep"
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=0") == 0
    assert sweep_here(monkeypatch, tmp_path, "init=scale,scale+bias", "seed=0,1") == 0
    out = capsys.readouterr()
    table = pd.read_csv(sweep / "sweep.csv")
    assert sorted(zip(table["init"], table["seed"], strict=True)) == [
        ("scale", 0),
        ("scale", 1),
        ("scale+bias", 0),
        ("scale+bias", 1),
    ]
    assert (table["status"] == "completed").all() and "left out" not in out.err + out.out
    assert "sweep: 4 runs (4 completed)" in out.out
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=1") == 0
    log = (sweep / RUN.format(init="scale", seed=1) / "sweep.log").read_text()
    assert re.findall(r"sweep: (\d+/\d+) runs done", log)[-1] == "1/1"
    assert len(pd.read_csv(sweep / "sweep.csv")) == 4  # the folder's runs, all at its steps


def test_jobs_that_fail_or_are_refused_now_are_failed_and_the_sweep_exits_non_zero(
    tmp_path, monkeypatch, capsys
):
    """A finished run that cannot continue to the new train.steps (its checkpoint deleted), and
    a job refused in its folder (a stray file there): failed in sweep.csv, exit 1, and neither
    folder rewritten; the job that could continue did."""
    sweep = tmp_path / "sweep"
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=0,1") == 0
    lost = sweep / RUN.format(init="scale", seed=0)
    (lost / "checkpoint.pt").unlink()
    kept = {p: p.read_bytes() for p in lost.rglob("*") if p.is_file() and p.suffix != ".log"}
    stray = sweep / RUN.format(init="scale", seed=2)
    import varexp.sweep

    real_job = varexp.sweep.run_job

    def then_a_stray_file(cfg, run_dir):  # made while the sweep runs, before the last job
        summary = real_job(cfg, run_dir)
        if cfg.seed == 1:
            stray.mkdir(parents=True)
            (stray / "notes.txt").write_text("mine")
        return summary

    monkeypatch.setattr(varexp.sweep, "run_job", then_a_stray_file)
    capsys.readouterr()
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=0,1,2", "train.steps=8") == 1
    err = capsys.readouterr().err
    table = pd.read_csv(sweep / "sweep.csv").set_index("seed")
    assert table["status"].to_dict() == {0: "failed", 1: "completed", 2: "failed"}
    assert table.loc[1, "steps"] == 8
    assert err.strip().splitlines()[-1].startswith("varexp sweep: 2 of 3 runs did not finish; ")
    assert {p: p.read_bytes() for p in kept} == kept  # .hydra/config.yaml and summary included
    assert sorted(p.name for p in stray.iterdir()) == ["notes.txt", "sweep.log"]


def test_a_damaged_metrics_table_is_a_damaged_run_that_the_sweep_trains_again(
    tmp_path, monkeypatch, capsys
):
    """metrics.csv cut short, or emptied with the checkpoint gone: the tables do not read it
    as data; a re-launched sweep rewrites it from the checkpoint, or trains the run again, to
    the rows it had."""
    sweep = tmp_path / "sweep"
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=0,1") == 0
    table = pd.read_csv(sweep / "sweep.csv")
    cut, emptied = (sweep / RUN.format(init="scale", seed=s) for s in (0, 1))
    rows = {run: pd.read_csv(run / "metrics.csv") for run in (cut, emptied)}
    text = (cut / "metrics.csv").read_text()
    (cut / "metrics.csv").write_text(text[: len(text) // 2])

    from varexp.sweep import write_tables

    write_tables(sweep, 1.0)
    damaged = pd.read_csv(sweep / "sweep.csv").set_index("seed")
    assert damaged.loc[0, "status"] == "damaged" and np.isnan(damaged.loc[0, "criterion"])
    assert pd.read_csv(sweep / "selected.csv")["runs"].tolist() == [1]

    (emptied / "metrics.csv").write_text("")
    (emptied / "checkpoint.pt").unlink()
    assert sweep_here(monkeypatch, tmp_path, "init=scale", "seed=0,1") == 0
    logs = job_logs(sweep)
    assert "rewrote it from" in logs and "trains again" in logs
    for run, before in rows.items():
        pd.testing.assert_frame_equal(
            pd.read_csv(run / "metrics.csv").drop(columns="seconds"), before.drop(columns="seconds")
        )
    pd.testing.assert_frame_equal(
        pd.read_csv(sweep / "sweep.csv").drop(columns="seconds"), table.drop(columns="seconds")
    )


def test_an_error_in_the_end_of_sweep_tables_is_one_line_and_exit_1(tmp_path, capsys):
    """Hydra turns an exception in a callback into a warning: the sweep's tables say it
    themselves, in one line, with a non-zero exit."""
    from omegaconf import OmegaConf

    from varexp.sweep import SweepTables

    fake_run(tmp_path, lr=1e-3)
    (tmp_path / "run.json").write_text('{"identity": [1, 2]}')
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "job": {"name": "sweep"},
                "overrides": {"task": []},
            },
            "sweep": {"select": "auc", "select_fraction": 0.1},
            "device": "cpu",
        }
    )
    with pytest.raises(SystemExit) as exit_:
        SweepTables().on_multirun_end(config)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and err == [
        f"varexp sweep: the tables in {tmp_path} could not be made: {tmp_path / 'run.json'} "
        "is damaged (not a run record); move it away"
    ]


def test_the_estimate_counts_each_process_start_up_and_each_runs_own_cost(monkeypatch):
    """The sweep's estimate: the workers' start-up once (joblib, side by side), each run's
    config, data, model and files, and its steps, in waves of the jobs side by side."""
    import varexp.sweep as sweep
    from varexp.compose import complete, parse

    tiny = [o for o in TINY if not o.startswith("train.steps=")] + ["train.steps=100"]
    monkeypatch.setattr(sweep, "measured_start_up", lambda: sweep.StartUp(5.0, 2.0, "test"))
    monkeypatch.setattr(sweep, "start_up_probe", lambda overrides: None)
    timing = sweep.Timing(fixed=1.0, step=0.01, first_run=0.5, wall=0.0)
    monkeypatch.setattr(sweep, "calibrate", lambda cfg, threads: timing)
    line = parse("sweep", complete("sweep", [*tiny, "hydra/launcher=joblib"]), sweep.check)
    assert len(line.jobs) == 8
    seconds, told = sweep.estimate_seconds(line, 8, 2)
    compose = seconds - (5.0 + 2.0 + 0.5) - 4 * (1.0 + 100 * 0.01)
    assert 0 <= compose < 5 * 3.0  # each run's config, composed in its worker, and the launch's
    assert "start-up 8 s" in told and "2 thread" not in told
    basic = parse("sweep", complete("sweep", [*tiny, "hydra/launcher=basic"]), sweep.check)
    in_process, _ = sweep.estimate_seconds(basic, 8, 1)  # no process to start: the first run's
    assert in_process - 0.5 - 8 * (1.0 + 100 * 0.01) < 9 * 3.0
    assert sweep.launch_costs("submitit_local", 2, 7.5, 0.5) == (0.0, 7.5)  # a process per job


def test_a_timing_run_never_downloads_and_stands_in_for_missing_files(tmp_path):
    """A dry run before CIFAR10 is downloaded is timed on the embedded shapes, of its shape."""
    import varexp.sweep as sweep
    from varexp.compose import compose_config

    cfg = compose_config(
        "sweep",
        ["task=cifar10", "arch.channels=0.125", "train.batch_size=4", f"dataset.root={tmp_path}"],
    )
    timing = sweep.calibrate(cfg, 1)
    assert timing.stand_in and "shapes" in timing.stand_in and "cifar10" in timing.stand_in
    assert timing.step > 0 and timing.fixed > 0
    assert not any(tmp_path.iterdir())  # nothing fetched


def test_a_finished_sweep_says_so_once_and_its_runs_log_to_their_folders(
    tmp_path, monkeypatch, capsys
):
    """Run again after it finished: one line says every run is already complete; the jobs'
    own lines (skips, progress) are in their run folders, not on the terminal."""
    assert sweep_here(monkeypatch, tmp_path, "init=scale,scale+bias", "seed=0,1") == 0
    first = capsys.readouterr()
    assert "train from scratch" not in first.out + first.err
    assert "train from scratch" in job_logs(tmp_path / "sweep")
    assert sweep_here(monkeypatch, tmp_path, "init=scale,scale+bias", "seed=0,1") == 0
    again = capsys.readouterr()
    assert again.out.count("all 4 runs already complete") == 1
    assert "skip " not in again.out + again.err and "runs done" not in again.out + again.err
    assert job_logs(tmp_path / "sweep").count("skip ") == 4


def test_one_display_counts_the_launch(tmp_path):
    """The display, off a terminal: a line when runs end (at most every `every` seconds, and
    the last), with what runs and failed."""
    import io

    from varexp.progress import Count, LaunchDisplay

    counts = iter([Count(1, 0, 0), Count(1, 2, 0), Count(3, 1, 1), Count(4, 0, 1)])
    current = [next(counts)]
    out = io.StringIO()
    display = LaunchDisplay(lambda: current[0], 4, estimate=60.0, every=0.0, file=out)
    for count in counts:
        current[0] = count
        display.update()
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sweep: 1/4 runs done, 2 running, 0:00 elapsed, about 1:00 left")
    assert lines[1].startswith("sweep: 3/4 runs done, 1 running, 1 failed")
    assert lines[2].startswith("sweep: 4/4 runs done, 0 running, 1 failed")
    assert len(lines) == 3


@pytest.mark.slow
def test_a_joblib_sweep_shows_one_display_and_no_run_output(tmp_path):
    """Two runs at a time through joblib: no run's banner, bar or skip line on the terminal,
    no launch line per job; the display's lines only."""
    out = run_varexp(
        *sweep_args(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        cwd=tmp_path,
        check=True,
    )
    shown = out.stdout + out.stderr
    assert "train from scratch" not in shown and "#0 :" not in shown and "train:" not in shown
    assert re.search(r"sweep: \d+/\d+ runs done", shown)
    assert "leaked semaphore" not in shown
    again = run_varexp(*sweep_args(tmp_path, "hydra/launcher=joblib"), cwd=tmp_path, check=True)
    assert (again.stdout + again.stderr).count("already complete") == 1
