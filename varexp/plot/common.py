"""What every figure shares: grouping of runs into panels and lines, theory curves, colours, and
atomic PNG + PDF output (the result files themselves are read by varexp.results.tables).

Figures are drawn on `matplotlib.figure.Figure` objects directly (no pyplot), so no display or
global backend state is involved; saving goes through the Agg renderer.
"""

from __future__ import annotations

import logging
import textwrap
from collections import defaultdict
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from varexp.errors import VarexpError
from varexp.files import atomic_path
from varexp.models import ARCHITECTURES
from varexp.results.tables import RunResult, stack
from varexp.theory import recursion

log = logging.getLogger("varexp.plot")

# One colour per setting, the same in every figure.
WIDTH_COLORS = {
    30: "tab:blue",
    100: "tab:orange",
    300: "tab:green",
    1000: "tab:red",
    3000: "tab:purple",
}
INIT_COLORS = {
    "kaiming": "tab:blue",
    "scale": "tab:orange",
    "scale+bias": "tab:green",
    "batchnorm": "tab:red",
    "xavier": "tab:purple",
    "orthogonal": "tab:brown",
    "lsuv": "tab:pink",
}
SPARE_COLORS = ("tab:olive", "tab:cyan", "tab:gray", "tab:pink", "tab:brown")
INIT_ORDER = ("kaiming", "scale+bias", "batchnorm", "scale", "lsuv", "xavier", "orthogonal")
THEORY_STYLE = dict(color="black", linestyle="--", linewidth=1.3)


def color_for(value: object, palette: dict, order: list) -> str:
    """The setting's fixed colour, else a spare one by its position among the unlisted values."""
    if value in palette:
        return palette[value]
    spare = [v for v in order if v not in palette]
    return SPARE_COLORS[spare.index(value) % len(SPARE_COLORS)]


def arch_title(name: str) -> str:
    """The architecture's title (its record's; a zoo model's own name)."""
    record = ARCHITECTURES.get(name)
    return record.title if record is not None else name


def arch_rank(name: str) -> int:
    """Architectures in the order of their records: MLP, ALL-CNN-C, UNet, then the others."""
    order = list(ARCHITECTURES)
    return order.index(name) if name in order else len(order)


def init_rank(name: str) -> tuple[int, str]:
    return (INIT_ORDER.index(name) if name in INIT_ORDER else len(INIT_ORDER), name)


# Grouping shared by the figures: a panel per (arch, init, activation, norm), a line per
# MLP width or per CNN (dataset, channel multiplier); runs of one line pool their networks.


def panel_key(run: RunResult) -> tuple:
    """Runs that share a panel: same architecture and init (and activation and norm)."""
    return (
        run.arch,
        run.init,
        str(run.get("arch.activation", "relu")),
        str(run.get("arch.norm", "none")),
    )


def line_key(run: RunResult) -> tuple:
    """Runs pooled into one line: an MLP width, or a CNN's dataset and channel multiplier (and
    for UNet its up-convolution fan, arch.upconv_fan)."""
    if run.arch == "mlp":
        return (int(run.get("arch.width", 0)),)
    key = (str(run.get("dataset.name", "?")), float(run.get("arch.channels", 1.0)))
    return (*key, str(run.get("arch.upconv_fan", "in"))) if run.arch == "unet" else key


def panel_rank(key: tuple) -> tuple:
    return (arch_rank(key[0]), key[0], init_rank(key[1]), key[2:])


def panels(runs: list[RunResult]) -> list[tuple[tuple, list[RunResult]]]:
    """(panel key, its runs): MLPs first, then ALL-CNN-C, UNet; kaiming, scale+bias, batchnorm."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[panel_key(run)].append(run)
    return [(key, groups[key]) for key in sorted(groups, key=panel_rank)]


def lines(runs: list[RunResult]) -> list[tuple[tuple, pd.DataFrame]]:
    """(line key, the stacked tables of its runs), in increasing width or multiplier."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[line_key(run)].append(run)
    return [(key, stack(groups[key])) for key in sorted(groups)]


def line_color(arch: str, key: tuple, keys: list[tuple]) -> str:
    """MLP widths keep their colour in every figure; CNN lines take the colour cycle."""
    if arch == "mlp":
        return color_for(key[0], WIDTH_COLORS, [k[0] for k in keys])
    return f"C{keys.index(key)}"


def line_label(arch: str, key: tuple) -> str:
    if arch == "mlp":
        return f"width {key[0]}"
    fan = f", up-conv fan {key[2]}" if len(key) > 2 else ""
    return f"{key[0]}, channels x{key[1]:g}{fan}"


def panel_title(key: tuple) -> str:
    arch, init, activation, norm = key
    title = f"{arch_title(arch)}, {init} init"
    if arch == "mlp" and activation != "relu":
        title += f", {activation}"
    if norm != "none" and init != "batchnorm":
        title += f", {norm}"
    return title


def theory_for(run: RunResult, depth: int) -> pd.DataFrame | None:
    """The mean-field curve (varexp.theory.recursion) of a wide MLP with the run's activation,
    init and units (for a convolutional net, the wide-MLP reference); None where the recursion
    has no answer (it says why in the log)."""
    try:
        return recursion(
            depth,
            activation=str(run.get("arch.activation", "relu")),
            init=run.init,
            gain=run.get("init.gain"),
            norm=str(run.get("arch.norm", "none")),
        )
    except VarexpError as error:
        log.warning("no theory curve for %s: %s", run.path.parent, error)
        return None


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def slope_text(slope: float) -> str:
    """A slope with enough decimals to show it is not zero (+0.0004), or "0.000 (flat)" where
    it rounds to zero at 6 decimals: "-0.000" would claim a sign it does not show."""
    for decimals in range(3, 7):
        if round(slope, decimals) != 0:
            return f"{slope:+.{decimals}f}"
    return "0.000 (flat)"


CAPTION_SIZE = 8


def caption(fig: Figure, text: str) -> None:
    """The figure's caption under its panels, in the PNG and PDF themselves: what its lines,
    markers and bands are (a band's statistic and over what, n), wrapped to the figure's
    width."""
    chars = max(40, int(fig.get_figwidth() * 72 / (0.52 * CAPTION_SIZE)))
    wrapped = textwrap.fill(text, chars)
    # the figure grows by the caption's height: the panels keep theirs
    lines = wrapped.count("\n") + 1
    fig.set_figheight(fig.get_figheight() + (lines * 1.3 + 0.6) * CAPTION_SIZE / 72)
    fig.supxlabel(wrapped, x=0.005, ha="left", fontsize=CAPTION_SIZE, color="0.25")


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """name.png (150 dpi) and name.pdf in out_dir, each written atomically."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
