"""Weight initializations for any model built from Units (paper Sec. 2 and 5.1).

Every init works through `weight_layers(model)` and forward hooks, never through per-architecture
code, so it covers Linear, Conv2d and ConvTranspose2d layers in MLPs, ALL-CNN-C and UNet alike.
Biases start at 0 and BatchNorm units at weight 1, bias 0 with fresh running statistics.

- kaiming (He et al. 2015, paper Eq. 2): W ~ N(0, gain^2 / fan_in) in every weight layer, the
  first and the readout included; gain null = the activation's (sqrt 2 for ReLU).
- xavier (Glorot & Bengio 2010): W ~ N(0, gain^2 * 2 / (fan_in + fan_out)).
- orthogonal (Saxe et al. 2014): torch's orthogonal_ (weight flattened to (dim 0, rest)) * gain.
- batchnorm: kaiming weights in a model built with BatchNorm units (paper Sec. 4).
- scale (Eq. 13): W ~ N(0, 1), then W /= sqrt(sigma_B^2 + eps), sigma_B^2 the second moment of
  u^l over features and all samples of the k minibatches. Afterwards <u^2> = 1 on them.
- scale+bias (Eq. 14, then Eq. 13): b = -<u>, per feature of a Linear layer and per channel of
  a conv (mean over samples and positions: a conv has one bias per channel); then
  W, b /= sqrt(sigma^2 + eps), sigma^2 the second moment of the centred output pooled over
  channels, samples and positions (over features and samples for Linear layers: their mean
  sample variance). Afterwards, on the fitting batches, every feature's (channel's) mean is 0
  and the layer's average second moment is 1; a single (channel, position) of a conv keeps a
  nonzero sample mean (positions differ, e.g. at borders). In a unit with BatchNorm the fit
  cannot move u (BatchNorm undoes any shift and scale of W x + b): u keeps BatchNorm's
  per-channel mean 0 and variance 1 over samples and positions, so sigma^2 ~ 1.
- lsuv (Mishkin & Matas 2015): orthogonal weights (gain 1 unless init.gain), then per layer
  W *= 1 / (std + eps) until the std of the weight layer's output (torch.std over the whole
  tensor, the lsuv package's definition) is within init.tol of 1 or init.max_iters rescales.

The data-dependent inits need ONE forward pass over the k minibatches concatenated into one batch
of k*T samples (so peak memory is that of one such pass): a forward hook on each weight layer fits
that layer on the input it just received from the already-fitted prefix, whatever skips or
concatenations the model has, rewrites its parameters and hands the output they give on. LSUV
re-runs only the layer itself. BatchNorm uses batch statistics during the fit (other modules,
e.g. dropout, stay in eval mode); modes and running statistics are restored afterwards.
`InitReport.forward_passes` counts minibatch forward-pass equivalents by weight-layer MACs: k for
the pass plus the LSUV re-runs, where a from-scratch refit per layer needs k per layer.
`InitReport.layers` holds per layer index, name, type, fan_in, fan_out and, for scale and
scale+bias, second_moment_before, sigma2 (the fitted statistic), scale (the factor applied to W),
bias_abs_mean; for lsuv std_before, std, scale and iters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from varexp import config
from varexp.activations import ACTIVATIONS, get_activation
from varexp.errors import VarexpError, bad_value
from varexp.models.base import WeightLayer, batch_statistics, weight_layers

DATA_DEPENDENT = ("scale", "scale+bias", "lsuv")
INITS = ("kaiming", "xavier", "orthogonal", "batchnorm", *DATA_DEPENDENT)
# A layer is dead when its fitted statistic is below DEAD times its second moment (0 when all is
# 0): float32 rounding leaves ~1e-14 on an output constant over samples; live layers are near 1.
DEAD = 1e-12


@dataclass
class InitReport:
    forward_passes: float = 0.0  # minibatch forward-pass equivalents (weight-layer MACs)
    layers: list[dict] = field(default_factory=list)


def fans(layer: nn.Module) -> tuple[float, float]:
    """(fan_in, fan_out): how many inputs one output unit sums over, and how many outputs one
    input unit feeds, averaged over positions for strided convolutions.

    torch's _calculate_fan_in_and_fan_out swaps these for ConvTranspose2d (its weight is
    (in, out/groups, kh, kw)) and ignores stride: a stride-2 2x2 up-convolution sums each output
    over in_channels inputs, not out_channels * 4.
    """
    w = layer.weight
    if isinstance(layer, nn.Linear):
        return float(w.shape[1]), float(w.shape[0])
    taps = w.shape[2] * w.shape[3]
    stride = layer.stride[0] * layer.stride[1]
    per_group_in = layer.in_channels // layer.groups
    per_group_out = layer.out_channels // layer.groups
    if isinstance(layer, nn.ConvTranspose2d):
        return per_group_in * taps / stride, float(per_group_out * taps)
    return float(per_group_in * taps), per_group_out * taps / stride


def initialize(
    model: nn.Module,
    init: DictConfig | Mapping,
    activation: str = "relu",
    batches: Sequence[Tensor] | None = None,
) -> InitReport:
    """Initialize every weight layer of `model` in place as `init` (the Hydra init group) says.

    `batches` are the k input minibatches (init.batches of them are used) the data-dependent
    inits fit on. Raises VarexpError (model left as it was) on bad config, missing or too small
    batches, a layer that never runs or runs twice, or a dead layer (zero sample variance).
    """
    cfg = _check(init, activation)
    name = cfg.init.name
    try:
        layers = weight_layers(model)
    except ValueError as err:
        raise VarexpError(str(err)) from None
    if name == "batchnorm" and all(isinstance(wl.unit.norm, nn.Identity) for wl in layers):
        raise VarexpError(
            "init=batchnorm needs a model built with BatchNorm units (arch.norm=batchnorm)"
        )
    data = _check_batches(cfg, batches, layers) if name in DATA_DEPENDENT else None

    # a failed fit puts the model back as it was
    saved = {k: v.clone() for k, v in model.state_dict().items()} if data is not None else {}
    gain = cfg.init.get("gain", 1.0 if name == "lsuv" else None)
    if gain is None:
        gain = get_activation(activation).gain
    with torch.no_grad():
        for wl in layers:
            _draw(wl.module, name, gain)
            if hasattr(wl.unit.norm, "reset_parameters"):
                wl.unit.norm.reset_parameters()  # BatchNorm: weight 1, bias 0, fresh statistics
        if data is None:
            return InitReport(0.0, [_describe(wl) for wl in layers])
        try:
            return _fit(model, layers, name, data, cfg.init)
        except VarexpError:
            model.load_state_dict(saved)
            raise


def _check(init: DictConfig | Mapping, activation: str) -> DictConfig:
    cfg = OmegaConf.create(
        {
            "init": OmegaConf.to_container(init, resolve=True)
            if isinstance(init, DictConfig)
            else dict(init)
        }
    )
    config.one_of(cfg, "init.name", INITS)
    if activation not in ACTIVATIONS:
        raise bad_value("arch.activation", activation, "choose one of " + ", ".join(ACTIVATIONS))
    if "gain" in cfg.init:
        config.positive_float(cfg, "init.gain", allow_none=True)
    for key, default in (("batches", 5), ("max_iters", 10)):
        cfg.init.setdefault(key, default)
        config.positive_int(cfg, f"init.{key}")
    for key, default in (("eps", 1e-5), ("tol", 0.1)):
        cfg.init.setdefault(key, default)
        config.positive_float(cfg, f"init.{key}")
    return cfg


def _check_batches(
    cfg: DictConfig, batches: Sequence[Tensor] | None, layers: list[WeightLayer]
) -> Tensor:
    """The k minibatches, concatenated on the model's device."""
    k, name = cfg.init.batches, cfg.init.name
    if batches is None or len(batches) < k:
        given = 0 if batches is None else len(batches)
        raise VarexpError(f"init={name} fits on init.batches={k} input minibatches; {given} given")
    batches = list(batches)[:k]
    for i, b in enumerate(batches, start=1):
        if b.dim() < 2 or b.shape[0] < 2:
            raise VarexpError(
                f"init={name}: minibatch {i} has {b.shape[0] if b.dim() else 0} sample(s); "
                "the sample variance needs at least 2"
            )
        if b.shape[1:] != batches[0].shape[1:]:
            raise VarexpError(
                f"init={name}: minibatch {i} has shape {tuple(b.shape)}, "
                f"minibatch 1 has {tuple(batches[0].shape)}; they must match"
            )
    device = layers[0].module.weight.device
    return torch.cat([b.to(device) for b in batches])


def _draw(layer: nn.Module, name: str, gain: float) -> None:
    w = layer.weight
    fan_in, fan_out = fans(layer)
    if name in ("kaiming", "batchnorm"):
        nn.init.normal_(w, 0.0, gain / math.sqrt(fan_in))
    elif name == "xavier":
        nn.init.normal_(w, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
    elif name in ("orthogonal", "lsuv"):
        # rows of the weight flattened to (dim 0, rest), as torch and the lsuv package do
        nn.init.orthogonal_(w, gain)
    else:  # scale, scale+bias: unit Gaussian, rescaled by _fit
        nn.init.normal_(w, 0.0, 1.0)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _describe(wl: WeightLayer) -> dict:
    fan_in, fan_out = fans(wl.module)
    return {
        "index": wl.index,
        "name": wl.name,
        "type": type(wl.module).__name__,
        "fan_in": fan_in,
        "fan_out": fan_out,
    }


def _fit(
    model: nn.Module, layers: list[WeightLayer], name: str, x: Tensor, init: DictConfig
) -> InitReport:
    """One forward pass over the concatenated minibatches; each weight layer is fitted by a hook
    on the input it receives, then passes on the output its new parameters give."""
    owner = {wl.module: wl for wl in layers}
    stats: dict[int, dict[str, Tensor]] = {}
    calls = dict.fromkeys((wl.index for wl in layers), 0)
    iters: dict[int, int] = {}  # lsuv rescales per layer
    macs = {"pass": 0, "extra": 0}

    def hook(layer: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> Tensor | None:
        wl = owner[layer]
        calls[wl.index] += 1
        if calls[wl.index] > 1:
            return None  # reported after the pass
        cost = y.numel() * fans(layer)[0]
        macs["pass"] += cost
        if name == "lsuv":
            y, stats[wl.index], iters[wl.index] = _lsuv(
                wl, inputs, y, init.tol, init.max_iters, init.eps
            )
            macs["extra"] += iters[wl.index] * cost
        else:
            y, stats[wl.index] = _scale(wl, y, name == "scale+bias", init.eps)
        return y

    handles = [wl.module.register_forward_hook(hook) for wl in layers]
    try:
        with batch_statistics(model):
            model(x)
    finally:
        for h in handles:
            h.remove()

    for wl in layers:
        if calls[wl.index] != 1:
            raise VarexpError(
                f"init={name}: layer {wl.name} ran {calls[wl.index]} times in one "
                "forward pass; data-dependent inits need every weight layer to run once"
            )
    keys = sorted(next(iter(stats.values())))
    # one device-to-host copy for all layers
    table = torch.stack([torch.stack([stats[wl.index][k].float() for k in keys]) for wl in layers])
    report = []
    for wl, row in zip(layers, table.cpu().tolist(), strict=True):
        entry = _describe(wl) | dict(zip(keys, row, strict=True))
        if wl.index in iters:
            entry["iters"] = iters[wl.index]
        _check_alive(name, wl.name, entry)
        report.append(entry)
    k = init.batches
    return InitReport(k * (1.0 + macs["extra"] / macs["pass"]), report)


def _scale(wl: WeightLayer, y: Tensor, with_bias: bool, eps: float) -> tuple[Tensor, dict]:
    """Eq. 13 (Eq. 14 first, with `with_bias`) on the layer's output y = W x + 0.

    The statistics are on u = norm(y), the pre-activation. With BatchNorm units u is already
    centred (the bias shift is ~0 and BatchNorm would remove it) with unit per-channel variance,
    so sigma_B ~ 1 and the rescale is ~1 (BatchNorm would undo it too). W and b act linearly on
    y, so the layer's new output is (y + shift) / s exactly, without re-running it.
    """
    layer, u = wl.module, wl.unit.norm(y)
    shift = torch.zeros((), dtype=y.dtype, device=y.device)
    if with_bias:
        if layer.bias is None and isinstance(wl.unit.norm, nn.Identity):
            raise VarexpError(f"init=scale+bias: layer {wl.name} has no bias to set")
        # Eq. 14 per feature of a Linear layer, per channel of a conv (over samples and
        # positions: a conv has one bias per channel), then Eq. 13 on the centred output:
        # its second moment pooled over channels, samples and positions (two passes: stable
        # when the means dwarf the spread)
        channel_mean = u.mean(dim=[0, *range(2, u.dim())], keepdim=True)
        sigma2 = torch.sub(u, channel_mean).square_().mean()
        raw = sigma2 + channel_mean.square().mean()
        if layer.bias is not None:
            shift = -channel_mean
            layer.bias.sub_(channel_mean.flatten())
    else:
        raw = sigma2 = torch.linalg.vector_norm(u).square() / u.numel()  # Eq. 13, all k*T samples
    s = torch.sqrt(sigma2 + eps)
    layer.weight.div_(s)
    if layer.bias is not None:
        layer.bias.div_(s)
    bias_abs = layer.bias.abs().mean() if layer.bias is not None else torch.zeros_like(s)
    stats = {
        "second_moment_before": raw,
        "sigma2": sigma2,
        "scale": 1.0 / s,
        "bias_abs_mean": bias_abs,
    }
    return y.add_(shift).div_(s), stats  # y is this call's fresh output: in place saves memory


def _lsuv(
    wl: WeightLayer, inputs: tuple[Tensor, ...], y: Tensor, tol: float, max_iters: int, eps: float
) -> tuple[Tensor, dict, int]:
    """Mishkin & Matas (2015) on the weight layer's output, as the lsuv package defines it:
    torch.std (unbiased) over the whole output tensor, W *= 1 / (std + eps), re-run the layer
    alone on its input until |std - 1| <= tol or max_iters rescales."""
    layer = wl.module
    std0 = std = y.std()
    scale = torch.ones((), dtype=y.dtype, device=y.device)
    iters = 0
    while True:
        value = std.item()  # host sync: the convergence test needs the number (unavoidable)
        if not value > 0 or not math.isfinite(value):
            raise VarexpError(
                f"init=lsuv: layer {wl.name} has output std {value}; "
                "it is dead (constant output) or the input is not finite"
            )
        if abs(value - 1.0) <= tol or iters == max_iters:
            break
        factor = 1.0 / (std + eps)
        layer.weight.mul_(factor)
        scale = scale * factor
        y = layer.forward(*inputs)  # .forward: no hook recursion
        std = y.std()
        iters += 1
    return y, {"std_before": std0, "std": std, "scale": scale}, iters


def _check_alive(name: str, layer: str, entry: dict) -> None:
    if name == "lsuv":
        return  # checked in the loop
    values = [entry[k] for k in ("sigma2", "second_moment_before", "scale")]
    if not all(math.isfinite(v) for v in values):
        raise VarexpError(
            f"init={name}: layer {layer} has non-finite statistics "
            f"(sigma_B^2={entry['sigma2']}); is the input finite?"
        )
    if entry["sigma2"] <= DEAD * entry["second_moment_before"]:
        raise VarexpError(
            f"init={name}: layer {layer} is dead: its sample variance on the "
            f"init batches is {entry['sigma2']:.3g} (constant output)"
        )
