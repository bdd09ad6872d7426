"""The options of each architecture (config group `arch`; built by varexp.models)."""

from __future__ import annotations

from dataclasses import dataclass

from varexp.schema import choice, flag, integer, number, option

# the activation functions by name (their torch and numpy forms: varexp.activations)
ACTIVATION_NAMES = ("relu", "linear", "tanh", "leaky_relu", "gelu", "silu", "relu6", "sin")
NORMS = ("none", "batchnorm")  # batchnorm: BatchNorm before every nonlinearity (paper Sec. 4)
ZOO_NORMS = ("default", "none")  # default: as the library builds the model
# How the fan of the 2x2 stride-2 up-convolutions is counted when an init draws their weights
# (varexp.inits.law_fans; the paper does not say): "in", the C_in inputs each output sums over
# (the variance-preserving count), or "torch", torch.nn.init's count for a transposed conv,
# C_out * 2 * 2 = 2 C_in here, which halves the weight variance of every up-convolution.
UPCONV_FANS = ("in", "torch")


@dataclass
class MLPArch:
    """The paper's Eq. 1 network: `depth` layers of `width` units (inputs flattened; a linear
    readout `fc` for classification data)."""

    name: str = choice("mlp", ("mlp",))
    width: int = integer(1000)
    depth: int = integer(50)
    activation: str = choice("relu", ACTIVATION_NAMES)
    norm: str = choice("none", NORMS)
    bias: bool = flag(False)  # every layer has one already: nothing to add


@dataclass
class AllCNNCArch:
    """ALL-CNN-C (Springenberg et al. 2014) as in the paper (Sec. 3.3): nine ReLU convs, global
    average pooling, one linear output layer; reflection padding."""

    name: str = choice("allcnnc", ("allcnnc",))
    channels: float = number(1.0)  # multiplier: 1.0 = the paper's widths (96, 192)
    activation: str = choice("relu", ACTIVATION_NAMES)
    norm: str = choice("none", NORMS)
    dropout: float = number(0.0, minimum=0.0, below=1.0)  # after the input and each stride-2 conv
    bias: bool = flag(False)  # every layer has one already: nothing to add


@dataclass
class UNetArch:
    """UNet (Ronneberger et al. 2015) as in the paper (Sec. 3.3): 23 convs, 4 max-pools, skip
    concatenations; reflection padding keeps the output at the input's size."""

    name: str = choice("unet", ("unet",))
    channels: float = number(1.0)  # multiplier: 1.0 = level widths 64, 128, 256, 512, 1024
    activation: str = choice("relu", ACTIVATION_NAMES)
    norm: str = choice("none", NORMS)
    out_channels: int = option(
        1, kind="choice", choices=(1, 2), text="choose 1 (membrane logit) or 2 (two classes)"
    )
    upconv_fan: str = choice("in", UPCONV_FANS)
    bias: bool = flag(False)  # every layer has one already: nothing to add


@dataclass
class TorchvisionArch:
    """A torchvision classification model, randomly initialized (no pretrained weights)."""

    name: str = choice("torchvision", ("torchvision",))
    model: str = "resnet18"  # any name in torchvision.models.list_models(torchvision.models)
    norm: str = choice("default", ZOO_NORMS)
    activation: str = choice("relu", ACTIVATION_NAMES)  # the gain of init=kaiming's weights
    bias: bool = flag(False)  # zero biases for layers without (for init=scale+bias)


@dataclass
class TimmArch:
    """A timm model (pip install timm), randomly initialized."""

    name: str = choice("timm", ("timm",))
    model: str = "resnet18"  # any name in timm.list_models()
    norm: str = choice("default", ZOO_NORMS)
    activation: str = choice("relu", ACTIVATION_NAMES)
    bias: bool = flag(False)


ARCHS: dict[str, type] = {
    "mlp": MLPArch,
    "allcnnc": AllCNNCArch,
    "unet": UNetArch,
    "torchvision": TorchvisionArch,
    "timm": TimmArch,
}
