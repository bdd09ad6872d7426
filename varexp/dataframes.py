"""`varexp.load`: the runs under a folder, and their result tables, as pandas DataFrames.

    runs = varexp.load("outputs/sweep/default")            # one row per run
    metrics = varexp.load("outputs/", table="metrics")     # every run's metrics.csv, stacked

A run is a folder varexp made (its run.json, varexp.results.run_record); its row holds the config
keys that identify it, as run.json lists them ("optim.lr", "init.name", ...), and for a training
run the fields of its summary.json (status, final_loss, steps, seconds, ...). A table is read
with varexp.results.tables' reader, each run's rows with its identifying columns in front.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from varexp.errors import VarexpError
from varexp.results.finding import discover
from varexp.results.run_record import (
    MULTIRUN_FOLDER,
    RECORD,
    REPLACED,
    read_record,
    recorded_identity,
)
from varexp.results.summary import SUMMARY, read_summary
from varexp.results.tables import (
    HELDOUT,
    METRICS,
    NEURONS,
    PROBE,
    RATIOS,
    THEORY,
    TRIALS,
    Table,
)

TABLES: dict[str, Table] = {
    t.file.removesuffix(".csv"): t
    for t in (METRICS, RATIOS, PROBE, NEURONS, HELDOUT, THEORY, TRIALS)
}
# tables of a search's folder rather than of one run: their rows get the folder as `search_dir`
FOLDER_TABLES = ("trials",)
# the result file that says which command made a folder older than run.json
MADE_BY = {
    SUMMARY: "train",
    METRICS.file: "train",
    PROBE.file: "probe",
    THEORY.file: "theory",
}
NESTED = ("config", "provenance")  # summary.json's nested fields: the identity, and the machine


@dataclass
class Run:
    folder: Path
    command: str
    preset: str | None
    identity: dict[str, object]

    def row(self) -> dict[str, object]:
        row: dict[str, object] = {
            "run_dir": str(self.folder),
            "command": self.command,
            "preset": self.preset,
            **self.identity,
        }
        if self.command == "train":
            summary = read_summary(self.folder) or {"status": None}
            row.update({k: v for k, v in summary.items() if k not in NESTED and k not in row})
        return row


def load(
    path: str | Path = "outputs", table: str | None = None, command: str | None = None
) -> pd.DataFrame:
    """The runs under `path` (a run folder, a sweep, an outputs tree), one row per run: run_dir,
    command, preset, the identifying config keys, and for training runs their summary (status,
    final_loss, steps, ...). With `table` ("metrics", "ratios", "probe", "neurons", "heldout",
    "theory"), every run's table of that name stacked, its run's identifying columns joined in
    front. With table="trials", the trials of every Optuna search under `path` (its trials.csv),
    each row with its search's folder as `search_dir`.
    `command` keeps the runs of one command (train, probe, theory, plot, reproduce).

    Runs moved aside by overwrite=true are left out; a damaged record or table is left out with
    a warning naming it. Raises VarexpError when `path` does not exist or holds no run (with
    `table`, no such table).
    """
    root = Path(path)
    if not root.exists():
        raise VarexpError(f"{root}: does not exist")
    if table is not None and table not in TABLES:
        raise VarexpError(
            f"table={table!r} is not allowed; choose one of {', '.join(TABLES)} "
            "(or none for one row per run)"
        )
    if table in FOLDER_TABLES:
        return folder_tables(root, TABLES[table])
    runs = [r for r in find_runs(root) if command is None or r.command == command]
    if table is None:
        if not runs:
            raise VarexpError(
                f"no varexp runs under {root}" + (f" made by `varexp {command}`" if command else "")
            )
        rows = [r.row() for r in runs]
        identity = sorted({k for r in runs for k in r.identity})
        first = ["run_dir", "command", "preset", *identity]
        rest = list(dict.fromkeys(k for row in rows for k in row if k not in first))
        return pd.DataFrame(rows, columns=first + rest)
    spec = TABLES[table]
    frames = []
    for run in runs:
        if not (run.folder / spec.file).is_file():
            continue
        try:
            if spec in (METRICS, RATIOS):  # a training run's record of its steps
                frame = spec.read_run(run.folder, read_summary(run.folder))
            else:
                frame = spec.read(run.folder / spec.file, allow_empty=True)
        except VarexpError as error:
            warnings.warn(f"varexp.load leaves out {error}", stacklevel=2)
            continue
        front = pd.DataFrame(
            {k: [v] * len(frame) for k, v in {"run_dir": str(run.folder), **run.identity}.items()},
            index=frame.index,
        )
        frames.append(pd.concat([front, frame], axis=1))
    if not frames:
        raise VarexpError(f"no {spec.file} under {root}")
    joined = pd.concat(frames, ignore_index=True)
    identity = sorted({k for r in runs for k in r.identity if k in joined.columns})
    table_columns = [c for c in joined.columns if c not in identity and c != "run_dir"]
    return joined[["run_dir", *identity, *table_columns]]


def find_runs(root: Path) -> list[Run]:
    """Every run folder under root (root itself included), in path order."""
    runs = []
    recorded = {p.parent for p in discover(root, RECORD)}
    for folder in sorted(recorded | older_runs(root)):
        try:
            record = read_record(folder)
        except VarexpError as error:
            warnings.warn(f"varexp.load leaves out {error}", stacklevel=3)
            continue
        if record is not None:
            if record.get("command") == MULTIRUN_FOLDER:
                continue  # what a multirun's jobs share: they are rows of their own
            runs.append(Run(folder, record["command"], record.get("preset"), record["identity"]))
            continue
        command = next(c for f, c in MADE_BY.items() if (folder / f).is_file())
        identity = recorded_identity(folder, command)
        if identity is not None:
            runs.append(Run(folder, command, None, identity))
    return runs


def older_runs(root: Path) -> set[Path]:
    """Folders with a result file and Hydra's record but no run.json (made before varexp
    kept records)."""
    found = set()
    for name in MADE_BY:
        for path in discover(root, name):
            folder = path.parent
            if (
                (folder / ".hydra" / "config.yaml").is_file()
                and not (folder / RECORD).is_file()
                and REPLACED not in folder.name
            ):
                found.add(folder)
    return found


def folder_tables(root: Path, spec: Table) -> pd.DataFrame:
    """Every `spec` table under root (those of searches' folders), stacked, `search_dir` first."""
    frames = []
    for path in discover(root, spec.file):
        try:
            frame = spec.read(path, allow_empty=True)
        except VarexpError as error:
            warnings.warn(f"varexp.load leaves out {error}", stacklevel=3)
            continue
        frame.insert(0, "search_dir", str(path.parent))
        frames.append(frame)
    if not frames:
        raise VarexpError(f"no {spec.file} under {root}")
    return pd.concat(frames, ignore_index=True)
