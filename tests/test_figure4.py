"""`varexp plot figure4` from synthetic sweeps: one panel per (task, optimizer), the selected lr's
runs averaged over seeds, the newest sweep winning, bad input failing with one line."""

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from varexp.errors import VarexpError
from varexp.files import write_json
from varexp.plot.figure4 import find_selected, make, selected_runs, smoothed_losses
from varexp.sweep import write_tables

STEPS = 40


def fake_run(
    sweep_dir: Path,
    *,
    arch="allcnnc",
    dataset="shapes",
    init="scale",
    optim="sgd",
    lr=1e-3,
    seed=0,
    rate=0.05,
    status="completed",
) -> Path:
    """A run directory as `varexp train` leaves it: loss = exp(-rate * step) + seed / 100."""
    run_dir = sweep_dir / f"{arch}-{dataset}/{init}/{optim}/lr={lr}/seed={seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = dict(
        seed=seed,
        arch=dict(name=arch),
        dataset=dict(name=dataset),
        init=dict(name=init),
        optim=dict(name=optim, lr=lr),
    )
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    steps = np.arange(STEPS)  # rows 0..n-1 as varexp train writes them
    loss = np.exp(-rate * steps) + seed / 100
    if status == "diverged":
        loss[STEPS // 2 :] = np.nan
    pd.DataFrame(dict(step=steps, epoch=0, loss=loss, lr=lr, seconds=steps * 0.01)).to_csv(
        run_dir / "metrics.csv", index=False
    )
    write_json(
        dict(status=status, final_loss=float(loss[-1]), steps=STEPS, seconds=0.4),
        run_dir / "summary.json",
    )
    return run_dir


def fake_sweep(
    sweep_dir: Path,
    tasks=(("allcnnc", "shapes"),),
    seeds=(0, 1),
    preset: str | None = "figure4_quick",
) -> None:
    """Per task and optimizer: scale+bias learns faster than scale; lr 1e-3 beats 3e-4. The
    sweep records the preset that made it, as Hydra's multirun.yaml does."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(
        {"hydra": {"runtime": {"choices": {"experiment": preset}}}}, sweep_dir / "multirun.yaml"
    )
    for arch, dataset in tasks:
        for optim in ("sgd", "adam"):
            for init, rate in (("scale", 0.05), ("scale+bias", 0.1)):
                for lr, factor in ((3e-4, 0.5), (1e-3, 1.0)):
                    for seed in seeds:
                        fake_run(
                            sweep_dir,
                            arch=arch,
                            dataset=dataset,
                            init=init,
                            optim=optim,
                            lr=lr,
                            seed=seed,
                            rate=rate * factor,
                        )
    write_tables(sweep_dir, 0.1)


def test_selected_runs_are_the_best_lr_for_every_seed(tmp_path):
    fake_sweep(tmp_path / "s")
    runs = selected_runs(find_selected(str(tmp_path), "unused"))
    assert len(runs) == 2 * 2 * 2  # optims x inits x seeds
    assert set(runs["lr"]) == {1e-3}
    assert all(p.exists() for p in runs["metrics"])


def test_smoothing_is_a_trailing_moving_average(tmp_path):
    fake_sweep(tmp_path / "s")
    runs = selected_runs(find_selected(str(tmp_path), "unused"))
    one = runs[(runs["init"] == "scale") & (runs["optim"] == "sgd")]
    raw = smoothed_losses(one, 1)
    smooth = smoothed_losses(one, 5)
    assert list(raw.columns) == [0, 1] and len(raw) == STEPS
    np.testing.assert_allclose(smooth.loc[10], raw.loc[6:10].mean())
    np.testing.assert_allclose(smooth.loc[0], raw.loc[0])  # min_periods=1 at the start
    # the seed offset of the fake runs survives: std over seeds is the 0.01 spacing
    np.testing.assert_allclose(raw.std(axis=1, ddof=1), 0.01 / np.sqrt(2), rtol=1e-6)


def test_figure_has_one_panel_per_task_and_optimizer(tmp_path):
    fake_sweep(tmp_path / "s", tasks=(("allcnnc", "shapes"), ("unet", "membranes")))
    paths = make(str(tmp_path / "s"), "unused", tmp_path / "out", smooth=3)
    assert [p.name for p in paths] == ["figure4.png", "figure4.pdf"]
    image = mpimg.imread(paths[0])
    # 2 x 2 panels of 5 x 3.8 inches at 150 dpi, and the caption's lines under them
    assert image.shape[1] == round(2 * 5.0 * 150)
    assert round(2 * 3.8 * 150) < image.shape[0] < round((2 * 3.8 + 1) * 150)
    assert image[..., :3].std() > 0.05


def test_caption_says_the_band_is_the_std_across_seeds(tmp_path, monkeypatch):
    import varexp.plot.figure4 as figure4

    fake_sweep(tmp_path / "s", seeds=(0, 1, 2))
    real, seen = figure4.save, []
    monkeypatch.setattr(figure4, "save", lambda fig, *a: seen.append(fig) or real(fig, *a))
    make(str(tmp_path / "s"), "unused", tmp_path / "out", smooth=3)
    text = " ".join(seen[0]._supxlabel.get_text().split())
    assert "bands: ±1 standard deviation across those seeds" in text
    assert "a trailing moving average over 3 iterations" in text
    labels = [t.get_text() for t in seen[0].axes[0].get_legend().get_texts()]
    assert all("n=3" in label for label in labels), labels


def test_default_reads_only_the_latest_sweep_made_for_the_figure(tmp_path):
    fake_sweep(tmp_path / "outputs" / "sweep" / "old", tasks=(("unet", "membranes"),))
    fake_sweep(tmp_path / "outputs" / "sweep" / "new")
    (tmp_path / "outputs" / "sweep" / "new" / "selected.csv").touch()
    # a newer sweep of no figure preset (`varexp sweep` with its defaults) is not Fig. 4's input
    fake_sweep(
        tmp_path / "outputs" / "sweep" / "default", tasks=(("mlp", "gaussian"),), preset=None
    )
    paths = find_selected(None, str(tmp_path / "outputs"))
    assert paths == [tmp_path / "outputs" / "sweep" / "new" / "selected.csv"]
    assert set(selected_runs(paths)["dataset"]) == {"shapes"}
    # results=DIR reads every sweep under it
    every = selected_runs(find_selected(str(tmp_path / "outputs"), "unused"))
    assert set(every["dataset"]) == {"shapes", "membranes", "gaussian"}


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(VarexpError, match="no selected.csv for figure4 under"):
        make(str(tmp_path), "unused", tmp_path / "out")
    with pytest.raises(VarexpError, match="does not exist"):
        make(str(tmp_path / "nowhere"), "unused", tmp_path / "out")
    fake_sweep(tmp_path / "s")
    with pytest.raises(VarexpError, match="smooth=0 is not allowed"):
        make(str(tmp_path), "unused", tmp_path / "out", smooth=0)
    (tmp_path / "s" / "sweep.csv").write_text("arch,dataset\nmlp,gaussian\n")
    with pytest.raises(VarexpError, match="sweep.csv: missing column"):
        make(str(tmp_path), "unused", tmp_path / "out")


def test_unfinished_or_damaged_runs_are_left_out_with_one_line_each(tmp_path, caplog):
    """A run extended after its sweep's tables and interrupted (summary and metrics.csv no
    longer say what sweep.csv says), and a damaged metrics.csv, are not drawn; the legend
    counts the runs drawn."""
    fake_sweep(tmp_path / "s")
    runs = selected_runs(find_selected(str(tmp_path), "unused"))
    extended, damaged = runs.iloc[0], runs.iloc[1]
    metrics = pd.read_csv(extended.metrics)
    longer = pd.concat([metrics, metrics.assign(step=metrics["step"] + STEPS)])
    longer.to_csv(extended.metrics, index=False)
    write_json(dict(status="running", steps=2 * STEPS), extended.metrics.parent / "summary.json")
    damaged.metrics.write_text("step,loss\n0,1.0\n1,garbage\n")
    make(str(tmp_path), "unused", tmp_path / "out")
    left_out = [r.message for r in caplog.records if "figure4 leaves out" in r.message]
    assert len(left_out) == 2
    assert (
        str(extended.metrics.parent) in left_out[0] or str(extended.metrics.parent) in left_out[1]
    )
    assert any(str(damaged.metrics) in m for m in left_out)
