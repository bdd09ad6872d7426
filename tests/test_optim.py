"""The optimizer records: each builds the paper's optimizer, and the state it says it keeps per
parameter (what the memory checks count) is what torch keeps after a step."""

import pytest
import torch

from varexp import memory
from varexp.errors import ConfigError
from varexp.optim import OPTIMIZERS, make_optimizer, optimizer


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_record_builds_its_optimizer_and_counts_its_state(name):
    record = OPTIMIZERS[name]
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model.parameters(), {"name": name, "lr": 0.01})
    assert type(opt).__name__.lower() == name and opt.param_groups[0]["lr"] == 0.01
    model(torch.randn(4, 3)).square().sum().backward()
    opt.step()
    for p in model.parameters():
        same_size = [t for t in opt.state[p].values() if torch.is_tensor(t) and t.shape == p.shape]
        assert len(same_size) == record.states
    params = sum(p.numel() for p in model.parameters())
    assert memory.train_bytes(params, 0, name) == memory.FLOAT * params * (2 + record.states)
    assert record.lr_grid == tuple(sorted(record.lr_grid)) and len(record.lr_grid) == 4


def test_an_unknown_optimizer_is_one_line():
    with pytest.raises(
        ConfigError, match="optim.name='rmsprop' is not allowed; choose one of sgd, adam"
    ):
        optimizer("rmsprop")
    with pytest.raises(ConfigError, match="optim.name"):
        make_optimizer(torch.nn.Linear(1, 1).parameters(), {"name": "rmsprop"})
