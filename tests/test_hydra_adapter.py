"""varexp.hydra_adapter on the Hydra installed here: each thing it reaches inside Hydra does what
the command line's checks rely on. A Hydra release that moves or changes one fails here, not in
a user's sweep."""

import hydra
import pytest
from conftest import config
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from varexp import hydra_adapter
from varexp.compose import CONFIG_MODULE, compose_config, is_group
from varexp.errors import VarexpError


def test_the_installed_hydra_is_a_tested_one():
    assert hydra_adapter.untested_version() is None, hydra.__version__
    assert hydra_adapter.untested_version("1.3.2") is None
    line = hydra_adapter.untested_version("1.4.0")
    assert line is not None and "1.4.0" in line and "\n" not in line


def test_a_sweep_expands_as_hydras_basic_sweeper_launches_it():
    overrides = hydra_adapter.parse(["seed=0,1", "optim=sgd,adam", "train.steps=4", "+a=1"])
    assert hydra_adapter.expand(overrides) == [
        ["seed=0", "optim=sgd", "train.steps=4", "+a=1"],
        ["seed=0", "optim=adam", "train.steps=4", "+a=1"],
        ["seed=1", "optim=sgd", "train.steps=4", "+a=1"],
        ["seed=1", "optim=adam", "train.steps=4", "+a=1"],
    ]
    # a later override of a swept key replaces it in place (a preset's grid, then the user's)
    assert hydra_adapter.expand(hydra_adapter.parse(["seed=0,1", "x=2", "seed=5"])) == [
        ["seed=5", "x=2"]
    ]
    with pytest.raises(hydra_adapter.HydraException):
        hydra_adapter.expand(hydra_adapter.parse(["lr=interval(0,1)"]))


def test_a_jobs_config_equals_hydras_composition_of_that_job():
    job = ["init=scale+bias", "optim=adam", "sweep.lr_index=2", "seed=3", "train.steps=4"]
    parsed = hydra_adapter.parse(job)
    groups = [o.input_line for o in parsed if is_group(o.key_or_group)]
    assert groups == ["init=scale+bias", "optim=adam"]
    base = compose_config("sweep", groups)
    values = [o for o in parsed if not is_group(o.key_or_group)]
    mine = hydra_adapter.job_config(base, values, parsed, 7)
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        hydras = compose("sweep", overrides=job, return_hydra_config=True)
    assert OmegaConf.to_container(mine) == {
        **OmegaConf.to_container(hydras),
        "hydra": OmegaConf.to_container(mine.hydra),
    }
    assert list(mine.hydra.overrides.task) == job
    assert mine.hydra.job.num == 7
    # Hydra's own folder name of the job (its override_dirname, sorted, key=value joined by ,)
    assert mine.hydra.job.override_dirname == (
        "init=scale+bias,optim=adam,seed=3,sweep.lr_index=2,train.steps=4"
    )
    assert base.seed == 0 and base.sweep.lr_index == 0  # the shared composition is untouched


def test_hydras_refusal_of_a_value_carries_omegaconfs_error():
    cfg = config("train", "arch=mlp")
    for line, cause in (
        ("arch.widht=3", ConfigAttributeError),
        ("arch.width=abc", ValidationError),
    ):
        with pytest.raises(hydra_adapter.ConfigCompositionException) as refused:
            hydra_adapter.apply_overrides(cfg, hydra_adapter.parse([line]))
        assert isinstance(hydra_adapter.composition_cause(refused.value), cause)
    assert hydra_adapter.composition_cause(ValueError("x")) is None
    hydra_adapter.apply_overrides(cfg, hydra_adapter.parse(["arch.width=7", "+extra=1"]))
    assert cfg.arch.width == 7 and cfg.extra == 1


def test_groups_options_and_a_presets_own_defaults_list():
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        assert hydra_adapter.group_exists("optim") and hydra_adapter.group_exists("hydra/launcher")
        assert not hydra_adapter.group_exists("optm")
        assert {"sgd", "adam"} <= set(hydra_adapter.group_options("optim"))
        groups, preset = hydra_adapter.preset_overrides("experiment/figure4_cifar10")
        assert groups == {"task"} and preset is not None
        groups, preset = hydra_adapter.preset_overrides("experiment/figure4_quick")
        assert groups == set() and "task" in preset.hydra.sweeper.params
        assert hydra_adapter.preset_overrides("experiment/nope") == (set(), None)


def test_a_refused_composition_is_named_by_structure_not_by_hydras_words(monkeypatch):
    """The one-line errors come from replaying the overrides, not from Hydra's English: they
    stay the same with Hydra's messages replaced."""

    def mute(self, *args, **kwargs):
        Exception.__init__(self, "")

    monkeypatch.setattr(hydra_adapter.ConfigCompositionException, "__init__", mute)
    for args, needle in (
        (["optim.lrr=0.1"], "optim.lrr is not a key of optim=sgd; did you mean optim.lr?"),
        (["optim.lr=abc"], "optim.lr='abc' is not allowed; must be a finite number > 0"),
        (["trian.steps=1"], "trian.steps is not a key of varexp train; did you mean train.steps?"),
    ):
        with pytest.raises(VarexpError) as refused:
            compose_config("train", args)
        assert needle in str(refused.value)
    with pytest.raises(VarexpError) as refused:
        compose_config("probe", ["optim=adam"])
    assert str(refused.value).startswith("there is no config group 'optim' in varexp probe")
