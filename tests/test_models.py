"""The architectures against their papers' specs: ALL-CNN-C (Springenberg et al. 2014) and UNet
(Ronneberger et al. 2015) as Luther & Seung (2019, Sec. 3.3) use them, and build_model."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from torch import nn

from varexp.errors import ConfigError, VarexpError
from varexp.models import ARCHITECTURES, ARCHS, Architecture, build_model, register
from varexp.models.base import Unit, weight_layers
from varexp.schema import choice, flag, integer

# (in, out, kernel, stride) of ALL-CNN-C's nine convs at multiplier 1, then the readout
ALLCNNC_SPEC = [
    (3, 96, 3, 1), (96, 96, 3, 1), (96, 96, 3, 2),
    (96, 192, 3, 1), (192, 192, 3, 1), (192, 192, 3, 2),
    (192, 192, 3, 1), (192, 192, 1, 1), (192, 192, 1, 1),
]  # fmt: skip


def arch(name: str, **options) -> DictConfig:
    """arch=<name> with `options` (build_model fills in the other options' defaults)."""
    assert name in ARCHS
    return OmegaConf.create({"name": name, **options})


def unet_spec(c_in: int = 1, out: int = 1, w: int = 64) -> list[tuple[str, type, int, int, int]]:
    """(name, type, in, out, kernel) of the 23 layers of Ronneberger et al. Fig. 1."""
    widths = [w * 2**i for i in range(5)]
    spec, n = [], c_in
    for i in range(4):
        spec += [(f"down{i + 1}.conv1", nn.Conv2d, n, widths[i], 3),
                 (f"down{i + 1}.conv2", nn.Conv2d, widths[i], widths[i], 3)]  # fmt: skip
        n = widths[i]
    spec += [("bottom.conv1", nn.Conv2d, n, widths[4], 3),
             ("bottom.conv2", nn.Conv2d, widths[4], widths[4], 3)]  # fmt: skip
    for i in range(4):
        big, small = widths[4 - i], widths[3 - i]
        spec += [(f"up{i + 1}.upconv", nn.ConvTranspose2d, big, small, 2),
                 (f"up{i + 1}.conv1", nn.Conv2d, 2 * small, small, 3),
                 (f"up{i + 1}.conv2", nn.Conv2d, small, small, 3)]  # fmt: skip
    return spec + [("out", nn.Conv2d, widths[0], out, 1)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_allcnnc_layers_match_the_paper():
    model = build_model(arch("allcnnc"), (3, 32, 32), 10)
    layers = weight_layers(model)
    assert [wl.name for wl in layers] == [f"conv{i}" for i in range(1, 10)] + ["fc"]
    for wl, (c_in, c_out, k, stride) in zip(layers[:-1], ALLCNNC_SPEC, strict=True):
        conv = wl.module
        assert type(conv) is nn.Conv2d
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (
            c_in, c_out, (k, k), (stride, stride)
        )  # fmt: skip
        assert conv.padding == (k // 2, k // 2)
        if k > 1:
            assert conv.padding_mode == "reflect"
        assert isinstance(wl.unit.act, nn.ReLU)
    fc = layers[-1]
    assert type(fc.module) is nn.Linear and (fc.module.in_features, fc.module.out_features) == (
        192, 10
    )  # fmt: skip
    assert not fc.unit.has_act
    expected = sum((i * k * k + 1) * o for i, o, k, _ in ALLCNNC_SPEC) + 192 * 10 + 10
    assert n_params(model) == expected


def test_unet_layers_match_the_paper():
    model = build_model(arch("unet", channels=0.25), (1, 64, 64), None)
    layers = weight_layers(model)
    spec = unet_spec(w=16)
    assert len(layers) == 23
    assert [wl.name for wl in layers] == [s[0] for s in spec]
    for wl, (_, kind, c_in, c_out, k) in zip(layers, spec, strict=True):
        m = wl.module
        assert type(m) is kind
        assert (m.in_channels, m.out_channels, m.kernel_size) == (c_in, c_out, (k, k))
        if kind is nn.ConvTranspose2d:
            assert m.stride == (2, 2)
        if k == 3:
            assert (m.padding, m.padding_mode) == ((1, 1), "reflect")
        # ReLU after every 3x3 conv; none after the up-convolutions and the 1x1 readout
        assert wl.unit.has_act == (k == 3)
    expected = sum((i * k * k + 1) * o for _, _, i, o, k in spec)
    assert n_params(model) == expected


def test_channel_multiplier_rounds_to_at_least_one_channel():
    model = build_model(arch("allcnnc", channels=0.125), (3, 32, 32), 10)
    assert [wl.module.weight.shape[0] for wl in weight_layers(model)] == [12] * 3 + [24] * 6 + [10]
    tiny = build_model(arch("unet", channels=0.001), (1, 32, 32), None)
    widths = {wl.module.out_channels for wl in weight_layers(tiny)[:-1]}
    assert widths == {1}


@pytest.mark.parametrize("classes", [10, 7, None])
def test_allcnnc_output_shape(classes):
    model = build_model(arch("allcnnc", channels=0.125), (3, 32, 32), classes)
    shapes = []
    model.conv9.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, classes or 10)
    assert shapes == [(4, 24, 8, 8)]  # two stride-2 layers: 32 -> 16 -> 8


@pytest.mark.parametrize(
    "size, channels",
    [((512, 512), 1 / 16), ((64, 64), 0.125), ((96, 96), 0.125), ((64, 96), 0.125)],
)
def test_unet_output_has_the_input_size(size, channels):
    model = build_model(arch("unet", channels=channels), (1, *size), None)
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 1, *size)


def test_unet_two_output_channels_and_rgb_input():
    model = build_model(arch("unet", channels=0.125, out_channels=2), (3, 32, 32), None)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2, 32, 32)


def test_reflection_padding_keeps_a_constant_image_constant():
    # Zero padding would darken the borders; reflecting a constant map gives the same constant.
    # UNet's first 2x2 stride-2 up-convolution turns the constant bottom into a 2x2-periodic map,
    # which reflection of even-sized maps keeps periodic (later up-convolutions break that).
    for model, shape in [
        (build_model(arch("allcnnc", channels=0.125), (3, 32, 32), None), (3, 32, 32)),
        (build_model(arch("unet", channels=0.125), (1, 64, 64), None), (1, 64, 64)),
    ]:
        maps = {}
        for wl in weight_layers(model):
            wl.unit.register_forward_hook(lambda m, i, o, n=wl.name, d=maps: d.update({n: o}))
        with torch.no_grad():
            model(torch.ones(1, *shape))
        for name, m in maps.items():
            if m.dim() < 4 or name.startswith(("up2", "up3", "up4", "out")):
                continue
            period = 1 if name.startswith(("conv", "down", "bottom")) else 2
            h, w = m.shape[-2] // period, m.shape[-1] // period
            tiled = m[..., :period, :period].repeat(1, 1, h, w)
            torch.testing.assert_close(m, tiled, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("size", [(100, 100), (64, 72), (16, 16), (8, 8)])
def test_unet_rejects_sizes_that_are_not_multiples_of_16(size):
    cfg = arch("unet", channels=0.125)
    with pytest.raises(VarexpError) as err:
        build_model(cfg, (1, *size), None)
    msg = str(err.value)
    assert "\n" not in msg and f"{size[0]}x{size[1]}" in msg and "multiples of 16" in msg
    model = build_model(cfg, (1, 64, 64), None)
    with pytest.raises(VarexpError, match=f"{size[0]}x{size[1]}"):
        model(torch.randn(1, 1, *size))


def test_conv_archs_need_image_inputs():
    with pytest.raises(ConfigError, match=r"arch=allcnnc; it needs images"):
        build_model(arch("allcnnc"), (3072,), 10)
    with pytest.raises(ConfigError, match=r"4x4 pixels is not allowed for arch=allcnnc"):
        build_model(arch("allcnnc"), (3, 4, 4), 10)


CASES = {
    "mlp": (arch("mlp", width=16, depth=4), (2, 5, 5), 3),
    "allcnnc": (arch("allcnnc", channels=0.125, dropout=0.2), (3, 32, 32), 10),
    "unet": (arch("unet", channels=0.125), (1, 32, 32), None),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_units_run_in_weight_layers_order(name, norm):
    cfg, shape, classes = CASES[name]
    model = build_model(OmegaConf.merge(cfg, {"norm": norm}), shape, classes)
    names = {unit: wl.name for wl in weight_layers(model) for unit in [wl.unit]}
    ran = []
    for unit in names:
        unit.register_forward_hook(lambda m, i, o: ran.append(names[m]))
    model(torch.randn(2, *shape))
    assert ran == [wl.name for wl in weight_layers(model)]


@pytest.mark.parametrize("name", list(CASES))
def test_batchnorm_goes_before_every_nonlinearity(name):
    cfg, shape, classes = CASES[name]
    for model in (
        build_model(OmegaConf.merge(cfg, {"norm": "batchnorm"}), shape, classes),
        build_model(ARCHS[cfg.name](norm="batchnorm"), shape, classes),
    ):
        for wl in weight_layers(model):
            kind = nn.BatchNorm1d if isinstance(wl.module, nn.Linear) else nn.BatchNorm2d
            if wl.unit.has_act:
                assert type(wl.unit.norm) is kind
                assert wl.unit.norm.num_features == wl.module.weight.shape[0]
            else:
                assert isinstance(wl.unit.norm, nn.Identity)
    plain = build_model(cfg, shape, classes)
    assert all(isinstance(wl.unit.norm, nn.Identity) for wl in weight_layers(plain))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())


@pytest.mark.parametrize("name", list(CASES))
def test_every_unit_has_its_own_activation_module(name):
    cfg, shape, classes = CASES[name]
    acts = [wl.unit.act for wl in weight_layers(build_model(cfg, shape, classes))]
    assert len({id(a) for a in acts}) == len(acts)
    tanh = build_model(OmegaConf.merge(cfg, {"activation": "tanh"}), shape, classes)
    assert all(isinstance(wl.unit.act, nn.Tanh) for wl in weight_layers(tanh) if wl.unit.has_act)


def test_mlp_flattens_images_and_reads_out_only_with_classes():
    cfg = arch("mlp", width=16, depth=4)
    probe = build_model(cfg, (2, 5, 5), None)
    layers = weight_layers(probe)
    assert [wl.name for wl in layers] == ["layer1", "layer2", "layer3", "layer4"]
    assert layers[0].module.in_features == 50 and all(wl.unit.has_act for wl in layers)
    clf = build_model(cfg, (2, 5, 5), 3)
    assert weight_layers(clf)[-1].name == "fc" and not weight_layers(clf)[-1].unit.has_act
    assert clf(torch.randn(6, 2, 5, 5)).shape == (6, 3)


def test_allcnnc_dropout_is_configurable_and_off_by_default():
    off = build_model(arch("allcnnc", channels=0.125), (3, 32, 32), 10)
    assert not any(isinstance(m, nn.Dropout) for m in off.modules())
    on = build_model(arch("allcnnc", channels=0.125, dropout=0.5), (3, 32, 32), 10)
    # after the input and after the two stride-2 layers, as in the original
    drops = [n for n, m in on.named_children() if isinstance(m, nn.Dropout)]
    assert drops == ["drop0", "drop3", "drop6"]
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(on.train()(x), on(x))
    assert torch.equal(on.eval()(x), on(x))


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "allcnnc",
            {"channels": -1},
            "arch.channels=-1 is not allowed; must be a finite number > 0",
        ),
        ("unet", {"channels": 0}, "arch.channels=0 is not allowed; must be a finite number > 0"),
        ("unet", {"channels": "wide"}, "arch.channels='wide' is not allowed"),
        ("allcnnc", {"norm": "layernorm"}, "arch.norm='layernorm' is not allowed; choose one of"),
        ("unet", {"activation": "swish"}, "arch.activation='swish' is not allowed; choose one of"),
        (
            "allcnnc",
            {"dropout": 1.0},
            "arch.dropout=1.0 is not allowed; must be a number in [0, 1)",
        ),
        ("unet", {"out_channels": 3}, "arch.out_channels=3 is not allowed; choose 1"),
        ("mlp", {"width": 0}, "arch.width=0 is not allowed; must be an integer >= 1"),
        ("mlp", {"depth": 2.5}, "arch.depth=2.5 is not allowed"),
        ("allcnnc", {"width": 8}, "arch.width is not an option of arch=allcnnc; options:"),
        ("allcnnc", {"name": "resnet"}, "arch.name='resnet' is not allowed; choose one of mlp"),
    ],
)
def test_bad_arch_options_fail_with_one_line_naming_the_key(name, options, message):
    cfg = OmegaConf.merge(arch(name), options)
    with pytest.raises(ConfigError) as err:
        build_model(cfg, (3, 32, 32), 10)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_num_classes():
    with pytest.raises(ConfigError, match=r"^num_classes=0 is not allowed"):
        build_model(arch("allcnnc", channels=0.125), (3, 32, 32), 0)


def test_defaults_fill_missing_options():
    model = build_model({"name": "unet", "channels": 0.125}, (1, 32, 32), None)
    assert len(weight_layers(model)) == 23 and model.out.layer.out_channels == 1
    assert all(
        isinstance(u.act, nn.ReLU) for u in model.modules() if isinstance(u, Unit) and u.has_act
    )


# ---------------------------------------------------------------------------------------------
# a new architecture is its module and one record


class TinyNet(nn.Module):
    """A toy model as a user would add one: a conv, a ReLU and a 1x1 conv readout (per pixel for
    segmentation, pooled for classification)."""

    def __init__(self, channels: int, width: int, outputs: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.out = nn.Conv2d(width, outputs, 1)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(torch.relu(self.conv(x)))
        return y.mean(dim=(2, 3)) if self.pool else y


@dataclass
class TinyArch:
    name: str = choice("tiny", ("tiny", "tinyseg"))
    width: int = integer(8)
    activation: str = choice("relu", ("relu",))
    norm: str = choice("none", ("none",))
    bias: bool = flag(False)


@dataclass
class TinySegArch(TinyArch):
    name: str = choice("tinyseg", ("tinyseg",))


@pytest.fixture
def tiny_records():
    """arch=tiny (a classifier) and arch=tinyseg (a segmentation model), registered for one test
    and forgotten after it."""
    records = [
        Architecture(
            "tiny",
            TinyArch,
            lambda a, shape, classes: TinyNet(shape[0], a.width, classes or 10, pool=True),
            "Tiny",
            natural_shape=lambda a: (3, 8, 8),
        ),
        Architecture(
            "tinyseg",
            TinySegArch,
            lambda a, shape, classes: TinyNet(shape[0], a.width, 1, pool=False),
            "Tiny segmenter",
            task="segmentation",
            natural_shape=lambda a: (1, 16, 16),
        ),
    ]
    for record in records:
        register(record)
    yield records
    for record in records:
        del ARCHITECTURES[record.name], ARCHS[record.name]
        ConfigStore.instance().repo["arch"].pop(f"{record.name}.yaml")


def test_a_new_architecture_is_one_record(tiny_records, tmp_path, capsys, monkeypatch):
    from conftest import config, run_in_process

    from varexp.data import data_info
    from varexp.plot.common import arch_title
    from varexp.train import train

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for name, task, shape in (("tiny", "classification", (3, 8, 8)),
                              ("tinyseg", "segmentation", (1, 16, 16))):  # fmt: skip
        info = data_info({"name": "gaussian", "shape": None}, {"name": name})
        assert (info.task, info.input_shape) == (task, shape)
        model = build_model(arch(name, width=4), info.input_shape, info.num_classes)
        assert [wl.name for wl in weight_layers(model)] == ["conv", "out"]
        assert arch_title(name) == ARCHITECTURES[name].title

        run = tmp_path / name
        code, err = run_in_process(capsys, "probe", f"arch={name}", "arch.width=4",
                                   "probe.samples=8", "probe.networks=2",
                                   f"hydra.run.dir={run / 'probe'}")  # fmt: skip
        assert code == 0, err
        probe = pd.read_csv(run / "probe" / "probe.csv")
        assert list(probe.name.unique()) == ["conv", "out"]
        assert (probe.sample_var > 0).all()

        cfg = config("train", f"arch={name}", "arch.width=4", "dataset=gaussian",
                     "dataset.size=16", "device=cpu", "train.progress=false",
                     "train.batch_size=4", "train.probe_samples=4", "train.steps=3")  # fmt: skip
        summary = train(cfg, run / "train")
        assert summary["status"] == "completed" and summary["arch"] == name
        metrics = pd.read_csv(run / "train" / "metrics.csv")
        assert list(metrics.step) == [0, 1, 2] and metrics.loss.gt(0).all()

    # the task is the record's: a segmentation model refuses classification data
    with pytest.raises(VarexpError, match="arch=tinyseg needs a segmentation dataset"):
        data_info({"name": "shapes"}, {"name": "tinyseg"})
