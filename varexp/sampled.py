"""Exact sampling of a random Gaussian-weight MLP on a batch of T inputs in O(n T^2) per layer.

The dense probe draws n_out x n_in weights per layer and multiplies by them: O(n^2 T). When the
width n exceeds T, the batch only ever sees a T-dimensional slice of each weight matrix.

Forward. Let X (n_in x T) be the layer input and W (n_out x n_in) have iid N(0, s^2) entries,
independent of X (X depends only on earlier layers). Take the thin QR X = Q R, Q (n_in x k)
with orthonormal columns, k = min(n_in, T). Then W X = (W Q) R, and Z = W Q is n_out x k iid
N(0, s^2): each row of W is an isotropic Gaussian, and its coordinates along orthonormal
directions are iid N(0, s^2). So U = Z R has exactly the law of W X, in O(n T^2).

Backward. Complete Q to an orthonormal basis [Q, Q_perp]; then W = Z Q^T + Z_perp Q_perp^T with
Z_perp = W Q_perp iid N(0, s^2) and independent of Z (same isotropy argument). The forward pass
and everything downstream (later layers, the loss weights w, hence the backprop signal g =
dL/dU, n_out x T) depend on W only through Z, so Z_perp is independent of all of them, and

    W^T g = Q Z^T g + Q_perp Z_perp^T g.

Conditionally on g, with thin QR g = Q_g S (S: k' x T), each row z of Z_perp^T (z ~ N(0, s^2 I)
in R^{n_out}) gives z^T g = (z^T Q_g) S with z^T Q_g ~ N(0, s^2 I_k'), so Z_perp^T g has the
law of Y S with Y ((n_in - k) x k') iid N(0, s^2). And Q_perp Y has the law of (I - Q Q^T) Z'
for Z' (n_in x k') iid N(0, s^2), since Q_perp^T Z' is again iid N(0, s^2) and
(I - Q Q^T) = Q_perp Q_perp^T. Hence, exactly in distribution jointly with the forward pass,

    W^T g  =_d  Q (Z^T g) + (I - Q Q^T) (Z' S),        all O(n T^2).

Each layer's Z_perp is a fresh independent variable, so the layers compose exactly. Checked
against the dense path in tests/test_sampled.py.

Inits whose weights are iid Gaussian (those with a `sampled_std` in varexp.inits.INITS:
kaiming, xavier, batchnorm, scale, scale+bias) are sampled; the init's fit (scale, scale+bias:
paper Eq. 13-14, fitted on this batch) is applied as its `sampled_map`, with its scale and bias
constant in the backward, as weights and biases fitted by an init are in the dense path; and
BatchNorm units (arch.norm=batchnorm) normalize each feature over the batch, with the backward
through the batch statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from varexp.activations import get_activation
from varexp.inits import INITS
from varexp.stats import sample_stats

BN_EPS = 1e-5  # nn.BatchNorm1d's default
RANK_TOL = 1e-5  # |R_ii| below this fraction of the largest: X is (numerically) rank-deficient


def unsupported(arch: object, init: object) -> str | None:
    """Why the sampled path cannot run this setting (the `arch` and `init` config nodes or
    specs) exactly, or None if it can."""
    if arch.name != "mlp":
        return f"arch={arch.name} is not a fully connected network"
    record = INITS[init.name]
    if record.sampled_std is None:
        allowed = ", ".join(n for n, i in INITS.items() if i.sampled_std is not None)
        return f"init={init.name} has no iid Gaussian weights (sampled: {allowed})"
    if arch.norm == "batchnorm" and record.fit is not None:
        return f"arch.norm=batchnorm with init={init.name} needs the dense path"
    return None


def batchnorm(V: Tensor) -> Tensor:
    """BatchNorm of a layer's output V (features x T) on its batch statistics; recomputed in the
    backward pass, as nn.BatchNorm1d in training mode does."""
    mu = V.mean(dim=1, keepdim=True)
    var = (V - mu).square().mean(dim=1, keepdim=True)
    return (V - mu) * torch.rsqrt(var + BN_EPS)


def normalizer(init: str, norm: str, U: Tensor, eps: float) -> Callable[[Tensor], Tensor]:
    """u = norm(U) for U (features x T): the units' BatchNorm, or the init's fit as a map."""
    if norm == "batchnorm":
        return batchnorm
    fit = INITS[init].sampled_map
    return (lambda V: V) if fit is None else fit(U, eps)


def backward_through(f: Callable[[Tensor], Tensor], U: Tensor, g: Tensor) -> Tensor:
    """dL/dU given g = dL/df(U), for the cheap O(n T) map f (norm then activation)."""
    with torch.enable_grad():
        leaf = U.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(leaf), leaf, g)
    return grad


class Basis:
    """The thin QR X = Q R of a layer input X (n x T), with Q applied implicitly as X R^{-1}:
    R alone (Householder, mode "r") costs half of forming Q, and the backward pass needs Q only
    in products with T x T matrices. A rank-deficient X (a zero R diagonal) or one with n <= T
    (R not square) keeps an explicit Q."""

    def __init__(self, X: Tensor):
        self.X = X
        self.n, self.k = X.shape[0], min(X.shape)
        self.R = torch.linalg.qr(X, mode="r").R
        diag = self.R.diagonal().abs()
        implicit = self.n > self.k and bool(diag.min() > RANK_TOL * diag.max())  # a host sync
        self.Q = None if implicit else torch.linalg.qr(X).Q

    def times(self, a: Tensor) -> Tensor:
        """Q a."""
        if self.Q is not None:
            return self.Q @ a
        return self.X @ torch.linalg.solve_triangular(self.R, a, upper=True)

    def transpose_times(self, y: Tensor) -> Tensor:
        """Q^T y."""
        if self.Q is not None:
            return self.Q.T @ y
        return torch.linalg.solve_triangular(self.R.T, self.X.T @ y, upper=False)


@torch.no_grad()
def sampled_mlp(
    x: Tensor,
    depth: int,
    width: int,
    activation: str = "relu",
    init: str = "kaiming",
    gain: float | None = None,
    eps: float = 1e-5,
    grad: bool = True,
    generator: torch.Generator | None = None,
    keep_u: Sequence[int] = (),
    norm: str | None = None,
) -> tuple[list[dict], dict[int, Tensor]]:
    """One random MLP (Eq. 1, `depth` layers of `width`, zero biases unless the init fits them)
    on the batch x (T, in_features), sampled exactly in O(width T^2) per layer.

    Same return value as varexp.stats.network_stats: per layer l = 1..depth a dict with layer,
    name, features, sample statistics and grad_sq (0-d float64 tensors; grad_sq for the random
    linear loss L = sum_t w . x^L_t, w ~ N(0, 1)), and u^l (T, width) for the layers in keep_u.
    `norm` is the units' normalization (arch.norm; None: the one the init needs).
    """
    record = INITS[init]
    if record.sampled_std is None:
        raise ValueError(f"init={init!r} has no iid Gaussian weights: it cannot be sampled")
    norm = record.norm if norm is None else norm
    act = get_activation(activation)
    f = act.module()
    gain = act.gain if gain is None else gain
    dev, dtype = x.device, x.dtype

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=dev, dtype=dtype)

    X = x.reshape(x.shape[0], -1).T  # features x samples
    rows, kept, saved = [], {}, []
    for layer in range(1, depth + 1):
        basis = Basis(X)
        std = record.sampled_std(X.shape[0], width, gain)
        Z = randn(width, basis.R.shape[0]).mul_(std)
        U = Z @ basis.R
        normalize = normalizer(init, norm, U, eps)
        u = normalize(U)
        X = f(u)
        stats = sample_stats(u.T)
        rows.append(dict(layer=layer, name=f"layer{layer}", features=width, **stats))
        if layer in keep_u:
            kept[layer] = u.T.clone()
        if grad:
            saved.append((basis, Z, U, normalize, std))
    grads = _backward(saved, f, randn) if grad else [None] * depth
    for row, g in zip(rows, grads, strict=True):
        row["grad_sq"] = g
    return rows, kept


def _backward(saved: list, f: Callable[[Tensor], Tensor], randn: Callable) -> list[Tensor]:
    """grad_sq per layer, top down, sampling W^T g exactly (module docstring)."""
    T = saved[-1][2].shape[1]
    w = randn(saved[-1][2].shape[0], 1)
    g_x = w.expand(-1, T)
    out = [w.double().square().mean()]
    for basis, Z, U, norm, std in reversed(saved[1:]):
        g_U = backward_through(lambda V, norm=norm: f(norm(V)), U, g_x)
        if basis.n > basis.k:  # W^T g = Y + Q (Z^T g - Q^T Y); Q_perp is empty when n_in <= T
            S = torch.linalg.qr(g_U, mode="r").R
            Y = randn(basis.n, S.shape[0]).mul_(std) @ S
            g_x = Y + basis.times(Z.T @ g_U - basis.transpose_times(Y))
        else:
            g_x = basis.times(Z.T @ g_U)
        out.append(g_x.double().square().mean())
    return out[::-1]
