"""Figure 2: the sample mean-to-std ratio r^l (Eq. 9) vs layer, mean over networks with a +-1 std
band. One panel per architecture (and init, when several were probed): MLP lines per width with
the infinite-width theory dashed (paper: an upper bound that wider nets approach), then the
ALL-CNN-C and UNet panels (Sec. 3.3) with their layer names on the x axis, by default one panel
per convention for a conv layer's ratio side by side (per (channel, position) and per channel;
varexp.stats), UNet's on a row of their own."""

from __future__ import annotations

from pathlib import Path

from varexp.plot.common import (
    THEORY_STYLE,
    caption,
    line_color,
    line_label,
    lines,
    log,
    new_figure,
    panel_title,
    panels,
    save,
    style_axes,
    theory_for,
)
from varexp.results.aggregate import layer_summary
from varexp.results.tables import RunResult, load_probes


def draw_panel(ax, key: tuple, runs: list[RunResult], cnn_ratio: str = "position") -> None:
    arch = key[0]
    groups = lines(runs)
    keys = [k for k, _ in groups]
    # for Linear layers the two conventions agree; a conv's ratio is per channel (pooled over
    # samples and positions) or per (channel, position)
    column = "ratio_channel" if arch != "mlp" and cnn_ratio == "channel" else "ratio"
    longest = None  # the line with most layers names the x ticks
    for lkey, table in groups:
        if column not in table.columns:
            log.warning(
                "figure2 leaves out %s %s: its probe.csv has no %s column (made by an "
                "older varexp); probe again, or plot with cnn_ratio=position",
                arch,
                line_label(arch, lkey),
                column,
            )
            continue
        summary = layer_summary(table, column)
        color = line_color(arch, lkey, keys)
        ax.plot(
            summary["layer"],
            summary["mean"],
            color=color,
            linewidth=1.6,
            label=f"{line_label(arch, lkey)} ({table['network'].nunique()} nets)",
        )
        ax.fill_between(
            summary["layer"],
            summary["mean"] - summary["std"],
            summary["mean"] + summary["std"],
            color=color,
            alpha=0.2,
            linewidth=0,
        )
        longest = summary if longest is None or len(summary) > len(longest) else longest
    if longest is None:
        ax.set_axis_off()
        ax.set_title(f"{panel_title(key)}: nothing to draw", fontsize=11)
        return
    theory = theory_for(runs[0], int(longest["layer"].max()))
    if theory is not None:
        label = "theory (infinite width)" if arch == "mlp" else "wide-MLP theory"
        ax.plot(theory["layer"], theory["ratio"], label=label, **THEORY_STYLE)
    per = (
        ""
        if arch == "mlp"
        else ", per channel"
        if column == "ratio_channel"
        else ", per (channel, position)"
    )
    style_axes(
        ax, panel_title(key) + per.replace(", ", ": ", 1), "layer $l$", f"ratio $r^l$ (Eq. 9{per})"
    )
    if arch != "mlp":
        ax.set_xticks(longest["layer"], longest["name"], rotation=90, fontsize=7)
        ax.set_xlabel("")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")


def make(
    results: str | None, outputs_root: str, out_dir: str | Path, cnn_ratio: str = "both"
) -> list[Path]:
    """Fig. 2 from the Kaiming probes; `cnn_ratio` picks the CNN panels' convention (both: one
    panel each, side by side)."""
    # Fig. 2 is about Kaiming-initialized networks: other inits' probes are not its input
    runs = load_probes("figure2", results, outputs_root, ("kaiming",))
    conventions = ("position", "channel") if cnn_ratio == "both" else (cnn_ratio,)
    cells = [
        (key, members, convention)
        for key, members in panels(runs)
        for convention in (conventions if key[0] != "mlp" else (cnn_ratio,))
    ]
    rows = [
        r
        for r in ([c for c in cells if c[0][0] != "unet"], [c for c in cells if c[0][0] == "unet"])
        if r
    ]
    widths = [[1.6 if key[0] == "unet" else 1.0 for key, _, _ in row] for row in rows]
    fig = new_figure(5.2 * max(sum(w) for w in widths), 4.6 * len(rows))
    figures = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for sub, row, ratios in zip(figures, rows, widths, strict=True):
        grid = sub.add_gridspec(1, len(row), width_ratios=ratios)
        for i, (key, members, convention) in enumerate(row):
            draw_panel(sub.add_subplot(grid[0, i]), key, members, convention)
            log.info(
                "figure2 panel '%s' (%s): %d run(s)", panel_title(key), convention, len(members)
            )
    cnn = any(key[0] != "mlp" for key, _, _ in cells)
    caption(
        fig,
        "Lines: the ratio's mean over networks (their number in the legend); bands: "
        "±1 standard deviation of the ratio across those networks (n - 1 in the "
        "denominator; none for one network); black dashed: the infinite-width theory "
        f"(Eq. 9 from Eq. 8){', for a CNN the wide-MLP reference' if cnn else ''}.",
    )
    return save(fig, out_dir, "figure2")
