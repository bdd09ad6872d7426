"""The interface every architecture shares: an ordered list of named weight layers.

In varexp's models each weight layer l is a `Unit`: u^l = norm(weight(x^{l-1})) is the
pre-activation the paper's statistics are about, x^l = act(u^l) the activation. Any other
PyTorch model works too: its Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d modules are its
weight layers, u^l their outputs (before whatever normalization or nonlinearity the model applies
next). Stats, inits and gradient probes work through `weight_layers(model)` and forward hooks,
never through per-architecture code; `not_measured` names the weights they cannot reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

WEIGHT_TYPES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
WEIGHT_KINDS = "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d"


class Unit(nn.Module):
    """One weight layer with its optional normalization and nonlinearity."""

    def __init__(
        self, layer: nn.Module, norm: nn.Module | None = None, act: nn.Module | None = None
    ):
        super().__init__()
        if not isinstance(layer, WEIGHT_TYPES):
            raise TypeError(f"Unit needs a weight layer ({WEIGHT_KINDS}), got {type(layer)}")
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
        """The weight layer (one of WEIGHT_TYPES)."""
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
    or in a model without Units every module of WEIGHT_TYPES in registration order
    (`in_forward_order` sorts them by a forward pass)."""
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, Unit)]
    if not units:
        units = [
            (name or type(m).__name__, m)
            for name, m in model.named_modules()
            if isinstance(m, WEIGHT_TYPES)
        ]
    if not units:
        raise ValueError(f"{type(model).__name__} has no weight layers ({WEIGHT_KINDS})")
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


@dataclass(frozen=True)
class Unreached:
    """Weights that varexp did not measure or initialize: a module holding a parameter of two or
    more dims (a weight, not a bias or a normalization's scale) that is not a weight layer
    reached by the forward pass."""

    name: str  # as in model.named_modules()
    kind: str  # its type, or what kept it out
    parameters: int  # of its own (biases included), not counting those a reached layer shares


def unreached(model: nn.Module, reached: Iterable[nn.Module]) -> list[Unreached]:
    """Every module of `model` with weights that is not one of the `reached` weight layers:
    recurrent layers, embeddings, attention's packed projections, a module's own parameters used
    in functional calls (F.linear(x, self.weight)) or standing alone (a ViT's class token), and
    weight layers whose weights are used without calling them (nn.MultiheadAttention's
    out_proj)."""
    reached = list(reached)
    covered = {id(p) for m in reached for p in m.parameters()}
    mine = {id(m) for m in reached}
    out = []
    for name, module in model.named_modules():
        if id(module) in mine:
            continue
        own = [p for p in module.parameters(recurse=False) if id(p) not in covered]
        if not any(p.dim() >= 2 for p in own):
            continue
        covered.update(id(p) for p in own)
        if isinstance(module, WEIGHT_TYPES + UNREACHED_LAYERS):
            called = "" if isinstance(module, UNREACHED_LAYERS) else " used without calling it"
            out.append(
                Unreached(
                    name or type(module).__name__,
                    type(module).__name__ + called,
                    sum(p.numel() for p in own),
                )
            )
            continue
        # a module's own tensors, used in functional calls (F.linear(x, self.weight)) or alone
        for key, p in module.named_parameters(recurse=False):
            if p.dim() >= 2:
                out.append(
                    Unreached(
                        f"{name}.{key}" if name else key, "parameter used directly", p.numel()
                    )
                )
    return out


# layers with weights that varexp's statistics and inits do not cover (named as such)
UNREACHED_LAYERS = (
    nn.RNNBase,
    nn.RNNCellBase,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.MultiheadAttention,
    nn.Bilinear,
)


def unreached_warning(model: nn.Module, items: list[Unreached], what: str) -> str | None:
    """One line naming `items` (a few per kind) and their share of the model's parameters, or
    None when there are none; `what` says what was not done ("measured", "initialized")."""
    if not items:
        return None
    total = sum(p.numel() for p in model.parameters())
    share = sum(i.parameters for i in items)
    kinds: dict[str, list[str]] = {}
    for item in items:
        kinds.setdefault(item.kind, []).append(item.name)
    parts = []
    for kind, names in kinds.items():
        shown = ", ".join(names[:2]) + (f", ... ({len(names) - 2} more)" if len(names) > 2 else "")
        if kind == "parameter used directly" and len(names) > 1:
            kind = "parameters used directly"
        parts.append(f"{len(names)} {kind} ({shown})")
    return (
        f"not {what}: {'; '.join(parts)}: {share:,} of {total:,} parameters "
        f"({100 * share / max(total, 1):.1f}%); varexp covers {WEIGHT_KINDS} layers called "
        "as modules"
    )


def add_biases(model: nn.Module) -> list[nn.Module]:
    """Give every weight layer without a bias a zero bias (one per output feature or channel),
    so that scale+bias can centre it (paper Eq. 14); returns the layers that got one. The
    outputs do not change; a model whose layers all have biases is left as it is."""
    added = []
    for wl in weight_layers(model):
        layer = wl.module
        if layer.bias is None:
            channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            weight = layer.weight
            layer.bias = nn.Parameter(
                torch.zeros(channels, dtype=weight.dtype, device=weight.device),
                requires_grad=weight.requires_grad,
            )
            added.append(layer)
    return added


def norm_layer(kind: str, channels: int, dims: int) -> nn.Module | None:
    """BatchNorm before the nonlinearity (paper Sec. 4) or nothing."""
    if kind == "none":
        return None
    if kind == "batchnorm":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    raise ValueError(f"arch.norm={kind!r} is not allowed; choose none or batchnorm")


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm with its running statistics, no dropout) without gradients, as a
    trained model is used on held-out data; every module's mode comes back as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


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
