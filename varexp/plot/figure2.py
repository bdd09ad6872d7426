"""Figure 2: the sample mean-to-std ratio r^l (Eq. 9) vs layer, mean over networks with a +-1 std
band. One panel per architecture (and init, when several were probed): MLP lines per width with
the infinite-width theory dashed (paper: an upper bound that wider nets approach), then the
ALL-CNN-C and UNet panels (Sec. 3.3) with their layer names on the x axis."""

from __future__ import annotations

from pathlib import Path

from varexp.plot.common import (
    PROBE_COLUMNS,
    THEORY_STYLE,
    Run,
    line_color,
    line_label,
    lines,
    load_runs,
    log,
    new_figure,
    panel_title,
    panels,
    save,
    style_axes,
    theory_for,
)
from varexp.plot.stats import layer_summary


def draw_panel(ax, key: tuple, runs: list[Run]) -> None:
    arch = key[0]
    groups = lines(runs)
    keys = [k for k, _ in groups]
    longest = None  # the line with most layers names the x ticks
    for lkey, table in groups:
        summary = layer_summary(table, "ratio")
        color = line_color(arch, lkey, keys)
        ax.plot(summary["layer"], summary["mean"], color=color, linewidth=1.6,
                label=f"{line_label(arch, lkey)} ({table['network'].nunique()} nets)")
        ax.fill_between(summary["layer"], summary["mean"] - summary["std"],
                        summary["mean"] + summary["std"], color=color, alpha=0.2, linewidth=0)
        longest = summary if longest is None or len(summary) > len(longest) else longest
    theory = theory_for(runs[0], int(longest["layer"].max()))
    if theory is not None:
        label = "theory (infinite width)" if arch == "mlp" else "wide-MLP theory"
        ax.plot(theory["layer"], theory["ratio"], label=label, **THEORY_STYLE)
    style_axes(ax, panel_title(key), "layer $l$", "ratio $r^l$ (Eq. 9)")
    if arch != "mlp":
        ax.set_xticks(longest["layer"], longest["name"], rotation=90, fontsize=7)
        ax.set_xlabel("")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")


def make(results: str | None, outputs_root: str, out_dir: str | Path) -> list[Path]:
    # Fig. 2 is about Kaiming-initialized networks: other inits' probes are not its input
    runs = load_runs("figure2", PROBE_COLUMNS, results, outputs_root, ("kaiming",))
    groups = panels(runs)
    ratios = [1.6 if key[0] == "unet" else 1.0 for key, _ in groups]
    fig = new_figure(5.2 * sum(ratios), 4.6)
    grid = fig.add_gridspec(1, len(groups), width_ratios=ratios)
    for i, (key, members) in enumerate(groups):
        draw_panel(fig.add_subplot(grid[0, i]), key, members)
        log.info("figure2 panel '%s': %d run(s)", panel_title(key), len(members))
    return save(fig, out_dir, "figure2")
