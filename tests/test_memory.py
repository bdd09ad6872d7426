"""The memory estimate's counts: parameters and layer outputs of varexp's models from their
layers' shapes, equal to a forward pass on a meta batch, without importing torch._dynamo."""

import itertools
import json
import subprocess
import sys

import pytest
import torch

from varexp import memory
from varexp.models import build_model

MODELS = [
    *(
        ({"name": "mlp", "width": w, "depth": 3, "norm": n}, shape, c)
        for w, n, shape, c in itertools.product(
            (7, 300), ("none", "batchnorm"), ((3, 32, 32), (100,)), (None, 10)
        )
    ),
    *(
        ({"name": "allcnnc", "channels": ch, "norm": n, "dropout": d}, shape, c)
        for ch, n, d, shape, c in itertools.product(
            (0.125, 1.0), ("none", "batchnorm"), (0.0, 0.3), ((3, 32, 32), (1, 9, 13)), (None, 4)
        )
    ),
    *(
        ({"name": "unet", "channels": ch, "norm": n, "out_channels": o}, shape, None)
        for ch, n, o, shape in itertools.product(
            (0.125,), ("none", "batchnorm"), (1, 2), ((1, 64, 64), (3, 32, 96))
        )
    ),
]


@pytest.mark.parametrize("arch, shape, classes", MODELS)
def test_layer_outputs_equal_a_meta_forward_pass(arch, shape, classes):
    params, outputs = memory._count(json.dumps(arch, sort_keys=True), shape, classes, 3)
    with torch.device("meta"):
        model = build_model(arch, shape, classes)
    assert params == sum(p.numel() for p in model.parameters())
    assert outputs == memory._forward_outputs(model, 3, shape)


def test_the_counts_import_no_dynamo():
    """PyTorch's meta kernels import torch._dynamo on first use (a third of a run's start-up);
    the counts of varexp's models run none of them."""
    code = (
        "import sys, json\n"
        "from varexp import memory\n"
        "for arch, shape in [({'name': 'mlp', 'width': 50, 'depth': 4}, (3, 32, 32)),\n"
        "                    ({'name': 'allcnnc', 'channels': 0.25}, (3, 32, 32)),\n"
        "                    ({'name': 'unet', 'channels': 0.125}, (1, 64, 64))]:\n"
        "    memory._count(json.dumps(arch), shape, 10, 32)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
