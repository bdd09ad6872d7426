"""Figure 4: training loss vs iteration at each setting's selected learning rate, one line per
init (scale, scale+bias, batchnorm) with mean +- std over seeds, one panel per (task, optimizer);
a legend entry says when its lr is at the edge of the grid (not bracketed).
Reads a sweep's selected.csv and sweep.csv (varexp.sweep) and its runs' metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.optim import OPTIMIZERS
from varexp.plot.common import (
    INIT_COLORS,
    arch_title,
    caption,
    color_for,
    init_rank,
    log,
    new_figure,
    save,
    style_axes,
)
from varexp.results import find_results, read_summary
from varexp.results.summary import Status
from varexp.results.tables import METRICS, SELECTED, SETTING, SWEEP


def optim_title(name: str) -> str:
    record = OPTIMIZERS.get(name)
    return record.title if record is not None else name


TASK_ORDER = ("cifar10", "isbi2012", "shapes", "membranes")


def find_selected(results: str | None, outputs_root: str) -> list[Path]:
    """Every selected.csv under `results`; without it, the newest sweep made for the figure
    under `outputs_root` (varexp.files.find_results), newest first."""
    paths = find_results(FIGURES["figure4"], results, outputs_root)
    return sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)


def selected_runs(paths: list[Path]) -> pd.DataFrame:
    """One row per completed run at a selected lr: the selection key, lr, seed and the absolute
    path of its metrics.csv. Where several sweeps select the same (arch, dataset, init, optim),
    the newest selected.csv wins. A sweep that selected nothing says why in one line."""
    parts = []
    for path in paths:  # newest first
        selected = SELECTED.read(path, allow_empty=True)
        sweep = SWEEP.read(path.parent / SWEEP.file, allow_empty=True)
        if selected.empty:
            counts = sweep["status"].value_counts()
            told = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no runs"
            log.warning("%s selects nothing (%s); see %s", path, told, path.parent / "sweep.csv")
            continue
        selected = selected.astype({"lr": float})
        if "lr_at_edge" not in selected.columns:  # made before the column
            selected["lr_at_edge"] = ""
        runs = (
            sweep[sweep["status"] == Status.COMPLETED]
            .astype({"lr": float})
            .merge(selected[[*SETTING, "lr", "lr_at_edge"]], on=SETTING + ["lr"])
        )
        runs["metrics"] = [path.parent / d / "metrics.csv" for d in runs["run_dir"]]
        runs["source"] = len(parts)
        parts.append(runs)
    if not parts:
        raise VarexpError(
            f"no learning rate was selected in {', '.join(map(str, paths))}: no "
            "run completed there (see sweep.csv and the runs' logs)"
        )
    runs = pd.concat(parts, ignore_index=True)
    newest = runs.groupby(SETTING)["source"].transform("min")
    return runs[runs["source"] == newest]


def finished_losses(run) -> pd.Series | None:
    """The loss per step of a run that finished as its sweep.csv row says (completed, `steps`
    steps, and a summary.json that agrees), else None with one line naming the file: a run
    extended and then interrupted, or a damaged metrics.csv (varexp.results.tables.read_run),
    is not drawn."""
    summary = read_summary(run.metrics.parent) or {}
    steps = int(run.steps)
    if summary.get("status") != Status.COMPLETED or summary.get("steps") != steps:
        log.warning(
            "figure4 leaves out %s: its summary.json no longer says completed after %d "
            "steps (a run extended or interrupted since the sweep's tables)",
            run.metrics.parent,
            steps,
        )
        return None
    try:
        metrics = METRICS.read_run(run.metrics.parent, summary)
    except VarexpError as damage:
        log.warning("figure4 leaves out %s", damage)
        return None
    return pd.Series(metrics["loss"].to_numpy(float), index=metrics["step"].to_numpy())


def smoothed_losses(runs: pd.DataFrame, smooth: int) -> pd.DataFrame:
    """Loss per step (rows) and seed (columns) of the runs that finished, each run a trailing
    moving average over `smooth` steps."""
    curves = {}
    for run in runs.itertuples():
        loss = finished_losses(run)
        if loss is not None:
            curves[run.seed] = loss.rolling(smooth, min_periods=1).mean()
    return pd.DataFrame(curves).sort_index()


def default_smooth(runs: pd.DataFrame) -> int:
    """1% of the longest run, at least 1 step."""
    return max(1, int(runs["steps"].max()) // 100)


def task_rank(task: tuple[str, str]) -> tuple:
    arch, dataset = task
    return (TASK_ORDER.index(dataset) if dataset in TASK_ORDER else len(TASK_ORDER), task)


def draw_panel(ax, runs: pd.DataFrame, title: str, smooth: int) -> None:
    inits = sorted(runs["init"].unique(), key=init_rank)
    for init in inits:
        mine = runs[runs["init"] == init]
        curves = smoothed_losses(mine, smooth)
        if curves.empty:
            continue
        mean, std = curves.mean(axis=1), curves.std(axis=1, ddof=1).fillna(0.0)
        color = color_for(init, INIT_COLORS, inits)
        edge = mine["lr_at_edge"].iloc[0]
        edge = (
            ""
            if not isinstance(edge, str) or not edge
            else ", the only lr"
            if edge == "both"
            else f" at the grid's {edge} end"
        )
        label = f"{init} (lr {mine['lr'].iloc[0]:g}{edge}, n={curves.shape[1]})"
        ax.plot(curves.index, mean, color=color, linewidth=1.2, label=label)
        ax.fill_between(curves.index, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
    style_axes(ax, title, "iteration", "training loss")
    ax.legend(fontsize=8, loc="upper right")


def make(
    results: str | None, outputs_root: str, out_dir: str | Path, smooth: int | None = None
) -> list[Path]:
    """Render figure4.png/.pdf into out_dir; `smooth` is the moving-average window in
    iterations (None: 1% of the run length)."""
    if smooth is not None and (
        isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1
    ):
        raise VarexpError(f"smooth={smooth!r} is not allowed; must be an integer >= 1 or null")
    paths = find_selected(results, outputs_root)
    runs = selected_runs(paths)
    if runs.empty:
        raise VarexpError(f"no completed run at a selected lr in {', '.join(map(str, paths))}")
    window = default_smooth(runs) if smooth is None else smooth
    tasks = sorted(
        {(a, d) for a, d in zip(runs["arch"], runs["dataset"], strict=True)}, key=task_rank
    )
    optims = sorted(runs["optim"].unique(), key=lambda o: (o not in OPTIMIZERS, o))
    fig = new_figure(5.0 * len(optims), 3.8 * len(tasks))
    axes = fig.subplots(len(tasks), len(optims), squeeze=False)
    for row, (arch, dataset) in enumerate(tasks):
        for col, optim in enumerate(optims):
            ax = axes[row, col]
            mine = runs[
                (runs["arch"] == arch) & (runs["dataset"] == dataset) & (runs["optim"] == optim)
            ]
            title = f"{arch_title(arch)} on {dataset}, {optim_title(optim)}"
            if mine.empty:
                ax.set_axis_off()
                ax.set_title(f"{title}: no completed run", fontsize=11)
                continue
            draw_panel(ax, mine, title, window)
    log.info("figure4 from %s (smoothing window %d)", ", ".join(str(p) for p in paths), window)
    smoothed = f"a trailing moving average over {window} iterations" if window > 1 else "unsmoothed"
    caption(
        fig,
        f"Lines: the training loss at each init's selected learning rate (in the "
        f"legend), {smoothed}, averaged over the seeds (n in the legend); bands: ±1 "
        "standard deviation across those seeds (n - 1 in the denominator; none where "
        "n = 1).",
    )
    return save(fig, out_dir, "figure4")
