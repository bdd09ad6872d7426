"""varexp.search: an Optuna study kept in SQLite in the search's folder, resumed by the same
command (n_trials is the total, a stopped trial is asked again), trials.csv at the end."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import TINY_MLP, run_in_process, run_varexp

from varexp.compose import compose_config
from varexp.results.aggregate import criterion
from varexp.results.launch import folder_identity
from varexp.results.run_record import write_record
from varexp.search import INTERRUPTED, Scored, counts, resume, trials_table

optuna = pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")

TINY = [
    *TINY_MLP,
    "train.steps=6",
    "train.ratio_every=3",
    "train.checkpoint_every=3",
    "train.batch_size=8",
    "train.probe_samples=8",
    "device=cpu",
]
LR = optuna.distributions.LogUniformDistribution(1e-5, 1e-1)


def search_config(folder, *overrides):
    return compose_config(
        "sweep", ["experiment=optuna_lr", f"hydra.sweep.dir={folder}", *overrides]
    )


def stored_study(cfg):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=cfg.hydra.sweeper.study_name,
        storage=cfg.hydra.sweeper.storage,
        load_if_exists=True,
    )


def test_the_study_is_in_the_search_folder(tmp_path):
    cfg = search_config(tmp_path / "s")
    assert cfg.hydra.sweeper.storage == f"sqlite:///{tmp_path / 's' / 'study.db'}"
    assert dict(cfg.hydra.sweeper.params) == {"optim.lr": "tag(log, interval(1e-5, 1e-1))"}


def test_resume_counts_the_total_and_asks_a_stopped_trial_again(tmp_path):
    cfg = search_config(tmp_path, "hydra.sweeper.n_trials=5", "seed=7")
    study = stored_study(cfg)
    for value in (2.0, 1.0):
        trial = study.ask()
        trial._suggest("optim.lr", LR)
        study.tell(trial, value)
    stopped = study.ask()  # a launch killed while this trial ran
    stopped_lr = stopped._suggest("optim.lr", LR)
    assert counts(study) == (2, 1)

    # 2 of 5 finished: 3 to run (the stopped one among them), the sampler's seed moved on by the
    # 3 stored trials so that the random start is not replayed
    assert resume(SimpleNamespace(cfg=cfg)) == [
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=10",
    ]
    study = stored_study(cfg)
    assert counts(study) == (2, 0)
    again = study.ask()
    assert again._suggest("optim.lr", LR) == stopped_lr
    table = trials_table(study)
    assert list(table.columns) == ["trial", "state", "value", "seconds", "optim.lr"]
    assert list(table["state"]) == ["complete", "complete", INTERRUPTED, "running"]
    assert list(table["value"][:2]) == [2.0, 1.0] and table["value"][2:].isna().all()
    assert table["optim.lr"][2] == table["optim.lr"][3] == stopped_lr


def test_resume_of_a_new_search_changes_nothing(tmp_path):
    cfg = search_config(tmp_path)
    assert resume(SimpleNamespace(cfg=cfg)) == []
    assert not (tmp_path / "study.db").exists()


def test_a_sweep_job_scores_its_run(tmp_path):
    losses = [2.0, 1.0, 0.5, 0.5]
    pd.DataFrame({"step": range(4), "epoch": 0, "loss": losses, "lr": 0.1, "seconds": 0.0}).to_csv(
        tmp_path / "metrics.csv", index=False
    )
    summary = Scored({"status": "completed", "steps": 4}, tmp_path)
    assert float(summary) == criterion(pd.Series(losses), 1.0) == 1.0
    assert summary["steps"] == 4  # still the summary every sweep job returns
    assert float(Scored({"status": "diverged"}, tmp_path)) == math.inf
    with pytest.raises(ValueError, match="did not finish: out of memory"):
        float(Scored({"status": "failed", "error": "out of memory"}, tmp_path))


def test_the_folder_record_leaves_out_the_searched_keys():
    idents = [{"optim.lr": 3e-4, "optim.name": "sgd", "init.name": "kaiming", "seed": 0}]
    line = SimpleNamespace(searched=("optim.lr", "init"))
    assert folder_identity(line, idents) == {"optim.name": "sgd", "seed": 0}
    assert folder_identity(SimpleNamespace(), idents) == idents[0]


@pytest.mark.parametrize(
    "override, named",
    [
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is not allowed; must be an integer"),
        ("hydra.sweeper.n_jobs=-1", "hydra.sweeper.n_jobs=-1 is not allowed; must be an integer"),
    ],
)
def test_bad_search_settings_are_one_line(capsys, tmp_path, override, named):
    code, err = run_in_process(
        capsys,
        "sweep",
        "experiment=optuna_lr",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 's'}",
        override,
    )
    assert code == 2 and err.strip().count("\n") == 0 and named in err, err
    assert not (tmp_path / "s").exists()


def test_a_damaged_study_is_one_line_and_kept(capsys, tmp_path):
    write_record(tmp_path, "multirun-folder", {}, of="sweep")  # a search's folder
    (tmp_path / "study.db").write_text("not a database\n")
    code, err = run_in_process(
        capsys, "sweep", "experiment=optuna_lr", *TINY, f"hydra.sweep.dir={tmp_path}"
    )
    assert code == 2 and err.strip().count("\n") == 0, err
    assert f"{tmp_path / 'study.db'}: not a readable Optuna study" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "study.db"]
    assert (tmp_path / "study.db").read_text() == "not a database\n"


def test_a_search_running_in_the_folder_refuses_a_second_launch_before_counting(capsys, tmp_path):
    write_record(tmp_path, "multirun-folder", {}, of="sweep")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(
            json.dumps(
                {
                    "pid": other.pid,
                    "host": socket.gethostname(),
                    "since": time.time(),
                    "what": "varexp sweep",
                }
            )
        )
        capsys.readouterr()
        code, err = run_in_process(
            capsys, "sweep", "experiment=optuna_lr", *TINY, f"hydra.sweep.dir={tmp_path}"
        )
    finally:
        other.kill()
    assert code == 2 and f"is in use by varexp sweep (pid {other.pid}" in err
    assert err.strip().count("\n") == 0, err


def test_help_describes_the_search(capsys):
    from varexp.cli import main

    main(["sweep", "experiment=optuna_lr", "--help"])
    out = capsys.readouterr().out
    assert (
        "Optuna search (12 trials, 1 at a time, into outputs/optuna/allcnnc-shapes/"
        "kaiming-sgd/): optim.lr=tag(log, interval(1e-5, 1e-1)); the study in "
        "outputs/optuna/allcnnc-shapes/kaiming-sgd/study.db"
    ) in out


@pytest.mark.slow
def test_varexp_sweep_searches_and_a_rerun_continues_the_study(tmp_path):
    folder = tmp_path / "study"
    args = [
        "sweep",
        "experiment=optuna_lr",
        *TINY,
        f"hydra.sweep.dir={folder}",
        "hydra/launcher=basic",
    ]
    first = run_varexp(*args, "hydra.sweeper.n_trials=2", cwd=tmp_path, check=True)
    assert "2 in all, 2 to run" in first.stdout, first.stdout
    # a launch killed while its third trial ran (the study keeps it as running)
    cfg = search_config(folder)
    study = stored_study(cfg)
    stopped = study.ask()
    stopped_lr = stopped._suggest("optim.lr", LR)

    out = run_varexp(*args, "hydra.sweeper.n_trials=4", cwd=tmp_path, check=True)
    assert (
        "4 in all, 2 to run, 1 at a time; 2 finished there already, 1 stopped mid-run" in out.stdout
    ), out.stdout
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["state"]) == ["complete", "complete", INTERRUPTED, "complete", "complete"]
    assert trials["optim.lr"][3] == pytest.approx(stopped_lr)  # asked again first
    done = trials[trials["state"] == "complete"]
    assert done["optim.lr"].nunique() == 4 and done["value"].notna().all()
    # each trial is a run folder of the sweep's layout, its score the run's mean loss
    runs = sorted(folder.rglob("summary.json"))
    assert len(runs) == 4
    for path in runs:
        summary = json.loads(path.read_text())
        row = done[done["optim.lr"].sub(summary["lr"]).abs() < 1e-12 * summary["lr"]]
        assert len(row) == 1
        loss = pd.read_csv(path.parent / "metrics.csv")["loss"]
        assert row["value"].iloc[0] == pytest.approx(criterion(loss, 1.0))
    best = done.loc[done["value"].idxmin()]
    selected = pd.read_csv(folder / "selected.csv")
    assert selected["lr"].iloc[0] == pytest.approx(best["optim.lr"])
    assert selected["criterion"].iloc[0] == pytest.approx(best["value"])
    assert "best settings" in out.stdout and f"{best['optim.lr']:.3g}" in out.stdout
