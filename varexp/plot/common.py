"""What every figure shares: result files read with their run configs, theory curves, colours,
and atomic PNG + PDF output.

Figures are drawn on `matplotlib.figure.Figure` objects directly (no pyplot), so no display or
global backend state is involved; saving goes through the Agg renderer.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.files import atomic_path
from varexp.results import find_results, run_config
from varexp.theory import recursion

log = logging.getLogger("varexp.plot")

PROBE_COLUMNS = ("network", "layer", "name", "features", "sample_mean_sq", "sample_var", "ratio",
                 "second_moment", "grad_sq")
NEURON_COLUMNS = ("network", "layer", "neuron", "sample", "value")
TEXT_COLUMNS = ("name",)

# One colour per setting, the same in every figure.
WIDTH_COLORS = {30: "tab:blue", 100: "tab:orange", 300: "tab:green", 1000: "tab:red",
                3000: "tab:purple"}
INIT_COLORS = {"kaiming": "tab:blue", "scale": "tab:orange", "scale+bias": "tab:green",
               "batchnorm": "tab:red", "xavier": "tab:purple", "orthogonal": "tab:brown",
               "lsuv": "tab:pink"}
SPARE_COLORS = ("tab:olive", "tab:cyan", "tab:gray", "tab:pink", "tab:brown")
INIT_ORDER = ("kaiming", "scale+bias", "batchnorm", "scale", "lsuv", "xavier", "orthogonal")
ARCH_TITLES = {"mlp": "MLP", "allcnnc": "ALL-CNN-C", "unet": "UNet"}
ARCH_ORDER = tuple(ARCH_TITLES)
THEORY_STYLE = dict(color="black", linestyle="--", linewidth=1.3)


def color_for(value: object, palette: dict, order: list) -> str:
    """The setting's fixed colour, else a spare one by its position among the unlisted values."""
    if value in palette:
        return palette[value]
    spare = [v for v in order if v not in palette]
    return SPARE_COLORS[spare.index(value) % len(SPARE_COLORS)]


def init_rank(name: str) -> tuple[int, str]:
    return (INIT_ORDER.index(name) if name in INIT_ORDER else len(INIT_ORDER), name)


@dataclass
class Run:
    """One run directory's result table and the Hydra config that produced it."""

    path: Path
    cfg: DictConfig
    table: pd.DataFrame

    def get(self, key: str, default: object = None) -> object:
        return OmegaConf.select(self.cfg, key, default=default)

    @property
    def arch(self) -> str:
        return str(self.get("arch.name", "mlp"))

    @property
    def init(self) -> str:
        return str(self.get("init.name", "kaiming"))


def read_table(path: Path, columns: tuple[str, ...], allow_empty: bool = False) -> pd.DataFrame:
    """A result CSV with the given columns, numeric where they should be; one-line errors."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise VarexpError(f"{path}: not a readable CSV ({str(error).strip()})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise VarexpError(f"{path}: missing column(s) {', '.join(missing)}; "
                          f"expected {', '.join(columns)}")
    if table.empty and not allow_empty:
        raise VarexpError(f"{path}: has a header but no rows")
    for column in columns:
        if column in TEXT_COLUMNS:
            continue
        numeric = pd.to_numeric(table[column], errors="coerce")
        bad = numeric.isna() & table[column].notna()
        if bad.any():
            raise VarexpError(f"{path}: column {column} has non-numeric value "
                              f"{table[column][bad].iloc[0]!r} (row {int(bad.idxmax()) + 2})")
        # inf (a dead layer's ratio) is unplottable; it is dropped from averages, with a warning
        infinite = np.isinf(numeric)
        if infinite.any():
            log.warning("%s: %d non-finite %s value(s) left out of the averages",
                        path, int(infinite.sum()), column)
        table[column] = numeric.mask(infinite)
    return table


def load_runs(figure: str, columns: tuple[str, ...], results: str | None,
              outputs_root: str, inits: tuple[str, ...] | None = None,
              beside: str | None = None) -> list[Run]:
    """The result files `figure` draws (varexp.files.find_results: everything under `results`,
    else the newest runs made for the figure under `outputs_root`), with their runs' configs.
    `inits` keeps only runs of those inits; `beside` only runs that also wrote that file."""

    def accept(path: Path) -> bool:
        if beside is not None and not (path.parent / beside).exists():
            return False
        try:
            return inits is None or str(OmegaConf.select(run_config(path), "init.name")) in inits
        except VarexpError:
            return True  # a damaged record: read below, and left out with one line

    paths = find_results(FIGURES[figure], results, outputs_root, accept)
    runs = []
    for path in paths:
        try:
            runs.append(Run(path, run_config(path), complete(read_table(path, columns), path)))
        except VarexpError as error:  # a damaged or partial file: the others are still drawn
            log.warning("%s leaves out %s", figure, error)
    if not runs:
        raise VarexpError(f"nothing to draw for {figure}: every result file found was damaged "
                          "(see the lines above)")
    log.info("%s reads %d %s file(s): %s", figure, len(runs), FIGURES[figure].result,
             ", ".join(str(r.path.parent) for r in runs[:5]) + (" ..." if len(runs) > 5 else ""))
    return runs


def complete(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A probe table with every layer of every network and its statistics present (a file cut
    short by hand or by a disk fault fails here)."""
    with open(path, "rb") as f:  # every file varexp writes ends its last row with a newline
        f.seek(-1, 2)
        if f.read(1) != b"\n":
            raise VarexpError(f"{path}: its last row is cut short (a partial file)")
    if "network" not in table.columns or "layer" not in table.columns:
        return table
    layers = table.groupby("network")["layer"].apply(lambda s: tuple(sorted(s)))
    if layers.nunique() != 1 or layers.iloc[0] != tuple(range(1, len(layers.iloc[0]) + 1)):
        raise VarexpError(f"{path}: not every network has layers 1..L (a partial file)")
    stats = [c for c in ("sample_mean_sq", "sample_var", "second_moment") if c in table.columns]
    partial_grads = "grad_sq" in table.columns and 0 < table["grad_sq"].isna().sum() < len(table)
    if table[stats].isna().any().any() or partial_grads:
        raise VarexpError(f"{path}: missing statistics in some rows (a partial file)")
    return table


def stack(runs: list[Run]) -> pd.DataFrame:
    """Concatenate runs' tables; `network` becomes unique across runs so that runs of the same
    setting (e.g. two width-300 probes) pool their networks instead of averaging them first."""
    parts = []
    offset = 0
    for run in runs:
        table = run.table.copy()
        table["network"] = table["network"] + offset
        offset = int(table["network"].max()) + 1
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


# Grouping shared by the figures: a panel per (arch, init, activation, norm), a line per
# MLP width or per CNN (dataset, channel multiplier); runs of one line pool their networks.


def panel_key(run: Run) -> tuple:
    """Runs that share a panel: same architecture and init (and activation and norm)."""
    return (run.arch, run.init, str(run.get("arch.activation", "relu")),
            str(run.get("arch.norm", "none")))


def line_key(run: Run) -> tuple:
    """Runs pooled into one line: an MLP width, or a CNN's dataset and channel multiplier."""
    if run.arch == "mlp":
        return (int(run.get("arch.width", 0)),)
    return (str(run.get("dataset.name", "?")), float(run.get("arch.channels", 1.0)))


def panel_rank(key: tuple) -> tuple:
    arch = ARCH_ORDER.index(key[0]) if key[0] in ARCH_ORDER else len(ARCH_ORDER)
    return (arch, key[0], init_rank(key[1]), key[2:])


def panels(runs: list[Run]) -> list[tuple[tuple, list[Run]]]:
    """(panel key, its runs): MLPs first, then ALL-CNN-C, UNet; kaiming, scale+bias, batchnorm."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[panel_key(run)].append(run)
    return [(key, groups[key]) for key in sorted(groups, key=panel_rank)]


def lines(runs: list[Run]) -> list[tuple[tuple, pd.DataFrame]]:
    """(line key, the stacked tables of its runs), in increasing width or multiplier."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[line_key(run)].append(run)
    return [(key, stack(groups[key])) for key in sorted(groups)]


def line_color(arch: str, key: tuple, keys: list[tuple]) -> str:
    """MLP widths keep their colour in every figure; CNN lines take the colour cycle."""
    if arch == "mlp":
        return color_for(key[0], WIDTH_COLORS, [k[0] for k in keys])
    return f"C{keys.index(key)}"


def line_label(arch: str, key: tuple) -> str:
    return f"width {key[0]}" if arch == "mlp" else f"{key[0]}, channels x{key[1]:g}"


def panel_title(key: tuple) -> str:
    arch, init, activation, norm = key
    title = f"{ARCH_TITLES.get(arch, arch)}, {init} init"
    if arch == "mlp" and activation != "relu":
        title += f", {activation}"
    if norm != "none" and init != "batchnorm":
        title += f", {norm}"
    return title


def theory_for(run: Run, depth: int) -> pd.DataFrame | None:
    """The mean-field curve (varexp.theory.recursion) for the run's activation and init; ReLU
    Kaiming (the wide-MLP reference) for the convolutional networks; None where none exists."""
    norm = run.get("arch.norm", "none")
    if run.arch == "mlp":
        init = "batchnorm" if norm == "batchnorm" else run.init
        activation, gain = str(run.get("arch.activation", "relu")), run.get("init.gain")
    elif run.init == "kaiming" and norm == "none":
        activation, init, gain = "relu", "kaiming", None
    else:
        return None
    try:
        return recursion(depth, activation=activation, init=init, gain=gain)
    except (ValueError, KeyError):
        return None


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)


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
