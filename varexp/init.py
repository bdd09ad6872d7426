"""The data-dependent inits for any PyTorch model, in place (like torch.nn.init): every Linear,
Conv1d/2d/3d and ConvTranspose1d/2d/3d is fitted, in one forward pass over the given minibatches,
with no global state. Each returns the per-layer report (varexp.inits.InitReport: the layers it
initialized, and the weights it did not).

    varexp.init.scale_bias_(model, batches)   # paper Eq. 14 then Eq. 13
    varexp.init.scale_(model, batches)        # paper Eq. 13
    varexp.init.lsuv_(model, batches)         # Mishkin & Matas (2015)

`batches` is one input tensor or a list of k minibatches (fitted on together, k T samples).
The weights are drawn afresh first, as each init defines them (N(0, 1) for scale and scale+bias,
orthogonal for lsuv); biases start at 0. scale+bias cannot centre a layer without a bias (a conv
followed by BatchNorm, say): such a layer gets Eq. 13 alone, with a warning naming it, unless
`add_bias=True` gives every such layer a zero bias first. Weights no init reaches (recurrent
layers, embeddings, attention's packed projections, functional calls, and weight layers the
forward pass does not call) keep their values and are named in one warning. Errors (a
dead layer, a layer run twice in one pass, too few samples) raise varexp.errors.VarexpError and
leave the model as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor, nn

from varexp.inits import LSUV, InitReport, Scale, ScaleBias, initialize
from varexp.models.base import add_biases


def _batches(batches: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [batches] if isinstance(batches, Tensor) else list(batches)


def scale_(model: nn.Module, batches: Tensor | Sequence[Tensor], eps: float = 1e-5) -> InitReport:
    data = _batches(batches)
    return _warn(model, initialize(model, Scale(batches=len(data), eps=eps), batches=data),
                 "scale")


def scale_bias_(model: nn.Module, batches: Tensor | Sequence[Tensor], eps: float = 1e-5,
                add_bias: bool = False) -> InitReport:
    """Paper Eq. 14 then Eq. 13; `add_bias` first gives weight layers without a bias a zero one
    (varexp.models.base.add_biases) so that every layer is centred."""
    data = _batches(batches)
    added = add_biases(model) if add_bias else []
    try:
        report = initialize(model, ScaleBias(batches=len(data), eps=eps), batches=data)
    except BaseException:
        for layer in added:  # the model as it was
            layer.register_parameter("bias", None)
        raise
    return _warn(model, report, "scale+bias")


def lsuv_(model: nn.Module, batches: Tensor | Sequence[Tensor], tol: float = 0.1,
          max_iters: int = 10, gain: float = 1.0, eps: float = 1e-5) -> InitReport:
    data = _batches(batches)
    spec = LSUV(batches=len(data), tol=tol, max_iters=max_iters, gain=gain, eps=eps)
    return _warn(model, initialize(model, spec, batches=data), "lsuv")


def _warn(model: nn.Module, report: InitReport, init: str) -> InitReport:
    for line in report.warnings(model, init):
        warnings.warn(line, stacklevel=3)
    return report
