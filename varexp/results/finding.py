"""Finding results: the run folders under a root that hold a result file, their summaries and
configs, and which of them a table or a figure may read."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.figures import Figure
from varexp.results.run_record import REPLACED, read_record
from varexp.results.summary import read_summary  # noqa: F401  (importable from here too)

log = logging.getLogger("varexp.results")


def discover(root: str | Path, filename: str) -> list[Path]:
    """Every `filename` under root, sorted, leaving out results moved aside by overwrite."""
    return [
        p
        for p in sorted(Path(root).rglob(filename))
        if not any(REPLACED in part for part in p.relative_to(root).parts)
    ]


def run_config(result_file: str | Path) -> DictConfig:
    """The Hydra config recorded beside a result file (its run directory's .hydra/config.yaml)."""
    cfg_path = Path(result_file).parent / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise VarexpError(f"{result_file}: no .hydra/config.yaml beside it to say how it was made")
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as error:  # yaml's parser errors, a binary file, ...
        reason = " ".join(str(error).split())[:120]
        raise VarexpError(f"{cfg_path}: not a readable config ({reason})") from None
    if not isinstance(cfg, DictConfig):
        raise VarexpError(f"{cfg_path}: not a readable config (not a mapping)")
    return cfg


def made_by(result_file: str | Path) -> str | None:
    """The experiment preset that made a result file, from the record of its run (or of the
    sweep whose folder holds it); None if it names none or cannot be read."""
    folder = Path(result_file).parent
    try:
        record = read_record(folder)
    except VarexpError:
        return None
    if record is not None:
        return record.get("preset")
    for record in (folder / ".hydra" / "hydra.yaml", folder / "multirun.yaml"):
        if record.is_file():
            try:
                return OmegaConf.select(OmegaConf.load(record), "hydra.runtime.choices.experiment")
            except Exception:  # a damaged record: the file was not made for any figure
                return None
    return None


def find_results(
    figure: Figure,
    results: str | Path | None,
    outputs_root: str | Path,
    accept: Callable[[Path], bool] = lambda path: True,
) -> list[Path]:
    """The result files `figure` draws. With `results`: every accepted one under it
    (recursively). Without: for each part of the figure, the newest run made by one of its
    presets under `outputs_root`, with all the runs of its multirun; a part with no such run is
    named in a warning, and no run of any part is an error."""
    filename = figure.result
    if results is not None:
        root = Path(results)
        if not root.exists():
            raise VarexpError(f"results={root} does not exist")
        found = [p for p in discover(root, filename) if accept(p)]
        if not found:
            raise VarexpError(f"no {filename} for {figure.name} under {root}/; {figure.hint()}")
        return found
    root = Path(outputs_root)
    made: dict[str | None, list[Path]] = {}
    for path in discover(root, filename) if root.exists() else []:
        preset = made_by(path)
        if (preset in figure.all_presets or preset is None and figure.plain) and accept(path):
            made.setdefault(preset, []).append(path)
    plain = made.pop(None, [])
    if plain and not made:
        return _newest_launch(plain)
    chosen: list[Path] = []
    for part in figure.parts:
        mine = made.get(part.quick, []) + made.get(part.paper, [])
        if not mine:
            log.warning(
                "%s: no results for %s under %s/ (`varexp %s experiment=%s` makes them)",
                figure.name,
                part.about,
                root,
                figure.command,
                part.quick,
            )
            continue
        chosen += _newest_launch(mine)
    if not chosen:
        raise VarexpError(
            f"no results made for {figure.name} under {root}/; {figure.hint()}; "
            "or pass results=DIR to draw other runs"
        )
    return list(dict.fromkeys(chosen))


def _newest_launch(paths: list[Path]) -> list[Path]:
    """The newest of the result files, with the others of its multirun."""
    latest = max(paths, key=lambda p: p.stat().st_mtime)
    multirun = latest.parent.parent
    if (multirun / "multirun.yaml").exists():
        return [p for p in paths if multirun in p.parents]
    return [latest]


def disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
