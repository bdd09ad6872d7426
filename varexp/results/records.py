"""Run folders: who made their results, and which runs a table or a figure may read.

Every run folder holds `run.json`: the command, the identity of the config that made it (the
config keys its results depend on, listed and hashed), the experiment preset and the provenance.
It is written once the config has passed its checks, and only into a folder that is new or holds
the same identity: a command into a folder of another config's results refuses with one line
naming the differing keys, unless `overwrite=true`, which moves the old results aside into a
sibling `<folder>.replaced-<time>` (never deletes them). The folder of a multirun holds the keys
all its jobs share; a later multirun into it must agree on the keys both fix.

While a command works in a folder it holds `.lock` there (its pid, host and start time), so two
launches into one folder cannot run at once; a lock whose process has died on this host is
taken over.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from varexp import provenance
from varexp.devices import resolve as resolve_device
from varexp.errors import VarexpError
from varexp.figures import Figure
from varexp.files import atomic_path, write_json

log = logging.getLogger("varexp.results")

RECORD = "run.json"
LOCK = ".lock"
REPLACED = ".replaced-"  # <folder>.replaced-<time>: results moved aside by overwrite=true
HYDRA_RECORD = ".hydra"

# The keys each command's results depend on (a group name stands for all its keys).
IDENTITY: dict[str, tuple[str, ...]] = {
    "theory": ("arch.depth", "arch.activation", "init", "theory"),
    "probe": ("seed", "arch", "dataset", "init", "probe"),
    "train": ("seed", "arch", "dataset", "init", "optim", "train"),
    "plot": ("figure", "results", "smooth", "cnn_ratio"),
    # a reproduce folder is one scale; its steps record their own configs (and a step whose
    # command changed is rerun, its old results moved aside)
    "reproduce": ("reproduce.preset",),
}
IDENTITY["sweep"] = IDENTITY["train"]  # a sweep's jobs are training runs
# Keys that may differ without changing a result: where the data lives and how it is fed, how
# chatty or fast a run is, and how long a training run is (a longer run continues a shorter one).
NOT_IDENTITY = frozenset((
    "dataset.root", "dataset.download", "dataset.verify", "dataset.cache", "dataset.workers",
    "dataset.pipeline", "probe.progress", "train.steps", "train.checkpoint_every",
    "train.flush_seconds", "train.log_seconds", "train.progress", "train.compile",
    "train.stop_after",
))  # fmt: skip
# Keys added after runs were made, with the value that does what runs did before them: at that
# value they are left out, so that those runs keep their identity.
ADDED_LATER: dict[str, object] = {"arch.bias": False, "train.eval_every": None}


# ---------------------------------------------------------------------------------------------
# identity


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def identity(command: str, cfg: DictConfig) -> dict[str, object]:
    """The resolved config keys `command`'s results depend on, flat ("optim.lr": 0.01, ...),
    in JSON's types (so a record read back compares equal)."""
    flat: dict[str, object] = {}
    for key in IDENTITY[command]:
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        flat.update(flatten(value, f"{key}."))
    return json.loads(
        json.dumps(
            {
                k: v
                for k, v in sorted(flat.items())
                if k not in NOT_IDENTITY and not (k in ADDED_LATER and ADDED_LATER[k] == v)
            }
        )
    )


def identity_hash(ident: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def differences(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """'key=old (now new)' for every key whose value differs, sorted."""
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            shown_a = "unset" if a is missing else repr(a)
            shown_b = "unset" if b is missing else repr(b)
            out.append(f"{key}={shown_a} (now {shown_b})")
    return out


def shared(identities: list[dict[str, object]]) -> dict[str, object]:
    """The keys every identity has with the same value: what a multirun's jobs share."""
    if not identities:
        return {}
    first = identities[0]
    return {k: v for k, v in first.items() if all(i.get(k, object()) == v for i in identities)}


# ---------------------------------------------------------------------------------------------
# records


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
) -> str | None:
    """Refuse (one line) a folder that holds another config's results, unless `overwrite`.
    Returns 'new', 'same' or 'replace'."""
    record = read_record(folder)
    multirun = command == "multirun-folder"
    old = (
        record["identity"]
        if record is not None
        else (None if multirun else recorded_identity(folder, command))
    )
    if old is None:
        if not holds_results(folder, log_name) or (
            multirun and (folder / "multirun.yaml").is_file()
        ):
            return "new"  # nothing there, or a multirun made before records: its jobs decide
        reason = "results made without a record of their config"
    else:
        if old == ident:
            return "same"
        if multirun:
            # a multirun's folder records only what its jobs share: agree on the keys both fix
            diff = [
                d
                for d in differences(old, ident)
                if d.split("=", 1)[0] in old and d.split("=", 1)[0] in ident
            ]
            if not diff:
                return "same"
        else:
            diff = differences(old, ident)
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        reason = f"{what} of another config: {shown}"
    if overwrite:
        return "replace"
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


# ---------------------------------------------------------------------------------------------
# locks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(folder: Path) -> dict | None:
    """Who holds folder/.lock: another live process (its pid, host, start and command), or
    None when no one does, this process does, or the holder died on this host."""
    found = _read_lock(folder / LOCK)
    if found is None or found["host"] != socket.gethostname():
        return found
    if found["pid"] == os.getpid() or not _alive(found["pid"]):
        return None
    return found


def in_use(folder: Path, found: dict) -> VarexpError:
    since = time.strftime("%H:%M:%S", time.localtime(found["since"]))
    return VarexpError(
        f"{folder} is in use by {found['what']} (pid {found['pid']} on {found['host']}, since "
        f"{since}); wait for it, or choose another folder (if that process is gone, delete "
        f"{folder / LOCK})"
    )


def check_free(folder: Path) -> None:
    """Refuse (one line naming the pid) a folder another live process holds; takes nothing."""
    found = holder(folder)
    if found is not None:
        raise in_use(folder, found)


@contextmanager
def lock(folder: Path, what: str = "varexp") -> Iterator[None]:
    """Hold folder/.lock while the block runs; one line if another live process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read_lock(path)
            if found is None or (found["host"] == me["host"] and not _alive(found["pid"])):
                path.unlink(missing_ok=True)  # its process is gone: take it over
                continue
            if found["host"] == me["host"] and found["pid"] == me["pid"]:
                yield  # this process holds it already (a sweep's job in the launching process)
                return
            raise in_use(folder, found) from None
        except OSError as error:
            raise VarexpError(f"cannot write in {folder} ({error.strerror})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise VarexpError(f"could not take {path}; delete it if no varexp runs there")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
        return {
            "pid": int(holder["pid"]),
            "host": str(holder["host"]),
            "since": float(holder["since"]),
            "what": str(holder.get("what", "varexp")),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# discovery


def discover(root: str | Path, filename: str) -> list[Path]:
    """Every `filename` under root, sorted, leaving out results moved aside by overwrite."""
    return [
        p
        for p in sorted(Path(root).rglob(filename))
        if not any(REPLACED in part for part in p.relative_to(root).parts)
    ]


def read_summary(run_dir: str | Path) -> dict | None:
    """A training run's summary.json, or None if it has none (yet), or it is unreadable or not
    a summary (not a mapping, or its status not a word)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("status", ""), str):
        return None
    return summary


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


# ---------------------------------------------------------------------------------------------
# a launch: before Hydra makes any folder, and in each job


def check_launch(line, overwrite: bool) -> list[Path]:
    """Before Hydra runs a checked command line (varexp.compose.CommandLine): refuse, in one
    line, to write into folders that hold another config's results, and two jobs of a multirun
    that would share a folder. Returns the folders whose results `overwrite` moves aside."""
    command = line.command
    check_free(Path(line.output_dir))
    if not line.multirun:
        folder = Path(line.output_dir)
        state = check_folder(folder, command, identity(command, line.cfg), overwrite)
        return [folder] if state == "replace" else []
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
        check_folder(root, "multirun-folder", folder_identity(line, idents), overwrite, what="runs")
        == "replace"
    ):
        return [root]
    return [
        f
        for f, i in zip(folders, idents, strict=True)
        if check_folder(f, command, i, overwrite) == "replace"
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
                "multirun-folder",
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
                "multirun-folder",
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
        if state == "replace":
            moved = move_aside(folder, keep=(f"{log_name}.log", LOCK))
            logging.getLogger("varexp").warning(
                "overwrite=true: moved the results in %s to %s", folder, moved
            )
        if accept is not None:
            accept(folder)
        remove_stale_temporaries(folder)
        if state != "same":
            write_record(
                folder,
                "train" if command == "sweep" else command,
                ident,
                preset=hydra_cfg.runtime.choices.get("experiment"),
                provenance=provenance.record(resolve_device(str(cfg.get("device", "auto")))),
            )
        write_hydra_record(folder, cfg)
        yield folder
