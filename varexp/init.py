"""The data-dependent inits for any PyTorch model, in place (like torch.nn.init): every Linear,
Conv2d and ConvTranspose2d is fitted, in one forward pass over the given minibatches, with no
global state and no output. Each returns the per-layer report (varexp.inits.InitReport).

    varexp.init.scale_bias_(model, batches)   # paper Eq. 14 then Eq. 13
    varexp.init.scale_(model, batches)        # paper Eq. 13
    varexp.init.lsuv_(model, batches)         # Mishkin & Matas (2015)

`batches` is one input tensor or a list of k minibatches (fitted on together, k T samples).
The weights are drawn afresh first, as each init defines them (N(0, 1) for scale and scale+bias,
orthogonal for lsuv); biases start at 0. scale+bias cannot centre a layer without a bias (a conv
followed by BatchNorm, say): such a layer gets Eq. 13 alone, with a warning naming it. Errors (a
dead layer, a layer run twice in one pass, too few samples) raise varexp.errors.VarexpError and
leave the model as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor, nn

from varexp.inits import LSUV, InitReport, Scale, ScaleBias, initialize


def _batches(batches: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [batches] if isinstance(batches, Tensor) else list(batches)


def scale_(model: nn.Module, batches: Tensor | Sequence[Tensor], eps: float = 1e-5) -> InitReport:
    data = _batches(batches)
    return initialize(model, Scale(batches=len(data), eps=eps), batches=data)


def scale_bias_(model: nn.Module, batches: Tensor | Sequence[Tensor],
                eps: float = 1e-5) -> InitReport:
    data = _batches(batches)
    report = initialize(model, ScaleBias(batches=len(data), eps=eps), batches=data)
    uncentred = [e["name"] for e in report.layers if e["centred"] == 0]
    if uncentred:
        warnings.warn(f"scale_bias_: {len(uncentred)} layer(s) without a bias were scaled but "
                      f"not centred: {', '.join(uncentred)}", stacklevel=2)
    return report


def lsuv_(model: nn.Module, batches: Tensor | Sequence[Tensor], tol: float = 0.1,
          max_iters: int = 10, gain: float = 1.0, eps: float = 1e-5) -> InitReport:
    data = _batches(batches)
    spec = LSUV(batches=len(data), tol=tol, max_iters=max_iters, gain=gain, eps=eps)
    return initialize(model, spec, batches=data)
