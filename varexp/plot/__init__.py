"""`varexp plot figureN`: render paper Figure N from result files as figureN.png and figureN.pdf.

Which figures exist, what feeds them and which module draws each is varexp.figures.FIGURES; each
module has `make(results: str | None, outputs_root: str, out_dir, **options) -> list[Path]`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig

from varexp.config import check_common, one_of
from varexp.errors import VarexpError, bad_value
from varexp.figures import FIGURES
from varexp.results import claim

# the ratio Fig. 2 draws for convolutional layers (varexp.stats): per channel, pooled over
# samples and positions, or per (channel, position) over samples
CNN_RATIOS = ("channel", "position")


def check(cfg: DictConfig) -> None:
    check_common(cfg)
    if cfg.figure not in FIGURES:
        raise bad_value("figure", cfg.figure, f"choose one of {', '.join(FIGURES)} "
                        "(e.g. `varexp plot figure2`)")
    if cfg.results is not None and not Path(str(cfg.results)).exists():
        raise VarexpError(f"results={cfg.results} does not exist")
    smooth = cfg.get("smooth")
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int)
                               or smooth < 1):
        raise bad_value("smooth", smooth, "must be an integer >= 1 or null")
    one_of(cfg, "cnn_ratio", CNN_RATIOS)


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
