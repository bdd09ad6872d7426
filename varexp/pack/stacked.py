"""Runs of one model structure trained as one model: every parameter and buffer stacked along a
leading run dimension (torch.func.stack_module_state), one vmapped forward pass of the shared
batch through the model's own code (torch.func.functional_call), one backward pass, and each
run's own optimizer (SGD with momentum or Adam, its own learning rate) applied to its slice of
the stacks with the arithmetic of torch.optim's single-tensor implementations.

The runs stay separate numbers: every kernel of the vmapped pass (batched matrix products,
grouped convolutions, per-run BatchNorm statistics) computes each run from its own slice, so a
run whose weights become non-finite leaves the others' numbers alone. Each run's own module
(`Trainer.model`) and optimizer (`Trainer.optimizer`) are the truth between packed stretches:
`write_back` copies the stacks into them, so that its statistics, checkpoint and files come
from the solo run's code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from varexp.train import Trainer, accuracy, loss_input


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim keeps Adam's step count in."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def optimizer_key(trainer: Trainer) -> tuple:
    """Runs with equal keys share their optimizer's arithmetic (all but the learning rate)."""
    group = trainer.optimizer.param_groups[0]
    if isinstance(trainer.optimizer, torch.optim.Adam):
        return ("adam", tuple(group["betas"]), group["eps"])
    if isinstance(trainer.optimizer, torch.optim.SGD):
        return ("sgd", group["momentum"])
    raise TypeError(f"cannot pack runs of {type(trainer.optimizer).__name__}")


@dataclass
class Slice:
    """A contiguous range of the stack's runs that share an optimizer's arithmetic."""

    start: int
    stop: int
    key: tuple
    lr: list[float]  # per run
    steps: list[float]  # optimizer steps each run has taken
    state: dict[str, list[Tensor]]  # per parameter (stack order): its (runs, ...) state
    lr_views: list[Tensor] | None = None  # per parameter: the lrs, shaped to broadcast


class Stack:
    """Runs of one structure (the same arch config), each with its own weights, buffers,
    optimizer and learning rate, as stacked tensors."""

    def __init__(self, trainers: list[Trainer]):
        # runs of one optimizer arithmetic next to each other: each updates a slice in place
        self.trainers = sorted(trainers, key=optimizer_key)
        models = [t.model for t in self.trainers]
        self.params, self.buffers = stack_module_state(models)
        self.names = list(self.params)
        # the model's own code runs on the stacked weights: a copy without storage
        self.base = copy.deepcopy(models[0]).to("meta")
        self.slices: list[Slice] = []
        for start, trainer in enumerate(self.trainers):
            key = optimizer_key(trainer)
            if not self.slices or self.slices[-1].key != key:
                self.slices.append(Slice(start, start, key, [], [], {}))
            part = self.slices[-1]
            part.stop = start + 1
            part.lr.append(float(trainer.optimizer.param_groups[0]["lr"]))
        for part in self.slices:
            self._read_state(part)
        weight_names = {id(p): n for n, p in models[0].named_parameters()}
        # per trainer, the stack name of each measured layer's weight (for weight_grad_rms)
        self.layer_weights = [weight_names[id(wl.module.weight)] for wl in self.trainers[0].layers]

    def __len__(self) -> int:
        return len(self.trainers)

    # -----------------------------------------------------------------------------------------
    # optimizer state: torch.optim's per-parameter dicts <-> stacked slices

    def _read_state(self, part: Slice) -> None:
        kind = part.key[0]
        names = ("momentum_buffer",) if kind == "sgd" else ("exp_avg", "exp_avg_sq")
        if kind == "sgd" and part.key[1] == 0:
            names = ()  # SGD without momentum keeps no state
        part.state = {n: [] for n in names}
        for trainer in self.trainers[part.start : part.stop]:
            params = trainer.optimizer.param_groups[0]["params"]
            first = trainer.optimizer.state.get(params[0], {}) if params else {}
            # Adam counts its steps; SGD's state exists once the run has taken a step
            steps = first.get("step", trainer.step if first else 0)
            part.steps.append(float(steps))
        for n in names:
            for i in range(len(self.names)):
                rows = []
                for trainer in self.trainers[part.start : part.stop]:
                    p = trainer.optimizer.param_groups[0]["params"][i]
                    saved = trainer.optimizer.state.get(p, {}).get(n)
                    # a run that has not stepped yet: zeros give torch.optim's first step
                    # exactly (SGD's buffer = grad, Adam's moments from 0)
                    rows.append(saved.detach() if saved is not None else torch.zeros_like(p))
                part.state[n].append(torch.stack(rows))
        self._check_order()

    def _check_order(self) -> None:
        """The optimizer's parameters are the model's, in named_parameters order."""
        for trainer in self.trainers:
            mine = [id(p) for p in trainer.model.parameters()]
            if mine != [id(p) for p in trainer.optimizer.param_groups[0]["params"]]:
                raise RuntimeError("the optimizer's parameters are not the model's in order")

    def write_back(self, optimizer: bool = True, skip: tuple[Trainer, ...] = ()) -> None:
        """Copy each run's slice of the stacks into its own module (and optimizer state),
        but for the runs in `skip`."""
        with torch.no_grad():
            for r, trainer in enumerate(self.trainers):
                if any(trainer is t for t in skip):
                    continue
                for name, p in trainer.model.named_parameters():
                    p.copy_(self.params[name][r])
                for name, b in trainer.model.named_buffers():
                    b.copy_(self.buffers[name][r])
            if not optimizer:
                return
            for part in self.slices:
                for k, trainer in enumerate(self.trainers[part.start : part.stop]):
                    if not any(trainer is t for t in skip):
                        self._write_optimizer(part, k, trainer)

    def _write_optimizer(self, part: Slice, k: int, trainer: Trainer) -> None:
        steps = part.steps[k]
        if steps == 0:
            return  # torch.optim has no state before the first step
        params = trainer.optimizer.param_groups[0]["params"]
        for i, p in enumerate(params):
            state = {n: values[i][k].clone() for n, values in part.state.items()}
            if part.key[0] == "adam":
                state = {"step": torch.tensor(steps, dtype=scalar_dtype()), **state}
            if state:
                trainer.optimizer.state[p] = state

    # -----------------------------------------------------------------------------------------
    # a step

    def losses(
        self,
        x: Tensor,
        y: Tensor,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        amp: AbstractContextManager,
    ) -> tuple[Tensor, Tensor]:
        """Each run's loss on the batch (x, y), as a (runs,) tensor that autograd can follow
        into the stacked weights, and its accuracy (varexp.train.accuracy), (runs,) float64."""

        def one(params: dict, buffers: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            with amp:  # (varexp's packable models tie no weights: no search for ties)
                out = functional_call(self.base, (params, buffers), (x,), tie_weights=False)
            return loss_fn(loss_input(out), y), accuracy(out.detach(), y)

        return vmap(one, in_dims=(0, 0, None, None))(self.params, self.buffers, x, y)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def grad_rms(self, run: int) -> Tensor:
        """(L,) RMS of the weight gradient of each measured layer of run `run`."""
        return torch.stack(
            [
                self.params[n].grad[run].detach().double().square().mean().sqrt()
                for n in self.layer_weights
            ]
        )

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step of every run, each on its slice (torch's foreach kernels over the
        parameters, per-run numbers broadcast over each run's slice)."""
        for part in self.slices:
            params = [self.params[n][part.start : part.stop] for n in self.names]
            grads = [self.params[n].grad[part.start : part.stop] for n in self.names]
            if part.key[0] == "sgd":
                self._sgd(part, params, grads)
            else:
                self._adam(part, params, grads)
            part.steps = [s + 1 for s in part.steps]

    def _per_run(self, values: list[float], params: list[Tensor]) -> list[Tensor]:
        """Per parameter, a (runs, 1, ..., 1) view of the per-run numbers."""
        t = torch.tensor(values, dtype=params[0].dtype, device=params[0].device)
        shapes: dict[int, Tensor] = {}
        return [shapes.setdefault(p.dim(), t.view(-1, *([1] * (p.dim() - 1)))) for p in params]

    def _sgd(self, part: Slice, params: list[Tensor], grads: list[Tensor]) -> None:
        # torch.optim.SGD: buf = momentum * buf + grad (grad itself at the first step, from a
        # zero buffer); p -= lr * buf
        if part.key[1] != 0:
            bufs = part.state["momentum_buffer"]
            torch._foreach_mul_(bufs, part.key[1])
            torch._foreach_add_(bufs, grads)
            grads = bufs
        if part.lr_views is None:
            part.lr_views = self._per_run(part.lr, params)
        torch._foreach_sub_(params, torch._foreach_mul(grads, part.lr_views))

    def _adam(self, part: Slice, params: list[Tensor], grads: list[Tensor]) -> None:
        # torch.optim.Adam (no weight decay, no amsgrad), each run with its step's bias
        # corrections: p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        _, (beta1, beta2), eps = part.key
        steps = [s + 1 for s in part.steps]
        step_size = self._per_run(
            [lr / (1 - beta1**s) for lr, s in zip(part.lr, steps, strict=True)], params
        )
        correction = self._per_run([(1 - beta2**s) ** 0.5 for s in steps], params)
        exp_avg, exp_avg_sq = part.state["exp_avg"], part.state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, correction)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(exp_avg, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(params, update)


def structure_key(trainer: Trainer) -> str:
    """Runs with equal keys have the same modules and shapes (the same arch config and data)."""
    shapes = [(n, tuple(t.shape), str(t.dtype)) for n, t in trainer.model.state_dict().items()]
    return repr((sorted(trainer.cfg.arch.items()), shapes, trainer.cfg.train.channels_last))


def stacks_of(trainers: list[Trainer]) -> list[Stack]:
    """The trainers grouped by structure, one Stack each (in order of first appearance)."""
    groups: dict[str, list[Trainer]] = {}
    for trainer in trainers:
        groups.setdefault(structure_key(trainer), []).append(trainer)
    return [Stack(group) for group in groups.values()]
