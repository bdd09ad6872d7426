"""Our lsuv against the reference `lsuv` package (PyPI, Mishkin's LSUV-pytorch) on one batch.

Comparable: the std of each weight layer's output (torch.std over the whole tensor, the package's
definition) after init. Both draw orthogonal weights with torch.nn.init.orthogonal_ in the same
layer order, so from one seed they start from the same weights and must end at the same ones.
Not compared: BatchNorm models (the package fits in eval mode, i.e. on running statistics; we fit
BatchNorm on batch statistics).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from varexp.inits import initialize
from varexp.models.base import Unit, weight_layers
from varexp.models.mlp import MLP

lsuv = pytest.importorskip("lsuv", reason="the lsuv package is not installed (pip install lsuv)")

TOL = 0.1


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Unit(nn.Conv2d(3, 8, 3, padding=1), act=nn.ReLU())
        self.down = Unit(nn.Conv2d(8, 16, 3, stride=2, padding=1), act=nn.ReLU())
        self.up = Unit(nn.ConvTranspose2d(16, 8, 2, stride=2), act=nn.ReLU())
        self.fc = Unit(nn.Linear(8, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.up(self.down(self.conv1(x))).mean(dim=(2, 3)))


def output_stds(model: nn.Module, x: Tensor) -> list[float]:
    stds: list[float] = []
    handles = [
        wl.module.register_forward_hook(lambda _m, _i, y: stds.append(y.std().item()))
        for wl in weight_layers(model)
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return stds


@pytest.mark.parametrize("which", ["mlp", "conv"])
def test_lsuv_matches_the_lsuv_package(which):
    torch.manual_seed(0)
    if which == "mlp":
        ours, x = MLP(32, 64, 10, outputs=5), torch.randn(64, 32)
    else:
        ours, x = ConvNet(), torch.randn(16, 3, 8, 8)
    theirs = copy.deepcopy(ours)

    torch.manual_seed(1)
    init = {"name": "lsuv", "batches": 1, "tol": TOL, "max_iters": 10, "eps": 1e-8, "gain": 1.0}
    initialize(ours, init, batches=[x])
    torch.manual_seed(1)
    lsuv.lsuv_with_singlebatch(theirs, x, std_tol=TOL, max_attempts=10, verbose=False)

    ours_std, theirs_std = output_stds(ours, x), output_stds(theirs, x)
    assert len(ours_std) == len(theirs_std) == len(weight_layers(ours))
    for layer, (a, b) in enumerate(zip(ours_std, theirs_std, strict=True), start=1):
        assert abs(a - 1.0) <= TOL and abs(b - 1.0) <= TOL, (layer, a, b)
        assert a == pytest.approx(b, abs=1e-4), layer
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
