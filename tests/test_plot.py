"""`varexp plot`: every figure renders from synthetic result directories built from the
mean-field theory, runs are grouped by their recorded config, the gradient slope fit recovers a
known slope, and bad inputs fail with one clear line."""

import importlib
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import run_in_process
from omegaconf import OmegaConf

from varexp.cli import main
from varexp.errors import VarexpError
from varexp.figures import FIGURES
from varexp.plot import render
from varexp.plot.common import lines, panels, slope_text
from varexp.plot.figure3 import theory_slope
from varexp.results.aggregate import grad_slope, layer_summary
from varexp.results.tables import PROBE, load_probes
from varexp.theory import gradient_slope, recursion

DEPTH = 12


def write_run(
    run_dir: Path,
    *,
    arch: str = "mlp",
    width: int = 100,
    init: str = "kaiming",
    depth: int = DEPTH,
    networks: int = 4,
    grad_slope_: float = 0.0,
    neurons: bool = False,
    seed: int = 0,
    preset: str | None = None,
) -> pd.DataFrame:
    """A probe run directory as `varexp probe` leaves it: probe.csv (theory values with noise),
    optional neurons.csv, .hydra/config.yaml and the preset that made it (.hydra/hydra.yaml)."""
    rng = np.random.default_rng(seed)
    theory = recursion(depth, init=init)
    rows = []
    for net in range(networks):
        for t in theory.itertuples():
            mean_sq = t.m**2 * rng.uniform(0.8, 1.2) + 1e-3
            var = t.v**2 * rng.uniform(0.8, 1.2)
            grad = math.exp(grad_slope_ * (t.layer - depth)) * rng.uniform(0.9, 1.1)
            rows.append(
                dict(
                    network=net,
                    layer=t.layer,
                    name=f"layer{t.layer}",
                    features=width,
                    sample_mean_sq=mean_sq,
                    sample_var=var,
                    ratio=math.sqrt(mean_sq / var),
                    second_moment=mean_sq + var,
                    grad_sq=grad,
                    effective_samples=40.0,
                    sample_mean_sq_channel=mean_sq,
                    sample_var_channel=var,
                    ratio_channel=math.sqrt(mean_sq / var),
                )
            )
    table = pd.DataFrame(rows, columns=list(PROBE.columns))
    run_dir.mkdir(parents=True)
    table.to_csv(run_dir / "probe.csv", index=False)
    if neurons:
        values = []
        for net in range(networks):
            for layer in (1, depth):
                t = theory.iloc[layer - 1]
                for neuron in rng.choice(width, 3, replace=False):
                    mu = rng.normal(0, t.m)
                    for sample, u in enumerate(mu + t.v * rng.normal(size=50)):
                        values.append((net, layer, int(neuron), sample, u))
        pd.DataFrame(values, columns=["network", "layer", "neuron", "sample", "value"]).to_csv(
            run_dir / "neurons.csv", index=False
        )
    cfg = dict(
        seed=seed,
        command="probe",
        arch=dict(
            name=arch, width=width, depth=depth, activation="relu", norm="none", channels=1.0
        ),
        init=dict(name=init),
        dataset=dict(name="gaussian"),
        probe=dict(networks=networks, samples=50),
    )
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(
        {"hydra": {"runtime": {"choices": {"experiment": preset}}}},
        run_dir / ".hydra" / "hydra.yaml",
    )
    return table


def assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_layer_summary_is_mean_and_std_over_networks(tmp_path):
    table = write_run(tmp_path / "r", networks=5)
    summary = layer_summary(table, "ratio")
    at3 = table[table.layer == 3].ratio
    row = summary[summary.layer == 3].iloc[0]
    assert row["mean"] == pytest.approx(at3.mean())
    assert row["std"] == pytest.approx(at3.std(ddof=1))
    assert row["count"] == 5 and row["name"] == "layer3"


@pytest.mark.parametrize("slope", [-0.383, 0.0, 0.21])
def test_grad_slope_recovers_known_exponential(slope):
    layers = np.arange(1, 51)
    rng = np.random.default_rng(1)
    # per-network noise averages out in the network mean; the slope of its log is exact
    rows = [
        dict(network=n, layer=k, grad_sq=3.0 * math.exp(slope * k) * rng.uniform(0.95, 1.05))
        for n in range(30)
        for k in layers
    ]
    assert grad_slope(pd.DataFrame(rows)) == pytest.approx(slope, abs=2e-3)
    noiseless = pd.DataFrame(dict(network=0, layer=layers, grad_sq=np.exp(slope * layers)))
    assert grad_slope(noiseless, first=10, last=20) == pytest.approx(slope, abs=1e-9)


def test_grad_slope_rejects_too_few_layers():
    table = pd.DataFrame(dict(network=[0, 0], layer=[1, 2], grad_sq=[1.0, float("nan")]))
    with pytest.raises(VarexpError, match="needs positive finite grad_sq at >= 2 layers"):
        grad_slope(table)


def test_theory_slope_matches_section_4():
    assert theory_slope(("mlp", "batchnorm", "relu", "none")) == gradient_slope()
    assert gradient_slope() == pytest.approx(-0.383, abs=5e-4)
    assert theory_slope(("mlp", "kaiming", "relu", "none")) == 0.0
    assert theory_slope(("unet", "kaiming", "relu", "none")) is None


def test_runs_group_by_arch_init_and_width(tmp_path):
    for width in (30, 300):
        for seed in (0, 1):
            write_run(tmp_path / f"w{width}_s{seed}", width=width, networks=3, seed=seed)
    write_run(tmp_path / "sb", width=300, init="scale+bias")
    write_run(tmp_path / "cnn", arch="allcnnc", depth=10)
    runs = load_probes("figure2", str(tmp_path), "outputs")
    groups = panels(runs)
    assert [key[:2] for key, _ in groups] == [
        ("mlp", "kaiming"),
        ("mlp", "scale+bias"),
        ("allcnnc", "kaiming"),
    ]
    kaiming = lines(groups[0][1])
    assert [key for key, _ in kaiming] == [(30,), (300,)]
    # two runs of one width pool their 3 + 3 networks instead of averaging run means
    assert [table["network"].nunique() for _, table in kaiming] == [6, 6]


def test_figure1_with_histograms(tmp_path):
    write_run(tmp_path / "res" / "a", width=300, neurons=True)
    paths = render("figure1", tmp_path / "res", "outputs", tmp_path / "out")
    assert [p.name for p in paths] == ["figure1.png", "figure1.pdf"]
    assert_png(paths[0])
    assert paths[1].read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("neurons_csv", [None, "network,layer,neuron,sample,value\n"])
def test_figure1_without_neurons_draws_left_panel_only(tmp_path, caplog, neurons_csv):
    write_run(tmp_path / "res" / "a")
    if neurons_csv is not None:
        (tmp_path / "res" / "a" / "neurons.csv").write_text(neurons_csv)
    with caplog.at_level("INFO", logger="varexp.plot"):
        paths = render("figure1", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])
    assert "no neurons.csv" in caplog.text
    assert mpimg.imread(paths[0]).shape[1] < 1500  # one panel, not the 5-column layout


def test_figure2_mlp_widths_and_cnn_panels(tmp_path, caplog):
    for width in (30, 100, 300):
        write_run(tmp_path / "res" / f"w{width}", width=width)
    write_run(tmp_path / "res" / "cnn", arch="allcnnc", depth=10)
    write_run(tmp_path / "res" / "unet", arch="unet", depth=23)
    caplog.set_level("INFO")
    paths = render("figure2", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])
    drawn = [r.message for r in caplog.records if r.message.startswith("figure2 panel")]
    # by default both conventions side by side for each CNN, one panel for the MLP
    assert [m.split("' (")[1].split(")")[0] for m in drawn] == [
        "both",
        "position",
        "channel",
        "position",
        "channel",
    ]
    assert "UNet, kaiming init' (channel)" in drawn[-1]
    height, width = mpimg.imread(paths[0]).shape[:2]
    assert height > 1.8 * 4.6 * 150 * 0.9  # UNet's pair on a second row
    one = render("figure2", tmp_path / "res", "outputs", tmp_path / "one", cnn_ratio="position")
    assert mpimg.imread(one[0]).shape[1] < width


def test_figure3_panels_per_init(tmp_path):
    for init, slope in (("kaiming", 0.0), ("scale+bias", -0.38), ("batchnorm", -0.38)):
        write_run(tmp_path / "res" / init, init=init, width=300, grad_slope_=slope)
    paths = render("figure3", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])


def test_figure3_without_gradients_is_an_error(tmp_path):
    table = write_run(tmp_path / "res" / "a")
    table.assign(grad_sq=np.nan).to_csv(tmp_path / "res" / "a" / "probe.csv", index=False)
    with pytest.raises(VarexpError, match=r"no grad_sq values .*probe\.grad=true"):
        render("figure3", tmp_path / "res", "outputs", tmp_path / "out")


def cut_last_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind(",")])  # the last row stops mid-way


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p, t: t.drop(columns=["ratio"]).to_csv(p, index=False), "missing column(s) ratio"),
        (lambda p, t: t.iloc[:0].to_csv(p, index=False), "has a header but no rows"),
        (
            lambda p, t: t.assign(grad_sq="lots").to_csv(p, index=False),
            "column grad_sq has non-numeric value 'lots'",
        ),
        (lambda p, t: cut_last_row(p), "(a partial file)"),
    ],
)
def test_a_damaged_probe_csv_is_left_out_with_one_line(tmp_path, caplog, damage, needle):
    table = write_run(tmp_path / "res" / "a")
    write_run(tmp_path / "res" / "b", width=300)
    damage(tmp_path / "res" / "a" / "probe.csv", table)
    paths = render("figure2", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])
    left_out = [r.message for r in caplog.records if "leaves out" in r.message]
    assert len(left_out) == 1 and "res/a/probe.csv: " in left_out[0] and needle in left_out[0]
    (tmp_path / "res" / "b" / "probe.csv").unlink()  # nothing left to draw: one line
    with pytest.raises(VarexpError, match="nothing to draw for figure2"):
        render("figure2", tmp_path / "res", "outputs", tmp_path / "out")


def test_missing_results_say_which_command_makes_them(tmp_path):
    needle = (
        r"no results made for figure2 under .*outputs/; `varexp probe "
        r"experiment=figure2_quick` and .* make them"
    )
    with pytest.raises(VarexpError, match=needle):
        render("figure2", None, tmp_path / "outputs", tmp_path / "out")
    with pytest.raises(VarexpError, match="does not exist"):
        render("figure1", tmp_path / "nope", "outputs", tmp_path / "out")


def test_default_input_is_the_newest_run_made_for_the_figure(tmp_path, caplog):
    outputs = tmp_path / "outputs"
    write_run(outputs / "probe" / "a", width=300, preset="figure2_quick")
    # newer probes that were not made for Fig. 2: a Fig. 3 probe and a probe without preset
    write_run(outputs / "probe" / "b", width=1000, init="kaiming", preset="figure3_quick")
    write_run(outputs / "probe" / "c", width=30)
    runs = load_probes("figure2", None, str(outputs))
    assert [r.path.parent.name for r in runs] == ["a"]
    # the parts of Fig. 2 with no results are named, with the command that makes them
    assert "no results for ALL-CNN-C" in caplog.text and "figure2_allcnnc_quick" in caplog.text
    assert "no results for UNet" in caplog.text
    assert [r.path.parent.name for r in load_probes("figure3", None, str(outputs))] == ["b"]
    with pytest.raises(VarexpError, match="no results made for figure1 under"):
        load_probes("figure1", None, str(outputs))


def test_unknown_figure_lists_the_figures(tmp_path):
    with pytest.raises(
        VarexpError,
        match="figure='figure7' is not allowed; choose one of "
        "figure1, figure2, figure3, slopes, heldout, "
        "figure4",
    ):
        render("figure7", None, "outputs", tmp_path)


def test_cli_end_to_end(tmp_path):
    write_run(tmp_path / "res" / "w100", width=100)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "varexp",
            "plot",
            "figure2",
            f"results={tmp_path / 'res'}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert_png(tmp_path / "out" / "figure2.png")
    assert (tmp_path / "out" / "figure2.pdf").stat().st_size > 0


def test_cli_missing_results_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main hands its args to Hydra there
    with pytest.raises(SystemExit) as exit_:
        main(["plot", "figure2", f"results={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"varexp plot: results={tmp_path / 'empty'} does not exist"
    ]


def test_a_plot_with_nothing_to_draw_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()  # the user's own folder, and one they name: both are kept
    table = write_run(tmp_path / "res" / "a")  # a probe without gradients: no Fig. 3 to draw
    table.assign(grad_sq=np.nan).to_csv(tmp_path / "res" / "a" / "probe.csv", index=False)
    for args in (
        ["figure4"],
        ["figure3", "results=res"],
        ["figure1", "outputs_root=mine"],
        ["figure4", "hydra.run.dir=mine"],
    ):
        code, err = run_in_process(capsys, "plot", *args)
        assert code == 2 and err.strip().splitlines()[-1].startswith("varexp plot: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "res"]  # no outputs/
    # a plot that draws keeps its folder
    code, err = run_in_process(capsys, "plot", "figure1", "results=res")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "outputs" / "plot").iterdir()] != []


def test_a_damaged_run_record_is_left_out_with_one_line(tmp_path, caplog):
    write_run(tmp_path / "res" / "a")
    write_run(tmp_path / "res" / "b", width=300)
    (tmp_path / "res" / "a" / ".hydra" / "config.yaml").write_text("arch: {name: [unclosed\n")
    assert_png(render("figure2", tmp_path / "res", "outputs", tmp_path / "out")[0])
    assert any(
        "res/a/.hydra/config.yaml: not a readable config" in r.message for r in caplog.records
    )


def test_slopes_figure_shows_slope_by_width_and_t_with_effective_samples(tmp_path, caplog):
    for i, (init, width, samples, slope) in enumerate(
        [
            ("scale+bias", 100, 50, -0.25),
            ("scale+bias", 300, 50, -0.3),
            ("scale+bias", 100, 100, -0.22),
            ("batchnorm", 100, 50, -0.39),
        ]
    ):
        write_run(tmp_path / "res" / str(i), init=init, width=width, grad_slope_=slope, seed=i)
        cfg = OmegaConf.load(tmp_path / "res" / str(i) / ".hydra" / "config.yaml")
        cfg.probe.samples = samples
        OmegaConf.save(cfg, tmp_path / "res" / str(i) / ".hydra" / "config.yaml")
    caplog.set_level("INFO")
    paths = render("slopes", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])
    fitted = [
        r.message
        for r in caplog.records
        if r.message.startswith("slopes: ") and "nets)" in r.message
    ]
    assert len(fitted) == 4
    # the fit recovers each run's slope (write_run's grad_sq follows exp(slope * layer))
    found = re.search(r"scale\+bias width 300 T 50 \(4 nets\): (\S+)", " ".join(fitted))
    assert float(found.group(1)) == pytest.approx(-0.3, abs=0.01)


def test_heldout_figure_by_init_fit_size_and_width(tmp_path, caplog):
    """One row per init, one panel per fit size T plus the last layer vs width; the log line
    gives each setting's geometric mean at the last layer."""
    rng = np.random.default_rng(0)
    for init in ("scale", "scale+bias"):
        for width in (100, 300):
            for samples in (30, 100):
                run = tmp_path / "res" / f"{init}-{width}-{samples}"
                rows = [
                    dict(
                        network=n,
                        layer=layer,
                        name=f"layer{layer}",
                        fit_samples=samples,
                        heldout_samples=50,
                        fit_second_moment=1.0,
                        heldout_second_moment=math.exp(layer * width / 3000 + rng.normal(0, 0.1)),
                        fit_mean_sq=0.0,
                        heldout_mean_sq=0.01,
                    )
                    for n in range(4)
                    for layer in range(1, DEPTH + 1)
                ]
                run.mkdir(parents=True)
                pd.DataFrame(rows).to_csv(run / "heldout.csv", index=False)
                (run / ".hydra").mkdir()
                OmegaConf.save(
                    {
                        "arch": {"name": "mlp", "width": width, "depth": DEPTH},
                        "init": {"name": init},
                        "probe": {"samples": samples},
                    },
                    run / ".hydra" / "config.yaml",
                )
    caplog.set_level("INFO")
    paths = render("heldout", tmp_path / "res", "outputs", tmp_path / "out")
    assert_png(paths[0])
    height, width = mpimg.imread(paths[0]).shape[:2]
    # the panels' size; the caption under them adds its lines' height
    assert width == round(3 * 4.2 * 150) and height > round(2 * 3.8 * 150)
    found = re.search(r"heldout: scale width 300 T 30: last layer (\S+)", caplog.text)
    assert float(found.group(1)) == pytest.approx(math.exp(DEPTH * 300 / 3000), rel=0.1)


# ---------------------------------------------------------------------------------------------
# figures that explain themselves: every line, marker and band in a legend or the caption


def drawn(monkeypatch, figure: str, results: Path, out: Path):
    """The matplotlib Figure `render` saves for `figure`."""
    module = importlib.import_module(FIGURES[figure].module)
    real, seen = module.save, []
    monkeypatch.setattr(module, "save", lambda fig, *a: seen.append(fig) or real(fig, *a))
    render(figure, results, "outputs", out)
    return seen[0]


def caption_of(fig) -> str:
    return " ".join(fig._supxlabel.get_text().split())


def legend_entries(ax) -> dict[str, object]:
    legend = ax.get_legend()
    return {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}


@pytest.mark.parametrize(
    "slope, text",
    [
        (-0.383, "-0.383"),
        (0.0012, "+0.001"),
        (-0.0004, "-0.0004"),
        (3e-6, "+0.000003"),
        (0.0, "0.000 (flat)"),
        (-1e-9, "0.000 (flat)"),
    ],
)
def test_slopes_are_printed_non_zero_or_flat(slope, text):
    assert slope_text(slope) == text


def test_figure1_names_mean_and_std_and_says_what_its_bars_are(tmp_path, monkeypatch):
    write_run(tmp_path / "res" / "a", width=300, neurons=True)
    fig = drawn(monkeypatch, "figure1", tmp_path / "res", tmp_path / "out")
    left = fig.axes[0]
    assert "mean $m$" in left.get_ylabel() and "std $v$" in left.get_ylabel()
    text = caption_of(fig)
    assert "±1 standard error of that mean across the 4 networks" in text
    assert "over 50 inputs per network" in text and "pooled (grey)" in text
    assert sum("(measured)" in label for label in legend_entries(left)) == 3


def test_figure2_caption_says_the_band_is_the_std_over_networks(tmp_path, monkeypatch):
    write_run(tmp_path / "res" / "w100", width=100, networks=3)
    fig = drawn(monkeypatch, "figure2", tmp_path / "res", tmp_path / "out")
    assert "bands: ±1 standard deviation of the ratio across those networks" in caption_of(fig)
    assert "CNN" not in caption_of(fig)  # no CNN panel here
    assert "width 100 (3 nets)" in legend_entries(fig.axes[0])


def test_figure3_legend_has_the_fit_lines_and_a_flat_theory(tmp_path, monkeypatch):
    for init, slope in (("kaiming", 0.0), ("scale+bias", -0.38)):
        write_run(tmp_path / "res" / init, init=init, width=300, grad_slope_=slope)
    fig = drawn(monkeypatch, "figure3", tmp_path / "res", tmp_path / "out")
    kaiming, scale_bias = (legend_entries(ax) for ax in fig.axes[:2])
    assert "theory: slope 0.000 (flat)" in kaiming  # not "+0.000" or "-0.000"
    fits = {label: h for label, h in scale_bias.items() if label.startswith("fit: slope ")}
    assert len(fits) == 1 and next(iter(fits.values())).get_linestyle() == "--"
    assert float(next(iter(fits))[len("fit: slope ") :]) == pytest.approx(-0.38, abs=0.01)
    assert "width 300 (4 nets)" in scale_bias
    assert "dashed: the least-squares line" in caption_of(fig)


def test_slopes_legend_tells_t_apart_by_line_style(tmp_path, monkeypatch):
    for i, (width, samples) in enumerate([(100, 50), (300, 50), (100, 100), (300, 100)]):
        write_run(
            tmp_path / "res" / str(i), init="scale+bias", width=width, grad_slope_=-0.3, seed=i
        )
        cfg = OmegaConf.load(tmp_path / "res" / str(i) / ".hydra" / "config.yaml")
        cfg.probe.samples = samples
        OmegaConf.save(cfg, tmp_path / "res" / str(i) / ".hydra" / "config.yaml")
    fig = drawn(monkeypatch, "slopes", tmp_path / "res", tmp_path / "out")
    entries = legend_entries(fig.axes[0])
    t50 = entries["scale+bias, T = 50 (solid)"]
    t100 = entries["scale+bias, T = 100 (dashed)"]
    assert t50.get_linestyle() == "-" and t100.get_linestyle() == "--"
    assert t50.get_color() == t100.get_color()
    assert "infinite width: -0.383" in entries
    text = caption_of(fig)
    assert "bars: ±1 standard error of that slope" in text and "its 4 networks" in text
