"""run.json, the record of who made a run folder's results.

Every run folder holds `run.json`: the command, the identity of the config that made it (the
config keys its results depend on, listed and hashed), the experiment preset and the provenance.
It is written once the config has passed its checks, and only into a folder that is new or holds
the same identity: a command into a folder of another config's results refuses with one line
naming the differing keys, unless `overwrite=true`, which moves the old results aside into a
sibling `<folder>.replaced-<time>` (never deletes them). The folder of a multirun holds the keys
all its jobs share; a later multirun into it must agree on the keys both fix."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from varexp import provenance
from varexp.errors import VarexpError
from varexp.files import atomic_path, write_json
from varexp.results.identities import differences, identity, identity_hash
from varexp.results.locks import LOCK
from varexp.results.summary import StrEnum

log = logging.getLogger("varexp.results")

RECORD = "run.json"
REPLACED = ".replaced-"  # <folder>.replaced-<time>: results moved aside by overwrite=true
HYDRA_RECORD = ".hydra"
# run.json's command for a multirun's own folder (what its jobs share)
MULTIRUN_FOLDER = "multirun-folder"


class FolderCheck(StrEnum):
    """What check_folder found: nothing there (or nothing it can judge), the same config's
    results, or another's that overwrite=true moves aside."""

    NEW = "new"
    SAME = "same"
    REPLACE = "replace"


def read_record(folder: str | Path) -> dict | None:
    """The folder's run.json, or None if it has none; a damaged one (unreadable, or not a record:
    wrong types) is an error."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("identity"), dict)
        and all(isinstance(record.get(k, ""), str) for k in ("command", "hash", "of"))
        and isinstance(record.get("preset"), str | None)
    ):
        raise VarexpError(f"{path} is damaged (not a run record); move it away")
    return record


def recorded_identity(folder: Path, command: str) -> dict[str, object] | None:
    """The identity run.json records, or for a folder made before varexp kept records, the one
    its Hydra record implies; None for neither."""
    record = read_record(folder)
    if record is not None:
        return record["identity"]
    legacy = folder / HYDRA_RECORD / "config.yaml"
    if legacy.is_file():
        try:
            return identity(command, OmegaConf.load(legacy))
        except Exception:  # an unreadable record says nothing about the config
            return None
    return None


def holds_results(folder: Path, log_name: str | None = None) -> bool:
    """Whether a folder holds anything but Hydra's record and job log (and our lock)."""
    if not folder.is_dir():
        return False
    ignore = {LOCK, HYDRA_RECORD, RECORD, f"{log_name}.log" if log_name else ""}
    return any(p.name not in ignore for p in folder.iterdir())


def move_aside(folder: Path, keep: tuple[str, ...] = ()) -> Path:
    """Move everything in `folder` (but `keep`) into a new sibling <folder>.replaced-<time>."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    target = folder.with_name(f"{folder.name}{REPLACED}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}{REPLACED}{stamp}-{n}")
    target.mkdir(parents=True)
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.move(str(path), str(target / path.name))
    return target


def check_folder(
    folder: Path,
    command: str,
    ident: dict[str, object],
    overwrite: bool,
    log_name: str | None = None,
    what: str = "results",
) -> FolderCheck:
    """Refuse (one line) a folder that holds another config's results, unless `overwrite`;
    else what it holds (FolderCheck)."""
    record = read_record(folder)
    multirun = command == MULTIRUN_FOLDER
    old = (
        record["identity"]
        if record is not None
        else (None if multirun else recorded_identity(folder, command))
    )
    if old is None:
        if not holds_results(folder, log_name) or (
            multirun and (folder / "multirun.yaml").is_file()
        ):
            return (
                FolderCheck.NEW
            )  # nothing there, or a multirun made before records: its jobs decide
        reason = "results made without a record of their config"
    else:
        if old == ident:
            return FolderCheck.SAME
        if multirun:
            # a multirun's folder records only what its jobs share: agree on the keys both fix
            diff = [
                d
                for d in differences(old, ident)
                if d.split("=", 1)[0] in old and d.split("=", 1)[0] in ident
            ]
            if not diff:
                return FolderCheck.SAME
        else:
            diff = differences(old, ident)
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        reason = f"{what} of another config: {shown}"
    if overwrite:
        return FolderCheck.REPLACE
    raise VarexpError(
        f"{folder} holds {reason}; choose another folder (hydra.run.dir or "
        "hydra.sweep.dir), or pass overwrite=true to move them aside"
    )


def write_record(folder: Path, command: str, ident: dict[str, object], **extra: object) -> None:

    record = {
        "command": command,
        "identity": ident,
        "hash": identity_hash(ident),
        "created": provenance.now(),
        **extra,
    }
    write_json(record, folder / RECORD)


def write_hydra_record(folder: Path, cfg: DictConfig) -> None:
    """Hydra's .hydra/ record (config.yaml, hydra.yaml, overrides.yaml), written by us once the
    run is accepted: Hydra would write it before the job could refuse the folder."""

    hydra_cfg = HydraConfig.get()
    out = folder / HYDRA_RECORD
    out.mkdir(exist_ok=True)
    for name, content in (
        ("config.yaml", cfg),
        ("hydra.yaml", {"hydra": hydra_cfg}),
        ("overrides.yaml", hydra_cfg.overrides.task),
    ):
        with atomic_path(out / name) as tmp:
            OmegaConf.save(
                OmegaConf.create(content) if not OmegaConf.is_config(content) else content, tmp
            )


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of atomic writes that a killed process left (we hold the folder now)."""
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)
