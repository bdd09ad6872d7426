"""Result files: atomic writes (an interrupted run never leaves a truncated file) and lookup of
the latest results under outputs/."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.figures import Figure

log = logging.getLogger("varexp.plot")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files owner-only; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)


def write_json(obj: object, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def read_summary(run_dir: str | Path) -> dict | None:
    """A training run's summary.json, or None if it has none (yet) or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_config(result_file: str | Path) -> DictConfig:
    """The Hydra config recorded beside a result file (its run directory's .hydra/config.yaml)."""
    cfg_path = Path(result_file).parent / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise VarexpError(f"{result_file}: no .hydra/config.yaml beside it to say how it was made")
    return OmegaConf.load(cfg_path)


def made_by(result_file: str | Path) -> str | None:
    """The experiment preset that made a result file, from Hydra's record of its run (or of
    the sweep whose folder holds it); None if it names none or cannot be read."""
    folder = Path(result_file).parent
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
        found = [p for p in sorted(root.rglob(filename)) if accept(p)]
        if not found:
            raise VarexpError(f"no {filename} for {figure.name} under {root}/; {figure.hint()}")
        return found
    root = Path(outputs_root)
    made: dict[str, list[Path]] = {}
    for path in sorted(root.rglob(filename)) if root.exists() else []:
        preset = made_by(path)
        if preset in figure.all_presets and accept(path):
            made.setdefault(preset, []).append(path)
    chosen: list[Path] = []
    for part in figure.parts:
        mine = made.get(part.quick, []) + made.get(part.paper, [])
        if not mine:
            log.warning("%s: no results for %s under %s/ (`varexp %s experiment=%s` makes them)",
                        figure.name, part.about, root, figure.command, part.quick)
            continue
        latest = max(mine, key=lambda p: p.stat().st_mtime)
        multirun = latest.parent.parent
        if (multirun / "multirun.yaml").exists():
            chosen += [p for p in mine if multirun in p.parents]
        else:
            chosen.append(latest)
    if not chosen:
        raise VarexpError(f"no results made for {figure.name} under {root}/; {figure.hint()}; "
                          "or pass results=DIR to draw other runs")
    return list(dict.fromkeys(chosen))
