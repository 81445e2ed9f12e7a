"""The stale-proof contract, end to end on the tiny grid: whatever was interrupted, deleted,
truncated or edited, one rerun of either tool brings back exactly what params.yaml and the
code produce; the two tools agree after a complete run of either; identical inputs give
identical bytes under both; a bad param stops DVC before it removes any output.

The session's Snakemake run of the tiny grid is copied once for this module (`grid`); each
test that changes anything works on a further copy (`copy`)."""

import json
import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest
import yaml

from conftest import copy_project, run, tool, tool_env

pytestmark = pytest.mark.slow

UP_TO_DATE = "Nothing to be done"
DVC_UP_TO_DATE = "Data and pipelines are up to date"


def snakemake(project, *args, check=True):
    return run([tool("snakemake"), "--cores", "2", *args], cwd=project, check=check)


def planned(project, *args):
    """The dry run's text (stdout and stderr)."""
    out = run([tool("snakemake"), "-n", "--cores", "1", *args], cwd=project)
    return out.stdout + out.stderr


def dvc_status(project):
    return run([tool("dvc"), "status"], cwd=project).stdout


def edit_params(project, fn):
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    fn(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def command_line(process):
    """A process's arguments, [] for one that ended (or became a zombie) meanwhile."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def model_settings(project, cell):
    return json.loads((project / f"results/metrics/{cell}.json").read_text())["fingerprint"]["inputs"]["model"]


def outputs(project):
    """{path: bytes} of every file under data/, runs/ and results/ (Snakemake's timestamp
    marker inside a folder output aside, which .dvcignore hides from DVC)."""
    files = {}
    for folder in ("data", "runs", "results"):
        for path in sorted((project / folder).rglob("*")):
            if path.is_file() and path.name not in (".snakemake_timestamp", ".gitignore"):
                files[str(path.relative_to(project))] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def grid(snakemake_grid, tmp_path_factory):
    return copy_project(snakemake_grid, tmp_path_factory.mktemp("contract") / "grid")


@pytest.fixture
def copy(grid, tmp_path):
    return copy_project(grid, tmp_path / "copy")


def test_after_snakemake_both_tools_have_nothing_to_do(grid):
    assert UP_TO_DATE in planned(grid)
    assert DVC_UP_TO_DATE in dvc_status(grid)
    assert "Running stage" not in run([tool("dvc"), "repro"], cwd=grid).stdout
    mode = (grid / "results/table.md").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask(), oct(mode)  # not mkstemp's 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dvc_repro_in_a_fresh_clone_makes_the_same_bytes_and_sync_brings_snakemake_along(grid, dvc_grid, tmp_path):
    """Identical inputs, identical bytes, whichever tool ran (same machine). After `dvc repro`,
    `python -m pipeline.sync` records DVC's outputs in Snakemake's metadata: both tools then
    have nothing to do, and a later params change reruns the right jobs under Snakemake."""
    other = copy_project(dvc_grid, tmp_path / "other")  # `dvc repro` from empty
    ours, theirs = outputs(grid), outputs(other)
    assert ours.keys() == theirs.keys()
    assert [p for p in ours if ours[p] != theirs[p]] == []
    run([tool("python"), "-m", "pipeline.sync"], cwd=other)
    assert UP_TO_DATE in planned(other) and DVC_UP_TO_DATE in dvc_status(other)
    edit_params(other, lambda raw: raw["cells"]["eps-vlb"].update(train={"lr": 5.0e-4}))
    plan = planned(other, "--quiet", "rules")
    assert "train" in plan and "aggregate" in plan


def test_a_killed_training_job_is_remade_with_the_new_settings(copy):
    """Defect 1: change a cell's training, SIGKILL its training job, rerun: the cell is
    retrained with the new settings (Snakemake deleted its model, the only carrier of them)."""
    edit_params(copy, lambda raw: raw["cells"]["eps-vlb"].update(train={"lr": 5.0e-4, "steps": 4000}))
    tool_run = subprocess.Popen([tool("snakemake"), "--cores", "1"], cwd=copy, env=tool_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline and tool_run.poll() is None:
        victim = next((p for p in psutil.Process(tool_run.pid).children(recursive=True)
                       if "pipeline.train" in " ".join(command_line(p)) and "eps-vlb" in command_line(p)), None)
        time.sleep(0.05)
    assert victim is not None, "the training job of eps-vlb never started"
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    assert tool_run.wait(timeout=300) != 0
    assert "train" in planned(copy, "--quiet", "rules")
    snakemake(copy)
    assert model_settings(copy, "eps-vlb")["settings"]["train"]["lr"] == 5.0e-4
    assert UP_TO_DATE in planned(copy)


def test_deleted_or_truncated_artifacts_are_remade_identically(grid, copy):
    """Defect 2: a missing sample file, metrics JSON or loss curve, a truncated model, a
    truncated table (text: no parser can tell) and a file missing from the reference
    statistics' folder are all remade, to the same bytes (nothing else changed)."""
    gone = ["runs/samples/eps-eps.pt", "results/metrics/x0-eps.json", "results/train/x0-vlb/losses.csv",
            next(p.relative_to(copy) for p in (copy / "runs/reference").glob("heldout-*"))]
    for name in gone:
        (copy / name).unlink()
    for name in ("runs/train/eps-vlb.pt", "results/table.md"):
        damaged = copy / name
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    plan = planned(copy)
    assert "runs/train/eps-vlb.pt: truncated or corrupt" in plan and "removed runs/reference: incomplete" in plan
    assert "results/table.md changed after Snakemake made it" in plan
    result = snakemake(copy)
    assert "dvc.lock records this run" in result.stderr
    for name in [*gone, "runs/train/eps-vlb.pt", "results/metrics/eps-vlb.json", "results/table.md"]:
        assert (copy / name).read_bytes() == (grid / name).read_bytes(), name
    assert UP_TO_DATE in planned(copy) and DVC_UP_TO_DATE in dvc_status(copy)


def test_a_damaged_output_made_outside_snakemake_is_never_committed(copy):
    """Snakemake has no record of a file DVC made; damaged, it cannot tell. Its last step must
    then not record the damage in dvc.lock, where neither tool would ever remake it."""
    shutil.rmtree(copy / ".snakemake" / "metadata")
    table = copy / "results/table.md"
    table.write_bytes(table.read_bytes()[:100])
    (copy / "results/plots/fid_spread.png").unlink()
    result = snakemake(copy)
    assert "dvc.lock not updated: results/table.md differ from what dvc.lock records" in result.stderr
    assert "results/table.md" in dvc_status(copy)
    run([tool("dvc"), "repro"], cwd=copy)
    assert DVC_UP_TO_DATE in dvc_status(copy)


def test_a_half_written_dvc_lock_is_set_aside_and_replaced(copy):
    """`dvc repro` rewrites dvc.lock in place after each stage: Ctrl-C at that moment leaves it
    half-written and every DVC command fails on it. A complete Snakemake run then keeps it as
    dvc.lock.damaged and records its outputs in a new one (the chaos test met this in CI)."""
    lock = copy / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  validate:\n    cmd: python -m pipeline.params\n    de")
    assert run([tool("dvc"), "status"], cwd=copy, check=False).returncode != 0
    (copy / "results/table.md").unlink()
    result = snakemake(copy)
    assert "dvc.lock could not be read" in result.stderr and "dvc.lock records this run" in result.stderr
    assert (copy / "dvc.lock.damaged").read_text().endswith("    de")
    assert UP_TO_DATE in planned(copy) and DVC_UP_TO_DATE in dvc_status(copy)


def test_an_emptied_dvc_rwlock_is_set_aside_and_the_run_recorded(copy):
    """DVC rewrites .dvc/tmp/rwlock around each command: one killed at that moment leaves it
    empty, and every DVC command then fails on it (a session's end met this). A complete
    Snakemake run moves it aside under DVC's own guard and records its outputs."""
    rwlock = copy / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    rwlock.write_text("")
    assert "RWLock-file" in run([tool("dvc"), "status"], cwd=copy, check=False).stderr
    (copy / "results/table.md").unlink()
    result = snakemake(copy)
    assert ".dvc/tmp/rwlock could not be read" in result.stderr and "dvc.lock records this run" in result.stderr
    assert (copy / ".dvc/tmp/rwlock.damaged").read_text() == ""
    assert UP_TO_DATE in planned(copy) and DVC_UP_TO_DATE in dvc_status(copy)


def test_config_overrides_reach_every_stage(copy):
    """Defect 4 (and 7's `5e-4`): `--configfile` and `--config` values are what the stages
    read; dvc.lock, which describes params.yaml, is left alone; without them the next run
    goes back to params.yaml."""
    (copy / "over.yaml").write_text("cells:\n  eps-vlb:\n    train: {lr: 5e-4}\n")
    result = snakemake(copy, "--configfile", "over.yaml", "--config", "stats={seed: 4}")
    assert "dvc.lock not updated" in result.stderr
    assert model_settings(copy, "eps-vlb")["settings"]["train"]["lr"] == 5.0e-4
    assert model_settings(copy, "eps-eps")["settings"]["train"]["lr"] == 1.0e-3
    assert UP_TO_DATE in planned(copy, "--configfile", "over.yaml", "--config", "stats={seed: 4}")
    back = planned(copy, "--quiet", "rules")
    assert "train" in back and "aggregate" in back


def test_outputs_made_outside_snakemake_are_checked_by_their_fingerprints(copy):
    """Without Snakemake's records (outputs DVC made or a pull brought, no sync), a params
    change is still seen: the fingerprints show the stale cell, and only it is retrained."""
    shutil.rmtree(copy / ".snakemake" / "metadata")
    edit_params(copy, lambda raw: raw["cells"]["x0-vlb"].update(train={"lr": 5.0e-4}))
    plan = planned(copy)
    assert "made outside Snakemake from other params or code (model.train.lr: 0.001 in the file, 0.0005 now)" in plan
    result = snakemake(copy)
    assert result.stderr.count("rule train:") == 1 and "cell=x0-vlb" in result.stderr
    assert model_settings(copy, "x0-vlb")["settings"]["train"]["lr"] == 5.0e-4


def test_dvc_repro_with_a_bad_param_keeps_every_output(copy):
    """Defect 7: DVC removes a stage's outputs before running it; the validate stage, which
    every stage depends on, fails first with one line (its own stamp persists)."""
    run([tool("dvc"), "commit", "--force", "-q"], cwd=copy)
    before = outputs(copy)
    edit_params(copy, lambda raw: raw["train"].update(lr=-1.0))
    result = run([tool("dvc"), "repro"], cwd=copy, check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.lr: must be > 0, got -1.0" in result.stdout + result.stderr
    assert outputs(copy) == before


def test_aggregate_refuses_a_stale_metrics_file(copy):
    """The last line of defence: a metrics file from other settings never reaches a table,
    whatever ran or did not run before the aggregate stage."""
    edit_params(copy, lambda raw: raw["cells"]["eps-eps"].update(train={"lr": 0.5}))
    cmd = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]["aggregate"]["cmd"]
    for key in ("data", "runs", "results"):
        cmd = cmd.replace(f"${{paths.{key}}}", key)
    result = run(["bash", "-c", cmd], cwd=copy, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cells.eps-eps: model.train.lr: 0.001 in the file, 0.5 now" in lines[0], lines
