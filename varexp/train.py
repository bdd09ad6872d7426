"""`varexp train`: one training run (paper Sec. 5) -> metrics.csv, ratios.csv, summary.json and
checkpoint.pt in the run directory.

Steps count optimizer updates. Row `step = s` of metrics.csv is the loss on training minibatch s
(s = 0, 1, ..., train.steps - 1) at the parameters reached after s updates, so step 0 is the
loss at initialization; row `step = s` of ratios.csv (every train.ratio_every steps) describes
the same parameters: the sample statistics of every layer's pre-activation on the fixed probe
batch (paper Eq. 4, 9) and the RMS of the weight gradient of minibatch s. BatchNorm normalizes
the probe batch with its own statistics, as in `varexp probe`; probing changes no state.

Loss: cross-entropy for classification; for segmentation per-pixel binary cross-entropy with
logits on the one-channel membrane logit (2-class cross-entropy if a model gives two channels).
Accuracy: the share of correct predictions, of images (the largest logit) for classification and
of pixels (membrane where the logit is positive) for segmentation; `accuracy` on the training
minibatch, from the training step's own logits, and every train.eval_every steps `test_loss` and
`test_accuracy` on the whole test split (eval mode: BatchNorm's running statistics), at the
parameters of the same row.

A resumed run continues from checkpoint.pt and rewrites metrics.csv and ratios.csv exactly as
an uninterrupted run would (on CPU with the same seed): the rows up to the checkpoint come from
the checkpoint, the rest are recomputed from the same model, optimizer, data and RNG states.
A non-finite loss ends the run as `diverged` (a result, exit 0).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import random
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from tqdm import tqdm

from varexp import devices, loggers, memory, provenance, results, search
from varexp.checks import Check, Rule
from varexp.compose import check_once
from varexp.data import DataInfo, Stream, data_info, fixed_batch
from varexp.data.catalog import load_source
from varexp.data.sources import Source
from varexp.errors import ConfigError, VarexpError
from varexp.inits import INITS, initialize
from varexp.loggers import Logger, make_logger
from varexp.models import architecture, build_model
from varexp.models.base import (
    WeightLayer,
    batch_statistics,
    in_forward_order,
    inference,
    unreached,
)
from varexp.optim import make_optimizer
from varexp.options.sections import TrainRoot
from varexp.presets import commands_for
from varexp.results import checkpoint
from varexp.results.aggregate import criterion
from varexp.results.checkpoint import Checkpoint, checkpoint_path
from varexp.results.summary import (
    FINISHED,
    Status,
    Summary,
    finished,
    read_summary,
    summary_path,
    write_summary,
)
from varexp.results.tables import METRICS, RATIO_STATS, RATIOS, MetricsRow, arch_label
from varexp.schema import Common
from varexp.stats import Recorder
from varexp.stop import StopRequests

log = logging.getLogger(__name__)

__all__ = ["check", "run", "train"]


class Stopped(VarexpError):
    """train.stop_after reached: the run stops as a kill would, leaving only its checkpoint."""


class Interrupted(Stopped):
    """Ctrl-C or SIGTERM: the run stopped at a step boundary and saved its checkpoint there."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"stopped at step {step}; checkpoint saved in {run_dir}")
        self.step, self.run_dir = step, run_dir


# ---------------------------------------------------------------------------------------------
# config


class Checked(NamedTuple):
    """A config that passed `check` (or the sweep's), with what the check found its data to
    be: what train() takes without checking again."""

    cfg: DictConfig
    info: DataInfo


def check_eval(cfg: DictConfig) -> None:
    if cfg.train.eval_every is not None and cfg.dataset.get("val_slices") == 0:
        raise ConfigError(
            f"train.eval_every={cfg.train.eval_every} evaluates on the test split, but "
            f"dataset.val_slices=0 holds out no slices of {cfg.dataset.name}; set "
            "dataset.val_slices=5 (say), or train.eval_every=null"
        )


# what the check reads across keys (each rule also run where a value it reads changes)
MEMORY_READS = ("arch", "dataset", "train.batch_size", "train.probe_samples", "init", "optim.name",
                "device")  # fmt: skip
DATA = Rule(("dataset", "arch"), lambda cfg: data_info(cfg.dataset, cfg.arch))
RULES = (
    Rule(("device",), lambda cfg: devices.check(cfg.device)),
    Rule(("logger",), lambda cfg: loggers.check(cfg.logger) if "logger" in cfg else None),
    Rule(("train.eval_every", "dataset"), check_eval),
    Rule(MEMORY_READS, lambda cfg: check_memory(cfg, data_info(cfg.dataset, cfg.arch))),
)
# every key `varexp train` reads, that the data fits the model and that a training step fits
# in memory, before any work; returns what the data looks like (a DataInfo)
check = Check("varexp.train.check", (Common, TrainRoot), RULES, DATA)


def check_memory(cfg: DictConfig, info: DataInfo) -> None:
    """That the run fits where it runs: its weights with gradients and optimizer state, the
    fixed batch it measures its layers on, the largest of a training step, a pass over that
    batch and an init's fit on init.batches minibatches; and the generated training data
    (where the run is, or in the host's memory beside a GPU)."""
    arch, train, name = cfg.arch, cfg.train, cfg.optim.name
    params, outputs = memory.count(arch, info.input_shape, info.num_classes, train.batch_size)
    _, probe_outputs = memory.count(arch, info.input_shape, info.num_classes, train.probe_samples)
    fit = cfg.init.get("batches", 0) * train.batch_size if INITS[cfg.init.name].fit else 0
    _, fit_outputs = memory.count(arch, info.input_shape, info.num_classes, fit) if fit else (0, 0)
    f, width = memory.FLOAT, math.prod(info.input_shape)
    smaller = "train a narrower model"
    resident = [
        memory.Part(
            f"{memory.amount(params)} weights with gradients and {name} state",
            memory.train_bytes(params, 0, name),
            smaller,
        ),
        memory.Part(
            f"the fixed batch of train.probe_samples={train.probe_samples}",
            f * train.probe_samples * width,
            "lower train.probe_samples",
        ),
    ]
    transient = [
        memory.Part(
            f"{memory.amount(outputs)} layer outputs for a batch of {train.batch_size}",
            memory.train_bytes(0, outputs, name),
            f"{smaller} or a smaller train.batch_size",
        ),
        memory.Part(
            f"{memory.amount(probe_outputs)} layer outputs for the fixed batch",
            f * probe_outputs,
            "lower train.probe_samples",
        ),
        memory.Part(
            f"the init's fit on init.batches={cfg.init.get('batches')} minibatches",
            f * fit_outputs,
            "lower init.batches",
        ),
    ]
    data = memory.Part(
        f"the generated {info.name} data",
        memory.data_bytes(cfg.dataset, info.input_shape, info.task),
        memory.DATA_KEYS.get(info.name, ""),
    )
    device = devices.resolve(cfg.device)
    if device.type == "cpu":
        memory.refuse_parts([*resident, data], transient, device, "a training run")
    else:
        memory.refuse_parts(resident, transient, device, "a training run")
        memory.refuse_parts([data], [], torch.device("cpu"), "a training run's data")


def timing_config(cfg: DictConfig, steps: int) -> DictConfig:
    """A copy of `cfg` for a short timing run (a sweep's estimate): `steps` steps, saved once at
    the end, no progress bar, no resume, and no logger (a timing run is nobody's result: no
    MLflow or W&B run)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.train.steps = steps
        cfg.train.checkpoint_every = steps
        cfg.train.progress = False
        cfg.train.stop_after = None
        cfg.resume = False
        if "logger" in cfg:
            del cfg["logger"]
    return cfg


def reset_globals(seed: int, device: torch.device) -> None:
    """Seed every generator and reset what an earlier job in this process may have changed
    (joblib workers are reused)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.set_grad_enabled(True)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.backends.cudnn.deterministic = False


def loss_input(out: Tensor) -> Tensor:
    """The model's output as the loss takes it: float32 at least (bf16 under train.amp),
    float64 where the model computes in float64."""
    return out if out.dtype == torch.float64 else out.float()


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean per-pixel BCE of the membrane logit; 2-class cross-entropy for two channels."""
    if logits.shape[1] == 1:  # (the target's 0/1 in the logits' precision)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
    return F.cross_entropy(logits, target[:, 0].long())


def hits(out: Tensor, target: Tensor) -> Tensor:
    """Which predictions are correct (bool): per sample for classification (out (N, C), the
    largest logit; target (N,) class ids), per pixel for segmentation (out (N, 1, H, W):
    membrane where the logit is > 0, (N, 2, H, W): the larger logit; target (N, 1, H, W))."""
    if out.dim() == 2:
        return out.argmax(1) == target
    if out.shape[1] == 1:
        return (out > 0) == (target > 0.5)
    return out.argmax(1) == target[:, 0].long()


def accuracy(out: Tensor, target: Tensor) -> Tensor:
    """The share of correct predictions, a float64 0-d tensor where `out` is."""
    correct = hits(out, target)
    return correct.sum(dtype=torch.float64) / correct.numel()


class Pending(NamedTuple):
    """A step whose metrics row waits for its loss and accuracy on the device (read every
    train.sync_every steps); the held-out values are already numbers."""

    step: int
    epoch: int
    seconds: float
    loss: Tensor | None  # None where its caller reads the values itself (varexp.pack)
    accuracy: Tensor | None
    test_loss: float = math.nan
    test_accuracy: float = math.nan


# ---------------------------------------------------------------------------------------------
# per-layer statistics during training


def layer_stats(model: nn.Module, x: Tensor, layers: list[WeightLayer]) -> Tensor:
    """(L, 6) float64: the RATIO_STATS of u^l of each of `layers` on the fixed batch x."""
    with (
        batch_statistics(model),
        torch.no_grad(),
        Recorder(model, keep_x=False, layers=layers) as rec,
    ):
        model(x)
        return torch.stack(
            [torch.stack([rec.stats[wl.index][k] for k in RATIO_STATS]) for wl in layers]
        )


def grad_rms(layers: list) -> Tensor:
    """(L,) RMS of each weight layer's weight gradient."""
    return torch.stack([wl.module.weight.grad.detach().double().square().mean().sqrt()
                        for wl in layers])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# run directory


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise VarexpError(
            f"run directory {run_dir} is not writable ({err.strerror or err}); "
            "set hydra.run.dir to a writable folder"
        ) from None


def logged_steps(run_dir: Path) -> int:
    """Rows of metrics.csv a run left (0 if none or unreadable)."""
    try:
        return max(0, sum(1 for _ in (run_dir / "metrics.csv").open(encoding="utf-8")) - 1)
    except OSError:
        return 0


def existing_run(cfg: DictConfig, run_dir: Path) -> Checkpoint | None:
    """The checkpoint to continue from, or None to start at step 0; refuses (one line) to
    overwrite a run, even an interrupted one without a checkpoint yet, or to continue one made
    with another config."""
    path = checkpoint_path(run_dir)
    saved = checkpoint.load(path) if path.exists() else None
    summary = read_summary(run_dir)
    ended = summary is not None and summary.get("status") in FINISHED
    if not cfg.resume:
        logged = logged_steps(run_dir)
        if saved is not None or ended or logged:
            what = (
                f"a {summary['status']} run"
                if ended
                else f"a checkpoint at step {saved.step}"
                if saved is not None
                else f"an interrupted run ({logged} steps logged, no checkpoint yet)"
            )
            raise VarexpError(
                f"{run_dir} already holds {what}; pass resume=true to continue it "
                "(or start it over, without a checkpoint) or choose another "
                "hydra.run.dir"
            )
        return None
    if saved is None:
        if ended:
            raise VarexpError(
                f"{run_dir} holds a {summary['status']} run of "
                f"{summary.get('steps')} steps but no {path.name} to continue it "
                f"from (to train.steps={cfg.train.steps}); choose another folder, "
                "or move that run away to train it again"
            )
        return None
    diff = results.differences(saved.identity, results.identity("train", cfg))
    if diff:
        raise VarexpError(f"{path} is from another config: {', '.join(diff)}")
    if saved.step > cfg.train.steps:
        raise VarexpError(
            f"train.steps={cfg.train.steps} is below the {saved.step} steps "
            f"the checkpoint in {run_dir} has done; pass "
            f"train.steps>={saved.step}"
        )
    return saved


# ---------------------------------------------------------------------------------------------
# the run


class Trainer:
    """The state of one training run and its files."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        info: DataInfo,
        saved: Checkpoint | None,
        verbose: bool = True,
        stream: Stream | None = None,
        fixed_x: Tensor | None = None,
    ):
        """`stream` and `fixed_x`: the training stream and the probe batch, when runs that share
        them are trained together (varexp.pack); made here otherwise."""

        self.cfg, self.run_dir, self.info, self.verbose = cfg, run_dir, info, verbose
        self.device = devices.resolve(cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # also where cuDNN and the caching allocator work
        self.start, self.started = time.perf_counter(), provenance.now()
        reset_globals(cfg.seed, self.device)
        arch = cfg.arch
        self.model = build_model(arch, info.input_shape, info.num_classes)
        self.model.to(self.device)
        self.loss_fn = F.cross_entropy if info.task == "classification" else segmentation_loss
        batch, seed, device = cfg.train.batch_size, cfg.seed, self.device
        self.stream = (
            stream if stream is not None else Stream(cfg.dataset, arch, batch, seed, device=device)
        )
        self.fixed_x = (
            fixed_x
            if fixed_x is not None
            else fixed_batch(
                cfg.dataset, arch, cfg.train.probe_samples, seed, device, key="train.probe_samples"
            )
        )
        # the layers a forward pass runs, in its order (a model not built from Units may
        # register them in another order, or use a layer's weights without calling it)
        self.layers = in_forward_order(self.model, self.fixed_x)[0]
        self.logger = Logger()
        self.identity = results.identity("train", cfg)
        self.metrics: list[MetricsRow] = []
        self.ratios: list[tuple] = []
        self.step = 0
        self.status = Status.RUNNING
        self.past_wall = self.past_train = 0.0  # seconds spent before this session
        self.saved_step = saved.step if saved is not None else None  # in checkpoint.pt
        self.init_forward_passes = 0.0
        self.saved = saved
        # the held-out split, when train.eval_every asks for it (data_info checked it exists)
        self.test_source: Source | None = (
            load_source(cfg.dataset, arch, "test") if cfg.train.eval_every is not None else None
        )

    def initialize(self) -> None:
        """Fresh run: initialize the weights (data-dependent inits fit on the first init.batches
        training minibatches) and make the optimizer; resumed run: load every state instead.
        Then start the stream of training batches."""
        self.initialize_state()
        self.start_batches()

    def initialize_state(self) -> None:
        """initialize() without starting the training batches (the weights, the optimizer, the
        rows of a resumed run)."""
        cfg = self.cfg
        saved = self.saved
        if saved is None:
            batches = None
            if INITS[cfg.init.name].fit is not None:
                # the first training minibatches, from a stream of their own
                fit = Stream(
                    cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed, device=self.device
                )
                batches = [x for x, _ in _take(fit, cfg.init.batches)]
            report = initialize(self.model, cfg.init, cfg.arch.activation, batches)
            self.init_forward_passes = report.forward_passes
            measured = unreached(self.model, [wl.module for wl in self.layers])
            for line in report.warnings(self.model, cfg.init.name, measured):
                log.warning(line)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)  # conv weights NHWC
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        if saved is not None:
            self.model.load_state_dict(saved.model)
            self.optimizer.load_state_dict(saved.optimizer)
            self.metrics, self.ratios = saved_rows(saved)
            self.step, self.status = saved.step, saved.status
            self.past_wall, self.past_train = saved.seconds, saved.train_seconds
            self.init_forward_passes = saved.init_forward_passes
        self.logger = make_logger(cfg, self.run_dir, self.step, self.identity)

    def start_batches(self) -> None:
        """The stream of training batches, from where a resumed run's checkpoint left it."""
        saved = self.saved
        if saved is not None:
            self.stream.load_state_dict(saved.stream)
        batches = iter(self.stream)
        first = next(batches)  # the DataLoader starts and draws from the global RNG here,
        if saved is not None:  # so restore the RNG after it
            checkpoint.set_rng_state(saved.rng)
        self.batches = itertools.chain([first], batches)

    def banner(self) -> None:
        """What runs where, before the first step."""
        cfg, arch = self.cfg, self.cfg.arch
        params = sum(p.numel() for p in self.model.parameters())
        size = architecture(arch.name).size(arch)
        start = f"from step {self.step}" if self.saved is not None else "from scratch"
        log.info(
            "train %s: %s%s (%.3gM parameters), %s init, %s lr %g, %d steps of batch %d "
            "on %s (%d training samples); seed %d, %s, %d thread(s) -> %s",
            start,
            arch.name,
            f" {size}" if size else "",
            params / 1e6,
            cfg.init.name,
            cfg.optim.name,
            cfg.optim.lr,
            cfg.train.steps,
            cfg.train.batch_size,
            cfg.dataset.name,
            len(self.stream.source),
            cfg.seed,
            self.device,
            torch.get_num_threads(),
            self.run_dir,
        )

    def wall(self) -> float:
        return self.past_wall + time.perf_counter() - self.start

    def loop(self, stop: StopRequests) -> None:
        """Train to train.steps. The loss stays on the device and is read every
        train.sync_every steps (and before every checkpoint, flush and log line); a non-finite
        loss ends the run as diverged at the step where it appeared, with the rows up to it."""
        cfg = self.cfg.train
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.amp else nullcontext()
        channels_last = cfg.channels_last and self.fixed_x.dim() == 4
        sync_every = (
            cfg.sync_every if cfg.sync_every != "auto" else 50 if self.device.type == "cuda" else 1
        )
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=None if cfg.progress else True,
        )
        # without a terminal (a log, a batch job) a line every train.log_seconds instead
        lines = self.verbose and (bar.disable or not cfg.progress)
        started, last_flush = time.perf_counter(), time.perf_counter()
        last_line, first_step = started, self.step
        pending: list[Pending] = []
        try:
            while self.step < cfg.steps:
                if stop.requested:
                    if self.settle(pending, lr):
                        self.save()
                        raise Interrupted(self.step, self.run_dir)
                    break
                s = self.step
                stats = (
                    layer_stats(self.model, self.fixed_x, self.layers)
                    if s % cfg.ratio_every == 0
                    else None
                )
                test = self.evaluate(amp) if self.eval_due(s) else (math.nan, math.nan)
                epoch = s * cfg.batch_size // len(self.stream.source)
                x, y = next(self.batches)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with amp:
                    out = self.forward(x)
                loss = self.loss_fn(loss_input(out), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stats is not None:
                    self.record_ratios(s, stats, grad_rms(self.layers))
                seconds = self.past_train + time.perf_counter() - started
                hits = accuracy(out.detach(), y)
                pending.append(Pending(s, epoch, seconds, loss.detach(), hits, *test))
                checkpoint_due = (s + 1) % cfg.checkpoint_every == 0 and s + 1 < cfg.steps
                flush_due = time.perf_counter() - last_flush > cfg.flush_seconds
                line_due = lines and time.perf_counter() - last_line > cfg.log_seconds
                if (
                    len(pending) >= sync_every
                    or checkpoint_due
                    or flush_due
                    or line_due
                    or s + 1 == cfg.steps
                    or s + 1 == cfg.stop_after
                ):
                    read = len(pending)
                    if not self.settle(pending, lr):
                        break
                    bar.update(read - 1)
                    bar.set_postfix_str(f"loss={self.metrics[-1].loss:.4f}", refresh=False)
                self.optimizer.step()
                self.step = s + 1
                if pending:
                    continue
                bar.update()
                if checkpoint_due:
                    self.save()
                    last_flush = time.perf_counter()
                elif flush_due:
                    self.flush()
                    last_flush = time.perf_counter()
                if line_due:
                    last_line = time.perf_counter()
                    rate = (self.step - first_step) / (last_line - started)
                    left = (cfg.steps - self.step) / rate if rate > 0 else math.nan
                    log.info(
                        "step %d/%d  loss %.4f  %.1f steps/s  about %.0f s left",
                        self.step,
                        cfg.steps,
                        self.metrics[-1].loss,
                        rate,
                        left,
                    )
                if cfg.stop_after is not None and self.step == cfg.stop_after:
                    raise Stopped(f"stopped after step {self.step} (train.stop_after)")
        finally:
            bar.close()
        if self.status == Status.RUNNING:
            self.status = Status.COMPLETED

    def eval_due(self, step: int) -> bool:
        every = self.cfg.train.eval_every
        return every is not None and step % every == 0

    def evaluate(self, amp: AbstractContextManager) -> tuple[float, float]:
        """(test_loss, test_accuracy): the loss and accuracy on the whole test split, each the
        mean over its samples (pixels for segmentation), in batches of the larger of
        train.batch_size and train.probe_samples (both fit in memory: check_memory)."""
        assert self.test_source is not None
        return held_out(
            self.model,
            self.test_source,
            max(self.cfg.train.batch_size, self.cfg.train.probe_samples),
            self.loss_fn,
            self.device,
            amp,
        )

    def settle(self, pending: list[Pending], lr: float) -> bool:
        """Read the pending losses and accuracies (one transfer) into the metrics rows; False,
        with the run diverged at the first non-finite loss and the rows after it dropped, if
        there is one."""
        if not pending:
            return True
        # (a float32 loss is exact in float64)
        values = torch.stack([v.double() for p in pending for v in (p.loss, p.accuracy)])
        values = values.cpu().tolist()
        return self.record_losses(pending, values[0::2], values[1::2], lr)

    def record_losses(
        self, pending: list[Pending], losses: list[float], accuracies: list[float], lr: float
    ) -> bool:
        """settle() with the pending losses and accuracies already read (in order)."""
        rows = []
        for p, value, hits in zip(pending, losses, accuracies, strict=True):
            s = p.step
            rows.append(
                MetricsRow(s, p.epoch, value, lr, p.seconds, hits, p.test_loss, p.test_accuracy)
            )
            if not math.isfinite(value):
                self.status, self.step = Status.DIVERGED, s
                self.ratios = [r for r in self.ratios if r[0] <= s]
                break
        self.metrics.extend(rows)
        self.logger.metrics(rows)
        pending.clear()
        return self.status != Status.DIVERGED

    def record_ratios(self, step: int, stats: Tensor, grads: Tensor) -> None:
        stats, grads = stats.cpu().tolist(), grads.cpu().tolist()
        for wl, values, g in zip(self.layers, stats, grads, strict=True):
            self.ratios.append((step, wl.index, wl.name, *values[:3], g, *values[3:]))
        self.logger.ratios(step, [wl.name for wl in self.layers], stats, grads)

    def flush(self) -> None:
        METRICS.write(self.metrics, self.run_dir)
        RATIOS.write(self.ratios, self.run_dir)
        self.logger.commit()

    def log_end(self, summary: dict) -> None:
        """The logger's last word: the run's summary and, for a completed run, the ratios of
        its final parameters (after the last update, which no metrics row describes)."""
        stats = None
        if self.logger.wants_final_ratios and summary["status"] == Status.COMPLETED:
            stats = layer_stats(self.model, self.fixed_x, self.layers).cpu().tolist()
        self.logger.finish(summary, self.step, [wl.name for wl in self.layers], stats)

    def fail(self, error: str) -> None:
        """summary.json says failed, and why; if even that cannot be written, the log says it."""
        try:
            write_summary(self.summary(Status.FAILED, error), self.run_dir)
        except OSError as err:
            log.error("could not write %s: %s", summary_path(self.run_dir), err)

    def save(self) -> None:
        """CSVs, then the checkpoint: every row in the files is also in the checkpoint or will be
        recomputed identically from it."""
        self.flush()
        checkpoint.save(
            Checkpoint(
                identity=self.identity,
                step=self.step,
                status=str(self.status),  # a plain string: the checkpoint loads weights only
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                stream=self.stream.state_dict(),
                rng=checkpoint.rng_state(),
                metrics=self.metrics,
                ratios=self.ratios,
                seconds=self.wall(),
                train_seconds=self.metrics[-1].seconds if self.metrics else 0.0,
                init_forward_passes=self.init_forward_passes,
            ),
            checkpoint_path(self.run_dir),
        )
        self.saved_step = self.step

    def summary(self, status: str, error: str | None = None) -> dict:
        """summary.json of the run as it ends (Summary's fields)."""
        cfg = self.cfg
        last = self.metrics[-1].loss if self.metrics else None
        train_seconds = self.metrics[-1].seconds if self.metrics else 0.0
        return Summary(
            status=Status(status),
            steps=self.step,
            final_loss=last if last is not None and math.isfinite(last) else None,
            diverged_at=self.metrics[-1].step if status == Status.DIVERGED else None,
            seconds=self.wall(),
            train_seconds=train_seconds,
            steps_per_second=self.step / train_seconds if train_seconds > 0 else None,
            init_forward_passes=self.init_forward_passes,
            device=str(self.device),
            started=self.started,
            finished=provenance.now(),
            provenance=provenance.record(self.device),
            **identifying(cfg),
            error=error,
        ).as_dict()


def held_out(
    model: nn.Module,
    source: Source,
    batch_size: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: torch.device,
    amp: AbstractContextManager,
) -> tuple[float, float]:
    """(loss, accuracy) of `model` in eval mode on every sample of `source` (Source.held_out:
    unaugmented, in order; crops tiling every slice for segmentation); one read from the
    device at the end."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    predictions = 0
    with inference(model):
        samples = 0
        for x, y in source.held_out(batch_size):
            x, y = x.to(device), y.to(device)
            with amp:
                out = loss_input(model(x))
            # every sample has as many predictions (pixels): a batch weighs by its samples
            loss_sum += loss_fn(out, y).double() * len(x)
            samples += len(x)
            right = hits(out, y)
            correct += right.sum(dtype=torch.float64)
            predictions += right.numel()
    loss_value, correct_value = torch.stack([loss_sum, correct]).tolist()
    return loss_value / samples, correct_value / predictions


def saved_rows(saved: Checkpoint) -> tuple[list[MetricsRow], list[tuple]]:
    """The rows of metrics.csv and ratios.csv a checkpoint holds (ratios rows of checkpoints
    made before the per-channel statistics get those empty)."""
    width = len(RATIOS.columns)
    return (list(saved.metrics), [tuple(r) + (math.nan,) * (width - len(r)) for r in saved.ratios])


def identifying(cfg: DictConfig) -> dict:
    """The flat keys a sweep table needs, and the whole identifying config."""
    return dict(
        arch=arch_label(cfg.arch.name, cfg.arch.get("model")), dataset=cfg.dataset.name,
        init=cfg.init.name, optim=cfg.optim.name,
        lr=float(cfg.optim.lr), seed=cfg.seed, batch_size=cfg.train.batch_size,
        train_steps=cfg.train.steps, config=results.identity("train", cfg),
    )  # fmt: skip


def _take(stream: Stream, k: int) -> list[tuple[Tensor, Tensor]]:
    batches = iter(stream)
    return [next(batches) for _ in range(k)]


def train(cfg: Checked | DictConfig, run_dir: str | Path, quiet: bool = False) -> dict:
    """Train (or continue, with resume=true) the run `cfg` describes in run_dir; returns the
    summary also written to run_dir/summary.json. Ctrl-C or SIGTERM stop it at the next step
    with a checkpoint (Interrupted); `quiet` drops the banner and the progress lines. A config
    the command line checked comes as Checked; a plain one (a library call) is checked here."""
    cfg, info = cfg if isinstance(cfg, Checked) else Checked(cfg, check(cfg))
    run_dir = Path(run_dir)
    check_writable(run_dir)
    saved = existing_run(cfg, run_dir)
    summary = already_done(cfg, run_dir, saved)
    if summary is not None:
        return summary
    run = Trainer(cfg, run_dir, info, saved, verbose=not quiet)
    try:
        run.initialize()
        if not quiet:
            run.banner()
        if not finished(run.status, run.step, cfg.train.steps):
            run.status = Status.RUNNING  # a completed run continues when train.steps grew
            with StopRequests() as stop:
                run.loop(stop)
        run.save()
        summary = run.summary(run.status)
        write_summary(summary, run_dir)
        run.log_end(summary)
        return summary
    except Stopped:
        raise
    except torch.OutOfMemoryError as err:
        run.fail(f"out of memory: {err}".splitlines()[0])
        raise VarexpError(f"out of memory at step {run.step}; lower train.batch_size") from None
    except OSError as err:
        if not results.disk_full(err):
            run.fail(f"{type(err).__name__}: {err}")
            raise
        kept = (
            f"its checkpoint of step {run.saved_step} and the rows up to it are intact"
            if run.saved_step is not None
            else "no checkpoint was saved yet"
        )
        raise VarexpError(
            f"disk full while writing {err.filename or 'in ' + str(run_dir)} at "
            f"step {run.step}; {kept}: free space, then run the same command "
            "with resume=true"
        ) from None
    except Exception as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise
    finally:
        run.logger.close()


def already_done(cfg: DictConfig, run_dir: Path, saved: Checkpoint | None) -> dict | None:
    """The summary of a run its checkpoint `saved` says has ended at train.steps (its
    metrics.csv and ratios.csv written again from the checkpoint if damaged), or None: it
    trains."""
    if saved is None or not finished(saved.status, saved.step, cfg.train.steps):
        return None
    summary = read_summary(run_dir)
    if summary is None or summary.get("status") != saved.status:
        return None
    try:
        METRICS.read_run(run_dir, summary)
    except VarexpError as damage:  # the checkpoint holds every row: write them again
        metrics, ratios = saved_rows(saved)
        METRICS.write(metrics, run_dir)
        RATIOS.write(ratios, run_dir)
        log.warning("%s; rewrote it from %s", damage, checkpoint_path(run_dir))
    log.info("%s: already %s at step %d", run_dir, saved.status, saved.step)
    return summary


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run: the same overrides, resume=true, its folder."""

    kept = [
        o
        for o in HydraConfig.get().overrides.task
        if o.split("=", 1)[0].lstrip("+~") not in ("resume", "hydra.run.dir")
    ]
    folder = f"hydra.run.dir={hydra_quoted(str(run_dir))}"
    return " ".join(["varexp train", *map(shlex.quote, kept), "resume=true", shlex.quote(folder)])


def hydra_quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it back: plain when it is ASCII letters,
    digits and path punctuation, else in double quotes (a sweep's `lr=0.001` folders, spaces,
    non-ASCII names) with its quotes escaped."""
    if re.fullmatch(r"[\w./:~+-]+", value, flags=re.ASCII):
        return value
    # Hydra reads a backslash as an escape only before a quote or the closing quote
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, value).replace('"', '\\"')
    return f'"{escaped}"'


def run(cfg: DictConfig) -> float:
    """`varexp train`'s job: its config checked once (at the launch when it runs in the
    launching process), then trained from that check."""
    checked = Checked(cfg, check_once(check, cfg))
    try:
        with results.claim(
            "train", cfg, accept=lambda folder: existing_run(cfg, folder)
        ) as run_dir:
            summary = train(checked, run_dir)
    except Interrupted as stop:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        hint = (
            "the same command again continues the search (this trial from its checkpoint)"
            if search.trials_at_once(HydraConfig.get())
            else f"resume with:\n  {resume_command(run_dir)}"
        )
        print(f"varexp train: {stop}; {hint}", file=sys.stderr, flush=True)
        sys.exit(130)
    loss = summary["final_loss"]
    log.info(
        "%s after %d steps, final loss %s, %.1f s -> %s",
        summary["status"],
        summary["steps"],
        "n/a" if loss is None else f"{loss:.4f}",
        summary["seconds"],
        run_dir,
    )
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep's runs: the sweep says it once
        print(next_command(cfg, run_dir), flush=True)
    return objective(run_dir, summary)


# what a sweep of this run's setting keeps from its command line: the task and its size
SWEEP_KEEPS = ("task", "arch", "dataset", "experiment")


def next_command(cfg: DictConfig, run_dir: Path) -> str:
    """The line after a run: TensorBoard on it where it logged there; else the sweep of its
    task over the paper's inits, optimizers, learning rates and seeds, and its figure."""
    if cfg.logger.name == "tensorboard":
        return f"next: tensorboard --logdir {shlex.quote(str(run_dir))}"
    kept = []
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        key = key.lstrip("+")
        if key.startswith("~"):  # `~task`, which a sweep of arch= or dataset= adds itself
            continue
        if key == "experiment" and "sweep" not in (commands_for(value) or ()):
            continue
        if key in SWEEP_KEEPS or key.startswith(tuple(f"{k}." for k in SWEEP_KEEPS + ("train",))):
            kept.append(override)
    sweep = " ".join(["varexp sweep", *map(shlex.quote, kept)])
    return (
        f"next: {sweep}   (this task at every init, optimizer, learning rate and seed of "
        "the paper's grid), then varexp plot figure4"
    )


def objective(run_dir: Path, summary: dict) -> float:
    """What an optimising sweeper (Hydra's Optuna sweeper) minimises: the run's mean training
    loss over all its steps (the area under the loss curve per step, `sweep.select=auc`'s
    criterion); infinite for a diverged run."""
    if summary["status"] != Status.COMPLETED:
        return math.inf
    return criterion(METRICS.read_run(run_dir, summary).loss, 1.0)
