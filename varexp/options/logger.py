"""The options of each logger (config group `logger`; what each does: varexp.loggers)."""

from __future__ import annotations

from dataclasses import dataclass

from varexp.schema import choice, option


@dataclass
class CSVLogger:
    name: str = choice("csv", ("csv",))


@dataclass
class TensorBoardLogger:
    name: str = choice("tensorboard", ("tensorboard",))


@dataclass
class MLflowLogger:
    name: str = choice("mlflow", ("mlflow",))
    # null: MLflow's default ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current
    # folder); a sqlite:///PATH or file:PATH URI, or a folder (a file store there)
    tracking_uri: str | None = None
    experiment: str = "varexp"


@dataclass
class WandbLogger:
    name: str = choice("wandb", ("wandb",))
    project: str = "varexp"
    # null: wandb's own setting (WANDB_MODE, else online); offline needs no account
    mode: str | None = option(None, kind="choice", choices=("online", "offline"), none=True)


LOGGERS: dict[str, type] = {
    "csv": CSVLogger,
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
    "wandb": WandbLogger,
}
