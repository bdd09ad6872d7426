"""UNet (Ronneberger et al. 2015) with reflection padding so that the output has the input's
size (paper Sec. 3.3): 23 conv layers, 4 max-pools, skip concatenations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from varexp.activations import get_activation
from varexp.errors import VarexpError
from varexp.models.base import Unit, norm_layer
from varexp.options.arch import UPCONV_FANS

LEVELS = 4
BASE = 64
MIN_SIZE = 2 * 2**LEVELS  # the bottom level's 3x3 convs need a map of at least 2x2 to reflect


def check_size(height: int, width: int) -> None:
    if height % 2**LEVELS or width % 2**LEVELS or min(height, width) < MIN_SIZE:
        raise VarexpError(
            f"UNet input of {height}x{width} pixels is not allowed; height and width must be "
            f"multiples of {2**LEVELS} (4 2x2 max-pools) and at least {MIN_SIZE}"
        )


def conv3x3(n_in: int, n_out: int, activation: str, norm: str) -> Unit:
    conv = nn.Conv2d(n_in, n_out, 3, padding=1, padding_mode="reflect")
    return Unit(conv, norm_layer(norm, n_out, 2), get_activation(activation).module())


class Level(nn.Module):
    """Two 3x3 convs, each Conv2d -> norm -> activation."""

    def __init__(self, n_in: int, n_out: int, activation: str, norm: str):
        super().__init__()
        self.conv1 = conv3x3(n_in, n_out, activation, norm)
        self.conv2 = conv3x3(n_out, n_out, activation, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class UpLevel(nn.Module):
    """2x2 up-convolution halving the channels (no nonlinearity after it, as in the paper),
    concatenation with the skip from the matching down level, then two 3x3 convs."""

    def __init__(self, n_in: int, n_out: int, activation: str, norm: str, upconv_fan: str = "in"):
        super().__init__()
        upconv = nn.ConvTranspose2d(n_in, n_out, 2, stride=2)
        upconv.fan = upconv_fan  # read by varexp.inits.law_fans
        self.upconv = Unit(upconv)
        self.conv1 = conv3x3(2 * n_out, n_out, activation, norm)
        self.conv2 = conv3x3(n_out, n_out, activation, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv2(self.conv1(torch.cat([skip, self.upconv(x)], dim=1)))


class UNet(nn.Module):
    """down1..down4, bottom, up1..up4 (up1 the deepest), 1x1 readout `out`; level widths
    64, 128, 256, 512, 1024 times `channels` (at least 1); `upconv_fan` is one of UPCONV_FANS."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: float = 1.0,
        activation: str = "relu",
        norm: str = "none",
        upconv_fan: str = "in",
    ):
        super().__init__()
        if upconv_fan not in UPCONV_FANS:
            raise ValueError(f"upconv_fan={upconv_fan!r}; choose one of {', '.join(UPCONV_FANS)}")
        widths = [max(1, round(BASE * 2**i * channels)) for i in range(LEVELS + 1)]
        n_in = in_channels
        for i in range(LEVELS):
            self.add_module(f"down{i + 1}", Level(n_in, widths[i], activation, norm))
            n_in = widths[i]
        self.pool = nn.MaxPool2d(2)
        self.bottom = Level(n_in, widths[LEVELS], activation, norm)
        for i in range(LEVELS):
            n_out = widths[LEVELS - 1 - i]
            self.add_module(
                f"up{i + 1}", UpLevel(widths[LEVELS - i], n_out, activation, norm, upconv_fan)
            )
        self.out = Unit(nn.Conv2d(widths[0], out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        check_size(x.shape[-2], x.shape[-1])
        skips = []
        for i in range(1, LEVELS + 1):
            x = getattr(self, f"down{i}")(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for i in range(1, LEVELS + 1):
            x = getattr(self, f"up{i}")(x, skips.pop())
        return self.out(x)
