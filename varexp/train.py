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

A resumed run continues from checkpoint.pt and rewrites metrics.csv and ratios.csv exactly as
an uninterrupted run would (on CPU with the same seed): the rows up to the checkpoint come from
the checkpoint, the rest are recomputed from the same model, optimizer, data and RNG states.
A non-finite loss ends the run as `diverged` (a result, exit 0).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import shlex
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from varexp import config, memory, provenance, results
from varexp.data import DataInfo, Stream, data_info, probe_batch
from varexp.errors import VarexpError, bad_value
from varexp.files import write_json
from varexp.inits import DATA_DEPENDENT, initialize
from varexp.models import build_model
from varexp.models.base import batch_statistics, weight_layers
from varexp.results import checkpoint, read_summary
from varexp.results.checkpoint import Checkpoint, checkpoint_path
from varexp.results.tables import FINISHED, METRICS, RATIO_STATS, RATIOS
from varexp.stats import Recorder
from varexp.stop import StopRequests

log = logging.getLogger(__name__)

__all__ = ["check", "run", "train"]

OPTIMIZERS = ("sgd", "adam")



class Stopped(VarexpError):
    """train.stop_after reached: the run stops as a kill would, leaving only its checkpoint."""


class Interrupted(Stopped):
    """Ctrl-C or SIGTERM: the run stopped at a step boundary and saved its checkpoint there."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"stopped at step {step}; checkpoint saved in {run_dir}")
        self.step, self.run_dir = step, run_dir


# ---------------------------------------------------------------------------------------------
# config


def unit_interval(cfg: DictConfig, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise bad_value(key, value, "must be a number in [0, 1)")


def check(cfg: DictConfig) -> DataInfo:
    """Every key `varexp train` reads, before any work; returns what the data looks like."""
    config.check_common(cfg)
    config.check_arch(cfg)
    config.check_init(cfg)
    for key in ("resume", "train.progress", "train.amp", "train.compile"):
        config.boolean(cfg, key)
    config.positive_int(cfg, "train.steps")
    config.positive_int(cfg, "train.batch_size", minimum=2)  # sample variance needs 2
    config.positive_int(cfg, "train.ratio_every")
    config.positive_int(cfg, "train.probe_samples", minimum=2)
    config.positive_int(cfg, "train.checkpoint_every")
    config.positive_float(cfg, "train.flush_seconds")
    config.positive_float(cfg, "train.log_seconds")
    if config.get(cfg, "train.stop_after") is not None:
        config.positive_int(cfg, "train.stop_after")
    name = config.one_of(cfg, "optim.name", OPTIMIZERS)
    config.positive_float(cfg, "optim.lr")
    if name == "sgd":
        unit_interval(cfg, "optim.momentum", config.get(cfg, "optim.momentum"))
    else:
        betas = config.get(cfg, "optim.betas")
        if not OmegaConf.is_list(betas) or len(betas) != 2:
            raise bad_value("optim.betas", betas, "must be a list of two numbers in [0, 1)")
        for beta in betas:
            unit_interval(cfg, "optim.betas", beta)
        config.positive_float(cfg, "optim.eps")
    info = data_info(cfg.dataset, cfg.arch)
    params, outputs = memory.count(cfg.arch, info.input_shape, info.num_classes, cfg.init.name,
                                   cfg.train.batch_size)
    memory.refuse_if_too_big(
        memory.train_bytes(params, outputs, name), config.resolve_device(cfg.device),
        "a training step", f"{memory.amount(params)} weights with gradients and {name} "
        f"state, {memory.amount(outputs)} layer outputs for a batch of {cfg.train.batch_size}",
        "train a narrower model or a smaller train.batch_size")
    return info


def reset_globals(seed: int, device: torch.device) -> None:
    """Seed every generator and reset what an earlier job in this process may have changed
    (joblib workers are reused)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.set_grad_enabled(True)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.backends.cudnn.deterministic = False


def make_optimizer(params, optim: DictConfig) -> torch.optim.Optimizer:
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum)
    return torch.optim.Adam(params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean per-pixel BCE of the membrane logit; 2-class cross-entropy for two channels."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target[:, 0].long())


# ---------------------------------------------------------------------------------------------
# per-layer statistics during training


def probe_stats(model: nn.Module, x: Tensor) -> Tensor:
    """(L, 6) float64: the RATIO_STATS of u^l on the probe batch x."""
    with batch_statistics(model), torch.no_grad(), Recorder(model, keep_x=False) as rec:
        model(x)
        return torch.stack([torch.stack([rec.stats[wl.index][k] for k in RATIO_STATS])
                            for wl in rec.layers])


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
        raise VarexpError(f"run directory {run_dir} is not writable ({err.strerror or err}); "
                          "set hydra.run.dir to a writable folder") from None


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
    finished = summary is not None and summary.get("status") in FINISHED
    if not cfg.resume:
        logged = logged_steps(run_dir)
        if saved is not None or finished or logged:
            what = (f"a {summary['status']} run" if finished
                    else f"a checkpoint at step {saved['step']}" if saved is not None
                    else f"an interrupted run ({logged} steps logged, no checkpoint yet)")
            raise VarexpError(f"{run_dir} already holds {what}; pass resume=true to continue it "
                              "(or start it over, without a checkpoint) or choose another "
                              "hydra.run.dir")
        return None
    if saved is None:
        if finished:
            raise VarexpError(f"{run_dir} holds a {summary['status']} run but no {path.name} to "
                              "resume from; choose another hydra.run.dir")
        return None
    diff = results.differences(saved.identity, results.identity("train", cfg))
    if diff:
        raise VarexpError(f"{path} is from another config: {', '.join(diff)}")
    if saved.step > cfg.train.steps:
        raise VarexpError(f"train.steps={cfg.train.steps} is below the {saved['step']} steps "
                          f"the checkpoint in {run_dir} has done; pass "
                          f"train.steps>={saved['step']}")
    return saved


# ---------------------------------------------------------------------------------------------
# the run


class Run:
    """The state of one training run and its files."""

    def __init__(self, cfg: DictConfig, run_dir: Path, info: DataInfo, saved: Checkpoint | None,
                 verbose: bool = True):

        self.cfg, self.run_dir, self.info, self.verbose = cfg, run_dir, info, verbose
        self.device = config.resolve_device(cfg.device)
        self.start, self.started = time.perf_counter(), provenance.now()
        reset_globals(cfg.seed, self.device)
        arch = cfg.arch
        self.model = build_model(arch, info.input_shape, info.num_classes, cfg.init.name)
        self.model.to(self.device)
        self.layers = weight_layers(self.model)
        self.loss_fn = F.cross_entropy if info.task == "classification" else segmentation_loss
        batch, seed, device = cfg.train.batch_size, cfg.seed, self.device
        self.stream = Stream(cfg.dataset, arch, batch, seed, device=device)
        self.probe_x = probe_batch(cfg.dataset, arch, cfg.train.probe_samples, seed, device)
        self.identity = results.identity("train", cfg)
        self.metrics: list[tuple] = []
        self.ratios: list[tuple] = []
        self.step = 0
        self.status = "running"
        self.past_wall = self.past_train = 0.0  # seconds spent before this session
        self.saved_step = saved.step if saved is not None else None  # in checkpoint.pt
        self.init_forward_passes = 0.0
        self.saved = saved

    def initialize(self) -> None:
        """Fresh run: initialize the weights (data-dependent inits fit on the first init.batches
        training minibatches) and make the optimizer; resumed run: load every state instead."""

        cfg = self.cfg
        saved = self.saved
        if saved is None:
            batches = None
            if cfg.init.name in DATA_DEPENDENT:
                # the first training minibatches, from a stream of their own
                fit = Stream(cfg.dataset, cfg.arch, cfg.train.batch_size, cfg.seed,
                             device=self.device)
                batches = [x for x, _ in _take(fit, cfg.init.batches)]
            report = initialize(self.model, cfg.init, cfg.arch.get("activation", "relu"), batches)
            self.init_forward_passes = report.forward_passes
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        if saved is not None:
            self.model.load_state_dict(saved.model)
            self.optimizer.load_state_dict(saved.optimizer)
            self.stream.load_state_dict(saved.stream)
            self.metrics = list(saved.metrics)
            # rows of checkpoints made before the per-channel statistics: those left empty
            width = len(RATIOS.columns)
            self.ratios = [tuple(r) + (math.nan,) * (width - len(r)) for r in saved.ratios]
            self.step, self.status = saved.step, saved.status
            self.past_wall, self.past_train = saved.seconds, saved.train_seconds
            self.init_forward_passes = saved.init_forward_passes
        batches = iter(self.stream)
        first = next(batches)  # the DataLoader starts and draws from the global RNG here,
        if saved is not None:  # so restore the RNG after it
            checkpoint.set_rng_state(saved.rng)
        self.batches = itertools.chain([first], batches)

    def banner(self) -> None:
        """What runs where, before the first step."""
        cfg, arch = self.cfg, self.cfg.arch
        params = sum(p.numel() for p in self.model.parameters())
        size = (f"{arch.width}x{arch.depth}" if arch.name == "mlp"
                else f"x{arch.channels:g} channels")
        start = f"from step {self.step}" if self.saved is not None else "from scratch"
        log.info("train %s: %s %s (%.3gM parameters), %s init, %s lr %g, %d steps of batch %d "
                 "on %s (%d training samples); seed %d, %s, %d thread(s) -> %s", start,
                 arch.name, size, params / 1e6, cfg.init.name, cfg.optim.name, cfg.optim.lr,
                 cfg.train.steps, cfg.train.batch_size, cfg.dataset.name,
                 len(self.stream.source), cfg.seed, self.device, torch.get_num_threads(),
                 self.run_dir)

    def wall(self) -> float:
        return self.past_wall + time.perf_counter() - self.start

    def loop(self, stop: StopRequests) -> None:
        cfg = self.cfg.train
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.amp else nullcontext()
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train",
                   dynamic_ncols=True, disable=None if cfg.progress else True)
        # without a terminal (a log, a batch job) a line every train.log_seconds instead
        lines = self.verbose and (bar.disable or not cfg.progress)
        started, last_flush = time.perf_counter(), time.perf_counter()
        last_line, first_step = started, self.step
        try:
            while self.step < cfg.steps:
                if stop.requested:
                    self.save()
                    raise Interrupted(self.step, self.run_dir)
                s = self.step
                stats = probe_stats(self.model, self.probe_x) if s % cfg.ratio_every == 0 else None
                epoch = s * cfg.batch_size // len(self.stream.source)
                x, y = next(self.batches)
                with amp:
                    out = self.forward(x)
                loss = self.loss_fn(out.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stats is not None:
                    self.record_ratios(s, stats, grad_rms(self.layers))
                value = loss.item()
                if not math.isfinite(value):
                    self.status = "diverged"
                else:
                    self.optimizer.step()
                seconds = self.past_train + time.perf_counter() - started
                self.metrics.append((s, epoch, value, lr, seconds))
                if self.status == "diverged":
                    break
                self.step = s + 1
                bar.update()
                bar.set_postfix_str(f"loss={value:.4f}", refresh=False)
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                    last_flush = time.perf_counter()
                elif time.perf_counter() - last_flush > cfg.flush_seconds:
                    self.flush()
                    last_flush = time.perf_counter()
                if lines and time.perf_counter() - last_line > cfg.log_seconds:
                    last_line = time.perf_counter()
                    rate = (self.step - first_step) / (last_line - started)
                    left = (cfg.steps - self.step) / rate if rate > 0 else math.nan
                    log.info("step %d/%d  loss %.4f  %.1f steps/s  about %.0f s left",
                             self.step, cfg.steps, value, rate, left)
                if cfg.stop_after is not None and self.step == cfg.stop_after:
                    raise Stopped(f"stopped after step {self.step} (train.stop_after)")
        finally:
            bar.close()
        if self.status == "running":
            self.status = "completed"

    def record_ratios(self, step: int, stats: Tensor, grads: Tensor) -> None:
        stats, grads = stats.cpu().tolist(), grads.cpu().tolist()
        for wl, values, g in zip(self.layers, stats, grads, strict=True):
            self.ratios.append((step, wl.index, wl.name, *values[:3], g, *values[3:]))

    def flush(self) -> None:
        METRICS.write(self.metrics, self.run_dir)
        RATIOS.write(self.ratios, self.run_dir)

    def fail(self, error: str) -> None:
        """summary.json says failed, and why; if even that cannot be written, the log says it."""
        try:
            write_json(self.summary("failed", error), self.run_dir / "summary.json")
        except OSError as err:
            log.error("could not write %s: %s", self.run_dir / "summary.json", err)

    def save(self) -> None:
        """CSVs, then the checkpoint: every row in the files is also in the checkpoint or will be
        recomputed identically from it."""
        self.flush()
        checkpoint.save(Checkpoint(
            identity=self.identity, step=self.step, status=self.status,
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            stream=self.stream.state_dict(), rng=checkpoint.rng_state(), metrics=self.metrics,
            ratios=self.ratios, seconds=self.wall(),
            train_seconds=self.metrics[-1][4] if self.metrics else 0.0,
            init_forward_passes=self.init_forward_passes,
        ), checkpoint_path(self.run_dir))
        self.saved_step = self.step

    def summary(self, status: str, error: str | None = None) -> dict:
        cfg = self.cfg
        last = self.metrics[-1][2] if self.metrics else None
        train_seconds = self.metrics[-1][4] if self.metrics else 0.0
        out = dict(
            status=status,
            steps=self.step,
            final_loss=last if last is not None and math.isfinite(last) else None,
            diverged_at=self.metrics[-1][0] if status == "diverged" else None,
            seconds=self.wall(),
            train_seconds=train_seconds,
            steps_per_second=self.step / train_seconds if train_seconds > 0 else None,
            init_forward_passes=self.init_forward_passes,
            device=str(self.device),
            started=self.started,
            finished=provenance.now(),
            provenance=provenance.record(self.device),
            **identifying(cfg),
        )
        if error is not None:
            out["error"] = error
        return out


def identifying(cfg: DictConfig) -> dict:
    """The flat keys a sweep table needs, and the whole identifying config."""
    return dict(
        arch=cfg.arch.name, dataset=cfg.dataset.name, init=cfg.init.name, optim=cfg.optim.name,
        lr=float(cfg.optim.lr), seed=cfg.seed, batch_size=cfg.train.batch_size,
        train_steps=cfg.train.steps, config=results.identity("train", cfg),
    )  # fmt: skip


def done(status: str, step: int, steps: int) -> bool:
    """Nothing left to train: diverged, or completed with train.steps steps."""
    return status == "diverged" or status == "completed" and step >= steps


def _take(stream: Stream, k: int) -> list[tuple[Tensor, Tensor]]:
    batches = iter(stream)
    return [next(batches) for _ in range(k)]


def train(cfg: DictConfig, run_dir: str | Path, quiet: bool = False) -> dict:
    """Train (or continue, with resume=true) the run `cfg` describes in run_dir; returns the
    summary also written to run_dir/summary.json. Ctrl-C or SIGTERM stop it at the next step
    with a checkpoint (Interrupted); `quiet` drops the banner and the progress lines."""
    info = check(cfg)
    run_dir = Path(run_dir)
    check_writable(run_dir)
    saved = existing_run(cfg, run_dir)
    if saved is not None and done(saved.status, saved.step, cfg.train.steps):
        summary = read_summary(run_dir)
        if summary is not None and summary.get("status") == saved.status:
            log.info("%s: already %s at step %d", run_dir, saved.status, saved.step)
            return summary
    run = Run(cfg, run_dir, info, saved, verbose=not quiet)
    try:
        run.initialize()
        if not quiet:
            run.banner()
        if not done(run.status, run.step, cfg.train.steps):
            run.status = "running"  # a completed run continues when train.steps grew
            with StopRequests() as stop:
                run.loop(stop)
        run.save()
        summary = run.summary(run.status)
        write_json(summary, run_dir / "summary.json")
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
        kept = (f"its checkpoint of step {run.saved_step} and the rows up to it are intact"
                if run.saved_step is not None else "no checkpoint was saved yet")
        raise VarexpError(f"disk full while writing {err.filename or 'in ' + str(run_dir)} at "
                          f"step {run.step}; {kept}: free space, then run the same command "
                          "with resume=true") from None
    except Exception as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run: the same overrides, resume=true, its folder."""

    kept = [o for o in HydraConfig.get().overrides.task
            if o.split("=", 1)[0].lstrip("+~") not in ("resume", "hydra.run.dir")]
    # a folder name with '=' (a sweep's runs) is quoted for Hydra, then for the shell
    folder = f'hydra.run.dir="{run_dir}"' if "=" in str(run_dir) else f"hydra.run.dir={run_dir}"
    return " ".join(["varexp train", *map(shlex.quote, kept), "resume=true",
                     shlex.quote(folder)])


def run(cfg: DictConfig) -> dict:

    check(cfg)
    try:
        with results.claim("train", cfg, accept=lambda folder: existing_run(cfg, folder)) as \
                run_dir:
            summary = train(cfg, run_dir)
    except Interrupted as stop:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        print(f"varexp train: {stop}; resume with:\n  {resume_command(run_dir)}",
              file=sys.stderr, flush=True)
        sys.exit(130)
    loss = summary["final_loss"]
    log.info("%s after %d steps, final loss %s, %.1f s -> %s", summary["status"],
             summary["steps"], "n/a" if loss is None else f"{loss:.4f}", summary["seconds"],
             run_dir)
    return summary
