"""Whether a probe or a training run fits in memory, decided before it starts.

The model is built on PyTorch's meta device (shapes only, no memory) and run once on a meta
batch, which counts its parameters and the elements of every layer's output exactly; the
estimate is float32 bytes of what stays alive at the peak of a step. A run that cannot fit is
refused in one line with the estimate and the memory there, instead of dying mid-run.
"""

from __future__ import annotations

import json
import os
from functools import cache

import torch
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.models import build_model

FLOAT = 4  # bytes
USABLE = 0.9  # of the free memory; the rest for the interpreter, libraries and the data


@cache
def _count(arch_json: str, input_shape: tuple[int, ...], classes: int | None,
           batch: int) -> tuple[int, int]:
    arch = json.loads(arch_json)
    with torch.device("meta"):
        model = build_model(arch, input_shape, classes)
        outputs = [0]

        def count(module, inputs, output) -> None:
            outputs[0] += output.numel() if isinstance(output, torch.Tensor) else 0

        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        model(torch.empty(batch, *input_shape))
        for handle in handles:
            handle.remove()
    return sum(p.numel() for p in model.parameters()), outputs[0]


def count(arch: DictConfig, input_shape: tuple[int, ...], classes: int | None,
          batch: int) -> tuple[int, int]:
    """(parameters, elements of all layer outputs for one batch) of the model `arch` builds."""
    arch_json = json.dumps(OmegaConf.to_container(arch, resolve=True), sort_keys=True)
    return _count(arch_json, tuple(input_shape), classes, batch)


def available(device: torch.device) -> int:
    """Free bytes on the device: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def amount(n: float) -> str:
    """A count as people say it: 31.0M, 125G."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def refuse_if_too_big(needed: float, device: torch.device, what: str, parts: str,
                      advice: str) -> None:
    free = available(device)
    if needed > USABLE * free:
        raise VarexpError(f"{what} needs about {gigabytes(needed)} ({parts}), more than the "
                          f"{gigabytes(free)} free on {device}; {advice}")


def probe_bytes(params: int, outputs: int) -> float:
    """A dense probe holds one network at a time: its weights, and every layer's output of the
    T inputs (kept for the backward pass of grad_sq, which adds as much again)."""
    return FLOAT * (params + 2 * outputs)


# Arrays of width x T floats that one network of the sampled path holds beyond the layer outputs
# it keeps for the backward pass: its workspace (the draws, the layer input, the statistics'
# squares, the backward signal and its update: 5; the layer input in float64 for its Gram
# matrix: 2) and, measured (bench/bench_probe.py --memory), about as much again in small arrays
# and the allocator's slack
SAMPLED_WORKING = 16


def sampled_network_bytes(width: int, depth: int, samples: int, features: int, grad: bool,
                          neurons: bool) -> float:
    """One network of the exact sampled MLP path (varexp.sampled): with gradients every layer's
    output (width x T) and a T x T float64 matrix kept for the backward pass, plus the arrays of
    one layer in flight, and u at layers 1 and L for neurons.csv."""
    kept = depth * (width * samples + 2 * samples**2) if grad else 0
    kept += 2 * width * samples if neurons else 0
    return FLOAT * (kept + SAMPLED_WORKING * max(width, features) * samples)


def train_bytes(params: int, outputs: int, optimizer: str) -> float:
    """A training step holds the weights, their gradients and the optimizer's state (SGD's
    momentum; Adam's two moments), and the layer outputs of the batch with their gradients."""
    states = 2 if optimizer == "adam" else 1
    return FLOAT * (params * (2 + states) + 2 * outputs)
