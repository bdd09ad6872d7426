"""Figure 3: the gradient <(dL/dx^l)^2> of the random linear loss L = w . x^L vs layer on a log
axis, one panel per init (paper: kaiming, scale+bias, batchnorm), mean over networks per width,
with the fitted slope of log(mean grad_sq) vs layer (varexp.results.aggregate.grad_fit) in the
legend.
Sec. 4 predicts slope log(1 - 1/pi) = -0.383 once the sample variance is preserved, 0 for
kaiming; that prediction is drawn dotted through the middle of the fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from varexp.errors import VarexpError
from varexp.inits import INITS, centred, total_variance
from varexp.plot.common import (
    caption,
    line_color,
    line_label,
    lines,
    log,
    new_figure,
    panel_title,
    panels,
    save,
    slope_text,
    style_axes,
)
from varexp.results.aggregate import grad_fit, layer_summary
from varexp.results.tables import RunResult, load_probes
from varexp.theory import gradient_slope

FIGURE3_INITS = ("kaiming", "scale+bias", "batchnorm")  # the paper's three settings


def theory_slope(key: tuple, gain: float | None = None) -> float | None:
    """Sec. 4's slope for ReLU MLPs: log(1 - 1/pi) when every layer is centred and rescaled
    over samples (the init's mean-field law, or BatchNorm units), 0 when the weights keep the
    total variance at the activation's gain (Kaiming); None where the paper predicts nothing."""
    arch, init, activation, norm = key
    if arch != "mlp" or activation != "relu":
        return None
    law = centred if norm == "batchnorm" else INITS[init].mean_field
    if law is centred:
        return gradient_slope()
    return 0.0 if law is total_variance and gain is None else None


def draw_panel(ax, key: tuple, runs: list[RunResult]) -> None:
    arch = key[0]
    groups = lines(runs)
    keys = [k for k, _ in groups]
    fits = []
    for lkey, table in groups:
        color = line_color(arch, lkey, keys)
        mean = layer_summary(table, "grad_sq")
        slope, intercept = grad_fit(table)
        layers = mean["layer"].to_numpy(float)
        networks = table["network"].nunique()
        ax.plot(
            layers,
            mean["mean"],
            color=color,
            marker="o",
            markersize=3,
            linewidth=1.2,
            label=f"{line_label(arch, lkey)} ({networks} nets)",
        )
        ax.plot(
            layers,
            np.exp(intercept + slope * layers),
            color=color,
            linestyle="--",
            linewidth=1.0,
            alpha=0.8,
            label=f"fit: slope {slope_text(slope)}",
        )
        fits.append((layers, slope, intercept))
        log.info(
            "figure3 %s, %s (%d nets): slope %s",
            panel_title(key),
            line_label(arch, lkey),
            networks,
            slope_text(slope),
        )
    predicted = theory_slope(key, runs[0].get("init.gain"))
    if predicted is not None:
        layers, slope, intercept = fits[-1]  # the widest line, where the theory should hold best
        mid = layers.mean()
        ax.plot(
            layers,
            np.exp(intercept + slope * mid + predicted * (layers - mid)),
            color="black",
            linestyle=":",
            linewidth=1.2,
            label=f"theory: slope {slope_text(predicted)}",
        )
    style_axes(ax, panel_title(key), "layer $l$", r"$\langle (\partial L/\partial x^l)^2 \rangle$")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="best")


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    runs = load_probes("figure3", results, outputs_root, FIGURE3_INITS)
    with_grads = [r for r in runs if r.table["grad_sq"].notna().any()]
    if not with_grads:
        raise VarexpError(
            f"no grad_sq values in {len(runs)} probe.csv file(s) "
            f"(e.g. {runs[0].path}); run `varexp probe probe.grad=true`"
        )
    if len(with_grads) < len(runs):
        log.info("figure3: %d run(s) without grad_sq left out", len(runs) - len(with_grads))
    groups = panels(with_grads)
    fig = new_figure(4.6 * len(groups), 4.2)
    # one shared log axis: kaiming's flat line then reads as flat beside the exploding ones
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (key, members) in zip(axes, groups, strict=True):
        draw_panel(ax, key, members)
    caption(
        fig,
        "Circles: the mean over networks (their number in the legend) of the squared "
        "gradient of the random linear loss per layer; dashed: the least-squares line of "
        "its log over layers 1..L-1, whose slope the legend gives; dotted black: Sec. 4's "
        "slope (log(1 - 1/π) once every layer is centred, 0 for Kaiming), drawn "
        "through the middle of the widest line's fit. No band: the slopes figure gives the "
        "slope's standard error.",
    )
    return save(fig, out_dir, "figure3")
