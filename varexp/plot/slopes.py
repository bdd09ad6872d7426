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

from varexp.plot.common import (
    INIT_COLORS,
    THEORY_STYLE,
    log,
    new_figure,
    save,
    style_axes,
)
from varexp.results.aggregate import grad_fit, layer_summary
from varexp.results.tables import RunResult, load_probes, stack
from varexp.theory import gradient_slope

INITS = ("scale+bias", "batchnorm")
BOOTSTRAP = 200
STYLES = ("-", "--", ":", "-.")


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
    for (init, samples), line in frame.groupby(["init", "samples"]):
        style = STYLES[sample_sizes.index(samples) % len(STYLES)]
        ax.errorbar(line["width"], line["slope"], yerr=line["error"], marker="o", markersize=4,
                    capsize=3, linestyle=style, color=INIT_COLORS.get(init, "black"),
                    label=f"{init}, T = {samples}")
        for row in line.itertuples():
            log.info("slopes: %s width %d T %d (%d nets): %+.3f +- %.3f", init, row.width,
                     samples, row.networks, row.slope, row.error)
    ax.axhline(gradient_slope(), label=f"infinite width: {gradient_slope():+.3f}",
               **THEORY_STYLE)
    ax.set_xscale("log")
    style_axes(ax, "gradient slope (fit over layers 1..L-1)", "width",
               r"slope of $\log\langle(\partial L/\partial x^l)^2\rangle$ vs $l$")
    ax.legend(fontsize=7, loc="best")
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
    draw_slopes(left, tables)
    draw_effective_samples(right, tables)
    return save(fig, out_dir, "slopes")
