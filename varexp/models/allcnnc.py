"""ALL-CNN-C (Springenberg et al. 2014) as the paper uses it (Sec. 3.3): nine ReLU conv layers,
global average pooling and one fully connected output layer, reflection padding."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from varexp.activations import get_activation
from varexp.models.base import Unit, norm_layer

# (out channels at multiplier 1, kernel, stride) of conv1..conv9; 3x3 conv 96 stride 2 and
# 3x3 conv 192 stride 2 replace the max-pools of the original Model C.
LAYERS = (
    (96, 3, 1), (96, 3, 1), (96, 3, 2),
    (192, 3, 1), (192, 3, 1), (192, 3, 2),
    (192, 3, 1), (192, 1, 1), (192, 1, 1),
)  # fmt: skip
MIN_SIZE = 5  # the 3x3 conv7 after two stride-2 layers needs a map of at least 2x2 to reflect


def scaled(channels: int, multiplier: float) -> int:
    return max(1, round(channels * multiplier))


class AllCNNC(nn.Sequential):
    """conv1..conv9 (Conv2d -> norm -> activation), global average pooling, readout `fc`.

    `dropout` > 0 adds dropout after the input and after each stride-2 layer, where the original
    has it (0.2 and 0.5 there); off by default, as the paper's init comparison is about the
    random network.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: float = 1.0,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ):
        act = get_activation(activation)
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        if dropout > 0:
            modules["drop0"] = nn.Dropout(dropout)
        n_in = in_channels
        for i, (width, k, stride) in enumerate(LAYERS, start=1):
            n_out = scaled(width, channels)
            conv = nn.Conv2d(n_in, n_out, k, stride, padding=k // 2, padding_mode="reflect")
            modules[f"conv{i}"] = Unit(conv, norm_layer(norm, n_out, 2), act.module())
            if stride > 1 and dropout > 0:
                modules[f"drop{i}"] = nn.Dropout(dropout)
            n_in = n_out
        modules["pool"] = nn.AdaptiveAvgPool2d(1)
        modules["flatten"] = nn.Flatten()
        modules["fc"] = Unit(nn.Linear(n_in, num_classes))
        super().__init__(modules)
