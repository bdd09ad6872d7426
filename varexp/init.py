"""The data-dependent inits for any PyTorch model, in place (like torch.nn.init): every Linear,
Conv1d/2d/3d and ConvTranspose1d/2d/3d is fitted, in one forward pass over the given minibatches,
with no global state. Each returns the per-layer report (varexp.inits.InitReport: the layers it
initialized, and the weights it did not).

    varexp.init.scale_bias_(model, batches)   # paper Eq. 14 then Eq. 13
    varexp.init.scale_(model, batches)        # paper Eq. 13
    varexp.init.lsuv_(model, batches)         # Mishkin & Matas (2015)

`batches` is one input tensor or a list of k minibatches (fitted on together, k T samples;
moved to the model's device). `heldout`, a batch of fresh inputs, adds to each layer of the
report its second moment and the mean over channels of its squared sample mean on the fitting
batches and on the fresh ones (fit_second_moment, fit_mean_sq, heldout_second_moment,
heldout_mean_sq): the targets (1 and, for scale+bias, 0) hold exactly on the first and only
approximately on the second. The weights are drawn afresh first, as each init defines them
(N(0, 1) for scale and scale+bias, orthogonal for lsuv); biases start at 0. scale+bias cannot
centre a layer without a bias (a conv followed by BatchNorm, say): such a layer gets Eq. 13
alone, with a warning naming it, unless `add_bias=True` gives every such layer a zero bias
first. Weights no init reaches (recurrent layers, embeddings, attention's packed projections,
functional calls, and weight layers the forward pass does not call) keep their values and are
named in one warning. Bad input (not tensors, another dtype than the model's, fewer than 2
samples, NaN or inf) is refused before anything changes; errors while fitting (a forward pass
that fails on the batches, a dead layer, a layer run twice in one pass) leave the model as it
was, biases added for it removed. Both raise varexp.errors.VarexpError with one line.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor, nn

from varexp.errors import VarexpError
from varexp.inits import LSUV, InitReport, Scale, ScaleBias, initialize
from varexp.library import check_input, forward_failed, restored_on_error
from varexp.models.base import add_biases


def _batches(model: nn.Module, batches: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The minibatches, each checked (varexp.library.check_input)."""
    if isinstance(batches, Tensor):
        check_input(model, batches, "batches")
        return [batches]
    if not isinstance(batches, Sequence) or not batches:
        raise VarexpError(
            "batches must be an input tensor or a non-empty list of them; got "
            f"{type(batches).__name__}{' (empty)' if batches == [] else ''}"
        )
    for i, batch in enumerate(batches):
        check_input(model, batch, f"batches[{i}]")
    return list(batches)


def _heldout(model: nn.Module, heldout: Tensor | None) -> Tensor | None:
    """The fresh batch, checked as the fitting ones are (None: none)."""
    if heldout is not None:
        check_input(model, heldout, "heldout")
    return heldout


def _fitted(
    model: nn.Module,
    spec: object,
    data: list[Tensor],
    add_bias: bool = False,
    heldout: Tensor | None = None,
) -> InitReport:
    """initialize() (after add_biases with `add_bias`), with the model put back as it was
    whatever goes wrong."""
    try:
        with restored_on_error(model):
            added = add_biases(model) if add_bias else []
            try:
                return initialize(model, spec, batches=data, heldout=heldout)
            except BaseException:
                for layer in added:  # the model's own parameters, then their values
                    layer.register_parameter("bias", None)
                raise
    except RuntimeError as err:  # e.g. the batches' shape is not the model's
        raise forward_failed(model, data[0], "batches", err) from None


def scale_(
    model: nn.Module,
    batches: Tensor | Sequence[Tensor],
    eps: float = 1e-5,
    heldout: Tensor | None = None,
) -> InitReport:
    data, fresh = _batches(model, batches), _heldout(model, heldout)
    return _warn(
        model, _fitted(model, Scale(batches=len(data), eps=eps), data, heldout=fresh), "scale"
    )


def scale_bias_(
    model: nn.Module,
    batches: Tensor | Sequence[Tensor],
    eps: float = 1e-5,
    add_bias: bool = False,
    heldout: Tensor | None = None,
) -> InitReport:
    """Paper Eq. 14 then Eq. 13; `add_bias` first gives weight layers without a bias a zero one
    (varexp.models.base.add_biases) so that every layer is centred."""
    data, fresh = _batches(model, batches), _heldout(model, heldout)
    report = _fitted(model, ScaleBias(batches=len(data), eps=eps), data, add_bias, fresh)
    return _warn(model, report, "scale+bias")


def lsuv_(
    model: nn.Module,
    batches: Tensor | Sequence[Tensor],
    tol: float = 0.1,
    max_iters: int = 10,
    gain: float = 1.0,
    eps: float = 1e-5,
    heldout: Tensor | None = None,
) -> InitReport:
    data, fresh = _batches(model, batches), _heldout(model, heldout)
    spec = LSUV(batches=len(data), tol=tol, max_iters=max_iters, gain=gain, eps=eps)
    return _warn(model, _fitted(model, spec, data, heldout=fresh), "lsuv")


def _warn(model: nn.Module, report: InitReport, init: str) -> InitReport:
    for line in report.warnings(model, init):
        warnings.warn(line, stacklevel=3)
    return report
