"""Figure 1. Left: network-averaged sample mean m, sample std v and total std sigma = sqrt(q) vs
layer (theory Eq. 8 as lines; a probe's measurements as markers). Right: pre-activation
histograms at layer 1 and layer L over samples for three neurons of one fixed network, and over
samples and networks pooled (neurons.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from varexp.errors import VarexpError
from varexp.plot.common import (
    arch_title,
    caption,
    log,
    new_figure,
    save,
    style_axes,
    theory_for,
)
from varexp.results.aggregate import layer_summary
from varexp.results.tables import NEURONS, RunResult, load_probes

NEURONS_SHOWN = 3
BINS = 50
# (theory column, probe column, label, colour): m^2 + v^2 = sigma^2 (Eq. 5)
CURVES = (
    ("m", "sample_mean_sq", "sample mean $m$", "tab:blue"),
    ("v", "sample_var", "sample std $v$", "tab:orange"),
    ("sigma", "second_moment", r"total std $\sigma$", "tab:green"),
)


def pick_run(runs: list[RunResult]) -> RunResult:
    """The paper's setting if present (Kaiming ReLU MLP), preferring runs with neurons.csv, then
    the widest."""

    def score(run: RunResult) -> tuple:
        paper = (
            run.arch == "mlp"
            and run.init == "kaiming"
            and run.get("arch.activation", "relu") == "relu"
            and run.get("arch.norm", "none") == "none"
        )
        return (paper, (run.path.parent / "neurons.csv").exists(), run.get("arch.width", 0) or 0)

    return max(runs, key=score)


def draw_moments(ax, run: RunResult) -> None:
    depth = int(run.table["layer"].max())
    theory = theory_for(run, depth)
    if theory is not None:
        theory["sigma"] = np.sqrt(theory["q"])
        for col, _, label, color in CURVES:
            ax.plot(theory["layer"], theory[col], color=color, label=f"{label} (theory)")
    for _, probe_col, label, color in CURVES:
        mean = layer_summary(run.table, probe_col)
        root = np.sqrt(mean["mean"])
        # the standard error of the mean over networks, carried through the root
        error = mean["std"] / np.sqrt(mean["count"]) / (2 * root.where(root > 0))
        ax.errorbar(
            mean["layer"],
            root,
            yerr=error.fillna(0.0),
            linestyle="none",
            marker="o",
            markersize=3.5,
            markerfacecolor="none",
            color=color,
            elinewidth=0.8,
            label=f"{label} (measured)",
        )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="center right")


def neuron_panels(neurons: pd.DataFrame, layer: int, rng: np.random.Generator) -> list[tuple]:
    """(title, values) for NEURONS_SHOWN random neurons of the first network (topped up from
    other networks if it recorded fewer), then all recorded values at the layer pooled."""
    at = neurons[neurons["layer"] == layer]
    keys = at[["network", "neuron"]].drop_duplicates().sort_values(["network", "neuron"])
    first = keys[keys["network"] == keys["network"].iloc[0]]
    chosen = first.iloc[rng.permutation(len(first))[:NEURONS_SHOWN]]
    if len(chosen) < NEURONS_SHOWN:
        rest = keys.drop(first.index)
        chosen = pd.concat([chosen, rest.iloc[: NEURONS_SHOWN - len(chosen)]])
    panels = []
    for net, neuron in chosen.itertuples(index=False):
        values = at[(at["network"] == net) & (at["neuron"] == neuron)]["value"]
        panels.append((f"neuron {neuron}, network {net}\n(over samples)", values.to_numpy()))
    panels.append(
        (
            f"{keys['network'].nunique()} networks, {len(keys)} neurons\n(over samples + networks)",
            at["value"].to_numpy(),
        )
    )
    return panels


def draw_histograms(fig, grid, neurons: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    layers = [int(neurons["layer"].min()), int(neurons["layer"].max())]
    for row, layer in enumerate(layers):
        panels = neuron_panels(neurons, layer, rng)
        pooled = panels[-1][1]
        # one x-range per row so the narrowing at layer L shows against the pooled spread
        edges = np.linspace(np.nanmin(pooled), np.nanmax(pooled), BINS + 1)
        for col, (title, values) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col + 1])
            color = "tab:gray" if col == len(panels) - 1 else "tab:blue"
            ax.hist(values, bins=edges, density=True, color=color, alpha=0.85)
            ax.set_title(f"layer {layer}: {title}", fontsize=8)
            ax.set_yticks([])
            ax.set_xlim(edges[0], edges[-1])
            if row == len(layers) - 1:
                ax.set_xlabel("pre-activation $u$")


def load_neurons(run: RunResult) -> pd.DataFrame | None:
    path = run.path.parent / "neurons.csv"
    neurons = NEURONS.read(path, allow_empty=True) if path.exists() else None
    if neurons is None or neurons.empty:
        log.info(
            "no neurons.csv with rows beside %s: drawing only the left panel "
            "(`varexp probe probe.neurons=3` records them)",
            run.path,
        )
        return None
    return neurons


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    try:  # the paper's figure: a Kaiming run with raw pre-activations
        runs = load_probes("figure1", results, outputs_root, ("kaiming",), beside="neurons.csv")
    except VarexpError:
        runs = load_probes("figure1", results, outputs_root)
    run = pick_run(runs)
    neurons = load_neurons(run)
    if neurons is not None:
        fig = new_figure(16, 5.2)
        ratios = [2.4] + [1] * (NEURONS_SHOWN + 1)
        grid = fig.add_gridspec(2, NEURONS_SHOWN + 2, width_ratios=ratios)
        ax = fig.add_subplot(grid[:, 0])
        draw_histograms(fig, grid, neurons)
    else:
        fig = new_figure(6, 4.5)
        ax = fig.add_subplot()
    arch = arch_title(run.arch)
    setting = f"{arch}, width {run.get('arch.width')}" if run.arch == "mlp" else arch
    networks = run.table["network"].nunique()
    style_axes(
        ax,
        f"{setting}, {run.init} init ({networks} networks)",
        "layer $l$",
        r"pre-activation mean $m$, std $v$, total std $\sigma$",
    )
    draw_moments(ax, run)
    caption(fig, figure_caption(run, networks, neurons))
    log.info("figure1 from %s", run.path.parent)
    return save(fig, out_dir, "figure1")


def figure_caption(run: RunResult, networks: int, neurons: pd.DataFrame | None) -> str:
    samples = run.get("probe.samples")
    text = (
        f"Left: lines, the infinite-width theory (Eq. 8); circles, measured over "
        f"{samples} inputs per network, the root of the mean over the {networks} networks "
        r"of $m^2$, $v^2$ and $\sigma^2 = m^2 + v^2$ per layer; bars, ±1 standard "
        f"error of that mean across the {networks} networks (through the root)."
    )
    if neurons is not None:
        text += (
            " Right: histograms of one pre-activation over the inputs for three neurons "
            "of one network (blue), and of every recorded neuron over inputs and networks "
            "pooled (grey), at the first and last layer; densities, one x range per row."
        )
    return text
