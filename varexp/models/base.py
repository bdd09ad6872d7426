"""The interface every architecture shares: an ordered list of named weight layers.

Each weight layer l is a `Unit`: u^l = norm(weight(x^{l-1})) is the pre-activation the paper's
statistics are about, x^l = act(u^l) the activation. Stats, inits and gradient probes work
through `weight_layers(model)` and forward hooks on the units, never through per-architecture
code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


@dataclass(frozen=True)
class WeightLayer:
    index: int  # l = 1..L in forward order
    name: str
    unit: Unit

    @property
    def module(self) -> nn.Module:
        return self.unit.layer


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The model's weight layers in forward order (models register units in that order)."""
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, Unit)]
    if not units:
        raise ValueError(
            f"{type(model).__name__} has no weight layers (Linear, Conv2d, ConvTranspose2d)"
        )
    return [WeightLayer(i, name, unit) for i, (name, unit) in enumerate(units, start=1)]


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
