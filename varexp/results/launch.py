"""A launch's checks and claims: before Hydra makes any folder (check_launch, prepare_launch),
and in each job (claim): the folder's record, its lock and the refusals."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from varexp import provenance
from varexp.devices import resolve as resolve_device
from varexp.errors import VarexpError
from varexp.results.identities import differences, identity, shared
from varexp.results.locks import LOCK, check_free, lock
from varexp.results.run_record import (
    MULTIRUN_FOLDER,
    FolderCheck,
    check_folder,
    move_aside,
    read_record,
    remove_stale_temporaries,
    write_hydra_record,
    write_record,
)

log = logging.getLogger("varexp.results")


def check_launch(line, overwrite: bool) -> list[Path]:
    """Before Hydra runs a checked command line (varexp.compose.CommandLine): refuse, in one
    line, to write into folders that hold another config's results, and two jobs of a multirun
    that would share a folder. Returns the folders whose results `overwrite` moves aside."""
    command = line.command
    check_free(Path(line.output_dir))
    if not line.multirun:
        folder = Path(line.output_dir)
        state = check_folder(folder, command, identity(command, line.cfg), overwrite)
        return [folder] if state == FolderCheck.REPLACE else []
    root = Path(line.output_dir)
    idents = [identity(command, c) for c in line.configs]
    folders = line.folders()
    owner: dict[Path, tuple[dict, list[str]]] = {}
    for folder, ident, job in zip(folders, idents, line.jobs, strict=True):
        if folder in owner and owner[folder][0] != ident:
            diff = ", ".join(differences(owner[folder][0], ident)[:3])
            raise VarexpError(
                f"the jobs {' '.join(owner[folder][1])} and {' '.join(job)} would "
                f"share the folder {folder} ({diff}); name the swept key in "
                "hydra.sweep.subdir"
            )
        owner[folder] = (ident, job)
    if (
        check_folder(root, MULTIRUN_FOLDER, folder_identity(line, idents), overwrite, what="runs")
        == FolderCheck.REPLACE
    ):
        return [root]
    return [
        f
        for f, i in zip(folders, idents, strict=True)
        if check_folder(f, command, i, overwrite) == FolderCheck.REPLACE
    ]


def folder_identity(line, idents: list[dict[str, object]]) -> dict[str, object]:
    """What a multirun's jobs share, less the keys a searching sweeper picks per job."""
    searched = tuple(getattr(line, "searched", ()))
    return {
        k: v
        for k, v in shared(idents).items()
        if not any(k == s or k.startswith(f"{s}.") for s in searched)
    }


def prepare_launch(line, replace: list[Path]) -> None:
    """After the checks (and a dry run's exit), holding the launch's folder: move results aside
    as `overwrite` asked, each folder held first (a folder another live process holds is
    refused, and nothing moves), and record what a multirun's jobs share in its folder."""

    log = logging.getLogger("varexp")
    with ExitStack() as held:
        for folder in replace:
            held.enter_context(lock(folder, f"varexp {line.command}"))
        for folder in replace:
            log.warning(
                "overwrite=true: moved the results in %s to %s",
                folder,
                move_aside(folder, keep=(LOCK,)),
            )
    if line.multirun:
        root = Path(line.output_dir)
        root.mkdir(parents=True, exist_ok=True)
        now = folder_identity(line, [identity(line.command, c) for c in line.configs])
        record = read_record(root)
        if record is None:
            write_record(
                root,
                MULTIRUN_FOLDER,
                now,
                of=line.command,
                preset=line.cfg.hydra.runtime.choices.get("experiment"),
            )
            return
        # a launch that sweeps a key the folder's runs shared so far (more seeds, inits,
        # learning rates) widens the folder: its record keeps only what all its runs share
        missing = object()
        kept = {k: v for k, v in record["identity"].items() if now.get(k, missing) == v}
        if kept != record["identity"]:
            write_record(
                root,
                MULTIRUN_FOLDER,
                kept,
                of=record.get("of", line.command),
                preset=record.get("preset"),
            )
            log.info(
                "%s now also holds runs of other %s",
                root,
                ", ".join(sorted(set(record["identity"]) - set(kept))),
            )


@contextmanager
def claim(command: str, cfg: DictConfig, accept=None) -> Iterator[Path]:
    """Inside a job: hold the run folder, refuse another config's results (or move them aside
    with overwrite=true), let `accept(folder)` refuse too, then record this config there."""

    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    log_name = hydra_cfg.job.name
    with lock(folder, f"varexp {command}"):
        ident = identity(command, cfg)
        state = check_folder(folder, command, ident, bool(cfg.get("overwrite", False)), log_name)
        if state == FolderCheck.REPLACE:
            moved = move_aside(folder, keep=(f"{log_name}.log", LOCK))
            logging.getLogger("varexp").warning(
                "overwrite=true: moved the results in %s to %s", folder, moved
            )
        if accept is not None:
            accept(folder)
        remove_stale_temporaries(folder)
        if state != FolderCheck.SAME:
            write_record(
                folder,
                "train" if command == "sweep" else command,
                ident,
                preset=hydra_cfg.runtime.choices.get("experiment"),
                provenance=provenance.record(resolve_device(str(cfg.get("device", "auto")))),
            )
        write_hydra_record(folder, cfg)
        yield folder
