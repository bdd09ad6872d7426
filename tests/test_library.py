"""varexp as a library on models it did not build: varexp.probe(model, x) and varexp.init's
in-place inits, on plain nn.Sequential MLPs and torchvision models."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import varexp
import varexp.library
from varexp.errors import VarexpError
from varexp.models.base import weight_layers
from varexp.theory import recursion
from varexp.threads import available_cores, free_cores_now, one_thread, using_threads


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def plain_mlp(width: int, depth: int) -> nn.Sequential:
    """The paper's Eq. 1 network as anyone writes it, Kaiming weights, zero biases."""
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def test_probe_of_a_plain_mlp_follows_the_theory():
    """Eq. 6-8: the ratio m/v at layer l of a wide Kaiming ReLU net on iid inputs; the sampled
    ratio of a finite net sits near it at moderate depth (mean over networks)."""
    torch.manual_seed(0)
    width, depth, networks = 400, 8, 6
    x = torch.randn(100, width)
    tables = [varexp.probe(plain_mlp(width, depth), x, seed=i) for i in range(networks)]
    table = tables[0]
    assert list(table.layer) == list(range(1, depth + 1))
    assert list(table.name) == [str(2 * i) for i in range(depth)]  # Sequential's own names
    assert set(table.type) == {"Linear"} and (table.features == width).all()
    ratio = np.mean([t.ratio.to_numpy() for t in tables], axis=0)
    theory = recursion(depth).ratio.to_numpy()
    np.testing.assert_allclose(ratio[2:], theory[2:], rtol=0.1)
    assert np.isfinite(table.grad_sq).all() and (table.grad_sq > 0).all()
    np.testing.assert_allclose(table.ratio, np.sqrt(table.sample_mean_sq / table.sample_var))


def test_probe_of_resnet18_in_forward_order_leaves_the_model_alone():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).train()
    state = copy.deepcopy(model.state_dict())
    table = varexp.probe(model, torch.randn(8, 3, 32, 32))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sorted(table.name) == sorted(convs) and len(table) == 21
    # forward order: a block's shortcut runs after its two convs, the classifier last
    names = list(table.name)
    assert names.index("layer2.0.downsample.0") == names.index("layer2.0.conv2") + 1
    assert names[-1] == "fc" and table.type.iloc[-1] == "Linear"
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():  # BatchNorm's running statistics included
        assert torch.equal(value, state[key]), key


def test_a_layer_run_twice_is_measured_on_its_first_call_with_a_warning():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(torch.relu(self.hidden(x)))))

    model, x = Shared(), torch.randn(50, 8)
    with pytest.warns(UserWarning, match="layer hidden ran 2 times"):
        table = varexp.probe(model, x)
    first = model.hidden(x)
    assert table.second_moment.iloc[0] == pytest.approx(first.square().mean().item(), rel=1e-5)
    with pytest.raises(VarexpError, match="layer hidden ran 2 times"):
        varexp.init.scale_(model, x)


def test_bad_models_are_one_line():
    with pytest.raises(VarexpError, match="Sequential has no weight layers"):
        varexp.probe(nn.Sequential(nn.ReLU()), torch.randn(4, 3))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(VarexpError, match="returns a tuple, not one tensor"):
        varexp.probe(Pair(), torch.randn(4, 3))
    assert len(varexp.probe(Pair(), torch.randn(4, 3), grad=False)) == 1


def test_probe_runs_on_the_free_cores_and_restores_torchs_threads(monkeypatch):
    """threads="auto" takes the cores other processes leave free (at most torch's setting), as
    the command line's threads=auto does; torch's own setting comes back afterwards."""
    seen = []

    class Spy(nn.Linear):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    model, x = Spy(3, 3), torch.randn(4, 3)
    monkeypatch.setattr(varexp.library, "free_cores_now", lambda: 1)
    with using_threads(2):
        varexp.probe(model, x)
        varexp.probe(model, x, threads=2)
        varexp.probe(model, x, threads=None)
        assert torch.get_num_threads() == 2
    assert seen == [1, 2, 2]
    with pytest.raises(
        VarexpError, match="threads=0 is not allowed; must be auto, None or an integer >= 1"
    ):
        varexp.probe(model, x, threads=0)
    assert 1 <= free_cores_now() <= available_cores()


def test_scale_bias_centres_every_feature_of_any_model():
    """Eq. 14 then 13 on a plain MLP: on the fitting batch every pre-activation's sample mean
    is 0 and the layer's second moment 1 (paper Sec. 4)."""
    torch.manual_seed(0)
    model, x = plain_mlp(64, 6), torch.randn(3, 40, 64)
    report = varexp.init.scale_bias_(model, list(x))
    assert report.forward_passes == 3 and all(e["centred"] == 1 for e in report.layers)
    table = varexp.probe(model, x.reshape(120, 64), grad=False)
    assert (table.sample_mean_sq < 1e-10).all()
    np.testing.assert_allclose(table.second_moment, 1.0, rtol=1e-4)


def test_the_inits_report_their_targets_on_fresh_inputs_beside_the_fitting_ones():
    """heldout=x_fresh: each layer's second moment and mean on the fitting batch (1 and 0 for
    scale+bias, exactly) and on the fresh batch, measured on the fitted model itself (the report's
    held-out numbers are varexp.probe's on x_fresh), for all three inits."""
    torch.manual_seed(0)
    x, fresh = torch.randn(16, 64), torch.randn(40, 64)
    for fit in (varexp.init.scale_bias_, varexp.init.scale_, varexp.init.lsuv_):
        model = plain_mlp(64, 12)
        layers = fit(model, x, heldout=fresh).layers
        table = varexp.probe(model, fresh, grad=False)
        np.testing.assert_allclose(
            [e["heldout_second_moment"] for e in layers], table.second_moment, rtol=1e-5
        )
        np.testing.assert_allclose(
            [e["heldout_mean_sq"] for e in layers], table.sample_mean_sq_channel, rtol=1e-5
        )
        if fit is not varexp.init.lsuv_:  # lsuv's target is the std, within init.tol
            np.testing.assert_allclose([e["fit_second_moment"] for e in layers], 1.0, rtol=1e-3)
    # scale+bias centres its fitting batch only
    layers = varexp.init.scale_bias_(plain_mlp(64, 12), x, heldout=fresh).layers
    assert max(e["fit_mean_sq"] for e in layers) < 1e-10
    assert min(e["heldout_mean_sq"] for e in layers) > 1e-4


def test_scale_bias_on_convs_without_bias_scales_them_and_says_so():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(8, 3, 32, 32)
    with pytest.warns(UserWarning, match=r"20 layer\(s\) without a bias were scaled but not"):
        varexp.init.scale_bias_(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fc layer has a bias: it is centred, no warning
        table = varexp.probe(model, x, grad=False)
    np.testing.assert_allclose(table.second_moment, 1.0, rtol=1e-3)
    assert table.sample_mean_sq.iloc[-1] < 1e-10


def test_lsuv_matches_the_lsuv_package_on_a_torchvision_model():
    """The lsuv package and varexp.init.lsuv_ on torchvision's squeezenet1_1 from the same seed
    reach the same per-layer output std (torch.std of each weight layer's output, the package's
    definition) and the same weights. ReLUs are made out-of-place: the package reads a layer's
    output after the next in-place ReLU has overwritten it (its stds come out near 1.7)."""
    lsuv = pytest.importorskip("lsuv", reason="the lsuv package is not installed")
    torch.manual_seed(0)
    ours = torchvision.models.squeezenet1_1(num_classes=10)
    for module in ours.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    theirs, x = copy.deepcopy(ours), torch.randn(8, 3, 64, 64)
    torch.manual_seed(1)
    varexp.init.lsuv_(ours, x, tol=0.1, max_iters=10, eps=1e-8)
    torch.manual_seed(1)
    lsuv.lsuv_with_singlebatch(theirs, x, std_tol=0.1, max_attempts=10, verbose=False)

    def stds(model: nn.Module) -> list[float]:
        out: list[float] = []
        hooks = [
            wl.module.register_forward_hook(lambda _m, _i, y: out.append(y.std().item()))
            for wl in weight_layers(model)
        ]
        with torch.no_grad():
            model.eval()(x)
        for hook in hooks:
            hook.remove()
        return out

    a, b = stds(ours), stds(theirs)
    assert len(a) == len(b) == 26
    assert all(abs(s - 1.0) <= 0.1 for s in a) and max(map(abs, np.subtract(a, b))) < 1e-4
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_linear_layers_on_tokens_pool_their_channels_over_tokens():
    """A Linear layer applied to (T, tokens, features): its features are the last dim, so the
    per-channel statistics pool over samples and tokens, and scale+bias centres each feature
    over both (as a conv's channel over samples and positions)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(30, 5, 8) + torch.linspace(-1, 1, 5)[None, :, None]  # tokens differ
    table = varexp.probe(model, x, grad=False)
    u = model[0](x).detach().double()
    pooled = u.mean(dim=(0, 1))
    assert table.sample_mean_sq_channel.iloc[0] == pytest.approx(pooled.square().mean().item())
    varexp.init.scale_bias_(model, x)
    u = model[0](x).detach().double()
    assert u.mean(dim=(0, 1)).abs().max().item() < 1e-5  # every feature centred
    assert u.square().mean().item() == pytest.approx(1.0, abs=1e-4)


def test_weights_used_without_calling_their_module_are_named_and_kept():
    """torchvision's ViT: nn.MultiheadAttention's packed in_proj and its out_proj (whose weights
    it uses without calling the module), the class token and the position embedding are not
    measured or initialized: one warning names them with their share of the parameters, and a
    data-dependent init leaves them as they were."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )
    x = torch.randn(16, 3, 32, 32)
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    left = sum(p.numel() for m in attention for p in m.parameters())
    left += model.class_token.numel() + model.encoder.pos_embedding.numel()
    total = sum(p.numel() for p in model.parameters())
    share = rf"{left:,} of {total:,} parameters \({100 * left / total:.1f}%\)"
    out_proj = attention[0].out_proj.weight.detach().clone()
    with pytest.warns(
        UserWarning,
        match=r"not initialized by init=scale\+bias: 2 parameters "
        r"used directly \(class_token, encoder.pos_embedding\); 2 "
        r"MultiheadAttention .*; 2 NonDynamicallyQuantizableLinear used without "
        rf"calling it \(encoder.layers.encoder_layer_0.self_attention.out_proj, .*"
        rf"\): {share}",
    ):
        report = varexp.init.scale_bias_(model, x)
    assert torch.equal(attention[0].out_proj.weight, out_proj)
    assert [e["name"] for e in report.layers] == [
        n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)
    ]
    assert {u.name for u in report.not_initialized} >= {"class_token", "encoder.pos_embedding"}
    with pytest.warns(UserWarning, match=rf"^not measured: .*: {share}"):
        table = varexp.probe(model, x)
    assert not table.name.str.contains("out_proj").any()


class FailsInForward(nn.Module):
    """An MLP whose forward pass raises after its first layer ran (and was fitted)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)).reshape(-1, 3))


@pytest.mark.parametrize("init", ["scale_bias_", "scale_", "lsuv_"])
@pytest.mark.parametrize(
    "model, x, needle",
    [
        (
            lambda: plain_mlp(8, 3),
            lambda: torch.randn(32, 7),
            r"Sequential failed on batches of shape \(32, 7\): mat1 and mat2 shapes cannot be "
            r"multiplied",
        ),
        (
            FailsInForward,
            lambda: torch.randn(32, 8),
            r"FailsInForward failed on batches of shape "
            r"\(32, 8\): shape '\[-1, 3\]' is invalid",
        ),
    ],
)
def test_an_init_that_fails_leaves_the_model_as_it_was(init, model, x, needle):
    """The library's inits redraw every weight before fitting: any error on the way (here a
    forward pass that raises) puts every parameter and buffer back, with one line."""
    torch.manual_seed(0)
    model = model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(VarexpError, match=needle):
        getattr(varexp.init, init)(model, x())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class NormThenFails(nn.Module):
    """BatchNorm (whose running statistics a pass in training mode updates), then a forward
    pass that raises."""

    def __init__(self):
        super().__init__()
        self.first, self.norm, self.second = nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.second(self.norm(self.first(x)).reshape(-1, 3))


def test_a_probe_that_fails_leaves_the_model_as_it_was():
    """probe runs BatchNorm on batch statistics (training mode) and hooks every layer: a
    forward pass that raises is one line, and the weights, running statistics, modes and hooks
    are as before."""
    torch.manual_seed(0)
    model = NormThenFails().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        VarexpError,
        match=r"NormThenFails failed on x of shape \(32, 8\): "
        r"shape '\[-1, 3\]' is invalid",
    ):
        varexp.probe(model, torch.randn(32, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "x, needle",
    [
        (
            lambda: torch.randn(32, 8, dtype=torch.float64),
            r"has dtype torch.float64, the model's "
            r"parameters torch.float32; pass",
        ),
        (
            lambda: torch.randn(1, 8),
            r"has 1 sample\(s\) \(shape \(1, 8\)\); the sample variance "
            r"needs T >= 2",
        ),
        (lambda: torch.randn(0, 8), r"has 0 sample\(s\)"),
        (lambda: torch.randn(8), r"has shape \(8,\); it needs the samples first"),
        (
            lambda: torch.randn(32, 8).index_fill_(0, torch.tensor([3]), float("nan")),
            r"has 8 NaN or inf value\(s\) of 256",
        ),
        (lambda: torch.ones(32, 8, dtype=torch.bool), r"has dtype torch.bool; it must hold real"),
        (lambda: [[0.0] * 8] * 4, r"must be a torch.Tensor of T samples; got list"),
    ],
)
def test_inputs_the_statistics_cannot_use_are_one_line_before_any_work(x, needle):
    torch.manual_seed(0)
    model = plain_mlp(8, 3)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(VarexpError, match="x " + needle):
        varexp.probe(model, x())
    with pytest.raises(VarexpError, match=needle):
        varexp.init.scale_bias_(model, x())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_an_input_on_another_device_than_the_model_is_one_line():
    with pytest.raises(VarexpError, match=r"x is on cuda:0, the model on cpu; pass x.to\('cpu'\)"):
        varexp.probe(plain_mlp(8, 3), torch.randn(32, 8, device="cuda"))
