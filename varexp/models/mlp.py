"""Fully connected ReLU network of the paper's Eq. 1: `depth` layers of equal `width`."""

from __future__ import annotations

from torch import Tensor, nn

from varexp.activations import get_activation
from varexp.models.base import Unit, norm_layer


class MLP(nn.Module):
    """`depth` hidden units layer1..layerL, each Linear -> norm -> activation; with `outputs`,
    a linear readout `fc` follows (no nonlinearity), so its pre-activation is the logits."""

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        activation: str = "relu",
        norm: str = "none",
        outputs: int | None = None,
    ):
        super().__init__()
        act = get_activation(activation)
        self.flatten = nn.Flatten()
        n_in = in_features
        for i in range(1, depth + 1):
            self.add_module(
                f"layer{i}", Unit(nn.Linear(n_in, width), norm_layer(norm, width, 1), act.module())
            )
            n_in = width
        if outputs is not None:
            self.fc = Unit(nn.Linear(n_in, outputs))

    def forward(self, x: Tensor) -> Tensor:
        for module in self.children():  # registered in forward order
            x = module(x)
        return x
