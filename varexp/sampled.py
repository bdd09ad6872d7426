"""Exact sampling of random Gaussian-weight MLPs on a batch of T inputs in O(n T^2) per layer,
many networks at a time.

The dense probe draws n_out x n_in weights per layer and multiplies by them: O(n^2 T). When the
width n exceeds T, the batch only ever sees a T-dimensional slice of each weight matrix.

Forward. Let X (n_in x T) be the layer input and W (n_out x n_in) have iid N(0, s^2) entries,
independent of X (X depends only on earlier layers). Row i of U = W X is w_i^T X with w_i ~
N(0, s^2 I): the rows are independent N(0, s^2 G), G = X^T X. So for any F with F F^T = G (the
Cholesky factor, or from the eigendecomposition where G is singular or ill-conditioned),
U = s Xi F^T with Xi (n_out x T) iid N(0, 1) has exactly the law of W X: one T x T Gram matrix,
one n x T by T x T product, O(n T^2). In the terms of a thin QR X = Q R: R = F^T, Q = X F^{-T},
and Z = W Q = U F^{-T} is n_out x T iid N(0, s^2).

Backward. Complete Q to an orthonormal basis [Q, Q_perp]; then W = Z Q^T + Z_perp Q_perp^T with
Z_perp = W Q_perp iid N(0, s^2) and independent of Z (each row of W is isotropic). The forward
pass and everything downstream (later layers, the loss weights w, hence the backprop signal g =
dL/dU, n_out x T) depend on W only through Z, so Z_perp is independent of all of them, and

    W^T g = Q Z^T g + Q_perp Z_perp^T g.

Conditionally on g, each row of Z_perp^T g is z^T g with z ~ N(0, s^2 I): independent rows
N(0, s^2 g^T g). Let Y (n_in x T) = s Xi' F_g^T with F_g F_g^T = g^T g: its rows have that law,
Q_perp^T Y is again such a matrix, and Q_perp Q_perp^T = I - Q Q^T. With Q Q^T = X K X^T, K =
G^+ (the inverse of G, or its pseudo-inverse), and Q Z^T g = X K U^T g, exactly in distribution
jointly with the forward pass:

    W^T g  =_d  Y + X K (U^T g - X^T Y),        all O(n T^2).

Each layer's Z_perp is a fresh independent variable, so the layers compose exactly. The backward
pass keeps of each layer only U and K (x^(l-1) is recomputed from U^(l-1)). G is formed in float64
from the float32 X (a float32 Gram matrix would make the backward's projection err by float32
rounding times cond(X)^2; this way it is rounding times cond(X), as with a Householder QR).
Checked against the dense path in tests/test_sampled.py. Per layer: 8 products of n x T by T x T
matrices' worth of arithmetic (the float64 Gram matrix counting 2) and 2 n x T Gaussian draws.

Networks are batched: every tensor has a leading network dimension, and every draw of network i
comes from its own generator in the same order, so its numbers do not depend on which networks
share its batch: bit for bit on the CPU (tests/test_sampled.py); on a GPU the libraries may round
a network differently in a batch of another size, and `sampled_probe` puts all networks in one
batch there (unless memory is short). On the CPU, `sampled_probe` runs batches on worker threads
with torch on one intra-op thread each: the operations here are a few milliseconds long, and
threads that wait for each other at the end of every one of them are several times slower once
another process holds a core (varexp.threads).

Inits whose weights are iid Gaussian (those with a `sampled_std` in varexp.inits.INITS:
kaiming, xavier, batchnorm, scale, scale+bias) are sampled; the init's fit (scale, scale+bias:
paper Eq. 13-14, fitted on this batch) is applied as its `sampled_map`, with its scale and bias
constant in the backward, as weights and biases fitted by an init are in the dense path; and
BatchNorm units (arch.norm=batchnorm) normalize each feature over the batch, with the backward
through the batch statistics.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch
from torch import Tensor

from varexp.activations import get_activation
from varexp.inits import INITS
from varexp.threads import one_thread

BN_EPS = 1e-5  # nn.BatchNorm1d's default
RANK_TOL = 1e-5  # singular values of X below this fraction of the largest count as zero


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


def normalizer(init: str, norm: str, U: Tensor, eps: float) -> Callable[[Tensor], Tensor] | None:
    """u = norm(U) for U (features x T): the units' BatchNorm, the init's fit as a map, or None
    for none."""
    if norm == "batchnorm":
        return batchnorm
    fit = INITS[init].sampled_map
    return None if fit is None else fit(U, eps)


def backward_through(f: Callable[[Tensor], Tensor], U: Tensor, g: Tensor) -> Tensor:
    """dL/dU given g = dL/df(U), for the cheap O(n T) map f (norm then activation)."""
    with torch.enable_grad():
        leaf = U.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(leaf), leaf, g)
    return grad


class Workspace:
    """The arrays of a batch's forward and backward passes, kept from one batch to the next on
    the same worker: allocating and freeing arrays of a few MB every layer fragments the heap
    (the process kept about twice the memory it used) and costs fresh pages."""

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """An uninitialized array `name` of `shape`, in memory kept under that name."""
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if (
            buffer is None
            or buffer.numel() < numel
            or buffer.dtype != dtype
            or buffer.device != device
        ):
            buffer = self.buffers[name] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)


def gram(X: Tensor, space: Workspace) -> Tensor:
    """X^T X in float64 for X (..., n, T)."""
    X = space.get("float64", X.shape, torch.float64, X.device).copy_(X)
    return X.mT @ X


def factor(G: Tensor, inverse: bool = True) -> tuple[Tensor, Tensor | None]:
    """(F, K) for each positive semi-definite G (..., T, T): F F^T = G and K = G^+.

    Cholesky where G is well conditioned; else (a singular or nearly singular X: repeated
    samples, fewer features than samples) from the eigendecomposition, with the directions of
    singular values below RANK_TOL of the largest dropped. Decided matrix by matrix."""
    C, info = torch.linalg.cholesky_ex(G)
    diag = C.diagonal(dim1=-2, dim2=-1)
    bad = (info != 0) | ~(diag.amin(-1) > RANK_TOL * diag.amax(-1))
    index = bad.nonzero().flatten() if bool(bad.any()) else None  # a host sync, cheap here
    if index is not None:
        C = C.clone()
        C[index] = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    K = torch.cholesky_inverse(C) if inverse else None
    if index is not None:
        # an overflowed network (a large init.gain) gets NaN, which its rows report
        finite = G[index].isfinite().all(-1).all(-1)
        lam, V = torch.linalg.eigh(torch.where(finite[:, None, None], G[index], 0))
        keep = lam > RANK_TOL**2 * lam.amax(-1, keepdim=True)
        nan = torch.where(finite, 1.0, float("nan")).to(G.dtype)[:, None, None]
        C[index] = V * torch.where(keep, lam.clamp_min(0).sqrt(), 0).unsqueeze(-2) * nan
        if K is not None:
            K[index] = (V * torch.where(keep, 1 / lam, 0).unsqueeze(-2)) @ V.mT * nan
    return C, K


def normals(generators: Sequence[torch.Generator | None], out: Tensor) -> Tensor:
    """`out` (networks, ...) filled with iid N(0, 1), each network's from its own generator."""
    for part, generator in zip(out, generators, strict=True):
        part.normal_(generator=generator)
    return out


def layer_stats(u: Tensor, space: Workspace) -> dict[str, Tensor]:
    """varexp.stats.sample_stats of each network's pre-activations, u (networks, features, T):
    per network 0-d float64 values. Centred in float32, sums over samples (<= T terms) in
    float32 and over features in float64; every reduction is over one axis per network, so no
    network's numbers depend on the others. For a Linear layer the per-channel statistics are
    the per-feature ones."""
    mean = u.mean(dim=2, keepdim=True)
    mean_sq = mean.squeeze(2).double().square().mean(dim=1)
    # deviations scaled by a power of two (exact) near the size of the means, so that their
    # float32 squares stay finite as long as u is (deep layers of a large init.gain)
    exponent = mean_sq.sqrt().log2().floor().clamp(min=0).nan_to_num(posinf=0)
    scale = torch.exp2(-exponent).to(u.dtype)[:, None, None]
    squares = torch.addcmul(
        mean.mul(scale).neg_(), u, scale, out=space.get("squares", u.shape, u.dtype, u.device)
    ).square_()
    unscale = torch.exp2(2 * exponent)
    variance = squares.mean(dim=2).double().mean(dim=1) * unscale
    distance = squares.sum(dim=1).double()
    ratio = (mean_sq / variance).sqrt()
    effective = distance.sum(dim=1).square() / distance.square().sum(dim=1)
    return {
        "sample_mean_sq": mean_sq,
        "sample_var": variance,
        "ratio": ratio,
        "second_moment": mean_sq + variance,
        "effective_samples": effective,
        "sample_mean_sq_channel": mean_sq,
        "sample_var_channel": variance,
        "ratio_channel": ratio,
    }


def mean_square(g: Tensor) -> Tensor:
    """Per network, the mean of g^2 over features and samples (over features in float64)."""
    return torch.linalg.vector_norm(g, dim=2).double().square().mean(dim=1) / g.shape[2]


@dataclass
class Layer:
    """What the backward pass keeps of one layer of a batch of networks."""

    U: Tensor  # (networks, width, T): the weight layer's output
    K: Tensor | None  # (networks, T, T) float64: G^+ of its input's Gram matrix
    std: float  # of the weights
    maps: list[Callable[[Tensor], Tensor] | None]  # per network u = map(U); None: u = U


class Stopped(Exception):
    """The probe was asked to stop between two layers."""


@torch.no_grad()
def sampled_mlps(
    x: Tensor,
    depth: int,
    width: int,
    generators: Sequence[torch.Generator | None],
    activation: str = "relu",
    init: str = "kaiming",
    gain: float | None = None,
    eps: float = 1e-5,
    grad: bool = True,
    keep_u: Sequence[int] = (),
    norm: str | None = None,
    stop: threading.Event | None = None,
    workspace: Workspace | None = None,
) -> list[tuple[list[dict], dict[int, Tensor]]]:
    """Random MLPs (Eq. 1, `depth` layers of `width`, zero biases unless the init fits them), one
    per generator, on the batch x (T, in_features), sampled exactly in O(width T^2) per layer.

    Per network the return value of varexp.stats.network_stats: per layer l = 1..depth a dict
    with layer, name, features, sample statistics and grad_sq (0-d float64 tensors; grad_sq for
    the random linear loss L = sum_t w . x^L_t, w ~ N(0, 1)), and u^l (T, width) for the layers
    in keep_u. `norm` is the units' normalization (arch.norm; None: the one the init needs).
    A generator of None draws from torch's global generator. `stop`, once set, ends the call
    between two layers with Stopped. A `workspace` passed to successive calls keeps their
    arrays' memory from one call to the next.
    """
    record = INITS[init]
    if record.sampled_std is None:
        raise ValueError(f"init={init!r} has no iid Gaussian weights: it cannot be sampled")
    norm = record.norm if norm is None else norm
    act = get_activation(activation)
    f = act.module()
    gain = act.gain if gain is None else gain
    count, T = len(generators), x.shape[0]
    space = Workspace() if workspace is None else workspace
    shape = (count, width, T)
    store = space.get("outputs", (depth if grad else 1, *shape), x.dtype, x.device)

    X = x.reshape(T, -1).T.unsqueeze(0)  # (1, features, samples): the batch all networks see
    layers: list[Layer] = []
    stats: list[dict[str, Tensor]] = []
    kept: list[dict[int, Tensor]] = [{} for _ in range(count)]
    for index in range(1, depth + 1):
        check(stop)
        n_in = X.shape[1]
        F, K = factor(gram(X, space), inverse=grad and index > 1)
        std = record.sampled_std(n_in, width, gain)
        R = (std * F.mT).to(x.dtype).expand(count, T, T).contiguous()
        draws = normals(generators, space.get("draws", shape, x.dtype, x.device))
        U = torch.bmm(draws, R, out=store[index - 1 if grad else 0])
        maps = [normalizer(init, norm, part, eps) for part in U]
        layer = Layer(U, K, std, maps)
        u = (
            U
            if plain(layer)
            else torch.stack(
                [part if m is None else m(part) for part, m in zip(U, maps, strict=True)]
            )
        )
        stats.append(layer_stats(u, space))
        if index in keep_u:
            for i, part in enumerate(u):
                kept[i][index] = part.T.clone()
        X = activate(layer, f, space)
        if grad:
            layers.append(layer)
    grads = _backward(layers, generators, f, space, stop) if grad else [None] * depth
    out = []
    for i in range(count):
        rows = []
        for index, (layer_stat, g) in enumerate(zip(stats, grads, strict=True), 1):
            rows.append(
                dict(
                    layer=index,
                    name=f"layer{index}",
                    features=width,
                    **{k: v[i] for k, v in layer_stat.items()},
                    grad_sq=None if g is None else g[i],
                )
            )
        out.append((rows, kept[i]))
    return out


def check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped


def _backward(
    layers: list[Layer],
    generators: Sequence,
    f: Callable[[Tensor], Tensor],
    space: Workspace,
    stop: threading.Event | None,
) -> list[Tensor]:
    """grad_sq per layer (per network), top down, sampling W^T g exactly (module docstring)."""
    top = layers[-1].U
    count, width, T = top.shape
    w = normals(generators, top.new_empty(count, width, 1))
    g_x = w.expand(-1, -1, T)
    out = [w.double().square().mean(dim=(1, 2))]
    for layer, below in zip(reversed(layers[1:]), reversed(layers[:-1]), strict=True):
        check(stop)
        U = layer.U
        if isinstance(f, torch.nn.ReLU) and plain(layer):
            g_U = torch.ops.aten.threshold_backward.grad_input(
                g_x, U, 0, grad_input=space.get("signal", U.shape, U.dtype, U.device)
            )
        else:
            g_U = torch.stack(
                [
                    backward_through(lambda V, m=m: f(V if m is None else m(V)), part, g)
                    for part, m, g in zip(U, layer.maps, g_x, strict=True)
                ]
            )
        X = activate(below, f, space)  # this layer's input
        F_g, _ = factor((g_U.mT @ g_U).double(), inverse=False)
        draws = normals(generators, space.get("draws", X.shape, X.dtype, X.device))
        # the new signal takes the memory of the one just used: g_x is no longer needed
        Y = torch.bmm(
            draws,
            (layer.std * F_g.mT).to(X.dtype),
            out=space.get("back", X.shape, X.dtype, X.device),
        )
        P = layer.K @ ((U.mT @ g_U).double() - (X.mT @ Y).double())
        g_x = Y.baddbmm_(X, P.to(X.dtype))
        out.append(mean_square(g_x))
    return out[::-1]


def plain(layer: Layer) -> bool:
    """u = U in every network of the batch."""
    return all(m is None for m in layer.maps)


def activate(layer: Layer, f: Callable[[Tensor], Tensor], space: Workspace) -> Tensor:
    """x^l = f(u^l) from the layer's U, the same numbers in the backward pass as in the forward
    one. Network by network, except ReLU (exact in any vectorization) on plain layers."""
    U = layer.U
    if isinstance(f, torch.nn.ReLU) and plain(layer):
        return torch.clamp_min(U, 0, out=space.get("inputs", U.shape, U.dtype, U.device))
    return torch.stack([f(V if m is None else m(V)) for V, m in zip(U, layer.maps, strict=True)])


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
    """One random MLP: sampled_mlps for the single generator `generator`."""
    return sampled_mlps(
        x, depth, width, [generator], activation, init, gain, eps, grad, keep_u, norm
    )[0]


# On the CPU up to CPU_MAX_BATCH networks per batch, fewer where their arrays would exceed
# CPU_BATCH_ELEMENTS: alone, a network leaves the small T x T operations and Python a large share
# of each layer (in batches of 8: 1.4x faster at width 300, 1.35x at 1000, 1.15x at 3000, T = 100,
# one thread; bench/README.md).
CPU_BATCH_ELEMENTS = 2**22
CPU_MAX_BATCH = 8


def default_batch(width: int, samples: int, networks: int, device: torch.device) -> int:
    """Networks per batch: on the CPU up to CPU_MAX_BATCH (8 at width 3000 and T = 100);
    elsewhere all of them (one kernel launch per operation for every network)."""
    if device.type != "cpu":
        return networks
    return max(1, min(CPU_MAX_BATCH, networks, CPU_BATCH_ELEMENTS // (width * samples)))


def cut(networks: int, batch: int, workers: int) -> list[range]:
    """Networks 0..networks-1 cut into consecutive batches of at most `batch`, as equal in size
    as can be and (where there are enough networks) a multiple of `workers` in number, so that
    the workers finish together."""
    pieces = math.ceil(networks / max(1, batch))
    pieces = min(networks, math.ceil(pieces / workers) * workers)
    bounds = [round(i * networks / pieces) for i in range(pieces + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def sampled_probe(
    x: Tensor,
    depth: int,
    width: int,
    generators: Sequence[torch.Generator | None],
    batch: int | None = None,
    threads: int | None = None,
    **options: object,
) -> Iterator[tuple[int, list[dict], dict[int, Tensor]]]:
    """sampled_mlps for every generator (network i draws from generators[i]), at most `batch`
    networks at a time (default: default_batch), yielding (i, rows, kept u) as each batch
    finishes.

    On the CPU the batches run on `threads` worker threads (default: torch's thread count, the
    cores the `threads` key or torch.set_num_threads gives), each with torch on one intra-op
    thread, so no thread waits for another between operations; elsewhere one batch at a time.
    A network's numbers are the same whatever `batch` and `threads` are. Closing the iterator
    (an error or Ctrl-C in the caller) stops the workers within a layer. `options` are
    sampled_mlps' keyword arguments."""
    cpu = x.device.type == "cpu"
    threads = torch.get_num_threads() if threads is None else threads
    workers = max(1, min(threads, len(generators))) if cpu else 1
    if batch is None:
        batch = default_batch(width, x.shape[0], len(generators), x.device)
    chunks = cut(len(generators), batch, workers)
    stop = threading.Event()
    local = threading.local()  # each worker's workspace

    def run(chunk: range) -> list:
        if not hasattr(local, "workspace"):
            local.workspace = Workspace()
        out = sampled_mlps(
            x,
            depth,
            width,
            [generators[i] for i in chunk],
            stop=stop,
            workspace=local.workspace,
            **options,
        )
        return [(i, rows, kept) for i, (rows, kept) in zip(chunk, out, strict=True)]

    if not cpu:
        for chunk in chunks:
            yield from run(chunk)
        return
    if workers == 1:
        with one_thread():
            for chunk in chunks:
                yield from run(chunk)
        return
    with one_thread(), ThreadPoolExecutor(workers, thread_name_prefix="varexp-probe") as pool:
        pending = {pool.submit(run, chunk) for chunk in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        finally:
            stop.set()  # the caller stopped early: the workers stop at their next layer
            for future in pending:
                future.cancel()
