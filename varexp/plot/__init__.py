"""`varexp plot figureN`: render paper Figure N from result files as figureN.png and figureN.pdf.

Which figures exist, what feeds them and which module draws each is varexp.figures.FIGURES; each
module has `make(results: str | None, outputs_root: str, out_dir, **options) -> list[Path]`.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from varexp.errors import VarexpError, bad_value
from varexp.figures import FIGURES
from varexp.results import claim
from varexp.results.run_record import holds_results
from varexp.schema import Common, choice, integer, option, validate

# the ratio Fig. 2 draws for convolutional layers (varexp.stats): both side by side, per
# (channel, position) over samples, or per channel, pooled over samples and positions
CNN_RATIOS = ("both", "position", "channel")


@dataclass
class PlotOptions:
    """The keys at the top of `varexp plot`'s config (defaults: conf/plot.yaml)."""

    figure: str = choice("figure1", tuple(FIGURES))
    results: str | None = option(
        None, none=True, test=lambda v: isinstance(v, str), text="must be a folder"
    )
    outputs_root: str = option(
        "outputs", test=lambda v: isinstance(v, str), text="must be a folder"
    )
    smooth: int | None = integer(None, none=True)  # figure4's moving-average window, in steps
    cnn_ratio: str = choice("both", CNN_RATIOS)  # figure2's CNN panels (varexp.stats)


def check(cfg: DictConfig) -> None:
    if cfg.figure is None:
        raise bad_value(
            "figure", None, f"choose one of {', '.join(FIGURES)} (e.g. `varexp plot figure2`)"
        )
    validate(cfg, Common, PlotOptions)
    if cfg.results is not None and not Path(str(cfg.results)).exists():
        raise VarexpError(f"results={cfg.results} does not exist")


def render(
    figure: str | None,
    results: str | None,
    outputs_root: str,
    out_dir: str | Path,
    **options: object,
) -> list[Path]:
    """Draw `figure` from the results under `results` (or the newest made for it under
    `outputs_root`) into out_dir; returns the PNG and PDF paths. `options` are `varexp plot`'s
    keys; each figure takes the ones varexp.figures lists for it."""
    if figure not in FIGURES:
        raise bad_value(
            "figure", figure, f"choose one of {', '.join(FIGURES)} (e.g. `varexp plot figure2`)"
        )
    spec = FIGURES[figure]
    module = importlib.import_module(spec.module)
    mine = {k: v for k, v in options.items() if k in spec.options}
    return module.make(
        None if results is None else str(results), str(outputs_root), out_dir, **mine
    )


# The first folder of the run folder's path that did not exist before this launch (Hydra makes
# them all before the job starts): a plot with nothing to draw takes them away again.
_new_folder: Path | None = None


def announce(line) -> None:
    """Before Hydra makes the run folder: note which of its folders this launch creates."""
    global _new_folder
    _new_folder = None
    if line.multirun:
        return
    path = Path(line.output_dir).absolute()
    while not path.parent.exists():
        path = path.parent
    _new_folder = None if path.exists() else path


def remove_new_folders(run_dir: Path) -> None:
    """After a plot that drew nothing: its run folder (nothing but the record and log) and the
    parents this launch made, if nothing else has come into them."""
    run_dir = run_dir.absolute()
    if (
        _new_folder is None
        or not (run_dir == _new_folder or _new_folder in run_dir.parents)
        or holds_results(run_dir, HydraConfig.get().job.name)
    ):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    folder = run_dir.parent
    while folder != _new_folder.parent:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else was written there meanwhile
            return
        folder = folder.parent


def run(cfg: DictConfig) -> None:

    check(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with claim("plot", cfg) as out_dir:
            paths = render(
                cfg.figure,
                cfg.results,
                cfg.outputs_root,
                out_dir,
                smooth=cfg.smooth,
                cnn_ratio=cfg.cnn_ratio,
            )
    except VarexpError:
        remove_new_folders(out_dir)
        raise
    print(f"plot {cfg.figure}: " + ", ".join(str(p) for p in paths))
