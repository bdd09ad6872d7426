"""Weight initializations for any model (paper Sec. 2 and 5.1).

Every init works through `weight_layers(model)` and forward hooks, never through per-architecture
code, so it covers Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d layers in MLPs, ALL-CNN-C and
UNet alike, and in any other PyTorch model. Biases start at 0 and BatchNorm units at weight 1,
bias 0 with fresh running statistics.

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
- default: the model's weights as its own code drew them (torchvision's and timm's inits,
  PyTorch's layer defaults in varexp's models); nothing is redrawn or zeroed.

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
bias_abs_mean (and for scale+bias centred: 0 for a layer without a bias, only scaled); for lsuv
std_before, std, scale and iters. `InitReport.not_initialized` names the weights left as they
were (varexp.models.base.unreached).

Held-out statistics. A data-dependent init meets its targets (unit second moment; for
scale+bias zero mean per feature) exactly on the batches it was fitted on, and only
approximately on any other: at finite width the fit is a function of its k*T samples. With
`heldout` (a fresh batch), `initialize` measures every layer of the fitted model on the fitting
batches and on the fresh one (HELDOUT_STATS, by `heldout_stats`) and adds both to the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from varexp.activations import get_activation
from varexp.errors import VarexpError
from varexp.models.base import (
    Unreached,
    WeightLayer,
    batch_statistics,
    unreached,
    unreached_warning,
    weight_layers,
)
from varexp.options.init import (
    LSUV,
    SPECS,
    BatchNormInit,
    Default,
    Kaiming,
    Orthogonal,
    Scale,
    ScaleBias,
    Xavier,
    units_of,
)
from varexp.schema import spec_from
from varexp.stats import network_stats

# A layer is dead when its fitted statistic is below DEAD times its second moment (0 when all is
# 0): float32 rounding leaves ~1e-14 on an output constant over samples; live layers are near 1.
DEAD = 1e-12


# ---------------------------------------------------------------------------------------------
# the laws each init follows


def kaiming_std(fan_in: float, fan_out: float, gain: float) -> float:
    return gain / math.sqrt(fan_in)


def xavier_std(fan_in: float, fan_out: float, gain: float) -> float:
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def unit_std(fan_in: float, fan_out: float, gain: float) -> float:
    return 1.0


def gaussian(std: Callable[[float, float, float], float]) -> Callable:
    def draw(weight: Tensor, fan_in: float, fan_out: float, gain: float) -> None:
        nn.init.normal_(weight, 0.0, std(fan_in, fan_out, gain))

    return draw


def orthogonal(weight: Tensor, fan_in: float, fan_out: float, gain: float) -> None:
    # rows of the weight flattened to (dim 0, rest), as torch and the lsuv package do
    nn.init.orthogonal_(weight, gain)


# Mean-field maps (varexp.theory): (sigma_w^2, <x^2>, <x_a x_b>) of layer l-1 to (q, q_ab) of l


def total_variance(sigma_w2: float, x2: float, x_ab: float) -> tuple[float, float]:
    """Weights of variance sigma_w^2 / fan_in (square layers)."""
    return sigma_w2 * x2, sigma_w2 * x_ab


def unit_second_moment(sigma_w2: float, x2: float, x_ab: float) -> tuple[float, float]:
    """Rescaled to q = 1 (Eq. 13)."""
    return 1.0, x_ab / x2


def centred(sigma_w2: float, x2: float, x_ab: float) -> tuple[float, float]:
    """Every feature centred and scaled over samples (Eq. 12, 14): m = 0, v = 1, and distinct
    inputs decorrelate before f."""
    return 1.0, 0.0


# The fits as maps of a layer's output U (features x T) in the exact sampled MLP path
# (varexp.sampled); their constants are fixed in the backward pass, as the dense fit's scales
# and biases are.


def scale_map(U: Tensor, eps: float) -> Callable[[Tensor], Tensor]:
    s = torch.rsqrt(U.square().mean() + eps)
    return lambda V: V * s


def scale_bias_map(U: Tensor, eps: float) -> Callable[[Tensor], Tensor]:
    mu = U.mean(dim=1, keepdim=True)
    s = torch.rsqrt((U - mu).square().mean() + eps)
    return lambda V: (V - mu) * s


@dataclass(frozen=True)
class Init:
    """One init: its options, how it draws weights (before any fit), its mean-field law, its
    optional data-dependent fit (one layer, in the forward pass: fit(layer, inputs, output,
    spec) -> (new output, statistics, extra passes)), its law in the exact sampled MLP path (the
    std of its iid Gaussian weights and its fit as a map; no std: dense path only), and the
    units it needs (its config sets arch.norm)."""

    name: str
    spec: type
    draw: Callable[[Tensor, float, float, float], None] | None  # None: keep the model's own
    mean_field: Callable[[float, float, float], tuple[float, float]] | None
    fit: Callable | None = None
    sampled_std: Callable[[float, float, float], float] | None = None
    sampled_map: Callable[[Tensor, float], Callable[[Tensor], Tensor]] | None = None

    @property
    def norm(self) -> str:
        return units_of(self.spec)


def _fit_scale(wl: WeightLayer, inputs: tuple, y: Tensor, spec: Scale) -> tuple:
    return (*_scale(wl, y, False, spec.eps), 0)


def _fit_scale_bias(wl: WeightLayer, inputs: tuple, y: Tensor, spec: ScaleBias) -> tuple:
    return (*_scale(wl, y, True, spec.eps), 0)


def _fit_lsuv(wl: WeightLayer, inputs: tuple, y: Tensor, spec: LSUV) -> tuple:
    return _lsuv(wl, inputs, y, spec.tol, spec.max_iters, spec.eps)


INITS: dict[str, Init] = {i.name: i for i in [
    # He et al. (2015), paper Eq. 2
    Init("kaiming", Kaiming, gaussian(kaiming_std), total_variance, sampled_std=kaiming_std),
    # Glorot & Bengio (2010)
    Init("xavier", Xavier, gaussian(xavier_std), total_variance, sampled_std=xavier_std),
    # Saxe et al. (2014)
    Init("orthogonal", Orthogonal, orthogonal, total_variance),
    # the paper's third setting (Sec. 4): kaiming weights, BatchNorm before every nonlinearity
    Init("batchnorm", BatchNormInit, gaussian(kaiming_std), centred, sampled_std=kaiming_std),
    # paper Eq. 13
    Init("scale", Scale, gaussian(unit_std), unit_second_moment, _fit_scale,
         sampled_std=unit_std, sampled_map=scale_map),
    # paper Eq. 14, then Eq. 13
    Init("scale+bias", ScaleBias, gaussian(unit_std), centred, _fit_scale_bias,
         sampled_std=unit_std, sampled_map=scale_bias_map),
    # Mishkin & Matas (2015)
    Init("lsuv", LSUV, orthogonal, unit_second_moment, _fit_lsuv),
    # the model's own init as its code builds it (torchvision's, timm's, PyTorch's defaults)
    Init("default", Default, None, None),
]}  # fmt: skip


@dataclass
class InitReport:
    forward_passes: float = 0.0  # minibatch forward-pass equivalents (weight-layer MACs)
    layers: list[dict] = field(default_factory=list)  # the layers initialized, in fit order
    # weights left as they were (varexp.models.base.unreached): recurrent layers, embeddings,
    # attention's packed projections, functional calls; for a data-dependent init also weight
    # layers the forward pass does not call
    not_initialized: list[Unreached] = field(default_factory=list)

    def warnings(
        self, model: nn.Module, init: str, not_measured: list[Unreached] | None = None
    ) -> list[str]:
        """The lines a user should read: layers scale+bias could only scale (no bias), and the
        weights not initialized with their share of the parameters (with `not_measured`, the
        weights a probe of the model leaves out, in one line with them where they are the
        same)."""
        lines = []
        uncentred = [e["name"] for e in self.layers if e.get("centred") == 0]
        if uncentred:
            lines.append(
                f"init={init}: {len(uncentred)} layer(s) without a bias were scaled but "
                f"not centred: {', '.join(uncentred)} (arch.bias=true, or add_bias=True "
                "in varexp.init.scale_bias_, gives them zero biases to fit)"
            )
        what = f"initialized by init={init}"
        if not_measured is not None:
            if not_measured == self.not_initialized:
                what = f"measured or {what}"
            else:
                lines.append(unreached_warning(model, not_measured, "measured"))
        lines.append(unreached_warning(model, self.not_initialized, what))
        return [line for line in lines if line is not None]


# What a fit targets, measured per layer on a batch (varexp.stats names): the average second
# moment of u (Eq. 13: 1 after scale, scale+bias and lsuv) and the mean over channels (features
# of a Linear layer) of the squared sample mean (Eq. 14: 0 after scale+bias), each pooled over
# samples and positions as the per-channel bias is.
HELDOUT_STATS = {"second_moment": "second_moment", "mean_sq": "sample_mean_sq_channel"}


def batch_stats(model: nn.Module, x: Tensor) -> dict[str, dict[str, float]]:
    """Per weight layer name, HELDOUT_STATS of `model` on the batch x (one forward pass,
    BatchNorm on batch statistics, the model's state left as it was)."""
    with torch.no_grad():
        rows, _ = network_stats(model, x, grad=False)
    return {
        row["name"]: {key: float(row[stat]) for key, stat in HELDOUT_STATS.items()} for row in rows
    }


def heldout_stats(model: nn.Module, fit: Tensor | None, fresh: Tensor) -> dict[str, dict]:
    """Per weight layer name, HELDOUT_STATS of the (fitted) model on its fitting batch `fit`
    (prefixed fit_; left out without one) and on a fresh batch (prefixed heldout_)."""
    on_fresh = batch_stats(model, fresh)
    on_fit = batch_stats(model, fit) if fit is not None else {}
    return {
        name: {f"fit_{k}": v for k, v in on_fit.get(name, {}).items()}
        | {f"heldout_{k}": v for k, v in stats.items()}
        for name, stats in on_fresh.items()
    }


def fans(layer: nn.Module) -> tuple[float, float]:
    """(fan_in, fan_out): how many inputs one output unit sums over, and how many outputs one
    input unit feeds, averaged over positions for strided convolutions (of any dimension).

    torch's _calculate_fan_in_and_fan_out swaps these for transposed convolutions (their weight
    is (in, out/groups, *kernel)) and ignores stride: a stride-2 2x2 up-convolution sums each
    output over in_channels inputs, not out_channels * 4.
    """
    w = layer.weight
    if isinstance(layer, nn.Linear):
        return float(w.shape[1]), float(w.shape[0])
    taps = math.prod(w.shape[2:])
    stride = math.prod(layer.stride)
    per_group_in = layer.in_channels // layer.groups
    per_group_out = layer.out_channels // layer.groups
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return per_group_in * taps / stride, float(per_group_out * taps)
    return float(per_group_in * taps), per_group_out * taps / stride


def law_fans(layer: nn.Module) -> tuple[float, float]:
    """The fans an init's weight law uses: `fans`, except for a transposed convolution built
    with `fan = "torch"` (UNet's arch.upconv_fan=torch), which gets torch.nn.init's count
    (its weight read as a conv's: fan_in = out_channels / groups * taps)."""
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    if transposed and getattr(layer, "fan", "in") == "torch":
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        return float(fan_in), float(fan_out)
    return fans(layer)


def initialize(
    model: nn.Module,
    init: object,
    activation: str = "relu",
    batches: Sequence[Tensor] | None = None,
    heldout: Tensor | None = None,
) -> InitReport:
    """Initialize every weight layer of `model` in place as `init` says (a spec such as
    ScaleBias(batches=5), the `init` config node, or a mapping with `name`).

    `batches` are the k input minibatches (init.batches of them are used) the data-dependent
    inits fit on. With `heldout`, a fresh batch, each layer's report also holds HELDOUT_STATS on
    the fitting batches (fit_second_moment, fit_mean_sq) and on the fresh one
    (heldout_second_moment, heldout_mean_sq); see the module's docstring. Raises VarexpError
    (model left as it was) on bad options, missing or too small batches, a layer that never runs
    or runs twice, or a dead layer (zero sample variance).
    """
    spec = spec_from(init, SPECS, "init")
    record = INITS[spec.name]
    try:
        layers = weight_layers(model)
    except ValueError as err:
        raise VarexpError(str(err)) from None
    if record.norm == "batchnorm" and all(isinstance(wl.norm, nn.Identity) for wl in layers):
        raise VarexpError(
            f"init={spec.name} needs a model built with BatchNorm units (arch.norm=batchnorm)"
        )
    data = _check_batches(spec, batches, layers) if record.fit is not None else None

    # a failed fit puts the model back as it was
    saved = {k: v.clone() for k, v in model.state_dict().items()} if data is not None else {}
    gain = getattr(spec, "gain", None)
    if gain is None:
        gain = get_activation(activation).gain
    with torch.no_grad():
        for wl in layers if record.draw is not None else ():
            record.draw(wl.module.weight, *law_fans(wl.module), gain)
            if wl.module.bias is not None:
                nn.init.zeros_(wl.module.bias)
            if hasattr(wl.norm, "reset_parameters"):
                wl.norm.reset_parameters()  # BatchNorm: weight 1, bias 0, fresh statistics
        if data is None:  # init=default redraws nothing: nothing to report as left out
            left = unreached(model, [wl.module for wl in layers]) if record.draw else []
            report = InitReport(0.0, [_describe(wl) for wl in layers], left)
        else:
            try:
                report = _fit(model, layers, record, spec, data)
            except VarexpError:
                model.load_state_dict(saved)
                raise
            # a layer the pass never called (its weights used by its parent) keeps its own
            # weights: drawn but not fitted, they would be far off scale
            fitted = {e["index"] for e in report.layers}
            prefix = {m: name for name, m in model.named_modules()}
            for wl in layers:
                if wl.index not in fitted:
                    for key, param in wl.module.named_parameters(recurse=False):
                        name = f"{prefix[wl.module]}.{key}" if prefix[wl.module] else key
                        param.copy_(saved[name])
            report.not_initialized = unreached(
                model, [wl.module for wl in layers if wl.index in fitted]
            )
    if heldout is not None:  # an init without a fit: only the fresh batch's statistics
        fresh = heldout.to(layers[0].module.weight.device)
        measured = heldout_stats(model, data, fresh)
        for entry in report.layers:
            entry.update(measured.get(entry["name"], {}))
    return report


def one_batch(spec: object) -> object:
    """The spec fitted on a single minibatch (a probe's fixed batch)."""
    return dataclasses.replace(spec, batches=1) if hasattr(spec, "batches") else spec


def _check_batches(
    spec: object, batches: Sequence[Tensor] | None, layers: list[WeightLayer]
) -> Tensor:
    """The k minibatches, concatenated on the model's device."""
    k, name = spec.batches, spec.name
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
    model: nn.Module, layers: list[WeightLayer], record: Init, spec: object, x: Tensor
) -> InitReport:
    """One forward pass over the concatenated minibatches; each weight layer is fitted by a hook
    on the input it receives, then passes on the output its new parameters give."""
    owner = {wl.module: wl for wl in layers}
    stats: dict[int, dict[str, Tensor]] = {}
    calls = dict.fromkeys((wl.index for wl in layers), 0)
    iters: dict[int, int] = {}  # extra runs of a layer (lsuv's rescales)
    macs = {"pass": 0, "extra": 0}

    def hook(layer: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> Tensor | None:
        wl = owner[layer]
        calls[wl.index] += 1
        if calls[wl.index] > 1:
            return None  # reported after the pass
        cost = y.numel() * fans(layer)[0]
        macs["pass"] += cost
        y, stats[wl.index], iters[wl.index] = record.fit(wl, inputs, y, spec)
        macs["extra"] += iters[wl.index] * cost
        return y

    handles = [wl.module.register_forward_hook(hook) for wl in layers]
    try:
        with batch_statistics(model):
            model(x)
    finally:
        for h in handles:
            h.remove()

    for wl in layers:
        if calls[wl.index] > 1:
            raise VarexpError(
                f"init={spec.name}: layer {wl.name} ran {calls[wl.index]} times in one "
                "forward pass; data-dependent inits need every weight layer to run once"
            )
    # layers never called (nn.MultiheadAttention's out_proj) are left out, and reported
    layers = [wl for wl in layers if calls[wl.index] == 1]
    if not layers:
        raise VarexpError(f"init={spec.name}: no weight layer ran in a forward pass on the batches")
    keys = sorted(next(iter(stats.values())))
    # one device-to-host copy for all layers
    table = torch.stack([torch.stack([stats[wl.index][k].float() for k in keys]) for wl in layers])
    report = []
    for wl, row in zip(layers, table.cpu().tolist(), strict=True):
        entry = _describe(wl) | dict(zip(keys, row, strict=True)) | {"iters": iters[wl.index]}
        _check_alive(spec.name, wl.name, entry)
        report.append(entry)
    k = spec.batches
    return InitReport(k * (1.0 + macs["extra"] / macs["pass"]), report)


def _scale(wl: WeightLayer, y: Tensor, with_bias: bool, eps: float) -> tuple[Tensor, dict]:
    """Eq. 13 (Eq. 14 first, with `with_bias`) on the layer's output y = W x + 0.

    The statistics are on u = norm(y), the pre-activation. With BatchNorm units u is already
    centred (the bias shift is ~0 and BatchNorm would remove it) with unit per-channel variance,
    so sigma_B ~ 1 and the rescale is ~1 (BatchNorm would undo it too). W and b act linearly on
    y, so the layer's new output is (y + shift) / s exactly, without re-running it.
    """
    layer, u = wl.module, wl.norm(y)
    shift = torch.zeros((), dtype=y.dtype, device=y.device)
    # a layer without a bias (in a model not built from Units, e.g. a conv before BatchNorm)
    # cannot be centred: it gets Eq. 13 alone, and its report says centred = 0
    centred = with_bias and (layer.bias is not None or not isinstance(wl.norm, nn.Identity))
    if centred:
        # Eq. 14 per feature of a Linear layer, per channel of a conv (over samples and
        # positions: a conv has one bias per channel), then Eq. 13 on the centred output:
        # its second moment pooled over channels, samples and positions (two passes: stable
        # when the means dwarf the spread)
        features = u.dim() - 1 if isinstance(layer, nn.Linear) else 1  # tokens: Linear's last
        channel_mean = u.mean(dim=[d for d in range(u.dim()) if d != features], keepdim=True)
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
    if with_bias:  # scale+bias: whether Eq. 14 could centre the layer
        stats["centred"] = torch.tensor(float(centred), dtype=s.dtype, device=s.device)
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
    """A scale fit's statistics are finite and the layer's output varies (lsuv checks its
    std as it goes)."""
    if "sigma2" not in entry:
        return
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
