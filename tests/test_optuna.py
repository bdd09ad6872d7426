"""`varexp train experiment=optuna_lr`: Hydra's Optuna sweeper searches the learning rate on
what `varexp train` returns, its mean training loss over the run; the study lasts in study.db
(`varexp sweep experiment=optuna_lr` and the resume of a stopped trial: tests/test_search.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from conftest import TINY_MLP, run_varexp

import varexp
from varexp.results.aggregate import criterion
from varexp.train import objective

TINY = [
    *TINY_MLP,
    "train.steps=6",
    "train.ratio_every=3",
    "train.batch_size=8",
    "train.probe_samples=8",
    "device=cpu",
]


def test_train_returns_its_mean_training_loss(tmp_path):
    metrics = pd.DataFrame(
        {"step": range(4), "epoch": 0, "loss": [2.0, 1.0, 0.5, 0.5], "lr": 0.1, "seconds": 0.0}
    )
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    assert objective(tmp_path, {"status": "completed"}) == 1.0 == criterion(metrics.loss, 1.0)
    assert objective(tmp_path, {"status": "diverged"}) == math.inf


def test_optuna_searches_the_learning_rate(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")
    out = run_varexp(
        "train",
        "experiment=optuna_lr",
        *TINY,
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={tmp_path / 'study'}",
        cwd=tmp_path,
        check=True,
    )
    trials = sorted((tmp_path / "study").rglob("summary.json"))
    assert len(trials) == 3, out.stdout[-2000:]
    lrs = [json.loads(p.read_text())["lr"] for p in trials]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 1e-1 for lr in lrs)
    best = yaml.safe_load((tmp_path / "study" / "optimization_results.yaml").read_text())
    scores = {}
    for p in trials:
        summary = json.loads(p.read_text())
        scores[summary["lr"]] = objective(p.parent, summary)
    assert best["best_params"]["optim.lr"] == pytest.approx(min(scores, key=scores.get))
    assert best["best_value"] == pytest.approx(min(scores.values()))
    trials = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert sorted(trials["optim.lr"]) == pytest.approx(sorted(scores))
    assert sorted(trials["value"]) == pytest.approx(sorted(scores.values()))
    assert "best settings" in out.stdout and f"{best['best_params']['optim.lr']:.3g}" in out.stdout

    # the same command again continues the study: n_trials is the total, one more trial runs
    again = run_varexp(
        "train",
        "experiment=optuna_lr",
        *TINY,
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={tmp_path / 'study'}",
        cwd=tmp_path,
        check=True,
    )
    assert "4 in all, 1 to run, 1 at a time; 3 finished there already" in again.stdout
    assert len(list((tmp_path / "study").rglob("summary.json"))) == 4
    trials = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert list(trials["state"]) == ["complete"] * 4 and trials["optim.lr"].nunique() == 4
    loaded = varexp.load(tmp_path, table="trials")
    assert list(loaded.columns) == ["search_dir", *trials.columns]
    assert (loaded["search_dir"] == str(tmp_path / "study")).all()
    pd.testing.assert_frame_equal(loaded.drop(columns="search_dir"), trials)
