"""Any model, measured exactly: whatever a model does after a weight layer (in-place ops), every
kind of weight layer (Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d), one warning naming the weights
that are not measured or initialized, and zero biases for layers that lack them."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import run_in_process
from torch import nn

import varexp
from varexp.errors import VarexpError
from varexp.inits import initialize
from varexp.models import build_model
from varexp.models.base import add_biases
from varexp.threads import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def out_of_place(model: nn.Module) -> nn.Module:
    """The same model, weights and all, with every module's in-place option off."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return model


def assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# in-place ops after a weight layer


def timm_efficientnet_b0() -> nn.Module:
    timm = pytest.importorskip("timm", reason="timm is not installed")
    return timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)


@pytest.mark.parametrize(
    "build",
    [
        lambda: torchvision.models.vgg11(num_classes=10),
        lambda: torchvision.models.vgg11_bn(num_classes=10),
        # squeeze-excite blocks: a 1x1 conv, SiLU(inplace=True), a 1x1 conv, a sigmoid gate
        lambda: torchvision.models.efficientnet_b0(num_classes=10),
        timm_efficientnet_b0,
    ],
    ids=["vgg11", "vgg11_bn", "efficientnet_b0", "timm_efficientnet_b0"],
)
def test_in_place_ops_after_a_layer_change_no_statistic(build):
    """Every statistic and grad_sq of a model with in-place activations equal those of the same
    model with them off (grad_sq was up to 2x high on vgg11, 6x on efficientnet's SE convs)."""
    torch.manual_seed(0)
    model = build()
    assert any(getattr(m, "inplace", False) for m in model.modules())
    x = torch.randn(8, 3, 32, 32)
    table = varexp.probe(model, x)
    assert_same_tables(table, varexp.probe(out_of_place(model), x))
    assert (table.grad_sq > 0).all()


class Block(nn.Module):
    """A hand-written block: conv, relu_, conv, an in-place residual add and hardswish, linear."""

    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace = inplace
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        h = self.conv1(x)
        h = h.relu_() if self.inplace else h.relu()
        y = self.conv2(h)
        y = y.add_(h) if self.inplace else y + h
        y = F.hardswish(y, inplace=self.inplace)
        return self.fc(y.flatten(1))


def test_in_place_ops_in_a_hand_written_block_against_the_chain_rule():
    """grad_sq of each layer is the mean square of dL/du, u its output before the in-place ops
    (computed here with autograd on the out-of-place block's kept outputs), for L = w . output
    with w drawn from the probe's seed."""
    torch.manual_seed(0)
    inplace, x = Block(True), torch.randn(20, 3, 8, 8)
    plain = Block(False)
    plain.load_state_dict(inplace.state_dict())
    table = varexp.probe(inplace, x, seed=3)
    assert_same_tables(table, varexp.probe(plain, x, seed=3))
    outputs = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, y: outputs.append(y))
        for m in (plain.conv1, plain.conv2, plain.fc)
    ]
    out = plain(x)
    for hook in hooks:
        hook.remove()
    w = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((out * w).sum(), outputs)
    expected = [g.double().square().mean().item() for g in grads]
    np.testing.assert_allclose(table.grad_sq, expected, rtol=1e-6)
    # the statistics are those of u before relu_ changed it
    u1 = plain.conv1(x).detach().double()
    assert table.sample_var.iloc[0] == pytest.approx(
        u1.var(dim=0, unbiased=False).mean().item(), rel=1e-9
    )


# ---------------------------------------------------------------------------------------------
# every kind of weight layer


CONVS = {
    "Conv1d": (lambda: nn.Conv1d(16, 24, 3, stride=2), (16, 21)),
    "Conv3d": (lambda: nn.Conv3d(16, 24, 3), (16, 5, 5, 5)),
    "ConvTranspose1d": (lambda: nn.ConvTranspose1d(16, 24, 2, stride=2), (16, 9)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(16, 24, 2, stride=2), (16, 4, 4)),
    "ConvTranspose3d": (lambda: nn.ConvTranspose3d(16, 24, 2, stride=2), (16, 3, 3, 3)),
}


def conv_net(kind: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    make, shape = CONVS[kind]
    conv = make()
    features = conv(torch.zeros(1, *shape)).numel()
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(features, 5)), shape


@pytest.mark.parametrize("kind", list(CONVS))
def test_every_kind_of_conv_is_measured_per_channel(kind):
    """Per-channel statistics pool each channel over samples and all positions, whatever the
    number of spatial dims."""
    torch.manual_seed(0)
    model, shape = conv_net(kind)
    x = torch.randn(30, *shape)
    table = varexp.probe(model, x)
    assert list(table.type) == [kind, "Linear"]
    u = model[0](x).detach().double()
    per_channel = u.transpose(0, 1).reshape(u.shape[1], -1)
    assert table.features.iloc[0] == u[0].numel()
    assert table.sample_mean_sq_channel.iloc[0] == pytest.approx(
        per_channel.mean(dim=1).square().mean().item(), rel=1e-9
    )
    assert table.sample_var_channel.iloc[0] == pytest.approx(
        per_channel.var(dim=1, unbiased=False).mean().item(), rel=1e-9
    )
    assert table.sample_var.iloc[0] == pytest.approx(
        u.var(dim=0, unbiased=False).mean().item(), rel=1e-9
    )


@pytest.mark.parametrize("kind", list(CONVS))
def test_every_kind_of_conv_is_initialized(kind):
    """Kaiming: unit-variance inputs give outputs of second moment 2 (fan_in counts the inputs
    one output sums over: stride-2, 2-tap transposed convs sum over in_channels); scale+bias:
    every channel's mean over samples and positions 0, the layer's second moment 1; lsuv: the
    output's std 1 within its tolerance."""
    torch.manual_seed(0)
    model, shape = conv_net(kind)
    x = torch.randn(64, *shape)
    initialize(model, {"name": "kaiming"})
    assert model[0](x).square().mean().item() == pytest.approx(2.0, rel=0.1)
    report = varexp.init.scale_bias_(model, x + 1.0)
    assert [e["type"] for e in report.layers] == [kind, "Linear"] and not report.not_initialized
    u = model[0](x + 1.0).detach().double()
    channel_means = u.transpose(0, 1).reshape(u.shape[1], -1).mean(dim=1)
    assert channel_means.abs().max().item() < 1e-5
    assert u.square().mean().item() == pytest.approx(1.0, abs=1e-4)
    varexp.init.lsuv_(model, x, tol=0.05)
    assert model[0](x).std().item() == pytest.approx(1.0, abs=0.05)


def test_lsuv_fits_a_conv1d():
    """The example that left the Conv1d at its old weights (output std 0.60) without a word."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(112, 5))
    x = torch.randn(64, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = varexp.init.lsuv_(model, x)
    assert [e["name"] for e in report.layers] == ["0", "3"]
    assert model[0](x).std().item() == pytest.approx(1.0, abs=0.1)


class Mixed(nn.Module):
    """A token model with weights varexp cannot reach: an embedding, an LSTM, a weight used
    through F.linear, attention's packed projection and its out_proj (never called)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.mix = nn.Parameter(torch.randn(8, 8) / 8**0.5)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens))
        h = F.linear(h, self.mix)
        h, _ = self.attention(h, h, h)
        return self.fc(h)


def test_weights_not_reached_are_named_with_their_share_and_left_alone():
    torch.manual_seed(0)
    model, tokens = Mixed(), torch.randint(0, 10, (12, 5))
    left = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.fc.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    named = (
        r"1 parameter used directly \(mix\); 1 Embedding \(embed\); 1 LSTM \(lstm\); 1 "
        r"MultiheadAttention \(attention\); 1 NonDynamicallyQuantizableLinear used without "
        rf"calling it \(attention.out_proj\): {left:,} of {total:,} parameters "
        rf"\({100 * left / total:.1f}%\)"
    )
    with pytest.warns(UserWarning, match=r"^not measured: " + named) as caught:
        table = varexp.probe(model, tokens)
    assert len(caught) == 1 and list(table.name) == ["fc"]
    assert [(u["name"], u["kind"]) for u in table.attrs["not_measured"]] == [
        ("mix", "parameter used directly"),
        ("embed", "Embedding"),
        ("lstm", "LSTM"),
        ("attention", "MultiheadAttention"),
        ("attention.out_proj", "NonDynamicallyQuantizableLinear used without calling it"),
    ]
    assert sum(u["parameters"] for u in table.attrs["not_measured"]) == left
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=r"^not initialized by init=lsuv: " + named):
        report = varexp.init.lsuv_(model, tokens)
    assert [e["name"] for e in report.layers] == ["fc"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) or key.startswith("fc."), key
    assert not torch.equal(model.fc.weight, before["fc.weight"])
    # a data-free init draws out_proj (a Linear) but reaches the others no better
    report = initialize(model, {"name": "kaiming"})
    assert {u.name for u in report.not_initialized} == {"mix", "embed", "lstm", "attention"}


# ---------------------------------------------------------------------------------------------
# bias-less layers


def test_add_bias_lets_scale_bias_centre_every_layer_of_a_resnet():
    """resnet18 without normalization: its convs have no bias, so scale+bias only scales 20 of
    its 21 layers (their channel ratio stays near 1); with zero biases added every channel is
    centred on the fitting batch."""
    torch.manual_seed(0)
    model = build_model(
        {"name": "torchvision", "model": "resnet18", "norm": "none"}, (3, 32, 32), 10
    )
    bare, x = copy.deepcopy(model), torch.randn(32, 3, 32, 32)
    with pytest.warns(
        UserWarning,
        match=r"20 layer\(s\) without a bias were scaled but not "
        r"centred: conv1, layer1.0.conv1, .*arch.bias=true, or add_bias=True",
    ):
        varexp.init.scale_bias_(bare, x)
    uncentred = varexp.probe(bare, x, grad=False).ratio_channel
    assert (uncentred.iloc[1:-1] > 0.3).all()  # the fc layer has a bias
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scale (Eq. 13) never centres: nothing to warn about
        varexp.init.scale_(copy.deepcopy(model), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = varexp.init.scale_bias_(model, x, add_bias=True)
        table = varexp.probe(model, x, grad=False)
    assert len(report.layers) == 21 and all(e["centred"] == 1 for e in report.layers)
    assert (table.ratio_channel < 1e-5).all()
    np.testing.assert_allclose(table.second_moment, 1.0, rtol=1e-3)


def test_add_bias_is_nothing_to_do_where_every_layer_has_one():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv1d(1, 2, 1))
    assert add_biases(model) == []
    with_biases = build_model({"name": "mlp", "width": 8, "depth": 3, "bias": True}, (8,), None)
    assert all(m.bias is not None for m in with_biases.modules() if isinstance(m, nn.Linear))


def test_a_failed_scale_bias_takes_the_added_biases_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
    with pytest.raises(VarexpError):
        varexp.init.scale_bias_(model, torch.zeros(8, 3, 5, 5), add_bias=True)  # a dead layer
    assert model[0].bias is None and [n for n, _ in model.named_parameters()] == ["0.weight"]


SMALL = [
    "dataset=shapes",
    "dataset.augment=false",
    "dataset.train_size=512",
    "dataset.test_size=16",
    "dataset.cache=false",
    "device=cpu",
    "train.steps=1",
    "train.batch_size=32",
    "train.progress=false",
]


def test_the_cli_warns_and_arch_bias_centres_a_resnet(tmp_path, capsys):
    """`varexp train` on resnet18 without norms, init=scale+bias: without arch.bias one line
    names the 20 uncentred convs and the step-0 channel ratios on the probe batch stay near 1;
    with arch.bias=true no warning, and they fall to the sampling noise of a probe batch that
    the fit did not see (below 0.3; 0.06-0.17 measured)."""
    common = [
        "train",
        "arch=torchvision",
        "arch.model=resnet18",
        "arch.norm=none",
        "init=scale+bias",
        *SMALL,
    ]
    code, err = run_in_process(capsys, *common, f"hydra.run.dir={tmp_path / 'plain'}")
    assert code == 0, err
    log = (tmp_path / "plain" / "train.log").read_text()
    assert "init=scale+bias: 20 layer(s) without a bias were scaled but not centred" in log
    code, err = run_in_process(
        capsys, *common, "arch.bias=true", f"hydra.run.dir={tmp_path / 'bias'}"
    )
    assert code == 0, err
    log = (tmp_path / "bias" / "train.log").read_text()
    assert "WARNING" not in log, log
    plain, bias = (
        pd.read_csv(tmp_path / run / "ratios.csv").query("step == 0") for run in ("plain", "bias")
    )
    assert plain.ratio_channel.iloc[1:-1].median() > 0.7
    assert (bias.ratio_channel < 0.3).all()


def test_the_cli_names_what_it_does_not_measure(tmp_path, capsys):
    """torchvision's ViT through `varexp probe`: one line per run (not per network) names its
    attention projections and tokens with their share of the parameters."""
    code, err = run_in_process(
        capsys,
        "probe",
        "arch=torchvision",
        "arch.model=vit_b_32",
        "dataset=shapes",
        "dataset.cache=false",
        "device=cpu",
        "probe.networks=2",
        "probe.samples=4",
        "probe.progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert code == 0, err
    log = (tmp_path / "probe.log").read_text()
    lines = [line for line in log.splitlines() if "not measured" in line]
    assert len(lines) == 1, log
    assert (
        "12 MultiheadAttention (encoder.layers.encoder_layer_0.self_attention, "
        "encoder.layers.encoder_layer_1.self_attention, ... (10 more))"
    ) in lines[0]
    assert "NonDynamicallyQuantizableLinear used without calling it" in lines[0]
    table = pd.read_csv(tmp_path / "probe.csv")
    assert not table.name.str.contains("out_proj|in_proj").any()
