"""varexp on any PyTorch model: `varexp.probe(model, x)` measures what the paper measures, per
weight layer (every Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d, found by hooks, in the order a
forward pass runs them), without changing the model's code or state. Weights it cannot measure
(recurrent layers, embeddings, attention's packed projections, functional calls) are named in one
warning with their share of the model's parameters.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import Tensor, nn

from varexp.errors import VarexpError
from varexp.models.base import unreached, unreached_warning
from varexp.results.tables import probe_frame
from varexp.stats import network_stats
from varexp.threads import free_cores_now, using_threads


def probe(
    model: nn.Module,
    x: Tensor,
    grad: bool = True,
    seed: int = 0,
    threads: int | str | None = "auto",
) -> pd.DataFrame:
    """probe.csv's table for `model` on the batch x (T samples on the model's device): per
    weight layer in forward order its layer number, name (as in model.named_modules()), type,
    features and the sample statistics of its output u (varexp.stats: sample mean^2, sample
    variance, their ratio, second moment and effective samples per feature, and per channel
    pooled over positions, the convention of BatchNorm and of a conv's bias), and with `grad`
    grad_sq, the mean square of dL/du for the random linear loss L = w . output (paper Fig. 3,
    w drawn from `seed`). One forward and one backward pass.

    BatchNorm uses batch statistics and dropout is off for the pass (paper Sec. 4); the model's
    modes, buffers and parameters are left as they were, also when it fails. A layer the model
    runs more than once per pass (shared weights) is measured on its first call, with a warning
    naming it. Weights not measured (varexp.models.base.unreached) are named in one warning and
    listed in the table's attrs["not_measured"] (name, kind, parameters). An input the
    statistics cannot use (not a tensor, another dtype or device than the model's, no batch
    dimension, T < 2, NaN or inf), or a forward pass that fails on it, is a one-line
    VarexpError.

    On the CPU the pass runs on `threads` torch threads, as `varexp probe threads=...` does:
    "auto" takes the cores other processes leave free at the call, at most
    torch.get_num_threads() (torch's threads wait for each other after every operation, so one
    that loses its core to another process slows them all); a number sets the count; None keeps
    torch's setting. Torch's setting is restored afterwards.
    """
    check_input(model, x, "x", same_device=True)
    thread_count = call_threads(threads, x.device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    try:
        with restored_on_error(model), using_threads(thread_count):
            rows, _ = network_stats(model, x, grad=grad, generator=generator)
    except ValueError as err:  # no weight layers
        raise VarexpError(str(err)) from None
    except RuntimeError as err:  # e.g. x's shape is not the model's
        raise forward_failed(model, x, "x", err) from None
    if not rows:
        raise VarexpError(f"{type(model).__name__}: no weight layer ran in a forward pass on x")
    for row in rows:
        if row["calls"] > 1:
            warnings.warn(
                f"layer {row['name']} ran {row['calls']} times in one forward pass; "
                "its statistics and grad_sq are those of its first call",
                stacklevel=2,
            )
    left = unreached(model, [r["module"] for r in rows])
    message = unreached_warning(model, left, "measured")
    if message is not None:
        warnings.warn(message, stacklevel=2)
    frame = probe_frame(0, rows).drop(columns="network")
    frame.insert(2, "type", [type(row["module"]).__name__ for row in rows])
    frame.attrs["not_measured"] = [dataclasses.asdict(item) for item in left]
    return frame


def check_input(model: nn.Module, x: object, what: str, same_device: bool = False) -> None:
    """One line (VarexpError) for an input batch the statistics cannot use: not a tensor, not
    numbers, floating point of another dtype than the model's parameters, (with `same_device`)
    on another device, without a batch dimension, fewer than T = 2 samples (the sample
    variance needs two), or NaN or inf values. Integer inputs (token ids) pass."""
    if not isinstance(x, Tensor):
        raise VarexpError(f"{what} must be a torch.Tensor of T samples; got {type(x).__name__}")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if x.dtype == torch.bool or x.is_complex():
        raise VarexpError(f"{what} has dtype {x.dtype}; it must hold real numbers")
    if x.is_floating_point() and param is not None and x.dtype != param.dtype:
        raise VarexpError(
            f"{what} has dtype {x.dtype}, the model's parameters {param.dtype}; "
            f"pass {what}.to({param.dtype})"
        )
    if same_device and param is not None and x.device != param.device:
        raise VarexpError(
            f"{what} is on {x.device}, the model on {param.device}; pass "
            f"{what}.to('{param.device}')"
        )
    if x.dim() < 2:
        raise VarexpError(
            f"{what} has shape {tuple(x.shape)}; it needs the samples first: (T, ...) with T >= 2"
        )
    if x.shape[0] < 2:
        raise VarexpError(
            f"{what} has {x.shape[0]} sample(s) (shape {tuple(x.shape)}); the "
            "sample variance needs T >= 2"
        )
    if x.is_floating_point():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise VarexpError(
                f"{what} has {bad} NaN or inf value(s) of {x.numel()}; the "
                "statistics need finite inputs"
            )


def forward_failed(model: nn.Module, x: Tensor, what: str, error: Exception) -> VarexpError:
    """The one line for a forward pass of the model that raised on x (its shape, mostly)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return VarexpError(
        f"{type(model).__name__} failed on {what} of shape {tuple(x.shape)}: {reason}"
    )


@contextmanager
def restored_on_error(model: nn.Module) -> Iterator[None]:
    """Whatever the block raises, the model's parameters and buffers are put back as they
    were before it (a copy of its state dict is kept meanwhile), and its modes."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    except BaseException:
        model.load_state_dict(saved)
        for module, training in modes.items():
            module.training = training
        raise


def call_threads(threads: int | str | None, device: torch.device) -> int:
    """torch's intra-op threads for one call: see probe."""
    if threads is None or device.type != "cpu":
        return torch.get_num_threads()
    if threads == "auto":
        return min(torch.get_num_threads(), free_cores_now())
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise VarexpError(
            f"threads={threads!r} is not allowed; must be auto, None or an integer >= 1"
        )
    return threads
