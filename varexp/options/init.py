"""The options of each init (config group `init`; the inits themselves: varexp.inits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from varexp.schema import choice, integer, number

MAX_GAIN = 1e3  # a weight std beyond this overflows float32 within a few layers


def gain_option(default: float | None) -> float | None:
    """The weight scale's gain; null = the activation's (sqrt 2 for ReLU)."""
    return number(default, maximum=MAX_GAIN, none=True)


@dataclass
class Kaiming:
    name: str = choice("kaiming", ("kaiming",))
    gain: float | None = gain_option(None)


@dataclass
class Xavier:
    name: str = choice("xavier", ("xavier",))
    gain: float | None = gain_option(1.0)  # torch's default


@dataclass
class Orthogonal:
    name: str = choice("orthogonal", ("orthogonal",))
    gain: float | None = gain_option(None)


@dataclass
class BatchNormInit:
    units: ClassVar[str] = "batchnorm"  # the paper's third setting (Sec. 4)
    name: str = choice("batchnorm", ("batchnorm",))
    gain: float | None = gain_option(None)


@dataclass
class Default:
    name: str = choice("default", ("default",))


@dataclass
class Scale:
    name: str = choice("scale", ("scale",))
    batches: int = integer(5)  # k minibatches the fit sees
    eps: float = number(1e-5)


@dataclass
class ScaleBias:
    name: str = choice("scale+bias", ("scale+bias",))
    batches: int = integer(5)
    eps: float = number(1e-5)


@dataclass
class LSUV:
    name: str = choice("lsuv", ("lsuv",))
    batches: int = integer(5)
    tol: float = number(0.1)  # on the std of the layer's output
    max_iters: int = integer(10)
    gain: float | None = gain_option(1.0)  # of the orthogonal weights before the rescaling
    eps: float = number(1e-5)  # W *= 1 / (std + eps) (the lsuv package uses 1e-8)


SPECS: dict[str, type] = {
    "kaiming": Kaiming,
    "xavier": Xavier,
    "orthogonal": Orthogonal,
    "batchnorm": BatchNormInit,
    "scale": Scale,
    "scale+bias": ScaleBias,
    "lsuv": LSUV,
    "default": Default,
}


def units_of(spec: type) -> str:
    """The units an init needs in the model (its config sets arch.norm): "none" for most,
    "batchnorm" for the paper's BatchNorm setting."""
    return getattr(spec, "units", "none")
