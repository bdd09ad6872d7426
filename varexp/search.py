"""Searches that last: Hydra's Optuna sweeper with its study kept in SQLite in the search's folder
(experiment=optuna_lr: `hydra.sweeper.storage: sqlite:///<folder>/study.db`).

Running the same command again continues the study: `hydra.sweeper.n_trials` is the total, so
only the trials not yet finished run, and a trial that Ctrl-C (or a kill) stopped is asked again
with the same settings, its run continuing from its checkpoint. Optuna asks and tells trials in
the launching process only (the jobs, even parallel ones, never open the database), and a second
launch into the folder is refused by the folder's lock, so the SQLite file has one writer. At the
end, trials.csv (written atomically) lists every trial, and the best settings are printed.
"""

from __future__ import annotations

import math
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError, bad_value

if TYPE_CHECKING:
    import pandas as pd

    from varexp.compose import CommandLine

# pandas, optuna and the results module are imported where a search uses them: `--help` and
# completion ask `searching` without them
INTERRUPTED = "interrupted"  # user attr of a trial stopped before it ended (asked again)


def searching(cfg: DictConfig) -> bool:
    """Whether a composed config runs Hydra's Optuna sweeper."""
    target = OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or ""
    return str(target).endswith("OptunaSweeper")


def trials_at_once(hydra_cfg: DictConfig) -> int | None:
    """How many trials an Optuna search runs side by side (its n_jobs: the launcher gets that
    many at a time, so each may have that share of the cores); None for another sweeper."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    return max(1, int(sweeper.get("n_jobs", 1) or 1))


def sqlite_file(cfg: DictConfig) -> Path | None:
    """The study's database file, for a storage `sqlite:///<path>`; None for none (in memory)
    or another database."""
    storage = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
    if not storage or not str(storage).startswith("sqlite:///"):
        return None
    return Path(str(storage)[len("sqlite:///") :])


def check(cfg: DictConfig) -> None:
    """The sweeper's keys that Optuna would take badly (before any folder is made)."""
    sweeper = cfg.hydra.sweeper
    for key in ("n_trials", "n_jobs"):
        value = sweeper.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_value(f"hydra.sweeper.{key}", value, "must be an integer >= 1")
    if not sweeper.get("params"):
        raise VarexpError(
            "hydra.sweeper.params is empty: name a key to search, e.g. "
            "'optim.lr=tag(log, interval(1e-5, 1e-1))'"
        )
    path = sqlite_file(cfg)
    if path is not None and path.exists():
        _open(cfg)  # a damaged database is one line here, not a traceback in the sweeper


def _open(cfg: DictConfig):
    """The stored study, or None if the database holds none of this name yet."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = sqlite_file(cfg)
    name = cfg.hydra.sweeper.study_name
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.execute("select count(*) from sqlite_master").fetchone()
        return optuna.load_study(study_name=name, storage=str(cfg.hydra.sweeper.storage))
    except KeyError:  # no study of that name in the database yet
        return None
    except Exception as error:  # sqlite3 / SQLAlchemy errors: not a database, locked, ...
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VarexpError(
            f"{path}: not a readable Optuna study ({reason[:160]}); move it away "
            "to start the search afresh"
        ) from None


def counts(study) -> tuple[int, int]:
    """(trials finished, trials stopped before they ended) of a stored study."""
    from optuna.trial import TrialState

    finished = stopped = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING:
            stopped += 1
        elif trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED):
            finished += 1
    return finished, stopped


def trials_to_run(cfg: DictConfig) -> int:
    """The trials a launch of the search runs: hydra.sweeper.n_trials less those finished."""
    path = sqlite_file(cfg)
    study = _open(cfg) if path is not None and path.exists() else None
    return max(0, int(cfg.hydra.sweeper.n_trials) - (counts(study)[0] if study is not None else 0))


def describe(cfg: DictConfig) -> str:
    """The search this config would run (for --help)."""
    sweeper = cfg.hydra.sweeper
    space = " ".join(f"{k}={v}" for k, v in (sweeper.params or {}).items())
    kept = (
        f"the study in {sqlite_file(cfg)}: the same command again continues it"
        if sqlite_file(cfg)
        else "the study in memory only"
    )
    return (
        f"Optuna search ({sweeper.n_trials} trials, {sweeper.n_jobs} at a time, into "
        f"{cfg.hydra.sweep.dir}/): {space}; {kept}"
    )


def search_space(line: CommandLine) -> dict[str, str]:
    """The searched keys and their ranges: the preset's, then the command line's (which win)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = {str(k): str(v) for k, v in (line.cfg.hydra.sweeper.params or {}).items()}
    for override in OverridesParser.create().parse_overrides(
        [o for o in line.overrides if not o.startswith("-")]
    ):
        if override.is_sweep_override():
            space[override.key_or_group] = override.input_line.split("=", 1)[1]
    return space


def announce(line: CommandLine) -> None:
    """Before Hydra starts: what is searched, how many trials, how many are done already."""
    import optuna

    from varexp.results.locks import lock

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # announce says where the study is
    cfg = line.cfg
    check(cfg)
    folder = Path(str(cfg.hydra.sweep.dir))
    if folder.is_dir():  # a launch running there: refused now, before its trials are counted
        with lock(folder, f"varexp {line.command}"):
            pass
    sweeper = cfg.hydra.sweeper
    space = " ".join(f"{k}={v}" for k, v in search_space(line).items())
    total = int(sweeper.n_trials)
    study = _open(cfg) if sqlite_file(cfg) is not None and sqlite_file(cfg).exists() else None
    finished, stopped = counts(study) if study is not None else (0, 0)
    print(
        f"varexp {line.command}: Optuna search ({sweeper.direction} the mean training loss) "
        f"into {cfg.hydra.sweep.dir}/",
        flush=True,
    )
    print(f"  searching: {space.strip()}", flush=True)
    where = (
        f"study '{sweeper.study_name}' in {sqlite_file(cfg)}"
        if sqlite_file(cfg)
        else "study in memory only (hydra.sweeper.storage is not sqlite:///...): not resumable"
    )
    done = (f"; {finished} finished there already" if finished else "") + (
        f", {stopped} stopped mid-run (asked again)" if stopped else ""
    )
    print(
        f"  trials: {total} in all, {min(total, max(0, total - finished))} to run, "
        f"{sweeper.n_jobs} at a time{done}; {where}",
        flush=True,
    )
    if sqlite_file(cfg):
        print("  Ctrl-C stops it; the same command again continues the study", flush=True)
    if OmegaConf.select(cfg, "sweep.dry_run", default=False):
        print("sweep.dry_run=true: nothing was run")
        sys.exit(0)


def stopped_hint(error: Exception) -> str:
    """What a search's job stopped by Ctrl-C (or SIGTERM) adds to its one line."""
    from hydra.core.hydra_config import HydraConfig

    from varexp.train import Stopped

    if (
        isinstance(error, Stopped)
        and HydraConfig.initialized()
        and trials_at_once(HydraConfig.get())
        and str(HydraConfig.get().sweeper.get("storage") or "").startswith("sqlite:///")
    ):
        return "; the same command again continues the search"
    return ""


def resume(line: CommandLine) -> list[str]:
    """With the search's folder held: trials a stopped launch left running are marked failed
    (interrupted) and asked again with their settings; returns the overrides that make
    hydra.sweeper.n_trials the total (the trials still to run) and move the sampler's seed on
    by the trials stored (so that a resumed search does not replay its first random trials)."""
    cfg = line.cfg
    if not searching(cfg) or sqlite_file(cfg) is None or not sqlite_file(cfg).exists():
        return []
    study = _open(cfg)
    if study is None:
        return []
    import optuna
    from optuna.trial import TrialState

    stored = len(study.get_trials(deepcopy=False))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        with warnings.catch_warnings():  # Optuna 2 calls enqueue_trial experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(trial.params)
    finished, _ = counts(study)
    out = [f"hydra.sweeper.n_trials={max(0, int(cfg.hydra.sweeper.n_trials) - finished)}"]
    seed = OmegaConf.select(cfg, "hydra.sweeper.sampler.seed", default=None)
    if isinstance(seed, int):  # the same seed would replay the first launch's random trials
        out.append(f"hydra.sweeper.sampler.seed={seed + stored}")
    return out


class Scored(dict):
    """A sweep job's summary, which an optimising sweeper reads with float(): the run's
    objective (varexp.train.objective); a run that failed is a failed trial."""

    def __init__(self, summary: dict, run_dir: str | Path) -> None:
        super().__init__(summary)
        self.run_dir = str(run_dir)

    def __float__(self) -> float:
        from varexp.results.summary import FINISHED
        from varexp.train import objective

        if self.get("status") not in FINISHED:
            raise ValueError(
                f"the run in {self.run_dir} did not finish: {self.get('error', self.get('status'))}"
            )
        return objective(Path(self.run_dir), self)


def trials_table(study) -> pd.DataFrame:
    """One row per trial: its number, state, value (the objective; inf: diverged), seconds, and
    a column per searched key."""
    import pandas as pd

    from varexp.results.tables import TRIALS

    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = INTERRUPTED if trial.user_attrs.get(INTERRUPTED) else trial.state.name.lower()
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start and state != INTERRUPTED
            else math.nan
        )
        rows.append(
            {
                "trial": trial.number,
                "state": state,
                "value": math.nan if trial.value is None else trial.value,
                "seconds": round(seconds, 1),
                **trial.params,
            }
        )
    return pd.DataFrame(rows, columns=list(TRIALS.columns)) if not rows else pd.DataFrame(rows)


class SearchTrials(Callback):
    """Hydra callback (experiment=optuna_lr): after the last trial, trials.csv in the search's
    folder, and one line on how the study stands."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if sqlite_file(config) is None:
            return
        study = _open(config)
        if study is None:
            return
        from varexp.files import write_csv
        from varexp.results.tables import TRIALS

        table = trials_table(study)
        path = write_csv(table, Path(config.hydra.sweep.dir) / TRIALS.file)
        states = table["state"].value_counts()
        told = ", ".join(f"{n} {s}" for s, n in states.items())
        print(
            f"search: {len(table)} trials ({told}) in {sqlite_file(config)} -> {path}", flush=True
        )
