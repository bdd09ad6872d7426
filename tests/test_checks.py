"""A sweep's jobs are checked as strictly as one run, but each composition whole once: a further
job's values key by key (and every interpolated key), and each cross-key rule once per distinct
combination of the values it reads."""

import re

import pytest
from conftest import config
from omegaconf import open_dict

from varexp import compose, sweep, train
from varexp.errors import ConfigError, VarexpError

MLP = ["arch=mlp", "arch.width=16", "arch.depth=2", "dataset=gaussian", "train.steps=2"]


def launch(*args: str) -> compose.CommandLine:
    return compose.parse("sweep", compose.complete("sweep", list(args)), sweep.check)


def test_a_rule_runs_once_per_combination_of_what_it_reads(monkeypatch):
    """The default grid: 72 jobs in 6 compositions (init x optim); the memory pre-check reads
    neither the seed nor the lr index, so it runs 6 times, not 72."""
    memory_checks = []
    real = train.check_memory
    monkeypatch.setattr(
        train, "check_memory", lambda cfg, info: memory_checks.append(cfg) or real(cfg, info)
    )
    line = launch("sweep.dry_run=true")
    assert len(line.jobs) == 72
    combinations = {(c.init.name, c.optim.name) for c in memory_checks}
    assert len(memory_checks) == len(combinations) == 6


@pytest.mark.parametrize(
    "swept",
    [
        "train.batch_size=8,0",  # a value, against its key's rule
        "train.batch_size=8,100000000",  # a rule across keys: memory
        "sweep.lr_index=0,9",  # the sweep's own rule across keys: the optimizer's grid
    ],
)
def test_a_bad_value_in_a_later_job_is_refused_as_in_the_first(swept):
    others = ["init=scale", "optim=sgd", "seed=0"]
    others += [] if swept.startswith("sweep.lr_index") else ["sweep.lr_index=0"]
    with pytest.raises(VarexpError) as later:
        launch(*MLP, *others, swept)
    first = ",".join(reversed(swept.split("=", 1)[1].split(",")))
    key = swept.split("=", 1)[0]
    with pytest.raises(VarexpError) as alone:
        launch(*MLP, *others, f"{key}={first}")
    assert str(later.value).startswith("in the sweep, ")  # naming the job, then the refusal
    assert core(str(later.value)) == core(str(alone.value))


def core(message: str) -> str:
    """A refusal without the sweep's prefix naming the job, nor the free memory of the moment."""
    message = message.split(": ", 1)[1] if message.startswith("in the sweep, ") else message
    return re.sub(r"[\d.]+ [kMGT]?B free", "... free", message)


def test_an_interpolated_key_is_checked_where_a_changed_value_leads_it():
    cfg = config("sweep", *MLP)
    checked = train.check(cfg)
    with open_dict(cfg):
        cfg.train.batch_size = "${seed}"
    cfg.seed = 0  # train.batch_size follows it to 0
    with pytest.raises(ConfigError, match=r"train\.batch_size=0"):
        train.check.job(cfg, ["seed"], {})
    cfg.seed = 4
    assert train.check.job(cfg, ["seed"], {}) == checked
