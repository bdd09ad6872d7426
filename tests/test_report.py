"""REPORT.md's rows: the verdict rule its header states (values within 2 SE, orderings beyond
2 SE, not distinguishable in between), the CNN findings under both conventions, Fig. 4's gap
with its seed spread and the lr bracketing, the convergence of the ratios during training and
the held-out statistics of fitted inits, each from result tables built to hold or fail."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from varexp.report import (
    FALL,
    RULE,
    SIMILAR,
    Claim,
    Z,
    allcnnc_claims,
    convergence_claim,
    heldout_claims,
    intervention_claims,
    slope_claims,
    theory_at,
    training_claims,
    unet_claims,
    write_report,
)
from varexp.results.tables import HELDOUT, RATIOS, SELECTED, SWEEP
from varexp.theory import gradient_slope

# ---------------------------------------------------------------------------------------------
# the rule


@pytest.mark.parametrize(
    "ours, error, sense, verdict",
    [
        (1.0 + 1.9 * 0.1, 0.1, "equal", "matches"),
        (1.0 - 2.1 * 0.1, 0.1, "equal", "differs"),
        (1.0 + 2.1 * 0.1, 0.1, "above", "matches"),
        (1.0 + 1.9 * 0.1, 0.1, "above", "not distinguishable"),
        (1.0 - 2.1 * 0.1, 0.1, "above", "differs"),
        (1.0 - 2.1 * 0.1, 0.1, "below", "matches"),
        (1.0 + 0.5 * 0.1, 0.1, "below", "not distinguishable"),
        (1.0 + 1e-12, None, "equal", "matches"),  # exact
        (1.0 + 1e-6, None, "equal", "differs"),
        (1.5, math.nan, "above", "n/a (no scatter: one sample)"),
    ],
)
def test_verdicts_follow_the_rule_the_header_states(ours, error, sense, verdict):
    claim = Claim("s", "c", "p", ours, error, 1.0, sense)
    assert claim.verdict == verdict
    if error and math.isfinite(error):
        assert claim.distance == pytest.approx((ours - 1.0) / error)
    assert f"within {Z:g} SE" in RULE and "not distinguishable" in RULE


def test_a_row_prints_paper_ours_error_distance_and_the_caveat():
    claim = Claim(
        "5.3",
        "faster",
        "faster",
        0.05,
        0.01,
        0.0,
        "above",
        words=("faster", "slower"),
        caveat="not bracketed: scale lr at the high end",
    )
    row = claim.row()
    assert row[2:7] == (
        "faster",
        "0.05",
        "0.01",
        "+5.0",
        "**faster; not bracketed: scale lr at the high end**",
    )
    assert Claim("x", "y", "z").verdict == "n/a"  # no result


# ---------------------------------------------------------------------------------------------
# the CNN findings: synthetic per-network curves around the wide-MLP theory


def curves(
    values: np.ndarray, networks: int = 20, noise: float = 0.05, column: str = "ratio"
) -> pd.DataFrame:
    """A probe table whose `column` at layer l is values[l - 1] (+- noise) in every network."""
    rng = np.random.default_rng(0)
    rows = [
        dict(
            network=n,
            layer=layer,
            name=f"layer{layer}",
            **{column: v * (1 + noise * rng.standard_normal())},
        )
        for n in range(networks)
        for layer, v in enumerate(values, 1)
    ]
    return pd.DataFrame(rows)


def test_unet_above_the_theory_to_layer_12_then_falling_matches_both_claims():
    theory = theory_at(23).to_numpy()
    up = theory[:12] + 0.5  # above the theory up to layer 12 (layer 1: 0.5 > 0)
    down = np.linspace(up[-1], 0.5 * up[-1], 11)  # then falls by half
    above, fall = unet_claims(curves(np.r_[up, down]), "ratio", "UNet")
    assert above.verdict == "matches" and above.distance > Z
    assert fall.verdict == "matches" and fall.ours == pytest.approx(0.5, abs=0.05)
    assert "peak" in fall.shown and fall.caveat == ""


def test_unet_curve_that_drops_at_the_first_up_convolution_fails_the_first_claim():
    """The per-channel curve of the quick preset: the ratio falls about 5x at layer 11."""
    theory = theory_at(23).to_numpy()
    values = np.r_[theory[:10] + 0.3, theory[10:] * 0.2]
    above, fall = unet_claims(curves(values), "ratio", "UNet")
    assert above.verdict == "differs" and "layer 11" in above.shown
    # it peaks at layer 10, within 2 of 12, and falls by 2/3 to the last layer
    assert fall.verdict == "matches" and "at layer 10" in fall.shown
    late = unet_claims(curves(np.r_[theory[:16] + 0.3, theory[16:] * 0.2]), "ratio", "UNet")[1]
    assert late.caveat == "peak at layer 16, not around 12"


def test_unet_fall_smaller_than_the_margin_differs():
    theory = theory_at(23).to_numpy()
    up = theory[:12] + 0.5
    values = np.r_[up, np.full(11, up[-1] * (1 - FALL / 2))]  # falls by half the margin
    fall = unet_claims(curves(values, noise=0.01), "ratio", "UNet")[1]
    assert fall.verdict == "differs" and fall.ours < FALL


def test_allcnnc_growth_in_every_layer_and_the_last_above_the_theory():
    theory = theory_at(10).to_numpy()
    grows, last = allcnnc_claims(curves(np.r_[np.linspace(0.1, 2.0, 9), 3.5]), "ratio", "A")
    assert grows.verdict == "matches" and last.verdict == "matches"
    assert last.reference == pytest.approx(theory[-1])
    flat = np.r_[np.linspace(0.1, 2.0, 5), np.full(4, 2.0), 2.0]  # stalls, last below theory
    grows, last = allcnnc_claims(curves(flat, noise=0.02), "ratio", "A")
    assert grows.verdict != "matches" and last.verdict == "differs"


# ---------------------------------------------------------------------------------------------
# Fig. 4: gap, spread, verdict, bracketing


def sweep_tables(folder: Path, scale: list[float], scale_bias: list[float], edge: str = "") -> None:
    """selected.csv and sweep.csv of one task and optimizer: per-seed criteria of each init at
    its selected lr (scale lr 1e-2 marked `edge`)."""
    rows, chosen = [], []
    for init, values, lr in (("scale", scale, 1e-2), ("scale+bias", scale_bias, 3e-3)):
        for seed, value in enumerate(values):
            rows.append(
                dict(
                    arch="allcnnc",
                    dataset="shapes",
                    init=init,
                    optim="sgd",
                    lr=lr,
                    seed=seed,
                    status="completed",
                    steps=10,
                    final_loss=value,
                    criterion=value,
                    seconds=1.0,
                    run_dir=f"{init}/seed={seed}",
                )
            )
        chosen.append(
            dict(
                arch="allcnnc",
                dataset="shapes",
                init=init,
                optim="sgd",
                lr=lr,
                criterion=np.mean(values),
                criterion_std=np.std(values, ddof=1),
                runs=len(values),
                select_fraction=1.0,
                lr_at_edge=edge if init == "scale" else "",
            )
        )
    folder.mkdir(parents=True)
    SWEEP.write(pd.DataFrame(rows), folder)
    SELECTED.write(pd.DataFrame(chosen), folder)


@pytest.mark.parametrize(
    "scale, scale_bias, verdict",
    [
        ([0.50, 0.60, 0.55], [0.40, 0.51, 0.44], "faster"),  # gap 0.1 +- 0.004
        ([0.40, 0.51, 0.44], [0.50, 0.60, 0.55], "slower"),
        ([0.50, 0.60, 0.55], [0.52, 0.50, 0.57], "not distinguishable"),  # gap 0.02 +- 0.04
    ],
)
def test_fig4_row_gives_the_gap_paired_by_seed_and_a_three_valued_verdict(
    tmp_path, scale, scale_bias, verdict
):
    sweep_tables(tmp_path / "figure4" / "quick", scale, scale_bias)
    (claim,) = training_claims(tmp_path)
    gaps = np.subtract(scale, scale_bias)
    assert claim.ours == pytest.approx(gaps.mean())
    assert claim.error == pytest.approx(gaps.std(ddof=1) / math.sqrt(3))
    assert claim.verdict == verdict
    assert f"scale {np.mean(scale):.3f} ± {np.std(scale, ddof=1):.3f}" in claim.note


def test_fig4_row_with_a_selected_lr_at_the_grid_edge_says_not_bracketed(tmp_path):
    sweep_tables(tmp_path / "figure4" / "quick", [0.5, 0.6, 0.55], [0.4, 0.51, 0.44], "high")
    (claim,) = training_claims(tmp_path)
    assert claim.verdict == "faster; not bracketed: scale lr at the high end"


# ---------------------------------------------------------------------------------------------
# ratios during training


def ratio_history(start: np.ndarray, end: np.ndarray) -> pd.DataFrame:
    steps = [0, 50, 100]
    return pd.DataFrame(
        {
            layer: np.interp(steps, [0, 100], [a, b])
            for layer, (a, b) in enumerate(zip(start, end, strict=True), 1)
        },
        index=steps,
    )


def test_ratios_that_converge_match_and_ones_that_stay_apart_differ():
    scale = {s: ratio_history(np.full(5, 3.0 + s / 10), np.full(5, 1.0)) for s in range(3)}
    close = {s: ratio_history(np.full(5, 0.0), np.full(5, 1.05 + s / 100)) for s in range(3)}
    far = {s: ratio_history(np.full(5, 0.0), np.full(5, 2.5 + s / 100)) for s in range(3)}
    converged = convergence_claim("t", {"scale": scale, "scale+bias": close})
    assert converged.verdict == "matches" and converged.ours < SIMILAR
    apart = convergence_claim("t", {"scale": scale, "scale+bias": far})
    assert apart.verdict == "differs" and apart.ours > SIMILAR
    assert "step 100" in apart.claim


# ---------------------------------------------------------------------------------------------
# held-out statistics, and the whole report


def heldout_run(folder: Path, init: str, width: int, samples: int, values: np.ndarray) -> None:
    """A heldout.csv whose last layer's held-out second moment is `values` (one per network)."""
    rows = [
        dict(
            network=n,
            layer=layer,
            name=f"layer{layer}",
            fit_samples=samples,
            heldout_samples=50,
            fit_second_moment=1.0,
            heldout_second_moment=v if layer == 3 else 1.0,
            fit_mean_sq=0.0,
            heldout_mean_sq=0.01,
        )
        for n, v in enumerate(values)
        for layer in (1, 2, 3)
    ]
    folder.mkdir(parents=True)
    HELDOUT.write(pd.DataFrame(rows), folder)
    (folder / ".hydra").mkdir()
    OmegaConf.save(
        {
            "arch": {"name": "mlp", "width": width, "depth": 3},
            "init": {"name": init},
            "probe": {"samples": samples},
        },
        folder / ".hydra" / "config.yaml",
    )


def test_heldout_rows_judge_the_geometric_mean_against_one(tmp_path):
    rng = np.random.default_rng(0)
    heldout_run(tmp_path / "heldout" / "a", "scale+bias", 300, 30, np.exp(rng.normal(2, 1, 10)))
    heldout_run(tmp_path / "heldout" / "b", "scale", 300, 30, np.exp(rng.normal(0, 0.05, 10)))
    heldout_run(tmp_path / "heldout" / "c", "scale", 100, 30, np.exp(rng.normal(5, 0.05, 10)))
    rows = {c.claim.split(" (")[0]: c for c in heldout_claims(tmp_path)}
    assert set(rows) == {"scale", "scale+bias"}  # the widest MLP of each init only
    assert rows["scale+bias"].verdict == "differs" and "geometric mean" in rows["scale+bias"].shown
    assert rows["scale"].verdict == "matches"


def test_report_has_the_rule_and_one_row_per_claim(tmp_path):
    sweep_tables(tmp_path / "figure4" / "quick", [0.5, 0.6, 0.55], [0.4, 0.51, 0.44])
    for seed in range(3):
        for init, end in (("scale", 1.0), ("scale+bias", 1.1)):
            run = tmp_path / "figure4" / "quick" / init / f"seed={seed}"
            run.mkdir(parents=True)
            history = ratio_history(np.full(4, 3.0 if init == "scale" else 0.0), np.full(4, end))
            RATIOS.write(
                pd.DataFrame(
                    [
                        dict(step=step, layer=layer, name=f"l{layer}", ratio=v)
                        for step, row in history.iterrows()
                        for layer, v in row.items()
                    ]
                ).reindex(columns=RATIOS.columns),
                run,
            )
    text = write_report(tmp_path, "test").read_text()
    assert RULE.splitlines()[0] in text
    header = "| paper section | claim | paper | ours | SE | distance (SE) | verdict | note |"
    assert header in text
    assert text.count("| 5.3, Fig. 4 |") == 1 and text.count("converge to similar") == 1


def test_intervention_row_compares_spread_inputs_with_iid_ones_at_one_width_and_t(tmp_path):
    """Runs at one width and T, iid inputs (slope -0.3, effective samples 40 of 50) and spread
    norms (slope -0.15, 10 of 50): the slope's change, beyond 2 SE, matches; the other way,
    it differs."""
    from test_plot import write_run

    def run(name: str, spread: float, slope: float, effective: float) -> None:
        folder = tmp_path / "slopes" / name
        table = write_run(folder, init="scale+bias", width=300, grad_slope_=slope, networks=6)
        table.assign(effective_samples=effective).to_csv(folder / "probe.csv", index=False)
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.dataset.norm_spread = spread
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")

    run("a", 0.0, -0.3, 40.0)
    run("b", 1.0, -0.15, 10.0)
    (claim,) = intervention_claims(tmp_path)
    assert claim.ours == pytest.approx(0.15, abs=0.01) and claim.verdict == "matches"
    assert "80% -> 20% of T" in claim.shown
    run("c", 2.0, -0.45, 5.0)  # the largest spread steepens it instead
    (claim,) = intervention_claims(tmp_path)
    assert claim.verdict == "differs"


def test_slope_rows_match_within_the_scatter_and_say_why_batchnorm_differs(tmp_path):
    """A batchnorm slope at the paper's -0.381 matches; one at the finite-T prediction
    (-0.383 - log(T / (T - 1)), T = 50 here) differs, and its note names finite T and how far
    ours is from that prediction; kaiming's paper value is printed as preserved gradients."""
    from test_plot import write_run

    write_run(
        tmp_path / "figure3" / "a", init="batchnorm", width=300, grad_slope_=-0.381, networks=8
    )
    write_run(tmp_path / "figure3" / "b", init="kaiming", width=300, networks=8)
    rows = {c.claim.split("(")[0].strip(): c for c in slope_claims(tmp_path)}
    bn, kaiming = (
        rows["slope of log grad_sq vs layer, batchnorm"],
        rows["slope of log grad_sq vs layer, kaiming"],
    )
    assert bn.verdict == "matches" and bn.note == "" and abs(bn.distance) <= Z
    assert kaiming.verdict == "matches" and kaiming.paper == "0 (gradients preserved)"
    finite = gradient_slope() - math.log(50 / 49)
    other = tmp_path / "finite"
    write_run(
        other / "figure3" / "a", init="batchnorm", width=300, grad_slope_=finite, networks=8, seed=1
    )
    (bn,) = slope_claims(other)
    assert bn.verdict == "differs" and bn.distance < -Z
    assert f"T = 50 inputs, which steepens the theory's -0.383 to {finite:.3f}" in bn.note
    ours_from_finite = float(bn.note.split("ours is ")[1].split(" SE")[0])
    assert abs(ours_from_finite) <= Z
