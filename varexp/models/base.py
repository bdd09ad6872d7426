"""The interface every architecture shares: an ordered list of named weight layers.

In varexp's models each weight layer l is a `Unit`: u^l = norm(weight(x^{l-1})) is the
pre-activation the paper's statistics are about, x^l = act(u^l) the activation. Any other
PyTorch model works too: its Linear, Conv2d and ConvTranspose2d modules are its weight layers,
u^l their outputs (before whatever normalization or nonlinearity the model applies next). Stats,
inits and gradient probes work through `weight_layers(model)` and forward hooks, never through
per-architecture code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

WEIGHT_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


class Unit(nn.Module):
    """One weight layer with its optional normalization and nonlinearity."""

    def __init__(
        self, layer: nn.Module, norm: nn.Module | None = None, act: nn.Module | None = None
    ):
        super().__init__()
        if not isinstance(layer, WEIGHT_TYPES):
            raise TypeError(f"Unit needs a Linear, Conv2d or ConvTranspose2d, got {type(layer)}")
        self.layer = layer
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.has_act = act is not None

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.layer(x)))


_NO_NORM = nn.Identity()


@dataclass(frozen=True)
class WeightLayer:
    index: int  # l = 1..L in forward order
    name: str
    unit: nn.Module  # a Unit, or in another model the weight layer itself

    @property
    def module(self) -> nn.Module:
        """The Linear, Conv2d or ConvTranspose2d."""
        return self.unit.layer if isinstance(self.unit, Unit) else self.unit

    @property
    def norm(self) -> nn.Module:
        """The normalization between the weights and u^l (an Identity where there is none)."""
        return self.unit.norm if isinstance(self.unit, Unit) else _NO_NORM

    @property
    def measured(self) -> nn.Module:
        """The module whose output is u^l."""
        return self.unit.norm if isinstance(self.unit, Unit) else self.unit

    @property
    def has_act(self) -> bool:
        return isinstance(self.unit, Unit) and self.unit.has_act


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The model's weight layers: its Units (varexp's models register them in forward order),
    or in a model without Units every Linear, Conv2d and ConvTranspose2d in registration order
    (`in_forward_order` sorts them by a forward pass)."""
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, Unit)]
    if not units:
        units = [(name or type(m).__name__, m) for name, m in model.named_modules()
                 if isinstance(m, WEIGHT_TYPES)]
    if not units:
        raise ValueError(
            f"{type(model).__name__} has no weight layers (Linear, Conv2d, ConvTranspose2d)"
        )
    return [WeightLayer(i, name, unit) for i, (name, unit) in enumerate(units, start=1)]


def in_forward_order(model: nn.Module, x: Tensor) -> tuple[list[WeightLayer], dict[str, int]]:
    """The weight layers in the order a forward pass on x first runs them (layers it never runs
    left out), numbered 1..L, and how often each ran where that is more than once."""
    layers = weight_layers(model)
    calls: dict[int, int] = {}
    order: list[WeightLayer] = []

    def hook(wl: WeightLayer):
        def record(*_: object) -> None:
            calls[wl.index] = calls.get(wl.index, 0) + 1
            if calls[wl.index] == 1:
                order.append(wl)

        return record

    handles = [wl.measured.register_forward_hook(hook(wl)) for wl in layers]
    try:
        with batch_statistics(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    reused = {wl.name: calls[wl.index] for wl in order if calls[wl.index] > 1}
    return [WeightLayer(i, wl.name, wl.unit) for i, wl in enumerate(order, start=1)], reused


def norm_layer(kind: str, channels: int, dims: int) -> nn.Module | None:
    """BatchNorm before the nonlinearity (paper Sec. 4) or nothing."""
    if kind == "none":
        return None
    if kind == "batchnorm":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    raise ValueError(f"arch.norm={kind!r} is not allowed; choose none or batchnorm")


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) except BatchNorm, which normalizes with the batch's statistics
    (paper Sec. 4); every module's mode and every buffer (the running statistics) come back as
    they were, so measuring or fitting leaves the model's state untouched."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.clone()) for b in model.buffers()]
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for b, saved in buffers:
            b.copy_(saved)
