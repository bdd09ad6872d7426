"""The optimizers of the paper's training runs (Sec. 5.2), each with its options (config group
`optim`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from varexp.options.optim import OPTIMIZERS, SGD, Adam
from varexp.schema import spec_from

__all__ = ["OPTIMIZERS", "SGD", "Adam", "make_optimizer"]


def make_optimizer(params: Iterable, optim: object) -> torch.optim.Optimizer:
    """The optimizer `optim` (a spec, the `optim` config node or a mapping) describes."""
    spec = spec_from(optim, OPTIMIZERS, "optim")
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum)
    return torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps)
