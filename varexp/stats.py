"""Per-layer sample statistics of any model (paper Eq. 3-5, 9; definitions in the README) and the
gradient scale of a random linear loss (paper Fig. 3).

Everything stays on the tensors' device as 0-d float64 tensors, so a caller looping over layers
never copies to the host; convert once per network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge

from varexp.errors import VarexpError
from varexp.models.base import WeightLayer, batch_statistics, weight_layers

STAT_NAMES = (
    "sample_mean_sq",
    "sample_var",
    "ratio",
    "second_moment",
    "effective_samples",
    "sample_mean_sq_channel",
    "sample_var_channel",
    "ratio_channel",
)


CHUNK = 2**22  # elements of u converted to float64 at a time


def sample_stats(u: Tensor, channels_last: bool = False) -> dict[str, Tensor]:
    """Sample statistics of pre-activations u of shape (T, channels, ...positions) (with
    `channels_last`, (T, ...positions, channels): a Linear layer applied to tokens), with the
    biased 1/T estimator of Eq. 4, as 0-d float64 tensors.

    Per feature (all non-batch dims flattened: channel x position for convs): sample_mean_sq =
    mean_i <u_i>_t^2, sample_var = mean_i (<u_i^2>_t - <u_i>_t^2), ratio = sqrt(sample_mean_sq
    / sample_var) (Eq. 9), second_moment = mean_i <u_i^2>_t. Per channel, pooled over samples
    and positions (the convention of a conv layer's per-channel bias and of BatchNorm; for
    Linear layers the same as per feature): sample_mean_sq_channel, sample_var_channel,
    ratio_channel. effective_samples: with s_t the squared distance of sample t from the mean,
    (sum_t s_t)^2 / sum_t s_t^2, between 1 and T: how many samples carry the centred signal.
    """
    samples = u.shape[0]
    flat = u.detach().reshape(samples, -1)
    # float64 pieces of at most CHUNK elements: a large layer's float64 copy would cost more in
    # memory traffic than the arithmetic (one piece, and the same numbers, for small layers)
    step = max(1, CHUNK // samples)
    means, variances, distance = [], [], None
    for start in range(0, flat.shape[1], step):
        part = flat[:, start : start + step].to(torch.float64, copy=True)
        part_mean = part.mean(dim=0)
        # centre before squaring: in deep Kaiming layers <u>^2 dwarfs the variance (Sec. 3)
        squares = part.sub_(part_mean).square_()
        means.append(part_mean)
        variances.append(squares.mean(dim=0))
        part_distance = squares.sum(dim=1)
        distance = part_distance if distance is None else distance + part_distance
    mean, var = torch.cat(means), torch.cat(variances)
    mean_sq, sample_var = mean.square().mean(), var.mean()
    # per channel from the per-feature moments: the pooled variance of a channel is the mean of
    # its positions' variances plus the spread of their means
    if u.dim() == 2:
        by_channel = mean[:, None]
    elif channels_last:
        by_channel = mean.reshape(-1, u.shape[-1]).T
    else:
        by_channel = mean.reshape(u.shape[1], -1)
    channel_mean = by_channel.mean(dim=1, keepdim=True)
    spread = (by_channel - channel_mean).square_().mean()
    mean_sq_channel = channel_mean.square().mean()
    var_channel = sample_var + spread
    return {
        "sample_mean_sq": mean_sq,
        "sample_var": sample_var,
        "ratio": (mean_sq / sample_var).sqrt(),
        "second_moment": mean_sq + sample_var,
        "effective_samples": distance.sum().square() / distance.square().sum(),
        "sample_mean_sq_channel": mean_sq_channel,
        "sample_var_channel": var_channel,
        "ratio_channel": (mean_sq_channel / var_channel).sqrt(),
    }


def features(u: Tensor) -> int:
    return u[0].numel()


class Recorder:
    """Forward hooks on every weight layer (varexp.models.base.weight_layers) of `model`.

    During a forward pass it computes the sample statistics of u^l (output of unit.norm) at once,
    so in-place activations cannot spoil them, keeps where x^l (output of the unit) enters the
    autograd graph for gradients when `keep_x`, and keeps u^l itself for the layers in `keep_u`.
    Use as a context manager; hooks go on exit.

    x^l is kept as its gradient edge, taken when the unit returns: a later in-place op on the
    tensor (ReLU(inplace=True), `out += identity`, SiLU's or Hardswish's inplace) rebinds the
    tensor to its own output, so a gradient taken with respect to the tensor would be that of the
    op's result, while the edge stays the unit's output. No activation outlives the pass.
    """

    def __init__(
        self,
        model: nn.Module,
        keep_u: Sequence[int] = (),
        keep_x: bool = True,
        layers: Sequence[WeightLayer] | None = None,
    ):
        self.layers = list(layers) if layers is not None else weight_layers(model)
        # a Linear layer's features are its output's last dim (tokens come before them)
        self.weights = {wl.index: wl.module for wl in self.layers}
        self.keep_u = set(keep_u)
        self.clear()
        self._handles = []
        for layer in self.layers:
            self._handles.append(layer.measured.register_forward_hook(self._on_u(layer.index)))
            if keep_x:
                self._handles.append(layer.unit.register_forward_hook(self._on_x(layer.index)))

    def clear(self) -> None:
        self.calls: dict[int, int] = {}  # per layer index, in the order layers first ran
        self.stats: dict[int, dict[str, Tensor]] = {}
        self.features: dict[int, int] = {}
        self.x: dict[int, GradientEdge] = {}
        self.u: dict[int, Tensor] = {}

    def _on_u(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            self.calls[index] = self.calls.get(index, 0) + 1
            if index in self.stats:  # a layer the model runs again: its first call counts
                return
            self.stats[index] = sample_stats(output, isinstance(self.weights[index], nn.Linear))
            self.features[index] = features(output)
            if index in self.keep_u:
                self.u[index] = output.detach().reshape(output.shape[0], -1).clone()

        return hook

    def _on_x(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if index not in self.x and output.grad_fn is not None:
                self.x[index] = get_gradient_edge(output)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def grad_sq(
    output: Tensor, xs: Sequence[Tensor | GradientEdge], generator: torch.Generator | None = None
) -> Tensor:
    """Mean over features and samples of (dL/dx^l)^2 for each x^l in `xs` (tensors or their
    gradient edges, varexp.stats.Recorder) (paper Fig. 3).

    L = sum_t w . x^L_t with w ~ N(0, 1) of the shape of one sample of `output` = x^L, drawn once
    per call. Returns a float64 tensor of shape (len(xs),).
    """
    if not isinstance(output, Tensor):
        raise VarexpError(
            f"the model returns a {type(output).__name__}, not one tensor: the "
            "gradient probe needs its output (probe with grad=False, or wrap it)"
        )
    w = torch.randn(output.shape[1:], generator=generator, device=output.device, dtype=output.dtype)
    loss = (output * w).sum()
    grads = torch.autograd.grad(loss, list(xs))
    # squares in the gradient's dtype, summed in float64: no float64 copy of each gradient
    return torch.stack([g.square().mean(dtype=torch.float64) for g in grads])


def network_stats(
    model: nn.Module,
    x: Tensor,
    grad: bool = True,
    generator: torch.Generator | None = None,
    keep_u: Sequence[int] = (),
    layers: Sequence[WeightLayer] | None = None,
) -> tuple[list[dict], dict[int, Tensor]]:
    """One forward pass of `model` on the batch x (plus one backward for grad_sq) with BatchNorm
    on batch statistics (paper Sec. 4) and dropout off; the model's state is left as it was.

    Returns per weight layer, in the order the pass first ran them, a dict: layer (1..L in
    that order), name, features, the STAT_NAMES as 0-d float64 tensors, grad_sq (a 0-d tensor,
    or None without `grad`), calls (how often the pass ran it; its first call is measured) and
    module (the weight layer);
    and u^l for `keep_u`. Layers the pass never runs are left out.
    """
    if grad and x.is_floating_point():
        # the input in the graph: a model with frozen weights still has gradients to its layers
        # (only what grad_sq asks for is computed, never dL/dx itself)
        x = x.detach().requires_grad_()
    with (
        batch_statistics(model),
        Recorder(model, keep_u, keep_x=grad, layers=layers) as rec,
        torch.set_grad_enabled(grad),
    ):
        output = model(x)
        by_index = {wl.index: wl for wl in rec.layers}
        ran = [by_index[i] for i in rec.calls]
        if grad:
            outside = [wl.name for wl in ran if wl.index not in rec.x]
            if outside:
                raise VarexpError(
                    f"layer {outside[0]}: its output needs no gradient (nothing "
                    "before it requires grad); probe with grad=False"
                )
        g = grad_sq(output, [rec.x[wl.index] for wl in ran], generator) if grad else None
    rows = []
    for i, wl in enumerate(ran):
        rows.append(
            dict(
                layer=i + 1,
                name=wl.name,
                features=rec.features[wl.index],
                **rec.stats[wl.index],
                grad_sq=None if g is None else g[i],
                calls=rec.calls[wl.index],
                module=wl.module,
            )
        )
    return rows, rec.u
