"""Where a training run reports besides its CSV files (config group `logger`):

- `csv` (the default): metrics.csv and ratios.csv only;
- `tensorboard`: TensorBoard event files in the run folder's `tensorboard/` (loss, accuracy, the
  held-out loss and accuracy where train.eval_every evaluates them, lr, epoch, per-layer ratios
  and weight-gradient RMS, the config as text; at the end the ratios of the final parameters
  and the run's hyperparameters with its final loss, for the HPARAMS tab);
- `mlflow`: an MLflow run in a local store (`logger.tracking_uri`, default MLflow's own:
  $MLFLOW_TRACKING_URI, else mlflow.db in the current folder; a `file:` URI for a folder store),
  in experiment `logger.experiment`: the identifying config as params, the same metrics;
- `wandb`: a Weights & Biases run (`logger.mode=offline` needs no account or network; `wandb sync`
  uploads it later), the identifying config as its config, the same metrics.

All of them resume with the run and repeat no step: TensorBoard purges the events past the
checkpoint; MLflow and W&B receive rows when the CSV files are written (every
`train.flush_seconds` and at each checkpoint), in step order, and a resumed run sends only the
steps after the last one sent (MLflow's store says which; for W&B the run folder's `wandb.json`,
written before each send). A logger never changes results: it is not part of a run's identity.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from varexp.errors import ConfigError, VarexpError
from varexp.files import write_json
from varexp.results.tables import RATIO_STATS, MetricsRow

# the package each logger needs, and the extra that installs it
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check(logger: DictConfig) -> None:
    """The chosen logger can run here."""
    package = PACKAGES.get(logger.name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"logger={logger.name} needs the {package} package, which is not "
            f"installed: pip install -e '.[{logger.name}]' (or pip install "
            f"{package})"
        )


class Logger:
    """The csv logger: the run's CSV files are written by the run itself, so nothing here."""

    wants_final_ratios = False  # whether finish() needs the final parameters' statistics

    def metrics(self, rows: list[MetricsRow]) -> None:
        """Rows of metrics.csv just read from the device."""

    def ratios(
        self, step: int, names: list[str], stats: list[list[float]], grads: list[float]
    ) -> None:
        """Per weight layer: the RATIO_STATS and the weight gradient's RMS at `step`."""

    def commit(self) -> None:
        """The CSV files were just written with every row so far."""

    def finish(
        self, summary: dict, step: int, names: list[str], stats: list[list[float]] | None
    ) -> None:
        """The run ended (summary.json's fields); `stats`: the RATIO_STATS of the final
        parameters (after `step` updates), or None (a diverged run)."""

    def close(self) -> None:
        pass


def hparams(summary: dict) -> dict[str, object]:
    """The run's identifying config keys as flat scalars (None and lists as text)."""
    return {
        k: v if isinstance(v, bool | int | float | str) else str(v)
        for k, v in summary.get("config", {}).items()
    }


# metrics.csv's columns as the loggers name them (lr and epoch: see each logger)
ROW_TAGS = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
}


def row_scalars(row: MetricsRow) -> dict[str, float]:
    """A row's loss and accuracies by tag; the empty ones (NaN: the test columns between
    evaluations, accuracy in rows of older checkpoints) are left out, but a diverged loss."""
    values = {tag: getattr(row, column) for column, tag in ROW_TAGS.items()}
    return {t: v for t, v in values.items() if t == "train/loss" or not math.isnan(v)}


def ratio_scalars(
    step: int, names: list[str], stats: list[list[float]], grads: list[float] | None
) -> dict[str, float]:
    """Per layer, `ratio/NN_name`, `ratio_channel/NN_name` and `weight_grad_rms/NN_name`."""
    out = {}
    for layer, (name, values) in enumerate(zip(names, stats, strict=True), 1):
        tag, value = f"{layer:02d}_{name}", dict(zip(RATIO_STATS, values, strict=True))
        out[f"ratio/{tag}"] = value["ratio"]
        out[f"ratio_channel/{tag}"] = value["ratio_channel"]
        if grads is not None:
            out[f"weight_grad_rms/{tag}"] = grads[layer - 1]
    return out


class TensorBoard(Logger):
    wants_final_ratios = True

    def __init__(self, run_dir: Path, cfg: DictConfig, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # deferred: tensorboard is an extra

        # purge_step: on resume, events past the checkpoint (written before a kill) go
        self.writer = SummaryWriter(
            str(run_dir / "tensorboard"), purge_step=start_step if start_step > 0 else None
        )
        self.last: tuple | None = None
        if start_step == 0:
            body = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"})
            self.writer.add_text("config", "```\n" + body + "```", 0)

    def metrics(self, rows: list[MetricsRow]) -> None:
        for row in rows:
            for tag, value in row_scalars(row).items():
                self.writer.add_scalar(tag, value, row.step)
            # lr and epoch change rarely: a point where they do (a cost per step adds up on
            # small models, at hundreds of steps per second)
            if (row.lr, row.epoch) != self.last:
                self.writer.add_scalar("train/lr", row.lr, row.step)
                self.writer.add_scalar("train/epoch", row.epoch, row.step)
                self.last = (row.lr, row.epoch)

    def ratios(
        self, step: int, names: list[str], stats: list[list[float]], grads: list[float]
    ) -> None:
        for tag, value in ratio_scalars(step, names, stats, grads).items():
            self.writer.add_scalar(tag, value, step)

    def commit(self) -> None:
        self.writer.flush()

    def finish(
        self, summary: dict, step: int, names: list[str], stats: list[list[float]] | None
    ) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        if stats is not None:  # the final parameters' ratios (no gradient: no update follows)
            for tag, value in ratio_scalars(step, names, stats, None).items():
                self.writer.add_scalar(tag, value, step)
        loss = summary.get("final_loss")
        metric = {"hparam/final_loss": math.nan if loss is None else loss}
        # at the final step, so that a resumed run that goes further purges it with the rest
        for event in hparams_summary(hparams(summary), metric):
            self.writer.file_writer.add_summary(event, step)
        self.writer.add_scalar("hparam/final_loss", metric["hparam/final_loss"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Buffered(Logger):
    """A logger for a service that cannot take a step back: rows wait until the CSV files are
    written, then go in step order, only those after the last step already sent."""

    wants_final_ratios = True

    def __init__(self, sent: int) -> None:
        self.sent = sent  # the last step the service has (-1: none)
        self.rows: dict[int, dict[str, float]] = {}

    def metrics(self, rows: list[MetricsRow]) -> None:
        for row in rows:
            self.rows.setdefault(row.step, {}).update(
                {**row_scalars(row), "train/lr": row.lr, "train/epoch": row.epoch}
            )

    def ratios(
        self, step: int, names: list[str], stats: list[list[float]], grads: list[float]
    ) -> None:
        self.rows.setdefault(step, {}).update(ratio_scalars(step, names, stats, grads))

    def commit(self) -> None:
        steps = sorted(s for s in self.rows if s > self.sent)
        if steps:
            self.send([(s, self.rows[s]) for s in steps])
            self.sent = steps[-1]
        self.rows.clear()

    def commit_final(self, step: int, names: list[str], stats: list[list[float]] | None) -> None:
        """Send the rows left, then the ratios of the final parameters at `step` (the MLflow
        and W&B loggers end this way)."""
        self.commit()
        if stats is not None:
            self.rows[step] = ratio_scalars(step, names, stats, None)
            self.commit()

    def send(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        raise NotImplementedError


class MLflow(Buffered):
    def __init__(
        self, run_dir: Path, cfg: DictConfig, start_step: int, identity: dict[str, object]
    ) -> None:
        import mlflow  # deferred: an optional extra
        from mlflow.entities import Param

        uri = cfg.logger.tracking_uri
        if uri is not None and "://" not in uri and not uri.startswith("file:"):
            uri = Path(uri).resolve().as_uri()  # a folder: MLflow's file store
        if uri is not None and uri.startswith("file:"):
            # MLflow 3 keeps its folder store in maintenance mode behind this switch; a user who
            # names a file: store has chosen it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        shown = uri or mlflow.get_tracking_uri()
        try:
            # the jobs of a parallel sweep would all build a new SQLite store's tables at once
            with _store_lock(shown):
                self.client = mlflow.MlflowClient(tracking_uri=uri)
                self.client.get_experiment_by_name(cfg.logger.experiment)
        except Exception as err:  # a missing driver (sqlalchemy), an unwritable or foreign file
            raise VarexpError(
                f"logger=mlflow could not open the store {shown}: "
                f"{' '.join(str(err).split())[:300]}"
            ) from None
        self.record = run_dir / "mlflow.json"
        previous = _read(self.record)
        run_id, sent = None, -1
        if start_step > 0 and previous.get("tracking_uri") == self.client.tracking_uri:
            run_id = previous.get("run_id")
            try:
                history = self.client.get_metric_history(run_id, "train/loss")
                sent = max((m.step for m in history), default=-1)
                self.client.update_run(run_id, status="RUNNING")
            except Exception:  # the run was deleted from the store: a new one
                run_id = None
        if run_id is None:
            experiment = self.client.get_experiment_by_name(cfg.logger.experiment)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(cfg.logger.experiment)
                except Exception:  # made at the same time by another job of a sweep
                    experiment_id = self.client.get_experiment_by_name(
                        cfg.logger.experiment
                    ).experiment_id
            else:
                experiment_id = experiment.experiment_id
            run = self.client.create_run(
                experiment_id,
                run_name=run_dir.name,
                tags={"varexp.run_dir": str(run_dir.resolve())},
            )
            run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in identity.items()]
            for start in range(0, len(params), 100):  # MLflow takes 100 params per batch
                self.client.log_batch(run_id, params=params[start : start + 100])
            write_json({"tracking_uri": self.client.tracking_uri, "run_id": run_id}, self.record)
        self.run_id = run_id
        super().__init__(sent)

    def send(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(key, float(value), 0, step)
            for step, values in rows
            for key, value in values.items()
        ]
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def finish(
        self, summary: dict, step: int, names: list[str], stats: list[list[float]] | None
    ) -> None:
        self.commit_final(step, names, stats)
        loss = summary.get("final_loss")
        if loss is not None:
            self.client.log_metric(self.run_id, "final_loss", loss, step=step)
        self.client.set_tag(self.run_id, "status", summary["status"])
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        self.commit()
        if not getattr(self, "finished", False):
            self.client.set_terminated(self.run_id, "KILLED")


class Wandb(Buffered):
    def __init__(
        self, run_dir: Path, cfg: DictConfig, start_step: int, identity: dict[str, object]
    ) -> None:
        import wandb  # deferred: an optional extra

        self.record = run_dir / "wandb.json"
        previous = _read(self.record)
        resuming = start_step > 0 and "id" in previous
        run_id = previous["id"] if resuming else uuid.uuid4().hex[:8]  # as wandb's own ids
        sent = previous.get("sent", -1) if resuming else -1
        try:
            self.run = wandb.init(
                project=cfg.logger.project,
                id=run_id,
                resume="allow",
                dir=str(run_dir),
                name=run_dir.name,
                config=identity,
                mode=cfg.logger.mode,
                reinit="create_new",
            )
        except Exception as err:  # not logged in, no network, a bad setting
            raise VarexpError(
                f"logger=wandb could not start a run: "
                f"{' '.join(str(err).split())[:300]} (logger.mode=offline needs "
                "no account)"
            ) from None
        self.run_id = run_id
        write_json({"id": run_id, "sent": sent}, self.record)
        super().__init__(sent)

    def send(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        # recorded first: a kill during the send loses rows rather than repeating them
        write_json({"id": self.run_id, "sent": rows[-1][0]}, self.record)
        for step, values in rows:
            self.run.log(values, step=step)

    def finish(
        self, summary: dict, step: int, names: list[str], stats: list[list[float]] | None
    ) -> None:
        self.commit_final(step, names, stats)
        self.run.summary["final_loss"] = summary.get("final_loss")
        self.run.summary["status"] = summary["status"]

    def close(self) -> None:
        self.commit()
        self.run.finish()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store (nothing for other stores)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def make_logger(
    cfg: DictConfig, run_dir: Path, start_step: int, identity: dict[str, object] | None = None
) -> Logger:
    logger = cfg.get("logger")
    if logger is None or logger.name == "csv":
        return Logger()
    if logger.name == "tensorboard":
        return TensorBoard(run_dir, cfg, start_step)
    if logger.name == "mlflow":
        return MLflow(run_dir, cfg, start_step, identity or {})
    return Wandb(run_dir, cfg, start_step, identity or {})
