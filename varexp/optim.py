"""The optimizers of the paper's training runs (Sec. 5.2), each with its options (config group
`optim`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from varexp.errors import bad_value
from varexp.options.optim import OPTIM_SPECS, SGD, Adam
from varexp.schema import register_option, spec_from

if TYPE_CHECKING:  # the records are read by the torch-free options (sweep.lr_grid's default)
    import torch


@dataclass(frozen=True)
class Optimizer:
    """Everything varexp knows about one optimizer (config group `optim`), read by every module
    that needs it, as varexp.inits.INITS is for inits."""

    name: str
    spec: type  # the option dataclass of optim=<name>
    build: Callable[[Iterable, object], torch.optim.Optimizer]  # (params, checked spec)
    states: int  # tensors of state it keeps per parameter (memory.train_bytes)
    title: str  # in figures
    lr_grid: tuple[float, ...]  # the paper's learning rates (Sec. 5.2): sweep.lr_grid's default


OPTIMIZERS: dict[str, Optimizer] = {}


def _torch():
    import torch

    return torch


def register(record: Optimizer) -> Optimizer:
    """Make optim=<record.name> known to make_optimizer, the memory checks, figures and Hydra."""
    return register_option("optim", record, OPTIMIZERS, OPTIM_SPECS)


register(
    Optimizer(
        "sgd",
        SGD,
        lambda params, s: _torch().optim.SGD(params, lr=s.lr, momentum=s.momentum),
        states=1,  # the momentum buffer
        title="SGD",
        lr_grid=(3e-4, 1e-3, 3e-3, 1e-2),
    )
)
register(
    Optimizer(
        "adam",
        Adam,
        lambda params, s: _torch().optim.Adam(params, lr=s.lr, betas=tuple(s.betas), eps=s.eps),
        states=2,  # the two moments
        title="Adam",
        lr_grid=(3e-5, 1e-4, 3e-4, 1e-3),
    )
)


def optimizer(name: str) -> Optimizer:
    """The record of optim=<name>; one line naming the known ones for another name."""
    if name not in OPTIMIZERS:
        raise bad_value("optim.name", name, "choose one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[name]


__all__ = ["OPTIMIZERS", "SGD", "Adam", "Optimizer", "make_optimizer", "optimizer", "register"]


def make_optimizer(params: Iterable, optim: object) -> torch.optim.Optimizer:
    """The optimizer `optim` (a spec, the `optim` config node or a mapping) describes."""
    spec = spec_from(optim, OPTIM_SPECS, "optim")
    return OPTIMIZERS[spec.name].build(params, spec)
