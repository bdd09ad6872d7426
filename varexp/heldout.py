"""Held-out statistics of the data-dependent inits (scale, scale+bias, lsuv) in `varexp probe`
with probe.heldout=H: per network and layer, the second moment of u and the mean over channels
(features) of its squared sample mean, on the T inputs the init was fitted on and on H fresh
inputs (heldout.csv; varexp.inits.HELDOUT_STATS defines both).

On its fitting batch an init meets its targets exactly (second moment 1, and for scale+bias mean
0); on fresh inputs it does so only approximately, because at finite width the fit depends on
the T samples it saw. Neither the paper nor the inits' authors report this.

The fresh inputs are the H that follow the probe batch in its seeded order: new iid draws for
`gaussian`, training images not in the probe batch for classification sets, new crops for
segmentation. A dense network is rebuilt from the probe's own seed, so heldout.csv's network i is
probe.csv's. On the sampled path (wide Gaussian MLPs, varexp.sampled) network i is drawn once
more, jointly on both batches (its fit on the first T columns), with a generator of its own: the
same law as probe.csv's networks, not the same draws.
"""

from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor

from varexp.activations import get_activation
from varexp.data import fixed_batch
from varexp.errors import bad_value
from varexp.inits import HELDOUT_STATS, INITS, initialize, one_batch
from varexp.models import build_model
from varexp.sampled import Workspace, factor, gram
from varexp.schema import to_spec

HELDOUT_KEYS = tuple(f"{batch}_{stat}" for stat in HELDOUT_STATS for batch in ("fit", "heldout"))


def check(cfg: DictConfig) -> None:
    """probe.heldout needs an init that is fitted to data."""
    if cfg.probe.heldout and INITS[cfg.init.name].fit is None:
        fitted = ", ".join(name for name, init in INITS.items() if init.fit is not None)
        raise bad_value(
            "probe.heldout",
            cfg.probe.heldout,
            f"needs a data-dependent init ({fitted}); init={cfg.init.name} is not "
            "fitted to data (use probe.heldout=0)",
        )


def fresh_batch(cfg: DictConfig, device: torch.device) -> Tensor:
    """The probe.heldout inputs after the probe batch in its seeded order."""
    samples = cfg.probe.samples
    both = fixed_batch(cfg.dataset, cfg.arch, samples + cfg.probe.heldout, cfg.seed, device)
    return both[samples:]


def heldout_frame(network: int, rows: list[dict], fit: int, fresh: int) -> pd.DataFrame:
    """heldout.csv's rows of one network from per-layer dicts with layer, name and HELDOUT_KEYS."""
    frame = pd.DataFrame([{k: float(r[k]) for k in HELDOUT_KEYS} for r in rows])
    frame.insert(0, "heldout_samples", fresh)
    frame.insert(0, "fit_samples", fit)
    frame.insert(0, "name", [r["name"] for r in rows])
    frame.insert(0, "layer", [r["layer"] for r in rows])
    frame.insert(0, "network", network)
    return frame


def heldout_network(
    cfg: DictConfig, x: Tensor, fresh: Tensor, seed: int, num_classes: int | None, method: str
) -> list[dict]:
    """Per layer, HELDOUT_KEYS of the network probe.csv seeds with `seed` (dense), or of one of
    its law drawn jointly on both batches (sampled)."""
    torch.manual_seed(seed)
    spec = one_batch(to_spec(cfg.init))
    if method == "dense":
        with torch.device(x.device):
            model = build_model(cfg.arch, tuple(x.shape[1:]), num_classes)
        report = initialize(model, spec, cfg.arch.activation, batches=[x], heldout=fresh)
        return [dict(layer=e["index"], **e) for e in report.layers]
    generator = torch.Generator(device=x.device).manual_seed(seed + 1)
    return sampled_heldout(
        x,
        fresh,
        cfg.arch.depth,
        cfg.arch.width,
        cfg.arch.activation,
        spec.name,
        getattr(spec, "gain", None),
        getattr(spec, "eps", 0.0),
        generator,
    )


def _stats(u: Tensor, prefix: str) -> dict[str, Tensor]:
    """HELDOUT_STATS of u (features x samples) in float64."""
    u = u.double()
    return {
        f"{prefix}_second_moment": u.square().mean(),
        f"{prefix}_mean_sq": u.mean(dim=1).square().mean(),
    }


@torch.no_grad()
def sampled_heldout(
    x: Tensor,
    fresh: Tensor,
    depth: int,
    width: int,
    activation: str,
    init: str,
    gain: float | None,
    eps: float,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """One random MLP (varexp.sampled's law, `depth` layers of `width`) sampled exactly on the
    T fitting inputs x and the fresh inputs together, its init's fit (scale, scale+bias)
    made on x's columns only: per layer HELDOUT_KEYS, in O(width (T + H)^2)."""
    record = INITS[init]
    if record.sampled_std is None or record.sampled_map is None:
        raise ValueError(f"init={init!r} is not a fitted init with iid Gaussian weights")
    act = get_activation(activation)
    f, gain = act.module(), act.gain if gain is None else gain
    samples = x.shape[0]
    # (1, features, samples): one network in varexp.sampled's batched layout
    X = torch.cat([x, fresh]).reshape(samples + fresh.shape[0], -1).T.unsqueeze(0)
    space = Workspace()
    rows = []
    for layer in range(1, depth + 1):
        F, _ = factor(gram(X, space), inverse=False)  # F F^T = X^T X
        std = record.sampled_std(X.shape[1], width, gain)
        Z = torch.randn(width, F.shape[-1], generator=generator, device=X.device, dtype=X.dtype)
        U = Z @ (std * F[0].mT).to(X.dtype)  # rows iid N(0, std^2 X^T X): the law of W X
        u = record.sampled_map(U[:, :samples], eps)(U)
        rows.append(
            dict(
                layer=layer,
                name=f"layer{layer}",
                **_stats(u[:, :samples], "fit"),
                **_stats(u[:, samples:], "heldout"),
            )
        )
        X = f(u).unsqueeze(0)
    return rows
