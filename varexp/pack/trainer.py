"""Training runs that share a data stream, trained together: `train_pack`.

Runs of one sweep that share the task, the seed, the batch size and the step count see the same
batch at every step (batch i is a pure function of (seed, i)), so they can take it together:
one forward and one backward pass per step for all of them (varexp.pack.stacked), each run with
its own weights, optimizer and learning rate. Everything else is the solo run's code, per run:
`varexp.train.Trainer` builds and initializes its model (a data-dependent init fits on its own
minibatches, exactly as a run trained alone does), measures its layers on the fixed batch,
keeps its rows, writes its metrics.csv, ratios.csv, checkpoint and summary.json, and resumes
from its checkpoint. So a packed run and the same run trained alone give the same rows (in
float64 on the CPU to rounding; tests/test_pack.py).

Runs may join a pack at different steps (checkpoints of an interrupted pack, or of runs trained
alone before): the pack starts at the earliest step, and a run joins when the pack reaches the
step of its checkpoint. A run leaves when it ends: diverged (its loss became non-finite: its
rows end at that step, as alone) or failed (its own init raised); the others go on unchanged.
Training draws nothing from the global random generators (dropout would: such runs are not
packed), which is what lets every run's batches and numbers be its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from varexp import devices, results
from varexp.data import DataInfo, Stream, fixed_batch
from varexp.errors import VarexpError
from varexp.pack.stacked import Stack, stacks_of
from varexp.results.checkpoint import Checkpoint
from varexp.results.summary import (
    Status,
    failed_summary,
    finished,
    read_summary,
    summary_path,
    write_summary,
)
from varexp.stop import StopRequests
from varexp.train import Pending, Stopped, Trainer, layer_stats

log = logging.getLogger("varexp.pack")


class PackInterrupted(Stopped):
    """Ctrl-C or SIGTERM: the pack stopped at a step boundary with every run's checkpoint."""

    def __init__(self, step: int, runs: int):
        super().__init__(
            f"stopped at step {step}; the checkpoints of the pack's {runs} "
            "running runs are saved: run the same command to continue them"
        )
        self.step = step


class Position:
    """A run's place in the pack's shared training stream: what its Trainer reads and saves as
    `stream` (the batches themselves come from the pack's stream)."""

    def __init__(self, stream: Stream):
        self.shared = stream
        self.source = stream.source
        self.batch = 0

    def state_dict(self) -> dict:
        return {"batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.batch = int(state["batch"])


@dataclass(eq=False)  # a run is itself: compared by identity
class PackRun:
    """One run of a pack: its config and folder, then its Trainer, or why it could not start."""

    cfg: DictConfig
    run_dir: Path
    info: DataInfo
    saved: Checkpoint | None
    trainer: Trainer | None = None
    summary: dict | None = None  # once it has ended: completed, diverged or failed
    error: BaseException | None = None
    joined: float = 0.0  # perf_counter when it joined the training (its clock)
    pending: list[Pending] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.run_dir)


# a hook that tells varexp.pack.job which run a log line is about (None: the whole pack)
RunContext = Callable[[PackRun | None], AbstractContextManager]


@contextmanager
def _no_context(run: PackRun | None) -> Iterator[None]:
    yield


class Pack:
    """The runs of a pack, their shared data and their stacks."""

    def __init__(self, runs: list[PackRun], about: RunContext = _no_context, verbose: bool = True):
        self.runs, self.about, self.verbose = runs, about, verbose
        lead = runs[0].cfg
        self.cfg = lead.train
        self.device = devices.resolve(lead.device)
        self.stream = Stream(
            lead.dataset, lead.arch, lead.train.batch_size, lead.seed, device=self.device
        )
        self.fixed_x = fixed_batch(
            lead.dataset,
            lead.arch,
            lead.train.probe_samples,
            lead.seed,
            self.device,
            key="train.probe_samples",
        )
        self.stacks: list[Stack] = []
        self.active: list[PackRun] = []
        self.step = 0

    # -----------------------------------------------------------------------------------------
    # before training: each run's own model, init and optimizer (or its checkpoint)

    def start(self) -> None:
        for run in self.runs:
            with self.about(run):
                try:
                    run.trainer = Trainer(
                        run.cfg,
                        run.run_dir,
                        run.info,
                        run.saved,
                        verbose=False,
                        stream=Position(self.stream),
                        fixed_x=self.fixed_x,
                    )
                    run.trainer.initialize_state()
                    if run.saved is not None:
                        run.trainer.stream.load_state_dict(run.saved.stream)
                    if self.verbose:
                        run.trainer.banner()
                    if finished(run.trainer.status, run.trainer.step, run.cfg.train.steps):
                        self.finish(run)  # e.g. a diverged checkpoint without its summary
                    else:
                        run.trainer.status = Status.RUNNING
                except Stopped:
                    raise
                except Exception as error:  # its own init failed: the others go on
                    self.fail(run, error)

    def running(self) -> list[PackRun]:
        return [r for r in self.runs if r.summary is None and r.trainer is not None]

    # -----------------------------------------------------------------------------------------
    # training

    def train(self, stop: StopRequests) -> None:
        """Train every running run to train.steps, each joining at its own step."""
        cfg = self.cfg
        waiting = self.running()
        if not waiting:
            return
        self.step = min(r.trainer.step for r in waiting)
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.amp else nullcontext()
        channels_last = cfg.channels_last and self.fixed_x.dim() == 4
        sync_every = (
            cfg.sync_every if cfg.sync_every != "auto" else 50 if self.device.type == "cuda" else 1
        )
        loss_fn = waiting[0].trainer.loss_fn
        self.stream.load_state_dict({"batch": self.step})
        batches = iter(self.stream)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            unit="step",
            desc=f"pack of {len(waiting)}",
            dynamic_ncols=True,
            disable=None if cfg.progress else True,
        )
        lines = self.verbose and (bar.disable or not cfg.progress)
        started = last_flush = last_line = time.perf_counter()
        first_step = self.step
        # per step and stack: its runs, their losses and accuracies
        pending_losses: list[tuple[list[PackRun], Tensor, Tensor]] = []
        try:
            while self.step < cfg.steps:
                if not self.active:  # every run left: go on from the next one's step
                    later = self.running()
                    if not later:
                        break
                    if min(r.trainer.step for r in later) != self.step:
                        self.step = min(r.trainer.step for r in later)
                        self.stream.load_state_dict({"batch": self.step})
                        batches = iter(self.stream)
                s = self.step
                joining = [
                    r for r in self.running() if r not in self.active and r.trainer.step == s
                ]
                if joining:
                    now = time.perf_counter()
                    for run in joining:
                        run.joined = now
                    self.regroup(self.active + joining)
                if stop.requested:
                    self.leave(self.settle(pending_losses))
                    self.save_active()
                    raise PackInterrupted(s, len(self.active))
                stats = None
                evaluated = [r for r in self.active if r.trainer.eval_due(s)]
                if s % cfg.ratio_every == 0 or evaluated:
                    for stack in self.stacks:
                        stack.write_back(optimizer=False)
                if s % cfg.ratio_every == 0:
                    stats = [
                        layer_stats(r.trainer.model, self.fixed_x, r.trainer.layers)
                        for r in self.active
                    ]
                # each run's held-out numbers from its own module, as alone
                tests = {id(r): r.trainer.evaluate(amp) for r in evaluated}
                epoch = s * cfg.batch_size // len(self.stream.source)
                x, y = next(batches)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                losses, accuracies = [], []
                for stack in self.stacks:
                    stack.zero_grad()
                    loss, hits = stack.losses(x, y, loss_fn, amp)
                    losses.append(loss)
                    accuracies.append(hits)
                torch.stack([v.sum() for v in losses]).sum().backward()
                now = time.perf_counter()
                order = [r for stack in self.stacks for r in self.runs_of(stack)]
                if stats is not None:
                    by_run = dict(zip(map(id, self.active), stats, strict=True))
                    for stack in self.stacks:
                        for k, run in enumerate(self.runs_of(stack)):
                            run.trainer.record_ratios(s, by_run[id(run)], stack.grad_rms(k))
                for run in order:
                    run.trainer.stream.batch = s + 1
                    seconds = run.trainer.past_train + now - run.joined
                    test = tests.get(id(run), (math.nan, math.nan))
                    run.pending.append(Pending(s, epoch, seconds, None, None, *test))
                for stack, value, hits in zip(self.stacks, losses, accuracies, strict=True):
                    pending_losses.append((self.runs_of(stack), value.detach(), hits))
                checkpoint_due = (s + 1) % cfg.checkpoint_every == 0 and s + 1 < cfg.steps
                flush_due = time.perf_counter() - last_flush > cfg.flush_seconds
                line_due = lines and time.perf_counter() - last_line > cfg.log_seconds
                synced = False
                if (
                    len(pending_losses) >= sync_every * len(self.stacks)
                    or checkpoint_due
                    or flush_due
                    or line_due
                    or s + 1 == cfg.steps
                    or s + 1 == cfg.stop_after
                ):
                    ended = self.settle(pending_losses)
                    synced = True
                    for run in ended:  # as alone: no update at the step where it diverged
                        self.stack_of(run).write_back()
                for stack in self.stacks:
                    stack.step()
                self.step = s + 1
                for run in self.active:
                    if run.trainer.status == Status.RUNNING:
                        run.trainer.step = s + 1
                self.leave([r for r in self.active if r.trainer.status != Status.RUNNING])
                if not synced:
                    continue
                bar.update(self.step - bar.n)
                if self.active:
                    bar.set_postfix_str(f"runs={len(self.active)}", refresh=False)
                if checkpoint_due:
                    self.save_active()
                    last_flush = time.perf_counter()
                elif flush_due:
                    for run in self.active:
                        run.trainer.flush()
                    last_flush = time.perf_counter()
                if line_due:
                    last_line = time.perf_counter()
                    rate = (self.step - first_step) / (last_line - started)
                    left = (cfg.steps - self.step) / rate if rate > 0 else math.nan
                    log.info(
                        "pack step %d/%d  %d runs  %.1f steps/s (%.1f run-steps/s)  "
                        "about %.0f s left",
                        self.step,
                        cfg.steps,
                        len(self.active),
                        rate,
                        rate * len(self.active),
                        left,
                    )
                if cfg.stop_after is not None and self.step == cfg.stop_after:
                    raise Stopped(f"stopped after step {self.step} (train.stop_after)")
        finally:
            bar.close()
        for run in list(self.active):
            run.trainer.status = Status.COMPLETED
        for stack in self.stacks:
            stack.write_back()
        for run in list(self.active):
            self.finish(run)
        self.active, self.stacks = [], []

    def settle(self, pending: list[tuple[list[PackRun], Tensor, Tensor]]) -> list[PackRun]:
        """Read the pending losses and accuracies of every run (one transfer) into its rows;
        the runs found diverged (their rows end at the first non-finite loss, as alone)."""
        if not pending:
            return []
        # (a float32 loss is exact in float64)
        values = torch.cat([torch.stack([v.double(), a]) for _, v, a in pending], dim=1)
        losses, accuracies = values.cpu().tolist()
        per_run: dict[int, list[float]] = {}
        per_run_hits: dict[int, list[float]] = {}
        position = 0
        for runs, _, _ in pending:
            for run in runs:
                per_run.setdefault(id(run), []).append(losses[position])
                per_run_hits.setdefault(id(run), []).append(accuracies[position])
                position += 1
        pending.clear()
        ended = []
        for run in self.active:
            rows, run.pending = run.pending, []
            mine = per_run.get(id(run), [])
            hits = per_run_hits.get(id(run), [])
            if run.trainer.status != Status.RUNNING or not rows:
                continue
            trainer = run.trainer
            lr = trainer.optimizer.param_groups[0]["lr"]
            if not trainer.record_losses(rows, mine[: len(rows)], hits[: len(rows)], lr):
                ended.append(run)
        return ended

    def leave(self, ended: list[PackRun]) -> None:
        """Runs that ended (diverged) leave the stacks, keeping the state they had when they
        ended, and are saved with their summaries."""
        if not ended:
            return
        self.regroup(
            [r for r in self.active if r not in ended], skip=tuple(r.trainer for r in ended)
        )
        for run in ended:
            self.finish(run)

    def regroup(self, runs: list[PackRun], skip: tuple[Trainer, ...] = ()) -> None:
        """New stacks for a new set of runs (every run's state first back in its own module,
        but for those in `skip`)."""
        for stack in self.stacks:
            stack.write_back(skip=skip)
        self.active = runs
        self.stacks = stacks_of([r.trainer for r in runs]) if runs else []

    def runs_of(self, stack: Stack) -> list[PackRun]:
        by_trainer = {id(r.trainer): r for r in self.active}
        return [by_trainer[id(t)] for t in stack.trainers]

    def stack_of(self, run: PackRun) -> Stack:
        return next(s for s in self.stacks if any(t is run.trainer for t in s.trainers))

    def save_active(self) -> None:
        for stack in self.stacks:
            stack.write_back()
        for run in self.active:
            with self.about(run):
                run.trainer.save()

    # -----------------------------------------------------------------------------------------
    # endings

    def finish(self, run: PackRun) -> None:
        """Save an ended run (completed or diverged) and write its summary."""
        trainer = run.trainer
        with self.about(run):
            trainer.save()
            run.summary = trainer.summary(trainer.status)
            write_summary(run.summary, run.run_dir)
            trainer.log_end(run.summary)
            trainer.logger.close()
            log.info("%s: %s after %d steps", run.run_dir, trainer.status, trainer.step)

    def fail(self, run: PackRun, error: BaseException) -> None:
        """A run that raised: failed in its folder, as a run trained alone."""
        run.error = error
        reason = (
            str(error) if isinstance(error, VarexpError) else f"{type(error).__name__}: {error}"
        )
        with self.about(run):
            if isinstance(error, VarexpError):
                log.error("run %s failed: %s", run.run_dir, reason)
            else:
                log.error("run %s failed: %s", run.run_dir, reason, exc_info=error)
            run.summary = failed_summary(reason)
            if run.trainer is not None:
                run.trainer.fail(reason)
                run.summary = read_summary(run.run_dir) or run.summary
                run.trainer.logger.close()
            else:
                try:
                    write_summary(run.summary, run.run_dir)
                except OSError as err:
                    log.error("could not write %s: %s", summary_path(run.run_dir), err)

    def fail_unfinished(self, error: BaseException) -> None:
        """The shared training raised (out of memory, a full disk): every run not yet ended."""
        for run in self.runs:
            if run.summary is None:
                self.fail(run, error)


def train_pack(
    runs: list[PackRun], about: RunContext = _no_context, verbose: bool = True
) -> list[dict]:
    """Train the runs together (each continuing from its checkpoint, `saved`); returns each
    run's summary (also in its summary.json). Ctrl-C or SIGTERM stop it at the next step with
    every running run's checkpoint (PackInterrupted)."""
    pack = Pack(runs, about, verbose)
    if verbose:
        log.info(
            "pack of %d runs on %s: %s x %d steps of batch %d, one forward and backward "
            "pass per step for all of them",
            len(runs),
            pack.device,
            runs[0].cfg.dataset.name,
            runs[0].cfg.train.steps,
            runs[0].cfg.train.batch_size,
        )
    pack.start()
    try:
        with StopRequests() as stop:
            pack.train(stop)
    except Stopped:
        raise
    except torch.OutOfMemoryError as err:
        pack.fail_unfinished(
            VarexpError(
                f"out of memory at step {pack.step} in a pack of {len(pack.active)} runs "
                f"({str(err).splitlines()[0]}); lower sweep.pack or train.batch_size"
            )
        )
    except OSError as err:
        if results.disk_full(err):
            pack.fail_unfinished(
                VarexpError(
                    f"disk full while writing {err.filename} at step {pack.step}; the runs' "
                    "checkpoints and the rows up to them are intact: free space, then run the "
                    "same command"
                )
            )
        else:
            pack.fail_unfinished(err)
    except Exception as err:
        pack.fail_unfinished(err)
    return [run.summary if run.summary is not None else failed_summary() for run in runs]
