"""Fail-fast checks of a composed config: one line naming the key, the value and what is
allowed, before any work is done."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from varexp.activations import ACTIVATIONS
from varexp.errors import bad_value
from varexp.sampled import unsupported

ARCH_NORMS = ("none", "batchnorm")
MAX_SEED = 2**32 - 1  # numpy's global generator takes no larger seed
MAX_GAIN = 1e3  # init.gain: a weight std beyond this overflows float32 within a few layers
DEVICES = ("auto", "cpu", "cuda")


def get(cfg: DictConfig, key: str) -> object:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def positive_int(cfg: DictConfig, key: str, minimum: int = 1, maximum: int | None = None) -> int:
    value = get(cfg, key)
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        allowed = (f"must be an integer in {minimum}..{maximum}" if maximum is not None
                   else f"must be an integer >= {minimum}")
        raise bad_value(key, value, allowed)
    return value


def positive_float(cfg: DictConfig, key: str, allow_none: bool = False,
                   maximum: float | None = None) -> float | None:
    """A finite number > 0 (and <= maximum): inf and nan are never a setting."""
    value = get(cfg, key)
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value < math.inf or (maximum is not None and value > maximum)):
        allowed = ("must be a finite number > 0" if maximum is None
                   else f"must be a number in (0, {maximum:g}]")
        raise bad_value(key, value, allowed + (" or null" if allow_none else ""))
    return float(value)


def boolean(cfg: DictConfig, key: str) -> bool:
    value = get(cfg, key)
    if not isinstance(value, bool):
        raise bad_value(key, value, "must be true or false")
    return value


def one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    value = get(cfg, key)
    if value not in allowed:
        raise bad_value(key, value, "choose one of " + ", ".join(allowed))
    return value


def resolve_device(name: str) -> torch.device:
    """device=auto: CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_common(cfg: DictConfig) -> None:
    one_of(cfg, "device", DEVICES)
    if get(cfg, "device") == "cuda":
        if not torch.cuda.is_available():
            raise bad_value("device", "cuda", "no CUDA device is visible; use device=auto or cpu")
    threads = get(cfg, "threads")
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                              or threads < 1):
        raise bad_value("threads", threads, "must be auto or an integer >= 1")
    positive_int(cfg, "seed", minimum=0, maximum=MAX_SEED)
    if "overwrite" in cfg:
        boolean(cfg, "overwrite")


def check_arch(cfg: DictConfig) -> None:
    if get(cfg, "arch.name") == "mlp":
        positive_int(cfg, "arch.width")
        positive_int(cfg, "arch.depth")
        one_of(cfg, "arch.activation", tuple(ACTIVATIONS))
    else:
        positive_float(cfg, "arch.channels")
    one_of(cfg, "arch.norm", ARCH_NORMS)


def check_init(cfg: DictConfig) -> None:
    if "gain" in cfg.init:
        positive_float(cfg, "init.gain", allow_none=True, maximum=MAX_GAIN)
    if "batches" in cfg.init:
        positive_int(cfg, "init.batches")
    if "eps" in cfg.init:
        positive_float(cfg, "init.eps")
    if "tol" in cfg.init:
        positive_float(cfg, "init.tol")
        positive_int(cfg, "init.max_iters")


def check_theory(cfg: DictConfig) -> None:
    check_common(cfg)
    check_arch(cfg)
    check_init(cfg)
    positive_float(cfg, "theory.input_second_moment")
    positive_int(cfg, "theory.quadrature_points", minimum=2, maximum=1000)
    c = get(cfg, "theory.input_correlation")
    if isinstance(c, bool) or not isinstance(c, int | float) or not -1.0 <= c <= 1.0:
        raise bad_value("theory.input_correlation", c, "must be a number in [-1, 1]")


def check_probe(cfg: DictConfig) -> None:
    check_common(cfg)
    check_arch(cfg)
    check_init(cfg)
    positive_int(cfg, "probe.networks")
    positive_int(cfg, "probe.samples", minimum=2)
    positive_int(cfg, "probe.neurons", minimum=0)
    for key in ("probe.grad", "probe.progress"):
        boolean(cfg, key)
    if one_of(cfg, "probe.method", ("auto", "dense", "sampled")) == "sampled":

        reason = unsupported(cfg.arch, cfg.init)
        if reason is not None:
            raise bad_value("probe.method", "sampled", f"{reason}; use probe.method=auto or dense")
