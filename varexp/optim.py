"""The optimizers of the paper's training runs (Sec. 5.2), each with its options (config group
`optim`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from varexp.errors import bad_value
from varexp.schema import choice, number, option, spec_from, store


def _betas(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(
            not isinstance(b, bool) and isinstance(b, int | float) and 0 <= b < 1 for b in value
        )
    )


@dataclass
class SGD:
    """SGD with momentum 0.9 (the paper's lr grid: 3e-4, 1e-3, 3e-3, 1e-2)."""

    name: str = choice("sgd", ("sgd",))
    lr: float = number(0.003)
    momentum: float = number(0.9, minimum=0.0, below=1.0)


@dataclass
class Adam:
    """Adam with betas 0.9, 0.999 and eps 1e-8 (the paper's lr grid: 3e-5, 1e-4, 3e-4, 1e-3)."""

    name: str = choice("adam", ("adam",))
    lr: float = number(0.001)
    betas: list[float] = option(
        factory=lambda: [0.9, 0.999], test=_betas, text="must be a list of two numbers in [0, 1)"
    )
    eps: float = number(1e-8)


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
OPTIM_SPECS: dict[str, type] = {}  # name -> option dataclass (what schema.spec_from reads)


def register(record: Optimizer) -> Optimizer:
    """Make optim=<record.name> known to make_optimizer, the memory checks, figures and Hydra."""
    OPTIMIZERS[record.name] = record
    OPTIM_SPECS[record.name] = record.spec
    store("optim", record.name, record.spec)
    return record


register(
    Optimizer(
        "sgd",
        SGD,
        lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum),
        states=1,  # the momentum buffer
        title="SGD",
        lr_grid=(3e-4, 1e-3, 3e-3, 1e-2),
    )
)
register(
    Optimizer(
        "adam",
        Adam,
        lambda params, s: torch.optim.Adam(params, lr=s.lr, betas=tuple(s.betas), eps=s.eps),
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


def make_optimizer(params: Iterable, optim: object) -> torch.optim.Optimizer:
    """The optimizer `optim` (a spec, the `optim` config node or a mapping) describes."""
    spec = spec_from(optim, OPTIM_SPECS, "optim")
    return OPTIMIZERS[spec.name].build(params, spec)
