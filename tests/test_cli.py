"""The command line as a user meets it: subcommands, Hydra overrides, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_in_process, run_varexp

from varexp.errors import did_you_mean


def test_help_lists_every_subcommand():
    out = run_varexp("--help")
    assert out.returncode == 0
    for command in ("theory", "probe", "train", "sweep", "plot", "reproduce"):
        assert f"  {command} " in out.stdout


def test_theory_writes_csv_into_run_dir(tmp_path):
    out = run_varexp("theory", "arch.depth=7", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "theory.csv")
    assert list(table.columns) == ["layer", "c", "q", "m", "v", "ratio"]
    assert list(table.layer) == list(range(1, 8))
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_init_scale_plus_bias_parses_as_written(tmp_path):
    out = run_varexp("theory", "init=scale+bias", "arch.depth=3", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "name: scale+bias" in out.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["arch=nope"], "arch='nope' is not an option; choose one of"),
        (["init=kaimin"], "init='kaimin' is not an option"),
        (["arch.depth=0"], "arch.depth=0 is not allowed"),
        (["arch.width=-5"], "arch.width=-5 is not allowed"),
        (["arch.activation=swish"], "arch.activation='swish' is not allowed; choose one of relu"),
        (["device=tpu"], "device='tpu' is not allowed; choose auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, needle):
    out = run_varexp("theory", *args, f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "theory.csv").exists()


def test_unknown_command():
    out = run_varexp("fit")
    assert out.returncode == 2 and "unknown command 'fit'" in out.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["trian"], "varexp: unknown command 'trian'; did you mean train? choose one of theory,"),
        (
            ["sweep", "train.stesp=10"],
            "train.stesp is not a key of train; did you mean train.steps? its keys: steps,",
        ),
        (
            ["train", "trian.steps=10"],
            "trian.steps is not a key of varexp train; did you mean train.steps? its keys:",
        ),
        (["train", "optm=adam"], "optm is not a key of varexp train; did you mean optim?"),
        (
            ["probe", "arch=mlp", "arch.widht=3"],
            "arch.widht is not a key of arch=mlp; did you mean arch.width? its keys: width,",
        ),
        (["train", "init=kaimng"], "init='kaimng' is not an option; did you mean kaiming? choose"),
        (["plot", "figur4"], "figure='figur4' is not allowed; did you mean figure4? choose one of"),
        (["train", "optim.lrr=0.1"], "optim.lrr is not a key of optim=sgd; did you mean optim.lr?"),
    ],
)
def test_a_mistyped_command_key_or_option_names_the_closest(
    tmp_path, monkeypatch, capsys, args, needle
):
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(capsys, *args)
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()] and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_did_you_mean_names_only_close_words():
    commands = ["theory", "probe", "train", "sweep", "plot", "reproduce"]
    assert did_you_mean("swep", commands) == "did you mean sweep? "
    assert did_you_mean("fit", commands) == ""  # nothing close: no guess
    assert did_you_mean("train", commands) == ""  # not a typo
    assert did_you_mean("w", ["width"], "arch.{}") == ""
    assert did_you_mean("widht", ["width", "depth"], "arch.{}") == "did you mean arch.width? "


def test_unwritable_run_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run_varexp("theory", f"hydra.run.dir={blocker / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"varexp theory: hydra.run.dir={blocker / 'run'} is not writable "
        f"({blocker} is not a writable folder)"
    )
    assert blocker.read_text() == "not a directory"


# ---------------------------------------------------------------------------------------------
# the whole command line is checked before Hydra makes any folder


@pytest.mark.parametrize(
    "command, args, needle",
    [
        (
            "train",
            ["arch.width=100"],
            "arch.width is not a key of arch=allcnnc; its keys: channels, "
            "activation, norm, dropout",
        ),
        (
            "probe",
            ["optim=adam"],
            "there is no config group 'optim' in varexp probe; its groups: "
            "arch, dataset, init, experiment",
        ),
        (
            "train",
            ["experiment=figure1"],
            "experiment=figure1 is a preset for `varexp probe`, not "
            "`varexp train`; presets for train: figure4_cifar10",
        ),
        (
            "probe",
            ["experiment=figure9"],
            "experiment='figure9' is not an option; did you mean "
            "figure1, figure2 or figure3? choose one of figure1, "
            "figure1_quick",
        ),
        ("train", ["optim.lr=abc"], "optim.lr='abc' is not allowed; must be a finite number > 0"),
        (
            "probe",
            ["probe.networks=2,0", "-m"],
            "in the sweep, probe.networks=2,0 (value 2 of 2): probe.networks=0 is not allowed",
        ),
        ("probe", ["probe.networks=2,3"], "probe.networks=2,3 lists several values; add -m"),
        ("theory", ["++hydra.run.dir="], "hydra.run.dir='' is not allowed; it must name a folder"),
        # a misspelled key added with + is refused against the schema like a plain one
        (
            "probe",
            ["+probe.netwroks=5"],
            "probe.netwroks is not a key of probe; did you mean "
            "probe.networks? its keys: networks,",
        ),
        (
            "probe",
            ["++probe.netwroks=5"],
            "probe.netwroks is not a key of probe; did you mean probe.networks? its keys: ",
        ),
        (
            "train",
            ["+arch.widht=3", "arch=mlp"],
            "arch.widht is not a key of arch=mlp; did you mean arch.width? its keys: width, depth",
        ),
        (
            "probe",
            ["+sead=1"],
            "sead is not a key of varexp probe; did you mean seed? its keys: seed, device",
        ),
        (
            "sweep",
            ["+train.stps=1,2"],
            "train.stps is not a key of train; did you mean train.steps? its keys: steps,",
        ),
    ],
)
def test_bad_command_lines_are_one_line_and_leave_no_folder(
    tmp_path, monkeypatch, capsys, command, args, needle
):
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(capsys, command, *args)
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()], err
    assert needle in err
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no run folder


def test_command_help_lists_only_its_own_groups_and_presets():
    out = run_varexp("probe", "--help")
    assert out.returncode == 0, out.stderr
    groups = [
        line.split()[0]
        for line in out.stdout.split("groups")[1].split("config:")[0].splitlines()[1:]
        if line.startswith("  ")
    ]
    assert groups == ["arch", "dataset", "init", "experiment"]
    assert "figure4_quick" not in out.stdout and "figure2_quick" in out.stdout
    sweep = run_varexp("sweep", "experiment=figure4_quick", "--help")
    assert "grid (252 runs into outputs/sweep/figure4_quick/)" in sweep.stdout
    assert "task=shapes,membranes" in sweep.stdout
    narrowed = run_varexp("sweep", "experiment=figure4_quick", "seed=0", "--help")
    assert "grid (84 runs into outputs/sweep/figure4_quick/)" in narrowed.stdout, narrowed.stdout


def test_train_uses_a_cpu_sized_task_unless_the_user_names_arch_or_dataset():
    from conftest import config

    cfg = config("train")
    assert (cfg.arch.name, cfg.arch.channels, cfg.dataset.name) == ("allcnnc", 0.125, "shapes")
    cfg = config("train", "arch=mlp", "dataset=gaussian")
    assert cfg.arch.name == "mlp" and "channels" not in cfg.arch
    paper = config("train", "experiment=figure4_cifar10")
    assert (paper.arch.channels, paper.dataset.name, paper.train.batch_size) == (
        1.0,
        "cifar10",
        128,
    )


# what a user's --help or <TAB> runs, in a fresh interpreter: which heavy libraries it imported
IMPORTED_AFTER = """
import os, sys
sys.argv = ["varexp", *sys.argv[1:]]
from varexp.cli import main
try:
    main()
except SystemExit:
    pass
print("\\nimported:", *sorted(m for m in ("torch", "pandas", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args, line",
    [
        (["--help"], None),
        (["train", "--help"], None),
        (["probe", "--help"], None),
        (["sweep", "--help"], None),
        (["sweep", "seed=0", "experiment=figure4_quick", "--help"], None),
        (["sweep", "experiment=optuna_lr", "--help"], None),
        (["theory", "--help"], None),
        (["reproduce", "--help"], None),
        (["plot", "--help"], None),
        (["-sc", "query=bash"], "varexp tr"),
        (["-sc", "query=bash"], "varexp train arch="),
        (["-sc", "query=bash"], "varexp train experiment="),
        (["-sc", "query=fish"], "varexp probe init=sc"),
    ],
)
def test_help_and_completion_import_neither_torch_nor_pandas(tmp_path, args, line):
    """They start in a blink: only Hydra and varexp's torch-free modules (the option
    dataclasses, the presets' headers), never torch, pandas or matplotlib."""
    env = dict(os.environ, COMP_LINE=line) if line else dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", IMPORTED_AFTER, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.rstrip().splitlines()[-1]
    assert last == "imported:", f"{' '.join(args)} ({line}) {last}"
    assert out.stdout.split("\nimported:")[0].strip(), "it printed nothing"


def test_completion_offers_only_the_presets_the_command_accepts(monkeypatch, capsys):
    """`varexp train experiment=<TAB>` offers train's presets only, as the refusal of another
    command's preset and `varexp train --help` list them (their `# @commands` header)."""
    from varexp.cli import main
    from varexp.compose import presets_for

    offered = {}
    for command in ("train", "sweep", "probe", "reproduce"):
        monkeypatch.setenv("COMP_LINE", f"varexp {command} experiment=")
        capsys.readouterr()
        main(["-sc", "query=bash"])
        offered[command] = capsys.readouterr().out.split()
        assert offered[command] == [f"experiment={p}" for p in presets_for(command)]
    assert offered["train"] == [
        "experiment=figure4_cifar10",
        "experiment=figure4_isbi2012",
        "experiment=figure4_quick",
        "experiment=optuna_lr",
    ]
    assert offered["reproduce"] == ["experiment=paper", "experiment=quick"]
    assert "experiment=figure1" in offered["probe"] and "experiment=quick" not in offered["probe"]
    monkeypatch.setenv("COMP_LINE", "varexp train experiment=figure1")
    main(["-sc", "query=bash"])
    assert capsys.readouterr().out.strip() == ""  # a probe preset: nothing to complete


def test_each_preset_names_its_commands_in_its_header():
    """Every preset says which commands it is for; a figure's presets are for the command whose
    runs the figure draws (a Fig. 4 preset: a sweep, or one run of it with train)."""
    from varexp.figures import FIGURES, SCALES
    from varexp.presets import commands_for, header, preset_commands

    presets = preset_commands()
    assert all(commands for commands in presets.values()), presets
    for figure in FIGURES.values():
        for preset in figure.all_presets:
            assert commands_for(preset)[0] == figure.command, preset
    for scale in SCALES:
        assert commands_for(scale) == ("reproduce",)
    assert commands_for("no_such_preset") is None
    # Hydra's header syntax: `# @KEY VALUE` lines up to the first other line
    assert header("# @package _global_\n# @commands a,b\n# text\n# @late x\n") == {
        "package": "_global_",
        "commands": "a,b",
    }


def test_the_options_name_what_the_code_has():
    """The torch-free option dataclasses (varexp.options) list what the code builds."""
    from varexp.activations import ACTIVATIONS
    from varexp.inits import INITS
    from varexp.options.arch import ACTIVATION_NAMES
    from varexp.options.init import SPECS

    assert ACTIVATION_NAMES == tuple(ACTIVATIONS)
    assert SPECS == {name: init.spec for name, init in INITS.items()}
    assert INITS["batchnorm"].norm == "batchnorm" and INITS["scale"].norm == "none"


@pytest.mark.slow  # each <TAB> starts a `varexp` process (about 40 s in all)
def test_shell_completion_through_the_wrapper(tmp_path):
    """`eval "$(varexp -sc install=bash)"` as the README says, then the completion function bash
    calls on <TAB>: command names first, then each command's keys and options (from Hydra)."""
    script = (
        'eval "$(varexp -sc install=bash)"\n'
        'complete_line() { COMP_LINE="$1"; COMP_POINT=${#1}; COMP_CWORD=$2; '
        'hydra_bash_completion; echo "${COMPREPLY[*]}"; }\n'
        'complete_line "varexp pl" 1\n'
        'complete_line "varexp train arch=u" 2\n'
        'complete_line "varexp probe init=scale" 2\n'
        'complete_line "varexp sweep train.st" 2\n'
    )
    bin_dir = str(Path(sys.executable).parent)
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "plot",
        "arch=unet",
        "init=scale init=scale+bias",
        "train.steps= train.stop_after=",
    ]


def test_ctrl_c_while_a_sweep_is_launched_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C before a job trains (while Hydra composes, launches or waits for the jobs): one
    line saying how to continue, exit 130, no traceback."""
    import varexp.cli

    def interrupted(command: str, args: list[str], program: str | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(varexp.cli, "run_hydra", interrupted)
    code, err = run_in_process(
        capsys,
        "sweep",
        "arch=mlp",
        "dataset=gaussian",
        "seed=0",
        "sweep.estimate=false",
        f"hydra.sweep.dir={tmp_path / 's'}",
    )
    assert code == 130 and err.strip().splitlines() == [
        "varexp sweep: interrupted; run the same command to continue: finished runs are "
        "skipped, the others resume from their checkpoints"
    ]
