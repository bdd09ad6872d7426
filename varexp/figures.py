"""The paper's figures: what each shows, which command and `experiment` presets make its results,
and which module draws it. `varexp plot`, `varexp reproduce` and REPORT.md read this table; which
commands a preset is written for is in the preset's own header (varexp.presets)."""

from __future__ import annotations

from dataclasses import dataclass

# `varexp reproduce experiment=<scale>`: the size at which every figure is made
SCALES = ("quick", "paper")


@dataclass(frozen=True)
class Part:
    """One setting a figure shows (a panel, or a set of lines), and the presets that make its
    results at each scale."""

    about: str
    quick: str
    paper: str

    def preset(self, scale: str) -> str:
        return self.quick if scale == "quick" else self.paper


@dataclass(frozen=True)
class Figure:
    name: str
    about: str
    command: str  # the command whose runs the figure draws
    result: str  # the file those runs write that the figure reads
    parts: tuple[Part, ...]
    module: str  # draws it: make(results, outputs_root, out_dir, **options) -> [png, pdf]
    options: tuple[str, ...] = ()  # keys of `varexp plot`'s config its make() takes
    # runs of its command without a preset draw it too, when none made by a preset are there
    # (figure4: `varexp sweep`'s default grid on the CPU task)
    plain: bool = False

    def presets(self, scale: str) -> tuple[str, ...]:
        """The presets that make every part at one scale, each once, in order."""
        return tuple(dict.fromkeys(part.preset(scale) for part in self.parts))

    @property
    def all_presets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for scale in SCALES for p in self.presets(scale)))

    def hint(self) -> str:
        commands = " and ".join(
            f"`varexp {self.command} experiment={p}`" for p in self.presets("quick")
        )
        verb = "make" if len(self.presets("quick")) > 1 else "makes"
        return f"{commands} {verb} them (experiment={self.presets('paper')[0]} etc. at paper scale)"


FIGURES: dict[str, Figure] = {
    f.name: f
    for f in [
        Figure("figure1", "m, v and sigma vs layer; pre-activation histograms (Sec. 3)",
               "probe", "probe.csv", (Part("a Kaiming MLP", "figure1_quick", "figure1"),),
               "varexp.plot.figure1"),
        Figure("figure2", "ratio vs layer: MLP widths, ALL-CNN-C, UNet (Sec. 3.2-3.3)",
               "probe", "probe.csv",
               (Part("MLP widths", "figure2_quick", "figure2"),
                Part("ALL-CNN-C", "figure2_allcnnc_quick", "figure2_allcnnc"),
                Part("UNet", "figure2_unet_quick", "figure2_unet")), "varexp.plot.figure2",
               ("cnn_ratio",)),
        Figure("figure3", "gradients vs layer for kaiming, scale+bias, batchnorm (Sec. 4)",
               "probe", "probe.csv", (Part("the three inits", "figure3_quick", "figure3"),),
               "varexp.plot.figure3"),
        Figure("slopes", "finite-size effects on Fig. 3: gradient slope vs width and T, "
               "effective samples vs layer, slope vs effective samples (not in the paper)",
               "probe", "probe.csv",
               (Part("scale+bias and batchnorm MLPs by width and T", "slopes_quick", "slopes"),
                Part("scale+bias MLPs with spread input norms (an intervention)",
                     "slopes_inputs_quick", "slopes_inputs")),
               "varexp.plot.slopes"),
        Figure("heldout", "a fitted init's second moment on fresh inputs vs layer, by width "
               "and fit size (not in the paper)", "probe", "heldout.csv",
               (Part("scale and scale+bias MLPs by width and fit size", "heldout_quick",
                     "heldout"),), "varexp.plot.heldout"),
        Figure("figure4", "training loss at the selected learning rates (Sec. 5)",
               "sweep", "selected.csv",
               (Part("object recognition", "figure4_quick", "figure4_cifar10"),
                Part("segmentation", "figure4_quick", "figure4_isbi2012")),
               "varexp.plot.figure4", ("smooth",), plain=True),
    ]
}  # fmt: skip
