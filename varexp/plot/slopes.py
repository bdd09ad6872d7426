"""Finite-size effects on Fig. 3, which neither the paper nor its peers show. Left: the fitted
slope of log <(dL/dx^l)^2> vs layer (varexp.results.aggregate.grad_fit, layers 1..L-1) for
scale+bias and batchnorm MLPs against width, one line per number of inputs T, with +-1 standard
error (bootstrap over networks) and the infinite-width -0.383. Middle: effective samples per layer
as a fraction of T (varexp.stats): in the deep layers of scale+bias at finite width the centred
signal concentrates on a few inputs. Right: the scale+bias slope against the effective samples
(as a fraction of T, averaged over the fitted layers), for the width and T runs and for runs whose
inputs' norms were spread (dataset.norm_spread, experiment=slopes_inputs): an intervention that
lowers the effective samples at fixed width and T. Where both sets of points fall on one curve,
the slope follows the effective samples whichever way they were lowered."""

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
from varexp.results.aggregate import effective_fraction, grad_slope_error, layer_summary
from varexp.results.tables import RunResult, load_probes, stack
from varexp.theory import gradient_slope

INITS = ("scale+bias", "batchnorm")
BOOTSTRAP = 200
STYLES = ("-", "--", ":", "-.")
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}


def settings(runs: list[RunResult]) -> dict[tuple, pd.DataFrame]:
    """(init, width, T, input norm spread) -> the stacked probe tables of that setting's runs."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        if run.arch == "mlp":
            key = (
                run.init,
                int(run.get("arch.width")),
                int(run.get("probe.samples")),
                float(run.get("dataset.norm_spread", 0.0) or 0.0),
            )
            groups[key].append(run)
    return {key: stack(group) for key, group in sorted(groups.items())}


def plain(tables: dict[tuple, pd.DataFrame]) -> dict[tuple, pd.DataFrame]:
    """The settings with iid N(0, 1) inputs (no norm spread), keyed (init, width, T)."""
    return {key[:3]: table for key, table in tables.items() if key[3] == 0}


def draw_slopes(ax, tables: dict[tuple, pd.DataFrame]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for (init, width, samples), table in tables.items():
        slope, error = grad_slope_error(table, BOOTSTRAP, rng)
        rows.append(
            dict(
                init=init,
                width=width,
                samples=samples,
                slope=slope,
                error=error,
                networks=table["network"].nunique(),
            )
        )
    frame = pd.DataFrame(rows)
    sample_sizes = sorted(frame["samples"].unique())
    handles = []  # an errorbar's own legend entry draws every T solid: its line style is lost
    for (init, samples), line in frame.groupby(["init", "samples"]):
        style = STYLES[sample_sizes.index(samples) % len(STYLES)]
        color = INIT_COLORS.get(init, "black")
        ax.errorbar(
            line["width"],
            line["slope"],
            yerr=line["error"],
            marker="o",
            markersize=4,
            capsize=3,
            linestyle=style,
            color=color,
        )
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                linestyle=style,
                marker="o",
                markersize=4,
                label=f"{init}, T = {samples} ({STYLE_NAMES[style]})",
            )
        )
        for row in line.itertuples():
            log.info(
                "slopes: %s width %d T %d (%d nets): %s +- %.3f",
                init,
                row.width,
                samples,
                row.networks,
                slope_text(row.slope),
                row.error,
            )
    handles.append(
        ax.axhline(
            gradient_slope(),
            **THEORY_STYLE,
            label=f"infinite width: {slope_text(gradient_slope())}",
        )
    )
    ax.set_xscale("log")
    style_axes(
        ax,
        "gradient slope (fit over layers 1..L-1)",
        "width",
        r"slope of $\log\langle(\partial L/\partial x^l)^2\rangle$ vs $l$",
    )
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
    style_axes(
        ax,
        f"scale+bias: samples carrying the signal (T = {largest})",
        "layer $l$",
        "effective samples / T",
    )
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")


def draw_slope_vs_effective(ax, tables: dict[tuple, pd.DataFrame]) -> None:
    """The scale+bias slope against effective samples / T: width and T runs (circles, labelled
    by width) and input-norm-spread runs (squares, labelled by the spread s)."""
    rng = np.random.default_rng(1)
    natural, spread = [], []
    for (init, width, samples, s), table in tables.items():
        if init != "scale+bias" or "effective_samples" not in table.columns:
            continue
        slope, error = grad_slope_error(table, BOOTSTRAP, rng)
        point = (effective_fraction(table, samples), slope, error, width, samples, s)
        (spread if s > 0 else natural).append(point)
        log.info(
            "slopes: scale+bias width %d T %d spread %g: effective samples %.2f of T, "
            "slope %+.3f +- %.3f",
            width,
            samples,
            s,
            point[0],
            slope,
            error,
        )
    for points, marker, color, label in (
        (natural, "o", "tab:green", "width, T (iid inputs)"),
        (spread, "s", "tab:purple", "input norms spread (same width, T)"),
    ):
        if not points:
            continue
        x, y, e = (np.array([p[i] for p in points]) for i in range(3))
        ax.errorbar(
            x,
            y,
            yerr=e,
            marker=marker,
            linestyle="none",
            color=color,
            capsize=3,
            markersize=5,
            label=label,
        )
        for p in points:
            text = f"s={p[5]:g}" if p[5] > 0 else f"{p[3]}/{p[4]}"
            ax.annotate(text, (p[0], p[1]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(gradient_slope(), **THEORY_STYLE)
    style_axes(
        ax,
        "scale+bias: slope vs effective samples",
        "effective samples / T (mean over layers 1..L-1)",
        "gradient slope",
    )
    ax.legend(fontsize=7, loc="best", title="labels: width/T or spread s", title_fontsize=7)


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    runs = load_probes("slopes", results, outputs_root, INITS)
    tables = settings(runs)
    fig = new_figure(16.5, 4.4)
    left, middle, right = fig.subplots(1, 3)
    iid = plain(tables)
    rows = []
    if iid:
        rows = draw_slopes(left, iid)
        draw_effective_samples(middle, iid)
    else:  # only intervention runs were found
        for ax in (left, middle):
            ax.set_axis_off()
    draw_slope_vs_effective(right, tables)
    caption(fig, figure_caption(rows))
    return save(fig, out_dir, "slopes")


def figure_caption(rows: list[dict]) -> str:
    counts = sorted({row["networks"] for row in rows})
    networks = (
        ""
        if not counts
        else (f"{counts[0]} " if len(counts) == 1 else f"{counts[0]} to {counts[-1]} ")
    )
    return (
        f"Left: each point is the slope fitted to the mean over its {networks}networks "
        "(colour: init; line style: T, the number of inputs); bars: ±1 standard "
        f"error of that slope, the standard deviation of {BOOTSTRAP} bootstrap resamples "
        "of the networks; black dashed: the infinite-width slope log(1 - 1/π) "
        "(Sec. 4). Middle: effective samples per layer as a fraction of T, mean over the "
        "networks, at the largest T. Right: the scale+bias slope (bars: ±1 standard error, "
        "as left) against its effective samples / T averaged over the fitted layers, for "
        "iid inputs (circles, labelled width/T) and inputs with spread norms (squares, "
        "labelled by the spread s)."
    )
