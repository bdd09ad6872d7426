"""Result files: atomic writes (an interrupted run never leaves a truncated file) and lookup of
the latest results under outputs/."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError


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


def find_results(
    filename: str,
    results: str | Path | None,
    outputs_root: str | Path,
    hint: str,
    accept: Callable[[Path], bool] = lambda path: True,
) -> list[Path]:
    """Every accepted `filename` under `results` (recursively); without `results`, the latest
    accepted run under `outputs_root`, or all accepted runs of the latest multirun it belongs to."""
    root = Path(results if results is not None else outputs_root)
    if results is not None and not root.exists():
        raise VarexpError(f"results={root} does not exist")
    found = [p for p in sorted(root.rglob(filename)) if accept(p)] if root.exists() else []
    if not found:
        raise VarexpError(f"no {filename} under {root}/ for this figure; {hint}")
    if results is not None:
        return found
    latest = max(found, key=lambda p: p.stat().st_mtime)
    sweep_dir = latest.parent.parent
    if (sweep_dir / "multirun.yaml").exists():
        return [p for p in found if sweep_dir in p.parents]
    return [latest]
