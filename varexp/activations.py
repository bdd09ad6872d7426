"""Activation functions, each in a torch and a numpy form, with the weight gain that preserves
the second moment of a unit Gaussian through it (He et al. 2015; paper Eq. 2 for ReLU)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from varexp.errors import bad_value
from varexp.quadrature import gaussian_expectation

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    name: str
    module: Callable[[], nn.Module]
    numpy: Callable[[np.ndarray], np.ndarray]
    fixed_gain: float | None = None  # torch.nn.init.calculate_gain's value, where it has one
    kinks: tuple[float, ...] = ()  # points where f is not smooth; quadrature splits there

    @cached_property
    def gain(self) -> float:
        """Weight std multiplier so that E[f(z)^2] * gain^2 = 1 for z ~ N(0, 1)."""
        if self.fixed_gain is not None:
            return self.fixed_gain
        return 1.0 / math.sqrt(gaussian_expectation(lambda z: self.numpy(z) ** 2, self.kinks))


class Sin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


def _gelu(x: np.ndarray) -> np.ndarray:
    # x Phi(x) in float64 through torch's exact (erf) GELU, the function nn.GELU applies:
    # one vectorised pass, where math.erf element by element is 100x slower
    return torch.nn.functional.gelu(torch.as_tensor(x, dtype=torch.float64)).numpy()


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", nn.ReLU, lambda x: np.maximum(x, 0.0), math.sqrt(2.0), (0.0,)),
        Activation("linear", nn.Identity, lambda x: x, 1.0),
        Activation("tanh", nn.Tanh, np.tanh, 5.0 / 3.0),
        Activation(
            "leaky_relu",
            lambda: nn.LeakyReLU(LEAKY_SLOPE),
            lambda x: np.where(x >= 0, x, LEAKY_SLOPE * x),
            math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2)),
            (0.0,),
        ),
        Activation("gelu", nn.GELU, _gelu),
        Activation("silu", nn.SiLU, lambda x: x * 0.5 * (1.0 + np.tanh(x / 2.0))),
        Activation("relu6", nn.ReLU6, lambda x: np.clip(x, 0.0, 6.0), kinks=(0.0, 6.0)),
        Activation("sin", Sin, np.sin),
    ]
}


def get_activation(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise bad_value("arch.activation", name, "choose one of " + ", ".join(ACTIVATIONS))
    return ACTIVATIONS[name]
