"""Every init on an MLP and on a small conv net with a skip concatenation (paper Eq. 2, 13, 14)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from varexp.errors import ConfigError, VarexpError
from varexp.inits import fans, initialize, law_fans
from varexp.models.base import Unit, weight_layers
from varexp.models.mlp import MLP

SQRT2 = math.sqrt(2.0)


class SkipNet(nn.Module):
    """Conv -> strided conv -> 2x2 stride-2 up-convolution -> conv on the concatenated skip ->
    global pooling -> linear: every weight-layer type and a UNet-like concatenation."""

    def __init__(self, c: int = 8, norm: bool = False):
        super().__init__()

        def bn(n: int) -> nn.Module | None:
            return nn.BatchNorm2d(n) if norm else None

        self.conv1 = Unit(nn.Conv2d(3, c, 3, padding=1), bn(c), nn.ReLU())
        self.down = Unit(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), bn(2 * c), nn.ReLU())
        self.up = Unit(nn.ConvTranspose2d(2 * c, c, 2, stride=2), bn(c), nn.ReLU())
        self.conv2 = Unit(nn.Conv2d(2 * c, c, 3, padding=1), bn(c), nn.ReLU())
        self.fc = Unit(nn.Linear(c, 10))

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv1(x)
        b = self.up(self.down(a))
        return self.fc(self.conv2(torch.cat([a, b], dim=1)).mean(dim=(2, 3)))


def capture(model: nn.Module, x: Tensor, where: str = "norm") -> dict[str, Tensor]:
    """Per weight layer, the pre-activation u^l (output of unit.norm) or the weight layer's
    output (where="layer"), from a forward pass in the model's current mode."""
    out: dict[str, Tensor] = {}
    handles = []
    for wl in weight_layers(model):
        module = wl.unit.norm if where == "norm" else wl.unit.layer

        def hook(_m, _i, y, name=wl.name):
            out[name] = y.detach()

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def mlp_batches(k: int = 3, t: int = 32, n: int = 20, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, n, generator=g) for _ in range(k)]


def image_batches(k: int = 2, t: int = 6, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, 3, 8, 8, generator=g) for _ in range(k)]


def test_fans_count_inputs_summed_per_output_unit():
    assert fans(nn.Linear(7, 5)) == (7, 5)
    assert fans(nn.Conv2d(4, 6, 3)) == (36, 54)
    assert fans(nn.Conv2d(4, 6, 3, stride=2)) == (36, 54 / 4)
    # each output of a stride-2 2x2 up-convolution sums over in_channels inputs (torch says 6*4)
    assert fans(nn.ConvTranspose2d(12, 6, 2, stride=2)) == (12, 24)
    assert fans(nn.ConvTranspose2d(12, 6, 3, stride=1)) == (108, 54)


def test_upconv_fan_torch_takes_torch_nn_inits_count_for_the_weight_law():
    """arch.upconv_fan=torch: UNet's up-convolutions drawn with torch.nn.init's fan_in,
    C_out * 2 * 2 = 2 C_in, i.e. half the weight variance of the C_in count."""
    from varexp.models.unet import UNet

    up = nn.ConvTranspose2d(12, 6, 2, stride=2)
    assert law_fans(up) == fans(up) == (12, 24)  # a transposed conv of any model: C_in
    up.fan = "torch"
    assert law_fans(up) == (24, 48) and fans(up) == (12, 24)  # MACs keep the true count
    stds = {}
    for fan in ("in", "torch"):
        torch.manual_seed(0)
        model = UNet(1, 1, 0.25, upconv_fan=fan)
        initialize(model, {"name": "kaiming"})
        stds[fan] = model.up1.upconv.layer.weight.std().item()
        assert model.down1.conv1.layer.weight.std().item() == pytest.approx(SQRT2 / 3, rel=0.1)
    c_in = model.up1.upconv.layer.in_channels
    assert stds["in"] == pytest.approx(SQRT2 / math.sqrt(c_in), rel=0.05)
    assert stds["in"] / stds["torch"] == pytest.approx(SQRT2, rel=0.05)
    with pytest.raises(ValueError, match="upconv_fan='out'"):
        UNet(upconv_fan="out")


def test_kaiming_weight_std_is_gain_over_sqrt_fan_in():
    torch.manual_seed(0)
    model = SkipNet(c=32)
    initialize(model, {"name": "kaiming", "gain": None}, "relu")
    for wl in weight_layers(model):
        w = wl.module.weight
        expected = SQRT2 / math.sqrt(fans(wl.module)[0])
        assert w.std().item() == pytest.approx(expected, rel=0.06), wl.name
        assert w.mean().abs().item() < 4 * expected / math.sqrt(w.numel()), wl.name
        assert torch.all(wl.module.bias == 0), wl.name


def test_kaiming_up_convolution_keeps_second_moment():
    """u = upconv(x) on iid N(0,1) input has E u^2 = gain^2: fan_in is in_channels, not torch's
    out_channels * 4 (which would give gain^2 / 2 here)."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(64, 32, 2, stride=2)
    model = nn.Sequential(Unit(layer))
    x = torch.randn(16, 64, 8, 8)
    q = []
    for _ in range(4):
        initialize(model, {"name": "kaiming"}, "relu")
        with torch.no_grad():
            q.append(model(x).square().mean().item())
    assert sum(q) / len(q) == pytest.approx(2.0, rel=0.05)


def test_kaiming_preserves_total_second_moment_across_layers():
    """Paper Eq. 2-3: with weight variance 2/n, E q^l = E <u^2> = 2 at every layer. At finite
    width q^l of one net drifts multiplicatively, so test the mean over nets against its
    standard error (a 4-sigma z-test) and check that error is small enough to mean something."""
    torch.manual_seed(0)
    depth, nets = 12, 20
    x = torch.randn(32, 256)
    q = []
    for _ in range(nets):
        model = MLP(256, 256, depth)
        initialize(model, {"name": "kaiming", "gain": None}, "relu")
        u = capture(model, x)
        q.append([u[f"layer{i}"].square().mean().item() for i in range(1, depth + 1)])
    q = torch.tensor(q)
    mean, sem = q.mean(0), q.std(0) / math.sqrt(nets)
    assert torch.all((mean - 2.0).abs() <= 4 * sem), (mean, sem)
    assert torch.all(sem < 0.25), sem  # small enough that a gain 5% off fails by layer 12


def test_xavier_and_orthogonal():
    torch.manual_seed(0)
    model = MLP(300, 100, 2)
    initialize(model, {"name": "xavier", "gain": 1.0})
    w = model.layer1.layer.weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 400), rel=0.03)
    initialize(model, {"name": "orthogonal", "gain": None}, "tanh")
    w = model.layer1.layer.weight  # 100 x 300: orthonormal rows times the tanh gain
    gram = w @ w.T / (5.0 / 3.0) ** 2
    assert torch.allclose(gram, torch.eye(100), atol=1e-5)
    assert torch.all(model.layer2.layer.bias == 0)


def fitted_stats(model: nn.Module, batches: list[Tensor]) -> dict[str, Tensor]:
    model.eval()
    return capture(model, torch.cat(batches))


@pytest.mark.parametrize("which", ["mlp", "conv"])
def test_scale_bias_centres_every_feature_and_gives_unit_average_second_moment(which):
    torch.manual_seed(1)
    if which == "mlp":
        model, batches = MLP(20, 64, 10, outputs=5), mlp_batches()
    else:
        model, batches = SkipNet(), image_batches()
    report = initialize(
        model, {"name": "scale+bias", "batches": len(batches), "eps": 1e-12}, batches=batches
    )
    for name, u in fitted_stats(model, batches).items():
        channel_dims = [d for d in range(u.dim()) if d != 1]
        # per feature for Linear; per channel (the bias is per channel) for convs
        assert u.double().mean(dim=channel_dims).abs().max().item() < 1e-5, name
        # the centred second moment, pooled (for Linear: the mean sample variance)
        assert u.double().square().mean().item() == pytest.approx(1.0, abs=1e-5), name
    assert [e["name"] for e in report.layers] == [wl.name for wl in weight_layers(model)]
    assert all(e["bias_abs_mean"] > 0 for e in report.layers)


@pytest.mark.parametrize("which", ["mlp", "conv"])
def test_scale_gives_unit_second_moment_and_zero_biases(which):
    torch.manual_seed(2)
    if which == "mlp":
        model, batches = MLP(20, 64, 10, outputs=5), mlp_batches()
    else:
        model, batches = SkipNet(), image_batches()
    initialize(model, {"name": "scale", "batches": len(batches), "eps": 1e-5}, batches=batches)
    for name, u in fitted_stats(model, batches).items():
        assert u.square().mean().item() == pytest.approx(1.0, abs=1e-3), name
    for wl in weight_layers(model):
        assert torch.all(wl.module.bias == 0), wl.name


@pytest.mark.parametrize("which", ["mlp", "conv"])
def test_lsuv_gives_unit_output_std_in_one_pass(which):
    torch.manual_seed(3)
    if which == "mlp":
        model, batches = MLP(20, 64, 12, outputs=5), mlp_batches(k=2)
    else:
        model, batches = SkipNet(), image_batches()
    init = {"name": "lsuv", "batches": len(batches), "tol": 0.01, "max_iters": 10}
    runs = []
    hook = model.register_forward_hook(lambda _m, i, _o: runs.append(i[0].shape[0]))
    report = initialize(model, init, batches=batches)
    hook.remove()
    assert runs == [sum(b.shape[0] for b in batches)]  # one pass over the k minibatches
    model.eval()
    outputs = capture(model, torch.cat(batches), where="layer")
    for name, y in outputs.items():
        assert abs(y.std().item() - 1.0) <= 0.01, name
    # forward passes: k for the pass plus the re-runs of single layers, weighted by their cost
    k, layers = len(batches), report.layers
    cost = [e["fan_in"] * y.numel() for e, y in zip(layers, outputs.values(), strict=True)]
    reruns = sum(e["iters"] * c for e, c in zip(layers, cost, strict=True)) / sum(cost)
    assert all(e["iters"] >= 1 for e in layers)  # orthogonal weights are not unit-std already
    assert report.forward_passes == pytest.approx(k * (1 + reruns))
    # O(k) here; a per-layer full recompute needs k passes per layer and per iteration
    assert report.forward_passes <= len(layers) * k * (1 + init["max_iters"])
    assert report.forward_passes < k * sum(1 + e["iters"] for e in layers) / 3


def test_scale_forward_passes_are_one_pass_not_one_per_layer():
    model, batches = MLP(20, 32, 15), mlp_batches(k=4)
    runs = []
    model.register_forward_hook(lambda _m, i, _o: runs.append(i[0].shape[0]))
    report = initialize(model, {"name": "scale+bias", "batches": 4}, batches=batches)
    assert runs == [4 * 32]
    assert report.forward_passes == 4.0  # a per-layer full recompute: 15 * 4
    assert report.forward_passes < len(report.layers) * 4


def test_batchnorm_units_train_mode_during_fit_and_modes_restored():
    torch.manual_seed(4)
    model, batches = SkipNet(norm=True), image_batches()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 3.0)
    model.train()
    model.conv1.eval()
    initialize(model, {"name": "scale+bias", "batches": 2}, batches=batches)
    assert model.training and not model.conv1.training and model.conv1.norm.training is False
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
    # scale sees u after BatchNorm, already of unit second moment: sigma_B^2 ~ 1, W barely moves
    report = initialize(model, {"name": "scale", "batches": 2}, batches=batches)
    for e in report.layers[:-1]:
        assert e["sigma2"] == pytest.approx(1.0, abs=1e-3), e["name"]
    initialize(model, {"name": "batchnorm"}, "relu")
    w = model.down.layer.weight
    assert w.std().item() == pytest.approx(SQRT2 / math.sqrt(fans(model.down.layer)[0]), rel=0.1)


def test_missing_or_too_small_batches_raise():
    model = MLP(20, 16, 3)
    with pytest.raises(VarexpError, match="init.batches=5"):
        initialize(model, {"name": "scale", "batches": 5})
    with pytest.raises(VarexpError, match="init.batches=3 .* 2 given"):
        initialize(model, {"name": "lsuv", "batches": 3}, batches=mlp_batches(k=2))
    with pytest.raises(VarexpError, match="minibatch 2 has 1 sample"):
        initialize(
            model,
            {"name": "scale+bias", "batches": 2},
            batches=[torch.randn(4, 20), torch.randn(1, 20)],
        )


@pytest.mark.parametrize("name", ["scale", "scale+bias", "lsuv"])
def test_dead_layer_raises_naming_it_and_leaves_model_unchanged(name):
    model = SkipNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zeros = [torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)]
    with pytest.raises(VarexpError, match="layer conv1"):
        initialize(model, {"name": name, "batches": 2}, batches=zeros)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_layer_run_twice_raises():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.unit = Unit(nn.Linear(8, 8), act=nn.ReLU())

        def forward(self, x: Tensor) -> Tensor:
            return self.unit(self.unit(x))

    with pytest.raises(VarexpError, match="layer unit ran 2 times"):
        initialize(Shared(), {"name": "scale", "batches": 1}, batches=[torch.randn(4, 8)])


def test_input_constant_over_samples_is_dead_for_scale_bias():
    """Every sample equal: zero sample variance at layer1, however large the second moment."""
    model = MLP(20, 16, 3)
    same = [torch.ones(8, 20)]
    with pytest.raises(VarexpError, match="layer layer1 is dead"):
        initialize(model, {"name": "scale+bias", "batches": 1}, batches=same)


def test_non_finite_input_raises():
    model = MLP(20, 16, 3)
    bad = mlp_batches(k=1)
    bad[0][0, 0] = float("nan")
    with pytest.raises(VarexpError, match="layer1"):
        initialize(model, {"name": "scale", "batches": 1}, batches=bad)


def test_bad_config_raises_one_line():
    model = MLP(20, 16, 3)
    with pytest.raises(ConfigError, match="init.name='he'"):
        initialize(model, {"name": "he"})
    with pytest.raises(ConfigError, match="init.gain=-1"):
        initialize(model, {"name": "kaiming", "gain": -1})
    with pytest.raises(ConfigError, match="arch.activation='swish'"):
        initialize(model, {"name": "kaiming"}, "swish")
    with pytest.raises(VarexpError, match="arch.norm=batchnorm"):
        initialize(model, {"name": "batchnorm"})
    with pytest.raises(VarexpError, match="no weight layers"):
        initialize(nn.Sequential(nn.ReLU()), {"name": "kaiming"})
