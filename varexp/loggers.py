"""Where a training run reports besides its CSV files (config group `logger`): `csv` (the
default: metrics.csv and ratios.csv only) or `tensorboard` (also TensorBoard event files in the
run folder's `tensorboard/`: the loss, the lr, per-layer ratios and weight-gradient RMS, and the
config as text; `tensorboard --logdir outputs/` then shows every run, a sweep's side by side).
A logger never changes results: it is not part of a run's identity.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from varexp.errors import ConfigError
from varexp.results.tables import RATIO_STATS
from varexp.schema import choice, store


@dataclass
class CSVLogger:
    name: str = choice("csv", ("csv",))


@dataclass
class TensorBoardLogger:
    name: str = choice("tensorboard", ("tensorboard",))


LOGGERS: dict[str, type] = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}
for _name, _spec in LOGGERS.items():
    store("logger", _name, _spec)


def check(logger: DictConfig) -> None:
    """The chosen logger can run here."""
    if logger.name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger=tensorboard needs the tensorboard package, which is not "
                          "installed: pip install -e '.[tensorboard]' (or pip install "
                          "tensorboard)")


class Logger:
    """The csv logger: the run's CSV files are written by the run itself, so nothing here."""

    def metrics(self, rows: list[tuple]) -> None:
        """Rows (step, epoch, loss, lr, seconds) just read from the device."""

    def ratios(self, step: int, names: list[str], stats: list[list[float]],
               grads: list[float]) -> None:
        """Per weight layer: the RATIO_STATS and the weight gradient's RMS at `step`."""

    def close(self) -> None:
        pass


class TensorBoard(Logger):
    def __init__(self, run_dir: Path, cfg: DictConfig, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # deferred: tensorboard is an extra

        # purge_step: on resume, events past the checkpoint (written before a kill) go
        self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=start_step if start_step > 0 else None)
        self.last: tuple | None = None
        if start_step == 0:
            body = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"})
            self.writer.add_text("config", "```\n" + body + "```", 0)

    def metrics(self, rows: list[tuple]) -> None:
        for step, epoch, loss, lr, _ in rows:
            self.writer.add_scalar("train/loss", loss, step)
            # lr and epoch change rarely: a point where they do (a cost per step adds up on
            # small models, at hundreds of steps per second)
            if (lr, epoch) != self.last:
                self.writer.add_scalar("train/lr", lr, step)
                self.writer.add_scalar("train/epoch", epoch, step)
                self.last = (lr, epoch)

    def ratios(self, step: int, names: list[str], stats: list[list[float]],
               grads: list[float]) -> None:
        for layer, (name, values, grad) in enumerate(zip(names, stats, grads, strict=True), 1):
            tag, value = f"{layer:02d}_{name}", dict(zip(RATIO_STATS, values, strict=True))
            self.writer.add_scalar(f"ratio/{tag}", value["ratio"], step)
            self.writer.add_scalar(f"ratio_channel/{tag}", value["ratio_channel"], step)
            self.writer.add_scalar(f"weight_grad_rms/{tag}", grad, step)

    def close(self) -> None:
        self.writer.close()


def make_logger(cfg: DictConfig, run_dir: Path, start_step: int) -> Logger:
    logger = cfg.get("logger")
    if logger is None or logger.name == "csv":
        return Logger()
    return TensorBoard(run_dir, cfg, start_step)
