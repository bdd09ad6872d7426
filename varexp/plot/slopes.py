"""Finite-size effects on Fig. 3, which neither the paper nor its peers show. Left: the fitted
slope of log <(dL/dx^l)^2> vs layer (varexp.results.aggregate.grad_fit, layers 1..L-1) for
scale+bias and batchnorm MLPs against width, one line per number of inputs T, with +-1 standard
error (bootstrap over networks) and the infinite-width -0.383. Right: effective samples per layer as
a fraction of T (varexp.stats): in the deep layers of scale+bias at finite width the centred
signal concentrates on a few inputs, so fewer samples carry the gradient's growth."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from varexp.plot.common import (
    INIT_COLORS,
    THEORY_STYLE,
    caption,
    log,
    new_figure,
    save,
    slope_text,
    style_axes,
)
from varexp.results.aggregate import grad_fit, layer_summary
from varexp.results.tables import RunResult, load_probes, stack
from varexp.theory import gradient_slope

INITS = ("scale+bias", "batchnorm")
BOOTSTRAP = 200
STYLES = ("-", "--", ":", "-.")
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}


def settings(runs: list[RunResult]) -> dict[tuple, pd.DataFrame]:
    """(init, width, T) -> the stacked probe tables of the runs of that setting."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        if run.arch == "mlp":
            key = (run.init, int(run.get("arch.width")), int(run.get("probe.samples")))
            groups[key].append(run)
    return {key: stack(group) for key, group in sorted(groups.items())}


def slope_with_error(table: pd.DataFrame, rng: np.random.Generator) -> tuple[float, float]:
    """The fitted slope and its standard error over a bootstrap of the networks."""
    slope = grad_fit(table)[0]
    networks = table["network"].unique()
    if len(networks) < 2:
        return slope, 0.0
    by_network = {n: t for n, t in table.groupby("network")}
    draws = []
    for _ in range(BOOTSTRAP):
        pick = rng.choice(networks, size=len(networks), replace=True)
        draws.append(grad_fit(pd.concat([by_network[n] for n in pick]))[0])
    return slope, float(np.std(draws, ddof=1))


def draw_slopes(ax, tables: dict[tuple, pd.DataFrame]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for (init, width, samples), table in tables.items():
        slope, error = slope_with_error(table, rng)
        rows.append(dict(init=init, width=width, samples=samples, slope=slope, error=error,
                         networks=table["network"].nunique()))
    frame = pd.DataFrame(rows)
    sample_sizes = sorted(frame["samples"].unique())
    handles = []  # an errorbar's own legend entry draws every T solid: its line style is lost
    for (init, samples), line in frame.groupby(["init", "samples"]):
        style = STYLES[sample_sizes.index(samples) % len(STYLES)]
        color = INIT_COLORS.get(init, "black")
        ax.errorbar(line["width"], line["slope"], yerr=line["error"], marker="o", markersize=4,
                    capsize=3, linestyle=style, color=color)
        handles.append(Line2D([], [], color=color, linestyle=style, marker="o", markersize=4,
                              label=f"{init}, T = {samples} ({STYLE_NAMES[style]})"))
        for row in line.itertuples():
            log.info("slopes: %s width %d T %d (%d nets): %s +- %.3f", init, row.width,
                     samples, row.networks, slope_text(row.slope), row.error)
    handles.append(ax.axhline(gradient_slope(), **THEORY_STYLE,
                              label=f"infinite width: {slope_text(gradient_slope())}"))
    ax.set_xscale("log")
    style_axes(ax, "gradient slope (fit over layers 1..L-1)", "width",
               r"slope of $\log\langle(\partial L/\partial x^l)^2\rangle$ vs $l$")
    ax.legend(handles=handles, fontsize=7, loc="best", handlelength=3)
    return rows


def draw_effective_samples(ax, tables: dict[tuple, pd.DataFrame]) -> None:
    """Effective samples / T vs layer for scale+bias at each width, at the largest T."""
    largest = max(samples for _, _, samples in tables)
    widths = sorted({w for init, w, s in tables if init == "scale+bias" and s == largest})
    for i, width in enumerate(widths):
        table = tables[("scale+bias", width, largest)]
        if "effective_samples" not in table.columns:
            continue
        mean = layer_summary(table, "effective_samples")
        ax.plot(mean["layer"], mean["mean"] / largest, color=f"C{i}", label=f"width {width}")
    style_axes(ax, f"scale+bias: samples carrying the signal (T = {largest})", "layer $l$",
               "effective samples / T")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    runs = load_probes("slopes", results, outputs_root, INITS)
    tables = settings(runs)
    fig = new_figure(11, 4.4)
    left, right = fig.subplots(1, 2)
    rows = draw_slopes(left, tables)
    draw_effective_samples(right, tables)
    caption(fig, figure_caption(rows))
    return save(fig, out_dir, "slopes")


def figure_caption(rows: list[dict]) -> str:
    counts = sorted({row["networks"] for row in rows})
    networks = (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}")
    return (f"Left: each point is the slope fitted to the mean over its {networks} networks "
            "(colour: init; line style: T, the number of inputs); bars: ±1 standard "
            f"error of that slope, the standard deviation of {BOOTSTRAP} bootstrap resamples "
            "of the networks; black dashed: the infinite-width slope log(1 - 1/π) "
            "(Sec. 4). Right: effective samples per layer as a fraction of T, mean over the "
            "networks, at the largest T.")
