"""varexp.load: the runs under a folder as one row each with the config keys that identify them,
and their tables stacked with those keys joined."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import run_in_process

import varexp
from varexp.errors import VarexpError

TRAIN = [
    "train",
    "arch=mlp",
    "arch.width=16",
    "arch.depth=3",
    "dataset=shapes",
    "dataset.train_size=64",
    "dataset.test_size=16",
    "dataset.cache=false",
    "device=cpu",
    "train.steps=4",
    "train.ratio_every=2",
    "train.batch_size=8",
    "train.probe_samples=8",
    "train.progress=false",
]


class Uncaptured:
    """run_in_process's capsys for a module-scoped fixture (pytest captures the output)."""

    def readouterr(self) -> SimpleNamespace:
        return SimpleNamespace(out="", err="")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two training runs of different lr and init, one probe (with held-out statistics), and a
    run moved aside."""
    root, capture = tmp_path_factory.mktemp("outputs"), Uncaptured()
    for folder, extra in [("a", ["optim.lr=0.01"]), ("b", ["optim.lr=0.1", "init=scale"])]:
        assert run_in_process(capture, *TRAIN, *extra, f"hydra.run.dir={root / folder}")[0] == 0
    assert (
        run_in_process(
            capture,
            "probe",
            "arch=mlp",
            "arch.width=8",
            "arch.depth=2",
            "probe.networks=2",
            "probe.samples=4",
            "device=cpu",
            "init=scale+bias",
            "probe.heldout=3",
            "probe.progress=false",
            f"hydra.run.dir={root / 'p'}",
        )[0]
        == 0
    )
    # a's first run moved aside by overwrite=true: left out
    assert (
        run_in_process(
            capture, *TRAIN, "optim.lr=0.03", "overwrite=true", f"hydra.run.dir={root / 'a'}"
        )[0]
        == 0
    )
    return root


def test_one_row_per_run_with_its_identifying_keys(outputs):
    runs = varexp.load(outputs)
    assert sorted(runs.run_dir) == [str(outputs / f) for f in ("a", "b", "p")]
    runs = runs.set_index("run_dir")
    train = runs.loc[[str(outputs / "a"), str(outputs / "b")]]
    assert list(train["optim.lr"]) == [0.03, 0.1]
    assert list(train["init.name"]) == ["kaiming", "scale"]
    assert set(train.status) == {"completed"} and set(train.steps) == {4}
    for folder in ("a", "b"):
        summary = json.loads((outputs / folder / "summary.json").read_text())
        assert runs.loc[str(outputs / folder), "final_loss"] == summary["final_loss"]
        record = json.loads((outputs / folder / "run.json").read_text())
        for key, value in record["identity"].items():
            cell = runs.loc[str(outputs / folder), key]
            assert pd.isna(cell) if value is None else cell == value, key
    probe = runs.loc[str(outputs / "p")]
    assert probe.command == "probe" and probe["probe.networks"] == 2
    assert pd.isna(probe.final_loss)
    assert list(varexp.load(outputs, command="probe").run_dir) == [str(outputs / "p")]
    assert len(varexp.load(outputs / "b")) == 1  # a run folder itself


def test_long_tables_with_the_identifying_keys_joined(outputs):
    metrics = varexp.load(outputs, table="metrics")
    assert list(metrics.columns[:2]) == ["run_dir", "arch.activation"]
    assert metrics.groupby("optim.lr").step.apply(list).to_dict() == {
        0.03: [0, 1, 2, 3],
        0.1: [0, 1, 2, 3],
    }
    own = pd.read_csv(outputs / "b" / "metrics.csv")
    mine = metrics[metrics["optim.lr"] == 0.1].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine[own.columns], own)
    ratios = varexp.load(outputs, table="ratios")
    assert sorted(ratios.step.unique()) == [0, 2] and set(ratios["init.name"]) == {
        "kaiming",
        "scale",
    }
    probe = varexp.load(outputs, table="probe")
    assert len(probe) == 2 * 2 and set(probe["arch.width"]) == {8}
    heldout = varexp.load(outputs, table="heldout")
    assert len(heldout) == 2 * 2 and set(heldout["probe.heldout"]) == {3}
    # the fit's own batch meets its target; the table is heldout.csv's as written
    assert heldout.fit_second_moment.to_numpy() == pytest.approx(1.0, rel=1e-3)
    assert set(heldout.heldout_samples) == {3} and set(heldout.fit_samples) == {4}


def test_damaged_tables_are_left_out_with_a_warning(outputs, tmp_path):
    shutil.copytree(outputs, tmp_path / "copy")
    (tmp_path / "copy" / "b" / "metrics.csv").write_text("step,epoch\n1,x\n")
    with pytest.warns(UserWarning, match=r"varexp.load leaves out .*b/metrics.csv: missing"):
        metrics = varexp.load(tmp_path / "copy", table="metrics")
    assert set(metrics["optim.lr"]) == {0.03}


def test_bad_paths_and_tables_are_one_line(outputs, tmp_path):
    with pytest.raises(VarexpError, match=r"nowhere: does not exist"):
        varexp.load(tmp_path / "nowhere")
    with pytest.raises(VarexpError, match=r"no varexp runs under"):
        varexp.load(tmp_path)
    with pytest.raises(
        VarexpError,
        match=r"^table='loss' is not allowed; choose one of "
        r"metrics, ratios, probe",
    ):
        varexp.load(outputs, table="loss")
    with pytest.raises(VarexpError, match=r"no theory.csv under"):
        varexp.load(outputs, table="theory")
