"""The architectures, built from the Hydra `arch` group by `build_model`: the paper's mlp,
allcnnc and unet (weight layers as Units in forward order, varexp.models.base), and the models
users have, torchvision and timm (varexp.models.zoo). Each is one `Architecture` record in
ARCHITECTURES, which the data, the figures, the memory checks and the sweep's packing read: a
new model is its module and one `register(Architecture(...))`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

from torch import nn

from varexp.errors import ConfigError, bad_value
from varexp.models import allcnnc, unet, zoo
from varexp.models.allcnnc import AllCNNC
from varexp.models.base import add_biases
from varexp.models.mlp import MLP
from varexp.models.unet import UNet
from varexp.options.arch import (
    ARCHS,
    AllCNNCArch,
    MLPArch,
    TimmArch,
    TorchvisionArch,
    UNetArch,
)
from varexp.schema import register_option, spec_from

__all__ = [
    "ARCHITECTURES",
    "ARCHS",
    "AllCNNC",
    "AllCNNCArch",
    "Architecture",
    "MLP",
    "MLPArch",
    "UNet",
    "UNetArch",
    "architecture",
    "build_model",
    "register",
]


@dataclass(frozen=True)
class Architecture:
    """Everything varexp knows about one architecture (config group `arch`), read by every
    module that needs it, as varexp.inits.INITS is for inits: a new model is its module and one
    record handed to `register`."""

    name: str
    spec: type  # the option dataclass of arch=<name>
    # (checked spec, input shape of one sample, classes or None) -> the model; raise ConfigError
    # on a shape it cannot take
    build: Callable[[object, tuple[int, ...], int | None], nn.Module]
    title: str  # in figures and plans
    task: str = "classification"  # the data it is built for: classification | segmentation
    images: bool = True  # needs inputs of (channels, height, width); False: flattens any shape
    # its natural input when dataset=gaussian leaves dataset.shape null
    natural_shape: Callable[[object], tuple[int, ...]] = lambda spec: (3, 32, 32)
    # its size, as the run's first line says it (e.g. 1000x50); "" for none
    size: Callable[[object], str] = lambda spec: ""
    # the sweep can train its runs stacked as one vmapped model (varexp.pack)
    packable: bool = False
    # sweep.pack=auto on the CPU packs runs whose training step costs at most this many
    # multiply-adds; None: it packs none, for the reason `cpu_unpacked` gives
    cpu_pack_macs: float | None = None
    cpu_unpacked: str = "not measured packed on the CPU"


ARCHITECTURES: dict[str, Architecture] = {}


def register(record: Architecture) -> Architecture:
    """Make arch=<record.name> known to build_model, the data, the figures and Hydra."""
    return register_option("arch", record, ARCHITECTURES, ARCHS)


def architecture(name: str) -> Architecture:
    """The record of arch=<name>; one line naming the known ones for another name."""
    if name not in ARCHITECTURES:
        raise bad_value("arch.name", name, "choose one of " + ", ".join(ARCHITECTURES))
    return ARCHITECTURES[name]


def _mlp(a: MLPArch, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    outputs = _classes(num_classes, None)
    return MLP(math.prod(shape), a.width, a.depth, a.activation, a.norm, outputs)


def _allcnnc(a: AllCNNCArch, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    if min(shape[1:]) < allcnnc.MIN_SIZE:
        raise ConfigError(
            f"input of {shape[1]}x{shape[2]} pixels is not allowed for arch=allcnnc; "
            f"height and width must be at least {allcnnc.MIN_SIZE}"
        )
    return AllCNNC(shape[0], _classes(num_classes, 10), a.channels, a.activation, a.norm, a.dropout)


def _unet(a: UNetArch, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    unet.check_size(shape[1], shape[2])
    return UNet(shape[0], a.out_channels, a.channels, a.activation, a.norm, a.upconv_fan)


def _zoo(a: object, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    return zoo.build(a, shape, _classes(num_classes, 10))


def _channels(a: object) -> str:
    return f"x{a.channels:g} channels"


def _model(a: object) -> str:
    return str(a.model)


register(
    Architecture(
        "mlp",
        MLPArch,
        _mlp,
        "MLP",
        images=False,
        size=lambda a: f"{a.width}x{a.depth}",
        natural_shape=lambda a: (int(a.width),),  # the paper's Eq. 1 network of equal widths
        packable=True,
        # about half the step size where the stacked step stopped beating a loop over the
        # models (bench/README.md: about 20M)
        cpu_pack_macs=10e6,
    )
)
register(
    Architecture(
        "allcnnc",
        AllCNNCArch,
        _allcnnc,
        "ALL-CNN-C",
        size=_channels,
        packable=True,
        cpu_unpacked="a batched convolution is no faster: 0.84x at the default size",
    )
)
register(
    Architecture(
        "unet",
        UNetArch,
        _unet,
        "UNet",
        task="segmentation",
        size=_channels,
        natural_shape=lambda a: (1, 64, 64),
        packable=True,
        cpu_unpacked="the quick Fig. 4 ran 0.57-0.60x as fast packed",
    )
)
register(Architecture("torchvision", TorchvisionArch, _zoo, "torchvision", size=_model))
register(Architecture("timm", TimmArch, _zoo, "timm", size=_model))


def build_model(
    arch: object,
    input_shape: tuple[int, ...],
    num_classes: int | None,
) -> nn.Module:
    """The model `arch` (a spec, the `arch` config node, or a mapping with `name`) describes,
    for inputs of `input_shape` (one sample, no batch dim).

    mlp flattens its input and has a readout `fc` to `num_classes` outputs only when that is not
    None (None: the paper's probe MLP, every layer ReLU); allcnnc has `num_classes` outputs (10 if
    None); unet has `arch.out_channels` (1 = membrane logit, 2 = two classes). BatchNorm goes
    before every nonlinearity with `arch.norm=batchnorm` (paper Sec. 4; init=batchnorm sets it).
    Raises VarexpError (ConfigError for an option), before building, on a bad option or shape.
    """
    a = spec_from(arch, ARCHS, "arch")
    shape = tuple(int(n) for n in input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"input shape {shape} is not allowed; every size must be >= 1")
    model = _build(a, shape, num_classes)
    if a.bias:
        add_biases(model)
    return model


def _build(a: object, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    record = architecture(a.name)
    if record.images and len(shape) != 3:
        raise ConfigError(
            f"input shape {shape} is not allowed for arch={a.name}; "
            "it needs images (channels, height, width)"
        )
    return record.build(a, shape, num_classes)


def _classes(num_classes: int | None, default: int | None) -> int | None:
    if num_classes is None:
        return default
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise bad_value("num_classes", num_classes, "must be an integer >= 1 or None")
    return int(num_classes)
