"""The architectures, built from the Hydra `arch` group by `build_model`: the paper's mlp,
allcnnc and unet (weight layers as Units in forward order, varexp.models.base), and the models
users have, torchvision and timm (varexp.models.zoo)."""

from __future__ import annotations

import math
from numbers import Integral

from torch import nn

from varexp.errors import ConfigError, bad_value
from varexp.models import allcnnc, unet, zoo
from varexp.models.allcnnc import AllCNNC
from varexp.models.base import add_biases
from varexp.models.mlp import MLP
from varexp.models.unet import UNet
from varexp.options.arch import ARCHS, AllCNNCArch, MLPArch, UNetArch
from varexp.schema import spec_from

__all__ = ["ARCHS", "AllCNNC", "AllCNNCArch", "MLP", "MLPArch", "UNet", "UNetArch", "build_model"]


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
    if a.name == "mlp":
        outputs = _classes(num_classes, None)
        return MLP(math.prod(shape), a.width, a.depth, a.activation, a.norm, outputs)
    if len(shape) != 3:
        raise ConfigError(
            f"input shape {shape} is not allowed for arch={a.name}; "
            "it needs images (channels, height, width)"
        )
    if a.name in ("torchvision", "timm"):
        return zoo.build(a, shape, _classes(num_classes, 10))
    if a.name == "allcnnc":
        if min(shape[1:]) < allcnnc.MIN_SIZE:
            raise ConfigError(
                f"input of {shape[1]}x{shape[2]} pixels is not allowed for arch=allcnnc; "
                f"height and width must be at least {allcnnc.MIN_SIZE}"
            )
        return AllCNNC(
            shape[0], _classes(num_classes, 10), a.channels, a.activation, a.norm, a.dropout
        )
    unet.check_size(shape[1], shape[2])
    return UNet(shape[0], a.out_channels, a.channels, a.activation, a.norm, a.upconv_fan)


def _classes(num_classes: int | None, default: int | None) -> int | None:
    if num_classes is None:
        return default
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise bad_value("num_classes", num_classes, "must be an integer >= 1 or None")
    return int(num_classes)
