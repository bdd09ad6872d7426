"""REPORT.md: each quantitative claim of the paper beside the value measured in a reproduce run
directory (varexp.reproduce), with the figures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from varexp.activations import get_activation
from varexp.errors import VarexpError
from varexp.figures import FIGURES, Figure
from varexp.files import atomic_path
from varexp.provenance import now, record
from varexp.results import run_config
from varexp.results.aggregate import (
    effective_fraction,
    grad_slope_error,
    layer_summary,
    log_summary,
)
from varexp.results.summary import SUMMARY, Status
from varexp.results.tables import (
    METRICS,
    RATIOS,
    SELECTED,
    SWEEP,
    RunResult,
    load_heldout,
    load_probes,
    stack,
)
from varexp.theory import cross_moment, gradient_slope, recursion

# a measured value matches within this many of its standard errors; an ordering holds beyond it
Z = 2.0
EXACT = 1e-9  # an exact computation (no sampling) matches within this
# numbers for the paper's words, stated in RULE and in each row that uses one
PEAK = 12  # "increases up to around layer 12 before decreasing significantly" (Sec. 3.3)
AROUND = 2  # layers either side of PEAK that count as "around" it
FALL = 0.25  # "decreasing significantly": the last layer at least this fraction below the peak
SIMILAR = 0.25  # "converged to similar values": the gap at the end below this fraction of its start
BARELY = 0.9  # a run "barely trains" when its last loss is above this fraction of its first
RULE = f"""Each row gives the paper's value or statement, ours, our standard error (SE: over
networks for probes, a bootstrap over networks for slopes, over seeds for training) and the
distance (ours - reference) / SE, where the reference is the paper's value or, for an ordering
(above, below, faster), the bound the paper's statement compares with. A value **matches** when it
is within {Z:g} SE of the paper's and **differs** otherwise, with the reason where we know it. An
ordering matches (for Fig. 4: faster) when the distance is beyond {Z:g} SE in the paper's
direction, differs (slower) when beyond {Z:g} SE in the other, and is **not distinguishable** in
between. The paper states no uncertainty, so the SE is ours alone: a value the paper measured
on its own 30 networks carries a scatter of its own that the distance leaves out. An exact
computation (no sampling) matches within {EXACT:g}, or within the rounding of the paper's printed
digits. A Fig. 4 row is **not bracketed** when a selected learning rate is the
smallest or largest its sweep tried (selected.csv's lr_at_edge): a better one may lie beyond.
Where the paper's words need a number, the row states the one used: UNet's ratio "decreasing
significantly" = falling by more than {FALL:.0%} from its peak to the last layer, "around layer
{PEAK}" = within {AROUND} layers of it, ratios "converged to similar values" = their gap below
{SIMILAR:.0%} of its start; a run "barely trains" when its last loss is above {BARELY:.0%} of its
first."""


@dataclass(frozen=True)
class Claim:
    """One row of REPORT.md: a claim of the paper beside our measurement, judged by RULE."""

    section: str
    claim: str
    paper: str  # the paper's value or statement, as REPORT prints it
    ours: float | None = None  # None: no result to compare
    error: float | None = None  # ours' standard error; None: exact (no sampling); nan: one
    # sample, no scatter to judge by
    reference: float | None = None  # what ours is held against
    sense: str = "equal"  # equal: ours = reference; above / below: beyond it
    shown: str | None = None  # ours as printed, where more than the number
    note: str = ""  # how it was measured, or why it differs where we know
    words: tuple[str, str] = ("matches", "differs")  # for the paper, against it
    tolerance: float = EXACT  # of an exact comparison
    caveat: str = ""  # said after the verdict (e.g. "not bracketed")

    @property
    def distance(self) -> float | None:
        if (
            self.ours is None
            or self.reference is None
            or not self.error
            or not math.isfinite(self.error)
        ):
            return None
        return (self.ours - self.reference) / self.error

    @property
    def verdict(self) -> str:
        if self.ours is None or not math.isfinite(self.ours) or self.reference is None:
            return "n/a"
        if self.error is None or self.error == 0:  # exact, or samples without any scatter
            gap = self.ours - self.reference
            agree = {"equal": abs(gap) <= self.tolerance, "above": gap > 0, "below": gap < 0}
            text = self.words[0] if agree[self.sense] else self.words[1]
        elif not (self.error > 0 and math.isfinite(self.error)):
            text = "n/a (no scatter: one sample)"
        else:
            d = self.distance if self.sense != "below" else -self.distance
            if self.sense == "equal":
                text = self.words[0] if abs(d) <= Z else self.words[1]
            else:
                text = (
                    self.words[0] if d > Z else self.words[1] if d < -Z else "not distinguishable"
                )
        return f"{text}; {self.caveat}" if self.caveat else text

    def row(self) -> tuple[str, ...]:
        ours = "no result" if self.ours is None else self.shown or f"{self.ours:.4g}"
        error = (
            "exact"
            if self.error is None
            else f"{self.error:.2g}"
            if math.isfinite(self.error)
            else "n/a"
        )
        distance = "" if self.distance is None else f"{self.distance:+.1f}"
        verdict = self.verdict
        verdict = verdict if verdict.startswith(("n/a", "not dist")) else f"**{verdict}**"
        return (self.section, self.claim, self.paper, ours, error, distance, verdict, self.note)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def probes(root: Path, figure: str, inits: tuple[str, ...] | None = None) -> list[RunResult]:
    try:
        return load_probes(figure, str(root), str(root), inits)
    except VarexpError:
        return []


def per_network(table: pd.DataFrame, column: str, layer: int) -> pd.Series:
    """`column` at `layer`, one value per network (indexed by network)."""
    return table[table["layer"] == layer].set_index("network")[column]


def mean_error(values: pd.Series | np.ndarray) -> tuple[float, float]:
    """Mean and standard error (ddof=1; nan for one value)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(error)


def kernel_at_zero(table: pd.DataFrame, samples: int) -> tuple[float, float]:
    """K(0) = m^2 / q at layer 2, per network with unbiased estimators, and its standard error
    over networks. Over T inputs the biased sample variance has expectation v^2 (T - 1) / T and
    the squared sample mean m^2 + v^2 / T; second_moment is unbiased for q."""
    at = table[table["layer"] == 2]
    var = at["sample_var"] * samples / (samples - 1)
    return mean_error((at["sample_mean_sq"] - var / samples) / at["second_moment"])


def kernel_claims(out: Path) -> list[Claim]:
    quadrature = 2 * cross_moment(get_activation("relu"), 1.0, 0.0)
    claims = [
        Claim(
            "3.1",
            "K(0) = 1/pi (Eq. 7): quadrature vs the closed form",
            "1/pi = 0.3183",
            quadrature,
            None,
            1 / math.pi,
            shown=f"{quadrature:.10f}",
        ),
        Claim(
            "4",
            "the gradient slope -log(1/sigma_s^2) = log(1 - K(0)) from the closed form",
            "-0.383",
            gradient_slope(),
            None,
            -0.383,
            shown=f"{gradient_slope():.4f}",
            tolerance=5e-4,
            note="the paper's three digits",
        ),
    ]
    kaiming = [r for r in probes(out / "figure3", "figure3", ("kaiming",)) if r.arch == "mlp"]
    if not kaiming:
        return claims + [Claim("4", "sigma_s = sqrt(1 - K(0))", "0.826", note="no probe")]
    run = max(kaiming, key=lambda r: r.get("arch.width", 0))
    width, nets = run.get("arch.width"), run.table["network"].nunique()
    samples = int(run.get("probe.samples", 100))
    k0, error = kernel_at_zero(run.table, samples)
    # v(2) / v(1) per network: layer 1 has m = 0 (c = 0 at the input), layer 2 m^2 = 2 K(0)
    sigma = np.sqrt(
        per_network(run.table, "sample_var", 2) / per_network(run.table, "sample_var", 1)
    )
    sigma_s, sigma_error = mean_error(sigma)
    inverse, inverse_error = mean_error(1 / sigma)
    exact = math.sqrt(1 - 1 / math.pi)
    where = f"width {width}, T = {samples}, {nets} networks"
    return claims + [
        Claim(
            "3.1",
            f"K(0) = m^2 / q at layer 2 ({where}; the v^2/T bias of the squared "
            "sample mean removed)",
            "1/pi = 0.3183",
            k0,
            error,
            1 / math.pi,
        ),
        Claim(
            "4",
            f"sigma_s = sqrt(1 - K(0)): v(2) / v(1) per network ({where})",
            "0.826",
            sigma_s,
            sigma_error,
            exact,
            shown=f"{sigma_s:.4f}",
            note=f"against sqrt(1 - 1/pi) = {exact:.4f}, which the paper rounds",
        ),
        Claim(
            "4",
            f"1 / sigma_s ({where})",
            "1.21",
            inverse,
            inverse_error,
            1 / exact,
            shown=f"{inverse:.4f}",
            note=f"against 1 / sqrt(1 - 1/pi) = {1 / exact:.4f}",
        ),
    ]


PAPER_SLOPES = {"scale+bias": -0.379, "batchnorm": -0.381, "kaiming": 0.0}


def slope_claims(out: Path) -> list[Claim]:
    claims = []
    runs = probes(out / "figure3", "figure3", tuple(PAPER_SLOPES))
    for run in sorted(runs, key=lambda r: r.init):
        paper = PAPER_SLOPES[run.init]
        slope, error = grad_slope_error(run.table)
        samples = int(run.get("probe.samples", 100))
        width = run.get("arch.width")
        where = (
            f"width {width}, T = {samples}, {run.table['network'].nunique()} networks; "
            "fit over layers 1..L-1"
        )
        printed = f"{paper:+.3f}" if paper else "0 (gradients preserved)"
        claim = Claim(
            "4, Fig. 3",
            f"slope of log grad_sq vs layer, {run.init} ({where})",
            printed,
            slope,
            error,
            paper,
            shown=f"{slope:+.4f}",
        )
        note = slope_note(run, slope, error, samples)
        claims.append(dataclasses.replace(claim, note=note if claim.verdict == "differs" else ""))
    return claims


def slope_note(run: RunResult, slope: float, error: float, samples: int) -> str:
    """Why a slope differs from the paper's, where we know."""
    if run.init == "batchnorm":
        # BatchNorm divides by the biased sample variance of T inputs: each layer's gain grows
        # by about sqrt(T / (T - 1)), its square steepening the slope by log(T / (T - 1))
        finite = gradient_slope() - math.log(samples / (samples - 1))
        return (
            f"finite T: BatchNorm divides by the biased variance of T = {samples} inputs, "
            f"which steepens the theory's {gradient_slope():.3f} to {finite:.3f}; ours is "
            f"{(slope - finite) / error:+.1f} SE from that"
        )
    if run.init == "scale+bias":
        effective = layer_summary(run.table, "effective_samples").set_index("layer")["mean"]
        depth = int(effective.index.max())
        return (
            f"finite width: the slope shrinks toward 0 as the width falls (Slopes figure); "
            f"it goes together with the centred signal resting on few of the T inputs "
            f"({effective[depth // 2] / samples:.0%} at layer {depth // 2}, "
            f"{effective[depth] / samples:.0%} at layer {depth}); see the intervention row"
        )
    return ""


def intervention_claims(out: Path) -> list[Claim]:
    """Not in the paper: whether fewer effective samples cause the shallower scale+bias slope.
    At one width and T, runs whose inputs' norms were spread (dataset.norm_spread, fewer
    effective samples by construction) against runs on iid inputs: the slope's change."""
    runs = [r for r in probes(out / "slopes", "slopes", ("scale+bias",)) if r.arch == "mlp"]
    groups: dict[tuple, dict[float, list[RunResult]]] = {}
    for run in runs:
        key = (int(run.get("arch.width")), int(run.get("probe.samples")))
        spread = float(run.get("dataset.norm_spread", 0.0) or 0.0)
        groups.setdefault(key, {}).setdefault(spread, []).append(run)
    claims = []
    for (width, samples), by_spread in sorted(groups.items()):
        if 0.0 not in by_spread or len(by_spread) < 2:
            continue
        spread = max(by_spread)
        base, spread_table = stack(by_spread[0.0]), stack(by_spread[spread])
        slope0, error0 = grad_slope_error(base)
        slope1, error1 = grad_slope_error(spread_table)
        eff0 = effective_fraction(base, samples)
        eff1 = effective_fraction(spread_table, samples)
        claims.append(
            Claim(
                "4 (not in the paper)",
                f"scale+bias, width {width}, T = {samples}: spreading the "
                f"inputs' norms (s = {spread:g}) lowers the effective samples and the gradient "
                "slope's magnitude (an intervention)",
                "not in the paper (our finite-width account)",
                slope1 - slope0,
                math.hypot(error0, error1),
                0.0,
                "above",
                shown=f"{slope1 - slope0:+.3f} ({slope0:+.3f} -> {slope1:+.3f}; effective samples "
                f"{eff0:.0%} -> {eff1:.0%} of T)",
            )
        )
    return claims


def width_claims(out: Path) -> list[Claim]:
    runs = sorted(
        (r for r in probes(out / "figure2", "figure2", ("kaiming",)) if r.arch == "mlp"),
        key=lambda r: r.get("arch.width"),
    )
    if not runs:
        return []
    depth = int(runs[0].table["layer"].max())
    theory = float(recursion(depth).ratio.iloc[-1])
    claims, gaps = [], []
    for run in runs:
        mean, error = mean_error(per_network(run.table, "ratio", depth))
        gaps.append((run.get("arch.width"), theory - mean, error))
        claims.append(
            Claim(
                "3.2, Fig. 2",
                f"ratio at layer {depth}, width "
                f"{run.get('arch.width')} ({run.table['network'].nunique()} "
                "networks): below the infinite-width theory",
                f"below {theory:.2f}",
                mean,
                error,
                theory,
                "below",
            )
        )
    if len(gaps) > 1:
        steps = [
            (a[0], b[0], a[1] - b[1], math.hypot(a[2], b[2]))
            for a, b in zip(gaps, gaps[1:], strict=False)
        ]
        narrow, wide, step, error = min(steps, key=lambda s: s[2] / s[3])
        claims.append(
            Claim(
                "3.2, Fig. 2",
                "the gap to the theory shrinks at every step in width (the smallest step, in SE)",
                "shrinks",
                step,
                error,
                0.0,
                "above",
                shown=f"{step:+.3f} (width {narrow} -> {wide})",
                note="gaps: " + ", ".join(f"{g:.2f}" for _, g, _ in gaps),
            )
        )
    return claims


# the two ways a conv layer's ratio is taken (varexp.stats): column -> how it reads
CONVENTIONS = {"ratio": "per (channel, position)", "ratio_channel": "per channel"}


def cnn_claims(out: Path) -> list[Claim]:
    """The paper's Sec. 3.3 findings on ALL-CNN-C and UNet under both conventions for a conv
    layer's ratio (and, for UNet, each up-convolution fan probed)."""
    claims = []
    for run in probes(out / "figure2", "figure2", ("kaiming",)):
        if run.arch not in ("allcnnc", "unet"):
            continue
        for column, convention in CONVENTIONS.items():
            if column not in run.table.columns:
                continue
            what = f"{convention}, {run.get('dataset.name')}, x{run.get('arch.channels')}"
            if run.arch == "allcnnc":
                claims += allcnnc_claims(run.table, column, f"ALL-CNN-C ({what})")
            else:
                fan = run.get("arch.upconv_fan", "in")
                claims += unet_claims(run.table, column, f"UNet ({what}, up-conv fan {fan})")
    return claims


def theory_at(depth: int) -> pd.Series:
    """The wide-MLP ratio (Eq. 8 in varexp's layer index) at layers 1..depth."""
    return recursion(depth).set_index("layer")["ratio"]


def allcnnc_claims(table: pd.DataFrame, column: str, what: str) -> list[Claim]:
    """ "The empirical ratio increases in all layers of ALL-CNN-C. The last layer actually has a
    higher empirical ratio than a wide MLP would." """
    wide = table.pivot(index="network", columns="layer", values=column)
    names = table.groupby("layer")["name"].first()
    steps = wide.diff(axis=1).iloc[:, 1:]
    step = {layer: mean_error(steps[layer]) for layer in steps.columns}
    worst = min(step, key=lambda layer: step[layer][0] / step[layer][1])
    depth = int(wide.columns.max())
    theory = float(theory_at(depth)[depth])
    last, last_error = mean_error(wide[depth])
    return [
        Claim(
            "3.3, Fig. 2",
            f"{what}: the ratio increases in all layers (the smallest step, paired over networks)",
            "increases",
            step[worst][0],
            step[worst][1],
            0.0,
            "above",
            shown=f"{step[worst][0]:+.3f} ({names[worst - 1]} -> {names[worst]})",
        ),
        Claim(
            "3.3, Fig. 2",
            f"{what}: the last layer ({names[depth]}, after global pooling) "
            "above a wide MLP at the same depth",
            f"above {theory:.2f}",
            last,
            last_error,
            theory,
            "above",
        ),
    ]


def unet_claims(table: pd.DataFrame, column: str, what: str) -> list[Claim]:
    """ "In UNet, the empirical ratio increases up to around layer 12 before decreasing
    significantly [...] up to layer 12, the observed ratio is higher than predicted." """
    wide = table.pivot(index="network", columns="layer", values=column)
    names = table.groupby("layer")["name"].first()
    depth = int(wide.columns.max())
    theory = theory_at(depth)
    # above the theory at every layer 2..12 (layer 1's theory is 0): the worst layer, in SE
    above = {
        layer: (*mean_error(wide[layer]), float(theory[layer]))
        for layer in range(2, min(PEAK, depth) + 1)
    }
    worst = min(above, key=lambda layer: (above[layer][0] - above[layer][2]) / above[layer][1])
    mean, error, bound = above[worst]
    means = wide.mean()
    peak = int(means.idxmax())
    fall, fall_error = mean_error(1 - wide[depth] / wide[peak])
    around = abs(peak - PEAK) <= AROUND
    return [
        Claim(
            "3.3, Fig. 2",
            f"{what}: above the wide-MLP theory at every layer up to {PEAK} "
            "(the worst layer, in SE)",
            "above",
            mean,
            error,
            bound,
            "above",
            shown=f"{mean:.3f} vs {bound:.3f} at layer {worst} ({names[worst]})",
        ),
        Claim(
            "3.3, Fig. 2",
            f"{what}: increases up to around layer {PEAK}, then falls by more "
            f"than {FALL:.0%} to the last layer",
            f"peak near {PEAK}; falls significantly",
            fall,
            fall_error,
            FALL,
            "above",
            shown=f"{fall:.0%} (peak {means[peak]:.2f} at layer {peak} ({names[peak]}), last "
            f"{means[depth]:.2f})",
            caveat="" if around else f"peak at layer {peak}, not around {PEAK}",
        ),
    ]


def selected_runs(out: Path) -> Iterator[tuple[Path, str, str, str, pd.DataFrame, dict]]:
    """Per Fig. 4 sweep, task and optimizer where both scale and scale+bias were selected: the
    sweep folder, (arch, dataset, optim), the selected rows indexed by init, and each init's
    completed runs at its selected learning rate."""
    for path in sorted((out / "figure4").rglob(SELECTED.file)):
        selected = SELECTED.read(path, allow_empty=True)
        try:
            sweep = SWEEP.read(path.parent / SWEEP.file, allow_empty=True)
        except VarexpError:
            continue
        done = sweep[sweep["status"] == Status.COMPLETED]
        for (arch, dataset, optim), group in selected.groupby(["arch", "dataset", "optim"]):
            chosen = group.set_index("init")
            if not {"scale", "scale+bias"} <= set(chosen.index):
                continue
            runs = {
                init: done[
                    (done["arch"] == arch)
                    & (done["dataset"] == dataset)
                    & (done["optim"] == optim)
                    & (done["init"] == init)
                    & np.isclose(done["lr"], chosen.loc[init, "lr"])
                ]
                for init in ("scale", "scale+bias")
            }
            yield path.parent, arch, dataset, optim, chosen, runs


def training_claims(out: Path) -> list[Claim]:
    """Sec. 5.3: scale+bias trains faster than scale, per task and optimizer, at each init's
    selected learning rate: the gap in the selection criterion, paired by seed."""
    return [
        training_claim(folder, arch, dataset, optim, chosen, runs)
        for folder, arch, dataset, optim, chosen, runs in selected_runs(out)
    ]


def training_claim(
    folder: Path,
    arch: str,
    dataset: str,
    optim: str,
    chosen: pd.DataFrame,
    runs: dict[str, pd.DataFrame],
) -> Claim:
    """One Fig. 4 row: gap = criterion(scale) - criterion(scale+bias) (> 0: scale+bias lower,
    i.e. faster), paired by seed where both inits ran the same seeds."""
    by_seed = {init: r.set_index("seed")["criterion"] for init, r in runs.items()}
    seeds = sorted(set(by_seed["scale"].index) & set(by_seed["scale+bias"].index))
    if seeds and len(seeds) == len(by_seed["scale"]) == len(by_seed["scale+bias"]):
        gap, error = mean_error(by_seed["scale"][seeds] - by_seed["scale+bias"][seeds])
        pairing = f"paired over {plural(len(seeds), 'seed')}"
    else:
        a, a_error = mean_error(by_seed["scale"])
        b, b_error = mean_error(by_seed["scale+bias"])
        gap, error = a - b, math.hypot(a_error, b_error)
        pairing = "unpaired"
    fraction = float(chosen["select_fraction"].iloc[0])
    measure = "mean loss over the run" if fraction >= 1 else f"mean loss, last {fraction:.0%}"
    each = "; ".join(
        f"{init} {chosen.loc[init, 'criterion']:.3f} ± "
        f"{chosen.loc[init, 'criterion_std']:.3f} (lr {chosen.loc[init, 'lr']:g})"
        for init in ("scale", "scale+bias")
    )
    edges = [
        f"{init}'s only lr" if edge == "both" else f"{init} lr at the {edge} end"
        for init in ("scale", "scale+bias")
        if (edge := str(chosen.loc[init].get("lr_at_edge", "") or "")) not in ("", "nan")
    ]
    stuck = [
        f"{init} barely trains (loss {first:.2f} -> {last:.2f})"
        for init, r in runs.items()
        if (f := first_last(folder, r)) is not None
        for first, last in [f]
        if last > BARELY * first
    ]
    return Claim(
        "5.3, Fig. 4",
        f"{arch} on {dataset}, {optim}: scale+bias trains faster than "
        f"scale ({measure}; the gap scale - scale+bias, {pairing})",
        "faster",
        gap,
        error,
        0.0,
        "above",
        shown=f"{gap:+.3f}",
        note="; ".join([f"{each} (mean ± std over seeds)", *stuck]),
        words=("faster", "slower"),
        caveat=("not bracketed: " + ", ".join(edges)) if edges else "",
    )


def first_last(folder: Path, runs: pd.DataFrame) -> tuple[float, float] | None:
    """The mean over the runs of their first and last logged loss."""
    firsts, lasts = [], []
    for run_dir in runs["run_dir"]:
        try:
            losses = METRICS.read(folder / run_dir / METRICS.file)["loss"].dropna()
        except VarexpError:
            continue
        if len(losses):
            firsts.append(losses.iloc[0])
            lasts.append(losses.iloc[-1])
    return (float(np.mean(firsts)), float(np.mean(lasts))) if firsts else None


def convergence_claims(out: Path) -> list[Claim]:
    """Sec. 5.3: "the ratio in each setting converged to similar values in all layers after a
    few thousand iterations": per task and optimizer, at each init's selected lr, the median over
    layers of |ratio(scale) - ratio(scale+bias)| on the runs' fixed batch (ratios.csv, per
    (channel, position)), at the last logged step as a fraction of the same at step 0, per
    seed."""
    claims = []
    for folder, arch, dataset, optim, _, runs in selected_runs(out):
        ratios = {
            init: {
                seed: read_ratios(folder / run_dir)
                for seed, run_dir in zip(r["seed"], r["run_dir"], strict=True)
            }
            for init, r in runs.items()
        }
        claim = convergence_claim(f"{arch} on {dataset}, {optim}", ratios)
        if claim is not None:
            claims.append(claim)
    return claims


def read_ratios(run_dir: Path) -> pd.DataFrame | None:
    """A run's ratio per (step, layer) from its ratios.csv (None if unreadable)."""
    try:
        table = RATIOS.read(run_dir / RATIOS.file)
    except VarexpError:
        return None
    return table.pivot_table(index="step", columns="layer", values="ratio")


def convergence_claim(what: str, ratios: dict[str, dict[int, pd.DataFrame | None]]) -> Claim | None:
    seeds = sorted(
        s
        for s in set(ratios["scale"]) & set(ratios["scale+bias"])
        if ratios["scale"][s] is not None and ratios["scale+bias"][s] is not None
    )
    if not seeds:
        return None
    fractions, starts, ends, last = [], [], [], 0
    for seed in seeds:
        a, b = ratios["scale"][seed], ratios["scale+bias"][seed]
        steps = sorted(set(a.index) & set(b.index))
        # the median over layers: one layer near dead (a ratio of 9, or inf left out) would
        # otherwise stand for all of them
        gap = (a.loc[steps] - b.loc[steps]).abs().median(axis=1)
        starts.append(gap.iloc[0])
        ends.append(gap.iloc[-1])
        fractions.append(gap.iloc[-1] / gap.iloc[0])
        last = steps[-1]
    fraction, error = mean_error(fractions)
    return Claim(
        "5.3",
        f"{what}: the scale and scale+bias ratios converge to similar values "
        f"(median over layers of |difference| at step {last} / at step 0; "
        f"{plural(len(seeds), 'seed')}"
        + (f"; {last} steps, not a few thousand)" if last < 2000 else ")"),
        f"similar (below {SIMILAR:.0%} of the start)",
        fraction,
        error,
        SIMILAR,
        "below",
        shown=f"{fraction:.2f} ({np.mean(starts):.2f} -> {np.mean(ends):.2f})",
    )


def heldout_claims(out: Path) -> list[Claim]:
    """A fitted init's unit second moment on fresh inputs (not in the paper): per init, at the
    widest MLP probed and each fit size T, the geometric mean over networks of the last layer's
    held-out second moment, judged on its log (heavy-tailed across networks)."""
    try:
        runs = [r for r in load_heldout(str(out / "heldout"), str(out)) if r.arch == "mlp"]
    except VarexpError:
        return []
    claims = []
    for init in sorted({r.init for r in runs}):
        mine = [r for r in runs if r.init == init]
        width = max(int(r.get("arch.width")) for r in mine)
        for run in sorted(
            (r for r in mine if int(r.get("arch.width")) == width),
            key=lambda r: int(r.table["fit_samples"].iloc[0]),
        ):
            table = run.table
            depth = int(table["layer"].max())
            last = log_summary(table, "heldout_second_moment").iloc[-1]
            fit = float(table.loc[table["layer"] == depth, "fit_second_moment"].mean())
            samples, fresh = table["fit_samples"].iloc[0], table["heldout_samples"].iloc[0]
            claims.append(
                Claim(
                    "5.1 (not in the paper)",
                    f"{init} (width {width}, depth {depth}, fitted on T = "
                    f"{samples}, {int(last['count'])} networks): layer {depth}'s second moment on "
                    f"{fresh} fresh inputs is the 1 it has on the fitting ones ({fit:.3f})",
                    "not reported (the init's target: 1)",
                    float(last["mean"]),
                    float(last["error"]),
                    0.0,
                    shown=f"{math.exp(last['mean']):.3g} (geometric mean)",
                    note=f"judged on the log: {last['mean']:+.2f} ± {last['error']:.2f}",
                )
            )
    return claims


# the keys that say what a figure's runs were, in the order a reader wants them
SETTING_KEYS = ("arch.name", "arch.width", "arch.depth", "arch.channels", "dataset.name",
                "init.name", "probe.networks", "probe.samples", "optim.name", "optim.lr",
                "train.steps", "train.batch_size", "seed")  # fmt: skip


def settings(folder: Path, result: str) -> str:
    """The distinct values of SETTING_KEYS over the runs under `folder` that wrote `result`."""
    values: dict[str, list] = {key: [] for key in SETTING_KEYS}
    for path in sorted(folder.rglob(result)):
        try:
            cfg = run_config(path)
        except VarexpError:
            continue
        for key in SETTING_KEYS:
            value = OmegaConf.select(cfg, key, default=None)
            if value is not None and value not in values[key]:
                values[key].append(value)
    return "; ".join(
        f"{key} {', '.join(map(str, sorted(v, key=str)))}" for key, v in values.items() if v
    )


def figure_section(out: Path, figure: Figure, commands: dict[Path, str]) -> list[str]:
    """A figure's image, the commands that made its results, their settings and their files."""
    lines = [f"## {figure.name.capitalize()}: {figure.about}", ""]
    png = out / "figures" / figure.name / f"{figure.name}.png"
    if png.exists():
        lines += [f"![{figure.name}]({png.relative_to(out)})", ""]
    result = SUMMARY if figure.command == "sweep" else figure.result
    for folder in sorted(p for p in commands if out / figure.name in p.parents):
        files = sorted(folder.rglob("*.csv" if figure.command == "sweep" else result))
        tables = [f for f in files if figure.command != "sweep" or f.parent == folder]
        links = ", ".join(f"[{f.relative_to(folder)}]({f.relative_to(out)})" for f in tables)
        lines += [
            f"- `{commands[folder]}`: {settings(folder, result) or 'no runs'}",
            f"  - data: {links or 'none'}",
        ]
    return [*lines, ""]


def provenance_section(started: str | None, seconds: float | None) -> list[str]:

    info = record("cuda" if torch.cuda.is_available() else "cpu")
    if started is not None:
        info |= {
            "started": started,
            "finished": now(),
            "wall time": f"{seconds / 60:.1f} min" if seconds is not None else None,
        }
    return ["## Provenance", "", *(f"- {key}: {value}" for key, value in info.items()), ""]


NOTES = """Sizes are those of the preset: `quick` probes narrower MLPs (up to width 1000, 10
networks) than the paper (3000, 30), smaller CNNs on the embedded datasets, and trains small
models for 300 steps, so a claim measured there can differ by a finite-size effect; the
paper-scale values are checked by `pytest -m slow` and by `varexp reproduce experiment=paper`.
Layer l is the l-th weight layer; its pre-activation is u^l = W^l x^(l-1), so layer 1 has m = 0
(inputs of zero correlation) and the wide-MLP theory at layer l is Eq. 8 with K^(l-1)(0) where
the paper prints K^l(0). For CNNs, the two conventions for a conv layer's ratio are both stated:
per (channel, position), over the T inputs, and per channel, pooled over inputs and positions."""


SMOKE_NOTE = """**Made with VAREXP_SMOKE=1: every step ran at a token size (2 probe networks, 4
training steps, one seed and one learning rate). These rows check that the pipeline runs; they
are not measurements of the paper's claims. Run without VAREXP_SMOKE for the preset's sizes.**"""


def write_report(
    out: Path,
    preset: str,
    commands: dict[Path, str] | None = None,
    started: str | None = None,
    seconds: float | None = None,
    smoke: bool = False,
) -> Path:
    """REPORT.md in `out`: the claims judged by RULE, then per figure its image, the commands
    that made it (`commands`: result folder -> command line), their settings and data, then
    provenance. `smoke`: the steps ran at VAREXP_SMOKE=1's token sizes, said at the top."""
    claims = [
        *kernel_claims(out),
        *slope_claims(out),
        *intervention_claims(out),
        *width_claims(out),
        *cnn_claims(out),
        *training_claims(out),
        *convergence_claims(out),
        *heldout_claims(out),
    ]
    rows = [
        ("paper section", "claim", "paper", "ours", "SE", "distance (SE)", "verdict", "note"),
        ("---",) * 8,
    ]
    rows += [c.row() for c in claims]
    lines = [
        f"# varexp reproduce: {preset}",
        "",
        "Each quantitative claim of Luther & Seung (2019) beside the value measured in this "
        "run directory.",
        "",
        *([SMOKE_NOTE, ""] if smoke else []),
        RULE,
        "",
        *("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows),
        "",
        NOTES,
        "",
    ]
    for figure in FIGURES.values():
        lines += figure_section(out, figure, commands or {})
    lines += provenance_section(started, seconds)
    with atomic_path(out / "REPORT.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return out / "REPORT.md"
