"""The options of each optimizer (config group `optim`; built by varexp.optim)."""

from __future__ import annotations

from dataclasses import dataclass

from varexp.schema import choice, number, option


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


# name -> option dataclass (what schema.spec_from reads); each optimizer's facts: varexp.optim
OPTIM_SPECS: dict[str, type] = {"sgd": SGD, "adam": Adam}
