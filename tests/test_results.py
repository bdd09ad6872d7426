"""Nothing lost, nothing mixed: every run folder belongs to one config (run.json), commands
refuse or move aside another config's results, concurrent launches never share a folder, kills
leave no orphans or stray files, and every failure a user can cause is one line."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import TINY_MLP, config, run_in_process, run_varexp

from varexp import results
from varexp.results.checkpoint import checkpoint_path
from varexp.results.summary import (
    SUMMARY,
    Status,
    failed_summary,
    finished,
    read_summary,
    summary_finished,
    write_summary,
)

MLP = [
    *TINY_MLP,
    "device=cpu",
    "train.batch_size=4",
    "train.probe_samples=8",
    "train.progress=false",
]
PROBE = ["arch.width=16", "arch.depth=3", "probe.networks=2", "probe.samples=8", "device=cpu"]


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. default folders never collide


def test_two_trainings_started_together_keep_both_results(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "varexp", "train", *MLP, "train.steps=3", f"seed={seed}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    folders = sorted((tmp_path / "outputs" / "train").iterdir())
    assert len(folders) == 2
    seeds = {json.loads((f / "summary.json").read_text())["seed"] for f in folders}
    assert seeds == {0, 1}
    for folder in folders:
        record = results.read_record(folder)
        assert record["command"] == "train" and record["identity"]["seed"] in (0, 1)
        assert record["hash"] == results.identity_hash(record["identity"])


# ---------------------------------------------------------------------------------------------
# 2, 3. another config's results are refused, and a refused command rewrites no record


def test_probe_and_theory_refuse_another_configs_results(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_in_process(capsys, "probe", *PROBE, f"hydra.run.dir={run}")[0] == 0
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, err = run_in_process(capsys, "probe", *PROBE, "arch.width=32", f"hydra.run.dir={run}")
    assert code == 2 and err.strip().splitlines() == [
        f"varexp probe: {run} holds results of another config: arch.width=16 (now 32); choose "
        "another folder (hydra.run.dir or hydra.sweep.dir), or pass overwrite=true to move "
        "them aside"
    ]
    # a command refused for a bad value rewrites nothing either (Hydra's record included)
    assert (
        run_in_process(
            capsys, "probe", *PROBE, "arch.width=64", "probe.networks=0", f"hydra.run.dir={run}"
        )[0]
        == 2
    )
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    theory = tmp_path / "theory"
    assert run_in_process(capsys, "theory", "arch.depth=5", f"hydra.run.dir={theory}")[0] == 0
    code, err = run_in_process(capsys, "theory", "arch.depth=6", f"hydra.run.dir={theory}")
    assert code == 2 and "arch.depth=5 (now 6)" in err


def test_overwrite_moves_the_old_results_aside(tmp_path):
    run = tmp_path / "run"
    assert run_varexp("probe", *PROBE, f"hydra.run.dir={run}").returncode == 0
    old = (run / "probe.csv").read_bytes()
    out = run_varexp("probe", *PROBE, "arch.width=32", "overwrite=true", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"run{results.REPLACED}")]
    assert len(aside) == 1 and (aside[0] / "probe.csv").read_bytes() == old
    assert results.read_record(run)["identity"]["arch.width"] == 32
    assert pd.read_csv(run / "probe.csv")["features"].unique().tolist() == [32]
    # moved-aside results are not read as results
    assert results.discover(tmp_path, "probe.csv") == [run / "probe.csv"]


def test_a_refused_training_leaves_the_run_and_its_record(tmp_path, capsys):
    args = ["train", *MLP, "train.steps=3", f"hydra.run.dir={tmp_path}"]
    assert run_in_process(capsys, *args)[0] == 0
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".log"}
    code, err = run_in_process(capsys, *args, "optim.lr=-1")
    assert code == 2 and "optim.lr=-1 is not allowed" in err
    code, err = run_in_process(capsys, *args, "optim.lr=0.5")
    assert code == 2 and "holds results of another config: optim.lr=0.003 (now 0.5)" in err
    assert {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".log"
    } == files


# ---------------------------------------------------------------------------------------------
# 4. sweeps own their folders and tables

SWEEP = [
    "sweep",
    *MLP,
    "train.steps=2",
    "train.ratio_every=1",
    "init=scale",
    "optim=sgd",
    "sweep.lr_index=0",
    "seed=0,1",
    "sweep.estimate=false",
    "hydra/launcher=basic",
]


def test_a_sweep_into_another_configs_sweep_is_refused_before_any_job(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = [*SWEEP, f"hydra.sweep.dir={sweep}"]
    assert run_in_process(capsys, *args, "train.batch_size=16")[0] == 0
    table = (sweep / "sweep.csv").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()}
    code, err = run_in_process(capsys, *args, "train.batch_size=32")
    assert code == 2 and err.strip().splitlines() == [
        f"varexp sweep: {sweep} holds runs of another config: train.batch_size=16 (now 32); "
        "choose another folder (hydra.run.dir or hydra.sweep.dir), or pass overwrite=true to "
        "move them aside"
    ]
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()} == stamps
    assert (sweep / "sweep.csv").read_bytes() == table


def test_sweep_tables_leave_out_runs_of_another_config(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert run_in_process(capsys, *SWEEP, f"hydra.sweep.dir={sweep}")[0] == 0
    # a run of another config put into the sweep's folder by hand
    foreign = sweep / "mlp-gaussian" / "scale" / "sgd" / "lr=0.0003" / "seed=9"
    assert (
        run_in_process(
            capsys,
            "train",
            *MLP,
            "train.steps=2",
            "train.batch_size=8",
            "init=scale",
            "seed=9",
            "optim.lr=0.0003",
            f"hydra.run.dir='{foreign}'",
        )[0]
        == 0
    )
    from varexp.sweep import write_tables

    write_tables(sweep, 0.1)
    assert sorted(pd.read_csv(sweep / "sweep.csv")["seed"]) == [0, 1]


@pytest.mark.parametrize("command", ["train", pytest.param("sweep", marks=pytest.mark.slow)])
def test_a_folder_in_use_is_refused_even_with_overwrite(tmp_path, command):
    """A second launch into a folder a running command holds is refused in one line naming
    that process, with or without overwrite=true (which must not move the running command's
    folder, lock and all, from under it); the first run goes on in its folder to the end."""
    folder = tmp_path / "run"
    where = "hydra.sweep.dir" if command == "sweep" else "hydra.run.dir"
    sweep = ["sweep.lr_index=0", "sweep.estimate=false", "hydra/launcher=basic"]
    slow = [
        *MLP,
        "train.steps=100000",
        "train.checkpoint_every=100000",
        "init=scale",
        "optim=sgd",
        "seed=0",
        *(sweep if command == "sweep" else []),
        f"{where}={folder}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        [sys.executable, "-m", "varexp", command, *slow],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not list(folder.rglob("metrics.csv")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(folder.rglob("metrics.csv")), "the first run did not start"
        before = {p: p.read_bytes() for p in folder.rglob(results.RECORD)}
        overwrite = ["train.batch_size=8", "overwrite=true"]
        # (a plain second launch is refused the same way: checked on the slow sweep variant)
        for extra in ([], overwrite) if command == "sweep" else (overwrite,):
            try:
                second = run_varexp(command, *slow, *extra, cwd=tmp_path, timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the second launch ({' '.join(extra) or 'plain'}) ran on")
            line = one_line(second)
            assert f"{folder} is in use by varexp {command} (pid {first.pid} on " in line
        assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing moved aside
        assert {p: p.read_bytes() for p in before} == before
    finally:
        first.send_signal(signal.SIGINT)
        code = first.wait(timeout=60)
    assert code != 0 and "stopped at step" in first.stderr.read()
    assert len(list(folder.rglob("checkpoint.pt"))) == 1  # saved where it ran


# ---------------------------------------------------------------------------------------------
# 7. an interrupted run without a checkpoint is not replaced


def test_an_interrupted_run_without_checkpoint_is_not_replaced(tmp_path, capsys):
    args = [
        "train",
        *MLP,
        "train.steps=50",
        "train.checkpoint_every=1000",
        "train.flush_seconds=0.001",
        f"hydra.run.dir={tmp_path}",
    ]
    code, err = run_in_process(capsys, *args, "train.stop_after=7")
    assert code == 2 and "stopped after step 7" in err
    assert not checkpoint_path(tmp_path).exists()
    rows = pd.read_csv(tmp_path / "metrics.csv")
    code, err = run_in_process(capsys, *args)
    assert (
        code == 2
        and (
            f"{tmp_path} already holds an interrupted run ({len(rows)} steps "
            "logged, no checkpoint yet); pass resume=true"
        )
        in err
    )
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "metrics.csv"), rows)


def test_a_run_with_a_checkpoint_is_not_restarted_or_shortened(tmp_path, capsys):
    """Rerunning a stopped run without resume=true, or resuming it with fewer steps than its
    checkpoint has done: one line each, the run as it was."""
    args = [
        "train",
        *MLP,
        "train.steps=20",
        "train.checkpoint_every=4",
        f"hydra.run.dir={tmp_path}",
    ]
    code, err = run_in_process(capsys, *args, "train.stop_after=9")
    assert code == 2 and "stopped after step 9" in err
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.suffix != ".log"}
    code, err = run_in_process(capsys, *args)
    assert code == 2 and err.strip().splitlines() == [
        f"varexp train: {tmp_path} already holds a checkpoint at step 8; pass resume=true to "
        "continue it (or start it over, without a checkpoint) or choose another hydra.run.dir"
    ]
    code, err = run_in_process(capsys, *args, "resume=true", "train.steps=5")
    assert code == 2 and err.strip().splitlines() == [
        f"varexp train: train.steps=5 is below the 8 steps the checkpoint in {tmp_path} has "
        "done; pass train.steps>=8"
    ]
    assert {p: p.read_bytes() for p in files} == files


# ---------------------------------------------------------------------------------------------
# 8. kills leave no orphans and no temporary files


def group_members(pgid: int) -> list[str]:
    """The processes of a process group that have not exited (a zombie has: it only waits for
    a parent to collect its status), with their command lines."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
        except OSError:
            continue
        if int(group) == pgid and state != "Z":
            members.append(f"{entry.name}: {command}")
    return members


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table in /proc")
@pytest.mark.parametrize(
    "when",
    [
        pytest.param(0.2, marks=pytest.mark.slow),
        0.5,
        1.5,
        pytest.param("running", marks=pytest.mark.slow),
    ],
)
def test_killing_a_joblib_sweep_at_any_moment_leaves_no_process(tmp_path, when):
    """SIGKILL of the launching process, from the moment joblib starts its workers to the
    middle of the runs: its workers, their DataLoader workers and the resource trackers all end
    within 10 s; runs that had started stopped at a step with a checkpoint there."""
    sweep = tmp_path / "sweep"
    args = [
        *MLP,
        "train.steps=100000",
        "init=scale",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0,1",
        "dataset.workers=1",
        "sweep.estimate=false",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "varexp", "sweep", *args],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:  # Hydra's joblib launcher: "Launching jobs, sweep output dir"
            if "Launching jobs" in line:
                break
        if when == "running":
            deadline = time.time() + 180
            while len(list(sweep.rglob("metrics.csv"))) < 2 and time.time() < deadline:
                time.sleep(0.1)
            assert len(list(sweep.rglob("metrics.csv"))) == 2, "the jobs did not start"
        else:
            time.sleep(when)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.time()
        while group_members(proc.pid) and time.time() - killed < 10:
            time.sleep(0.1)
        left = group_members(proc.pid)
        assert not left, f"{len(left)} process(es) outlived the killed sweep by 10 s: {left}"
    finally:
        for member in group_members(proc.pid):
            os.kill(int(member.split(":")[0]), signal.SIGKILL)
    if when == "running":
        assert len(list(sweep.rglob("checkpoint.pt"))) == 2
    assert not list(sweep.rglob(".*.tmp"))


def test_sigterm_stops_a_training_run_with_a_checkpoint_and_no_stray_files(tmp_path):
    """SIGTERM: the run stops at a step with its checkpoint, no temporary files, and the
    command it prints to resume runs as printed (into a folder with a space and
    non-ASCII letters)."""
    run = tmp_path / "Läufe é"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "varexp",
            "train",
            *MLP,
            "train.steps=100000",
            "train.flush_seconds=0.01",
            f'hydra.run.dir="{run}"',
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read()
    assert "stopped at step" in err
    step = torch.load(checkpoint_path(run), weights_only=True)["step"]
    assert len(pd.read_csv(run / "metrics.csv")) == step
    assert not list(run.glob(".*.tmp"))
    printed = shlex.split(err.strip().splitlines()[-1])
    assert printed[:2] == ["varexp", "train"] and "resume=true" in printed
    again = run_varexp(*printed[1:], f"train.stop_after={step + 3}", cwd=tmp_path)
    assert again.returncode == 2 and f"stopped after step {step + 3}" in again.stderr
    assert f"train from step {step}:" in (run / "train.log").read_text()


# ---------------------------------------------------------------------------------------------
# 9, 10. one line for every failure a user can cause or meet


def test_disk_full_during_training_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    args = ["train", *MLP, "train.steps=6", "train.checkpoint_every=2", f"hydra.run.dir={tmp_path}"]
    real = pd.DataFrame.to_csv
    written = []

    def fill_up(self, path, *a, **k):
        written.append(path)
        if len(written) > 4:  # after the checkpoints at steps 2 and 4 (metrics and ratios each)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", fill_up)
    code, err = run_in_process(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"disk full while writing {tmp_path / 'metrics.csv'} at step 6" in err
    assert (
        "its checkpoint of step 4 and the rows up "
        "to it are intact: free space, then run the same command with resume=true" in err
    )
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    assert run_in_process(capsys, *args, "resume=true")[0] == 0
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == list(range(6))


def test_a_sweep_whose_output_pipe_closes_stops_in_one_line(tmp_path):
    """`varexp sweep ... | head -1` (its default launcher, joblib): the reader goes after the
    first line; log lines to the closed pipe, the workers' too, are dropped (each run's log
    file has them), and the sweep stops at its next line to stdout with one line on stderr and
    the status a shell gives a program a closed pipe ended."""
    args = [
        *MLP,
        "train.steps=4",
        "init=scale",
        "optim=sgd",
        "sweep.lr_index=0",
        "seed=0,1",
        "sweep.estimate=false",
        "hydra.launcher.n_jobs=2",  # two worker processes
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "varexp", "sweep", *args],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("varexp sweep: 2 runs into ")
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    # one line says why, after the progress display's lines (stderr, as tqdm's)
    said = [line for line in err.strip().splitlines() if not line.startswith("sweep: ")]
    assert said == [
        "varexp sweep: stopped: its output was closed (the reader of the pipe, such as `head`, "
        "has ended)"
    ]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_while_a_checkpoint_is_saved_is_one_line_and_the_run_resumes(
    tmp_path, capsys, monkeypatch
):
    """The checkpoint of step 4 goes to /dev/full, where every write fails as on a full disk
    (torch's own writer says RuntimeError 'unexpected pos' there): one line, the checkpoint of
    step 2 intact, and the run resumes from it to the rows of an uninterrupted run."""
    from contextlib import contextmanager
    from pathlib import Path

    import varexp.results.checkpoint as checkpoint_module

    args = ["train", *MLP, "train.steps=6", "train.checkpoint_every=2", f"hydra.run.dir={tmp_path}"]
    real = checkpoint_module.atomic_path
    saves = []

    @contextmanager
    def full_after_the_first(path):
        saves.append(path)
        if len(saves) > 1:
            yield Path("/dev/full")
        else:
            with real(path) as tmp:
                yield tmp

    monkeypatch.setattr(checkpoint_module, "atomic_path", full_after_the_first)
    code, err = run_in_process(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (
        f"disk full while writing in {tmp_path} at step 4; its checkpoint of step 2 and the "
        "rows up to it are intact: free space, then run the same command with resume=true" in err
    )
    assert torch.load(checkpoint_path(tmp_path), weights_only=True)["step"] == 2
    monkeypatch.setattr(checkpoint_module, "atomic_path", real)
    assert run_in_process(capsys, *args, "resume=true")[0] == 0
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == list(range(6))


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["probe", "probe.method=dense", "arch.width=50000"],
            "varexp probe: one network needs about 506 GB (125G weights",
        ),
        (
            ["train", "arch=mlp", "arch.width=50000", "dataset=gaussian"],
            "varexp train: a training run needs about",
        ),
        (
            ["train", "arch=mlp", "dataset=gaussian", "train.probe_samples=100000000"],
            "lower train.probe_samples",
        ),
        (
            ["train", "arch=mlp", "dataset=gaussian", "dataset.size=1000000000"],
            "a smaller dataset.size",
        ),
        (["train", "dataset.train_size=1000000000"], "a smaller dataset.train_size"),
        (["train", "init=scale", "init.batches=10000000"], "lower init.batches"),
        (
            ["probe", "arch.width=1000", "probe.samples=400", "arch.depth=100000000"],
            "varexp probe: one network needs about",
        ),
        (
            ["train", "seed=4294967296"],
            "seed=4294967296 is not allowed; must be an integer in 0..4294967295",
        ),
        (
            ["probe", "arch=allcnnc", "arch.channels=inf", "dataset=shapes"],
            "arch.channels=inf is not allowed; must be a finite number > 0",
        ),
        (
            ["probe", "init.gain=1e200"],
            "init.gain=1e200 is not allowed; must be a number in (0, 1000] or null",
        ),
        (["probe", "init.gain=inf"], "init.gain=inf is not allowed"),
        (
            ["theory", "theory.quadrature_points=100000000"],
            "theory.quadrature_points=100000000 is not allowed; must be an integer in 2..1000",
        ),
        (
            ["theory", "theory.input_second_moment=inf"],
            "theory.input_second_moment=inf is not allowed",
        ),
        (["train", "optim.lr=inf"], "optim.lr=inf is not allowed; must be a finite number > 0"),
        (["train", "optim.lr=1e400"], "optim.lr=1e400 is not allowed"),
        (["sweep", "seed=0,-1"], "in the sweep, seed=0,-1 (value 2 of 2): seed=-1 is not allowed"),
        (
            ["sweep", "sweep.lr_index=0,9"],
            "in the sweep, sweep.lr_index=0,9 (value 2 of 2): sweep.lr_index=9 is not allowed",
        ),
    ],
)
def test_out_of_range_values_are_one_line_before_any_work(
    tmp_path, monkeypatch, capsys, args, needle
):
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "outputs").exists()


def test_an_outputs_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "outputs").write_text("not a folder")
    line = one_line(run_varexp("theory", cwd=tmp_path))
    assert (
        line.startswith("varexp theory: hydra.run.dir=outputs/theory/")
        and "is not writable" in line
    )


@pytest.mark.parametrize(
    "record",
    [
        '{"identity": [1, 2]}',
        "null",
        '"s"',
        "[]",
        '{"identity": {}, "preset": 3}',
        '{"command": 1}',
    ],
)
def test_a_run_record_of_the_wrong_types_is_one_line(tmp_path, capsys, record):
    """run.json that parses as JSON but is not a record: the command into its folder, and a
    sweep into a folder holding it, refuse in one line; the sweep's tables leave it out."""
    (tmp_path / "run.json").write_text(record)
    needle = f"{tmp_path / 'run.json'} is damaged (not a run record); move it away"
    code, err = run_in_process(capsys, "theory", "arch.depth=3", f"hydra.run.dir={tmp_path}")
    assert code == 2 and err.strip().splitlines() == [f"varexp theory: {needle}"]
    code, err = run_in_process(
        capsys, *SWEEP, "sweep.estimate=false", f"hydra.sweep.dir={tmp_path}"
    )
    assert code == 2 and err.strip().splitlines() == [f"varexp sweep: {needle}"]
    assert results.made_by(tmp_path / "probe.csv") is None


def test_a_probe_table_missing_whole_networks_is_left_out_with_one_line(tmp_path, caplog):
    from varexp.errors import VarexpError
    from varexp.results.tables import load_probes

    run = tmp_path / "run"  # (a separate process: Hydra in this one would take over logging)
    run_varexp("probe", *PROBE, "probe.networks=3", f"hydra.run.dir={run}", check=True)
    assert len(load_probes("figure2", str(tmp_path), "unused")) == 1
    table = pd.read_csv(run / "probe.csv")
    table[table["network"] != 1].to_csv(run / "probe.csv", index=False)
    with pytest.raises(VarexpError, match="every result file found was damaged"):
        load_probes("figure2", str(tmp_path), "unused")
    assert [r.message for r in caplog.records if "leaves out" in r.message] == [
        f"figure2 leaves out {run / 'probe.csv'}: holds 2 of the 3 networks its run probed "
        "(probe.networks); missing 1 (a partial or altered file)"
    ]


def test_a_checkpoint_without_its_keys_is_one_line(tmp_path, capsys):
    args = ["train", *MLP, "train.steps=2", f"hydra.run.dir={tmp_path}"]
    assert run_in_process(capsys, *args)[0] == 0
    torch.save({"model": {}}, checkpoint_path(tmp_path))
    code, err = run_in_process(capsys, *args, "resume=true", "train.steps=4")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "lacks identity, step, status, optimizer" in err and "move it away to start over" in err


def test_float_cifar_arrays_are_one_line(tmp_path):
    from test_data import write_cifar

    from varexp.data import load_source
    from varexp.errors import VarexpError

    write_cifar(tmp_path, dtype="float32")
    cfg = config(
        "probe",
        "arch=allcnnc",
        "dataset=cifar10",
        f"dataset.root={tmp_path}",
        "dataset.verify=false",
    )
    with pytest.raises(VarexpError, match="holds float32 images; CIFAR10 images are uint8"):
        load_source(cfg.dataset, cfg.arch, "train")


# ---------------------------------------------------------------------------------------------
# summary.json and the one "finished?" rule


def test_one_finished_rule_for_checkpoints_and_summaries():
    assert finished(Status.DIVERGED, 3, 100)  # a diverged run has nothing left at any length
    assert finished("completed", 100, 100) and finished("completed", 120, 100)
    assert not finished("completed", 80, 100)  # a longer train.steps continues it
    for status in (Status.RUNNING, Status.FAILED, Status.INCOMPLETE, "running"):
        assert not finished(status, 100, 100)
    assert summary_finished({"status": "completed", "steps": 5}, 5)
    assert not summary_finished({"status": "completed"}, 5)  # no step count: not trusted
    assert not summary_finished(None, 5)


def test_statuses_are_the_strings_in_the_files(tmp_path):
    assert [str(s) for s in Status] == [
        "running", "completed", "diverged", "failed", "incomplete", "damaged"
    ]  # fmt: skip
    write_summary(failed_summary("boom"), tmp_path)
    assert (tmp_path / SUMMARY).read_text() == '{\n  "error": "boom",\n  "status": "failed"\n}\n'
    assert read_summary(tmp_path)["status"] == Status.FAILED
    assert {Status.COMPLETED: 1}["completed"] == 1  # found where its value is
