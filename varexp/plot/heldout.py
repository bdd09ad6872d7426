"""Held-out statistics of the data-dependent inits, which neither the paper nor its peers report
(varexp.heldout). One row of panels per init: for each fit size T, the second moment of u^l on
fresh inputs vs layer, one line per width, against the 1 the init gives on the T inputs it was
fitted on; the last panel, that held-out second moment at the last layer vs width, one line per
T. Across networks it is heavy-tailed (one network in ten can be 10x the median in deep layers),
so lines are geometric means over networks on a log axis, bands +-1 std of its log, error bars
+-1 standard error of the mean log (varexp.results.aggregate.log_summary)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from varexp.errors import VarexpError
from varexp.plot.common import (
    WIDTH_COLORS,
    caption,
    color_for,
    init_rank,
    log,
    new_figure,
    save,
    style_axes,
)
from varexp.results.aggregate import log_summary
from varexp.results.tables import RunResult, load_heldout, stack

KEY = "heldout_second_moment"
STYLES = ("-", "--", ":", "-.")
TARGET_STYLE = dict(color="black", linestyle="--", linewidth=1.1)


def log_y(ax) -> None:
    """A log y axis with plain numbers (1.05, not 1.05 x 10^0) and no minor labels where the
    values span a factor of 4 or more; a linear one where they span less."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 4:
        ax.set_yscale("linear")
        return
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def settings(runs: list[RunResult]) -> dict[tuple, pd.DataFrame]:
    """(init, width, fit size T) -> the stacked heldout tables of that setting's MLP runs."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        if run.arch == "mlp":
            key = (run.init, int(run.get("arch.width")), int(run.table["fit_samples"].iloc[0]))
            groups[key].append(run)
    return {key: stack(group) for key, group in sorted(groups.items())}


def last_layer(table: pd.DataFrame) -> tuple[float, float, float]:
    """The geometric mean over networks of the held-out second moment at the last layer and its
    -1 and +1 standard-error bounds."""
    last = log_summary(table, KEY).iloc[-1]
    centre = np.exp(last["mean"])
    return (
        float(centre),
        float(centre - np.exp(last["mean"] - last["error"])),
        float(np.exp(last["mean"] + last["error"]) - centre),
    )


def draw_depth(
    ax, init: str, samples: int, tables: dict[tuple, pd.DataFrame], widths: list[int]
) -> None:
    for width in widths:
        table = tables.get((init, width, samples))
        if table is None:
            continue
        summary = log_summary(table, KEY)
        color = color_for(width, WIDTH_COLORS, widths)
        ax.plot(
            summary["layer"],
            np.exp(summary["mean"]),
            color=color,
            linewidth=1.5,
            label=f"width {width} ({table['network'].nunique()} nets)",
        )
        ax.fill_between(
            summary["layer"],
            np.exp(summary["mean"] - summary["std"]),
            np.exp(summary["mean"] + summary["std"]),
            color=color,
            alpha=0.2,
            linewidth=0,
        )
    ax.axhline(1.0, label="on the fitting inputs", **TARGET_STYLE)
    log_y(ax)
    fresh = next(iter(tables.values()))["heldout_samples"].iloc[0]
    style_axes(
        ax,
        f"{init}, fitted on T = {samples}",
        "layer $l$",
        f"second moment of $u^l$ on {fresh} fresh inputs",
    )
    ax.legend(fontsize=7, loc="upper left")


def draw_last(ax, init: str, tables: dict[tuple, pd.DataFrame], sizes: list[int]) -> None:
    for i, samples in enumerate(sizes):
        points = sorted(
            (w, *last_layer(t)) for (n, w, s), t in tables.items() if n == init and s == samples
        )
        if not points:
            continue
        width, mean, low, high = zip(*points, strict=True)
        ax.errorbar(
            width,
            mean,
            yerr=[low, high],
            marker="o",
            markersize=4,
            capsize=3,
            linestyle=STYLES[i % len(STYLES)],
            color="black",
            label=f"fitted on T = {samples}",
        )
        for w, m, lo, hi in points:
            log.info(
                "heldout: %s width %d T %d: last layer %.3g (-%.2g +%.2g)",
                init,
                w,
                samples,
                m,
                lo,
                hi,
            )
    ax.axhline(1.0, **TARGET_STYLE)
    ax.set_xscale("log")
    log_y(ax)
    style_axes(ax, f"{init}: at the last layer", "width", "held-out second moment (geometric mean)")
    ax.legend(fontsize=7, loc="best")


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    tables = settings(load_heldout(results, outputs_root))
    if not tables:
        raise VarexpError("nothing to draw for heldout: no MLP runs with heldout.csv")
    inits = sorted({k[0] for k in tables}, key=init_rank)
    sizes = sorted({k[2] for k in tables})
    widths = sorted({k[1] for k in tables})
    fig = new_figure(4.2 * (len(sizes) + 1), 3.8 * len(inits))
    axes = fig.subplots(len(inits), len(sizes) + 1, squeeze=False)
    for row, init in zip(axes, inits, strict=True):
        for ax, samples in zip(row[:-1], sizes, strict=True):
            draw_depth(ax, init, samples, tables, widths)
        draw_last(row[-1], init, tables, sizes)
    networks = sorted({int(t["network"].nunique()) for t in tables.values()})
    counts = str(networks[0]) if len(networks) == 1 else f"{networks[0]} to {networks[-1]}"
    caption(
        fig,
        "Lines: the geometric mean over a setting's networks (their number in the "
        "legend; "
        f"{counts} per setting) of the second moment of $u^l$ on fresh inputs; "
        "bands: ±1 standard deviation of its log across those networks; last panel: the "
        "last layer's geometric mean, bars ±1 standard error of the mean log, line style: "
        "the fit size T; black dashed: the 1 the init gives on the inputs it was fitted on.",
    )
    return save(fig, out_dir, "heldout")
