"""`varexp plot figureN`: render paper Figure N from result files as figureN.png and figureN.pdf.

Which figures exist, what feeds them and which module draws each is varexp.figures.FIGURES; each
module has `make(results: str | None, outputs_root: str, out_dir, **options) -> list[Path]`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from varexp.errors import VarexpError, bad_value
from varexp.figures import FIGURES
from varexp.results import claim
from varexp.schema import Common, choice, integer, option, validate

# the ratio Fig. 2 draws for convolutional layers (varexp.stats): both side by side, per
# (channel, position) over samples, or per channel, pooled over samples and positions
CNN_RATIOS = ("both", "position", "channel")


@dataclass
class PlotOptions:
    """The keys at the top of `varexp plot`'s config (defaults: conf/plot.yaml)."""

    figure: str = choice("figure1", tuple(FIGURES))
    results: str | None = option(None, none=True, test=lambda v: isinstance(v, str),
                                 text="must be a folder")
    outputs_root: str = option("outputs", test=lambda v: isinstance(v, str),
                               text="must be a folder")
    smooth: int | None = integer(None, none=True)  # figure4's moving-average window, in steps
    cnn_ratio: str = choice("both", CNN_RATIOS)  # figure2's CNN panels (varexp.stats)


def check(cfg: DictConfig) -> None:
    if cfg.figure is None:
        raise bad_value("figure", None, f"choose one of {', '.join(FIGURES)} "
                        "(e.g. `varexp plot figure2`)")
    validate(cfg, Common, PlotOptions)
    if cfg.results is not None and not Path(str(cfg.results)).exists():
        raise VarexpError(f"results={cfg.results} does not exist")


def render(figure: str | None, results: str | None, outputs_root: str,
           out_dir: str | Path, **options: object) -> list[Path]:
    """Draw `figure` from the results under `results` (or the newest made for it under
    `outputs_root`) into out_dir; returns the PNG and PDF paths. `options` are `varexp plot`'s
    keys; each figure takes the ones varexp.figures lists for it."""
    if figure not in FIGURES:
        raise bad_value("figure", figure, f"choose one of {', '.join(FIGURES)} "
                        "(e.g. `varexp plot figure2`)")
    spec = FIGURES[figure]
    module = importlib.import_module(spec.module)
    mine = {k: v for k, v in options.items() if k in spec.options}
    return module.make(None if results is None else str(results), str(outputs_root), out_dir,
                       **mine)


def run(cfg: DictConfig) -> None:

    check(cfg)
    with claim("plot", cfg) as out_dir:
        paths = render(cfg.figure, cfg.results, cfg.outputs_root, out_dir,
                       smooth=cfg.smooth, cnn_ratio=cfg.cnn_ratio)
    print(f"plot {cfg.figure}: " + ", ".join(str(p) for p in paths))
