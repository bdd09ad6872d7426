"""Each config is checked once: the launch checks every job's config before Hydra makes a folder,
and a job run in the launching process (Hydra's basic launcher) trains from that check."""

from conftest import run_in_process

from varexp import checks, train

MLP = ["arch=mlp", "arch.width=16", "arch.depth=2", "dataset=gaussian", "train.steps=2"]


def counting(monkeypatch, module, name: str) -> list:
    """Replace module.name (a check) by one that counts its calls."""
    calls = []
    real = getattr(module, name)

    def check(cfg, *args):
        calls.append(cfg)
        return real(cfg, *args)

    monkeypatch.setattr(module, name, check)
    return calls


def test_a_training_run_is_checked_once(tmp_path, monkeypatch, capsys):
    calls = counting(monkeypatch, train, "check")
    code, err = run_in_process(capsys, "train", *MLP, f"hydra.run.dir={tmp_path}")
    assert code == 0, err
    assert (tmp_path / "metrics.csv").exists()
    assert len(calls) == 1


def test_each_job_of_a_sweep_is_checked_once(tmp_path, monkeypatch, capsys):
    """The first job whole, the second (another lr index) key by key, and neither again when
    the basic launcher runs them in this process."""
    whole = counting(monkeypatch, checks, "validate")
    by_key = counting(monkeypatch, checks, "validate_keys")
    code, err = run_in_process(
        capsys,
        "sweep",
        *MLP,
        "init=scale",
        "optim=sgd",
        "seed=0",
        "sweep.lr_index=0,1",
        "hydra/launcher=basic",
        "sweep.pack=off",
        "sweep.estimate=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert code == 0, err
    assert len(list(tmp_path.rglob("metrics.csv"))) == 2
    assert [c.sweep.lr_index for c in whole] == [0]
    assert [c.sweep.lr_index for c in by_key] == [1]
