"""`varexp plot figureN`: render paper Figure N from result files as figureN.png and figureN.pdf.

Each figure is a module varexp.plot.figureN with
`make(results: str | None, outputs_root: str, out_dir) -> list[Path]`; adding a figure is one
line in FIGURES.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig

from varexp.errors import bad_value

FIGURES = {
    "figure1": "varexp.plot.figure1",  # m, v, sigma vs layer; pre-activation histograms
    "figure2": "varexp.plot.figure2",  # ratio vs layer: MLP widths, ALL-CNN-C, UNet
    "figure3": "varexp.plot.figure3",  # gradients vs layer per init, fitted slopes
    "figure4": "varexp.plot.figure4",  # training loss curves
}


def render(figure: str | None, results: str | None, outputs_root: str,
           out_dir: str | Path, smooth: int | None = None) -> list[Path]:
    """Draw `figure` from the results under `results` (or the latest under `outputs_root`) into
    out_dir; returns the PNG and PDF paths. `smooth` is figure4's moving-average window."""
    if figure not in FIGURES:
        raise bad_value("figure", figure, f"choose one of {', '.join(FIGURES)} "
                        "(e.g. `varexp plot figure2`)")
    module = importlib.import_module(FIGURES[figure])
    options = {"smooth": smooth} if figure == "figure4" else {}
    return module.make(None if results is None else str(results), str(outputs_root), out_dir,
                       **options)


def run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    paths = render(cfg.figure, cfg.results, cfg.outputs_root,
                   HydraConfig.get().runtime.output_dir, cfg.smooth)
    print(f"plot {cfg.figure}: " + ", ".join(str(p) for p in paths))
