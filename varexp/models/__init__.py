"""The architectures (mlp, allcnnc, unet), built from the Hydra `arch` group by `build_model`.
All share the interface of varexp.models.base: weight layers as Units in forward order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral

from omegaconf import DictConfig, OmegaConf
from torch import nn

from varexp import config
from varexp.activations import ACTIVATIONS
from varexp.errors import ConfigError, bad_value
from varexp.models import allcnnc, unet
from varexp.models.allcnnc import AllCNNC
from varexp.models.mlp import MLP
from varexp.models.unet import UNet

__all__ = ["ARCHS", "AllCNNC", "MLP", "UNet", "build_model"]

# Every option of each arch with its default (None: required).
ARCHS: dict[str, dict[str, object]] = {
    "mlp": {"width": None, "depth": None, "activation": "relu", "norm": "none"},
    "allcnnc": {"channels": 1.0, "activation": "relu", "norm": "none", "dropout": 0.0},
    "unet": {"channels": 1.0, "activation": "relu", "norm": "none", "out_channels": 1},
}
NORMS = ("none", "batchnorm")


def build_model(
    arch: DictConfig | Mapping,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    init_name: str,
) -> nn.Module:
    """The model `arch` describes, for inputs of `input_shape` (one sample, no batch dim).

    mlp flattens its input and has a readout `fc` to `num_classes` outputs only when that is not
    None (None: the paper's probe MLP, every layer ReLU); allcnnc has `num_classes` outputs (10 if
    None); unet has `arch.out_channels` (1 = membrane logit, 2 = two classes). BatchNorm goes
    before every nonlinearity when `arch.norm` or `init_name` is batchnorm (paper Sec. 4).
    Raises VarexpError (ConfigError for an option), before building, on a bad option or shape.
    """
    cfg = _options(arch)
    a = cfg.arch
    norm = "batchnorm" if init_name == "batchnorm" or a.norm == "batchnorm" else "none"
    shape = tuple(int(n) for n in input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"input shape {shape} is not allowed; every size must be >= 1")
    if a.name == "mlp":
        outputs = _classes(num_classes, None)
        return MLP(math.prod(shape), a.width, a.depth, a.activation, norm, outputs)
    if len(shape) != 3:
        raise ConfigError(
            f"input shape {shape} is not allowed for arch={a.name}; "
            "it needs images (channels, height, width)"
        )
    if a.name == "allcnnc":
        if min(shape[1:]) < allcnnc.MIN_SIZE:
            raise ConfigError(
                f"input of {shape[1]}x{shape[2]} pixels is not allowed for arch=allcnnc; "
                f"height and width must be at least {allcnnc.MIN_SIZE}"
            )
        return AllCNNC(
            shape[0], _classes(num_classes, 10), a.channels, a.activation, norm, a.dropout
        )
    unet.check_size(shape[1], shape[2])
    return UNet(shape[0], a.out_channels, a.channels, a.activation, norm)


def _options(arch: DictConfig | Mapping) -> DictConfig:
    """`arch` over its defaults, every option checked (one line naming the key)."""
    given = OmegaConf.to_container(arch, resolve=True) if isinstance(arch, DictConfig) else arch
    name = given.get("name")
    if name not in ARCHS:
        raise bad_value("arch.name", name, "choose one of " + ", ".join(ARCHS))
    options = ARCHS[name]
    for key in given:
        if key != "name" and key not in options:
            raise ConfigError(
                f"arch.{key} is not an option of arch={name}; options: " + ", ".join(options)
            )
    cfg = OmegaConf.create({"arch": {"name": name, **options, **given}})
    if name == "mlp":
        config.positive_int(cfg, "arch.width")
        config.positive_int(cfg, "arch.depth")
    else:
        config.positive_float(cfg, "arch.channels")
    config.one_of(cfg, "arch.activation", tuple(ACTIVATIONS))
    config.one_of(cfg, "arch.norm", NORMS)
    if name == "allcnnc":
        p = cfg.arch.dropout
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
            raise bad_value("arch.dropout", p, "must be a number in [0, 1)")
    if name == "unet":
        out = cfg.arch.out_channels
        if isinstance(out, bool) or out not in (1, 2):
            raise bad_value(
                "arch.out_channels", out, "choose 1 (membrane logit) or 2 (two classes)"
            )
    return cfg


def _classes(num_classes: int | None, default: int | None) -> int | None:
    if num_classes is None:
        return default
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise bad_value("num_classes", num_classes, "must be an integer >= 1 or None")
    return int(num_classes)
