"""Averages of result tables shared by the figures, the sweep and the report: over networks
(probe.csv columns) and over a run's loss curve (the sweep's selection criterion)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from varexp.errors import VarexpError


def criterion(losses: pd.Series, fraction: float) -> float:
    """Mean training loss over the last `fraction` of the logged steps (at least one step);
    fraction = 1 gives the area under the whole loss curve per step (`sweep.select=auc`)."""
    tail = max(1, math.ceil(fraction * len(losses)))
    return float(losses.iloc[-tail:].mean())


def layer_summary(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per layer: mean and std (ddof=1; 0 for one network) of `column` over networks, the count
    of finite values, and the layer's name when the table has one."""
    grouped = table.groupby("layer")[column]
    out = pd.DataFrame(
        {"mean": grouped.mean(), "std": grouped.std().fillna(0.0), "count": grouped.count()}
    )
    if "name" in table.columns:
        out["name"] = table.groupby("layer")["name"].first()
    return out.reset_index()


def log_summary(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per layer: mean, std (ddof=1) and standard error over networks of log(`column`), for
    positive heavy-tailed values (exp(mean) is their geometric mean)."""
    logs = table.assign(value=np.log(table[column].astype(float)))
    out = layer_summary(logs, "value")
    out["error"] = out["std"] / np.sqrt(out["count"])
    return out


def effective_fraction(table: pd.DataFrame, samples: int) -> float:
    """Effective samples / T averaged over networks and over the layers the gradient slope is
    fitted on (1..L-1)."""
    mean = layer_summary(table, "effective_samples")
    return float(mean.loc[mean["layer"] < mean["layer"].max(), "mean"].mean() / samples)


def grad_fit(table: pd.DataFrame, first: int = 1, last: int | None = None) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line log(mean over networks of grad_sq) vs layer,
    over layers first..last (default: 1..L-1); see grad_slope."""
    if "grad_sq" not in table.columns or "layer" not in table.columns:
        raise VarexpError("the gradient fit needs the columns layer and grad_sq of probe.csv")
    means = table.groupby("layer")["grad_sq"].mean()
    top = last if last is not None else means.index.max() - 1
    means = means[(means.index >= first) & (means.index <= top)]
    means = means[np.isfinite(means) & (means > 0)]
    if len(means) < 2:
        raise VarexpError(
            f"the gradient fit needs positive finite grad_sq at >= 2 layers in "
            f"{first}..{last if last is not None else 'L'}; found {len(means)}"
        )
    slope, intercept = np.polyfit(means.index.to_numpy(float), np.log(means.to_numpy(float)), 1)
    return float(slope), float(intercept)


def grad_slope(table: pd.DataFrame, first: int = 1, last: int | None = None) -> float:
    """Slope of log(mean over networks of grad_sq) vs layer (paper Fig. 3, Sec. 4: -0.379 for
    scale+bias, -0.381 for batchnorm, ~0 for kaiming; theory log(1 - 1/pi) = -0.383).

    The fit uses layers first..last, by default 1..L-1: dL/dx^L = w is set by the loss, not by
    backpropagation, and with batchnorm the step from L to L-1 goes the other way (BN's backward
    pass removes the sample mean of w, which is the same for every sample). At widths <= 1000 the
    scale+bias steps shrink over the top ~15 layers, which is why narrower nets give a smaller
    slope (`varexp plot slopes`); that is kept in the fit. Pass first/last to fit a sub-range.
    """
    return grad_fit(table, first, last)[0]


def grad_slope_error(
    table: pd.DataFrame, draws: int = 200, rng: np.random.Generator | None = None
) -> tuple[float, float]:
    """grad_slope and its standard error over a bootstrap of the networks (`draws` resamples;
    0 for one network)."""
    slope = grad_fit(table)[0]
    networks = table["network"].unique()
    if len(networks) < 2:
        return slope, 0.0
    rng = np.random.default_rng(0) if rng is None else rng
    by_network = {n: t for n, t in table.groupby("network")}
    samples = [
        grad_fit(pd.concat([by_network[n] for n in rng.choice(networks, len(networks))]))[0]
        for _ in range(draws)
    ]
    return slope, float(np.std(samples, ddof=1))
