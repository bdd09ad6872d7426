"""Whether a probe or a training run fits in memory, decided before it starts.

The model is built on PyTorch's meta device (shapes only, no memory), which counts its
parameters exactly, and the elements of every layer's output follow from its layers' shapes:
walked through varexp's own models as their forward passes go (no tensor is made, and PyTorch's
meta kernels, whose first call imports torch._dynamo, a third of a run's start-up, never run),
or for another model (torchvision's, timm's) counted by a forward pass on a meta batch. The
estimate is float32 bytes of what stays alive at the peak of a step. Every key that sizes an
allocation counts: the batch, the fixed batch a run measures its layers on, the minibatches a
data-dependent init fits on, the generated training data, and a probe's samples on either of
its paths. A run that cannot fit is refused in one line with the estimate, its largest part and
the memory there, instead of dying mid-run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cache

import torch
from omegaconf import DictConfig, OmegaConf

from varexp.errors import VarexpError
from varexp.models import build_model, unet
from varexp.optim import optimizer as optimizer_record

FLOAT = 4  # bytes
USABLE = 0.9  # of the free memory; the rest for the interpreter, libraries and the data


@cache
def _count(
    arch_json: str, input_shape: tuple[int, ...], classes: int | None, batch: int
) -> tuple[int, int]:
    arch = json.loads(arch_json)
    with torch.device("meta"):
        model = build_model(arch, input_shape, classes)
    params = sum(p.numel() for p in model.parameters())
    walked = layer_outputs(model, (batch, *input_shape))
    return params, walked if walked is not None else _forward_outputs(model, batch, input_shape)


def _forward_outputs(model: torch.nn.Module, batch: int, input_shape: tuple[int, ...]) -> int:
    """Elements of every leaf module's output, from a forward pass on a meta batch."""
    outputs = [0]

    def count(module, inputs, output) -> None:
        outputs[0] += output.numel() if isinstance(output, torch.Tensor) else 0

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.device("meta"):
            model(torch.empty(batch, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return outputs[0]


def layer_outputs(model: torch.nn.Module, shape: tuple[int, ...]) -> int | None:
    """Elements of every leaf module's output for an input batch of `shape`, from the shapes of
    varexp's models' layers, as their forward passes call them (an MLP's and ALL-CNN-C's leaves
    one after the other; UNet's levels, pools and up-levels); None for another model."""
    from varexp.models import MLP, AllCNNC, UNet

    if isinstance(model, MLP | AllCNNC):
        return _chain(leaves(model), shape)[1]
    if not isinstance(model, UNet):
        return None
    total = 0
    for level in [getattr(model, f"down{i}") for i in range(1, unet.LEVELS + 1)]:
        shape, elements = _chain([*leaves(level), model.pool], shape)
        total += elements
    for part in [model.bottom, *(getattr(model, f"up{i}") for i in range(1, unet.LEVELS + 1))]:
        shape, elements = _chain(leaves(part), shape)
        total += elements
    return total + _chain(leaves(model.out), shape)[1]


def leaves(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


def _chain(modules: list[torch.nn.Module], shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """The shape after `modules` applied one after the other, and the elements of each one's
    output summed."""
    total = 0
    for module in modules:
        shape = output_shape(module, shape)
        total += math.prod(shape)
    return shape, total


def output_shape(module: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of one leaf module of varexp's models for an input of `shape`."""
    nn = torch.nn
    if isinstance(module, nn.Flatten):
        return (shape[0], math.prod(shape[1:]))
    if isinstance(module, nn.Linear):
        return (*shape[:-1], module.out_features)
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.MaxPool2d):
        return (shape[0], getattr(module, "out_channels", shape[1]), *_spatial(module, shape[2:]))
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return (*shape[:2], *((size, size) if isinstance(size, int) else size))
    return shape  # normalizations, activations, dropout, identities


def _spatial(module: torch.nn.Module, sizes: tuple[int, ...]) -> tuple[int, ...]:
    def pair(value: object) -> tuple[int, int]:
        return (value, value) if isinstance(value, int) else tuple(value)

    kernel, stride = pair(module.kernel_size), pair(module.stride or module.kernel_size)
    padding, dilation = pair(module.padding), pair(module.dilation)
    if isinstance(module, torch.nn.ConvTranspose2d):
        extra = pair(module.output_padding)
        sides = zip(sizes, kernel, stride, padding, dilation, extra, strict=True)
        return tuple((n - 1) * s - 2 * p + d * (k - 1) + e + 1 for n, k, s, p, d, e in sides)
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(sizes, kernel, stride, padding, dilation, strict=True)
    )


def count(
    arch: DictConfig, input_shape: tuple[int, ...], classes: int | None, batch: int
) -> tuple[int, int]:
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


def refuse_if_too_big(
    needed: float, device: torch.device, what: str, parts: str, advice: str
) -> None:
    free = available(device)
    if needed > USABLE * free:
        raise VarexpError(
            f"{what} needs about {gigabytes(needed)} ({parts}), more than the "
            f"{gigabytes(free)} free on {device}; {advice}"
        )


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


def sampled_network_bytes(
    width: int, depth: int, samples: int, features: int, grad: bool, neurons: bool
) -> float:
    """One network of the exact sampled MLP path (varexp.sampled): with gradients every layer's
    output (width x T) and a T x T float64 matrix kept for the backward pass, plus the arrays of
    one layer in flight, and u at layers 1 and L for neurons.csv."""
    kept = depth * (width * samples + 2 * samples**2) if grad else 0
    kept += 2 * width * samples if neurons else 0
    return FLOAT * (kept + SAMPLED_WORKING * max(width, features) * samples)


def train_bytes(params: int, outputs: int, optimizer: str) -> float:
    """A training step holds the weights, their gradients and the optimizer's state (its record's
    states per parameter: SGD's momentum; Adam's two moments), and the layer outputs of the
    batch with their gradients."""
    states = optimizer_record(optimizer).states
    return FLOAT * (params * (2 + states) + 2 * outputs)


# the keys that size each generated dataset
DATA_KEYS = {
    "gaussian": "a smaller dataset.size",
    "shapes": "a smaller dataset.train_size or dataset.test_size",
    "membranes": "fewer dataset.slices or a smaller dataset.size",
}


def data_bytes(dataset: DictConfig, input_shape: tuple[int, ...], task: str) -> float:
    """Bytes of the generated training data held in memory, both splits: gaussian's float32
    inputs and targets, shapes' uint8 images, membranes' uint8 slices and maps (with one
    slice's float32 work while they are made). The real datasets have fixed sizes (CIFAR10
    0.18 GB, ISBI 2012 0.01 GB) and are not counted."""
    name = dataset.get("name")
    if name == "gaussian":
        target = FLOAT * math.prod(input_shape[1:]) if task == "segmentation" else 8
        return 2 * int(dataset.size) * (FLOAT * math.prod(input_shape) + target)
    if name == "shapes":
        return (int(dataset.train_size) + int(dataset.test_size)) * (3 * 32 * 32 + 8)
    if name == "membranes":
        pixels = int(dataset.size) ** 2
        return int(dataset.slices) * pixels * 2 + 16 * FLOAT * pixels
    return 0.0


@dataclass(frozen=True)
class Part:
    """What a part of a run holds, its bytes, and the key that sizes it."""

    about: str
    bytes: float
    advice: str


def refuse_parts(
    resident: list[Part], transient: list[Part], device: torch.device, what: str
) -> None:
    """Refuse (one line) when what stays alive all run long plus the largest of what comes and
    goes does not fit on the device: the estimate, its parts, the memory there and how to make
    the largest part smaller."""
    peak = max(transient, key=lambda part: part.bytes, default=None)
    parts = [p for p in [*resident, peak] if p is not None and p.bytes > 0]
    needed = sum(p.bytes for p in parts)
    free = available(device)
    if needed > USABLE * free:
        parts.sort(key=lambda part: -part.bytes)
        shown = "; ".join(
            f"{p.about}: {gigabytes(p.bytes)}" for p in parts if p.bytes >= 0.01 * needed
        )
        largest = parts[0]
        raise VarexpError(
            f"{what} needs about {gigabytes(needed)} ({shown}), more than the "
            f"{gigabytes(free)} free on {device}; {largest.advice}"
        )
