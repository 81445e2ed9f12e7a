"""Cached and versioned for a team: push the tiny grid's outputs to a DVC remote, clone the
repository fresh, pull, and neither DVC nor Snakemake finds anything to do; every metric
file carries its provenance."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_project, run, tool
from pipeline.provenance import code_state

pytestmark = pytest.mark.slow


def git(project, *args):
    return run(["git", *args], cwd=project)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_params):
    root = tmp_path_factory.mktemp("team")
    project = make_project(root / "origin", tiny_params)
    remote = root / "dvc-remote"
    git(project, "init", "-q")
    git(project, "config", "user.email", "ci@example.invalid")
    git(project, "config", "user.name", "ci")
    run([tool("dvc"), "init", "-q"], cwd=project)
    run([tool("dvc"), "config", "core.analytics", "false"], cwd=project)
    run([tool("dvc"), "remote", "add", "-d", "shared", str(remote)], cwd=project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny grid")
    run([tool("dvc"), "repro"], cwd=project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    run([tool("dvc"), "push"], cwd=project)
    return root, project


def test_fresh_clone_pulls_and_has_nothing_to_do(pushed):
    root, origin = pushed
    clone = root / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=root)
    run([tool("dvc"), "pull"], cwd=clone)
    assert "Data and pipelines are up to date" in run([tool("dvc"), "status"], cwd=clone).stdout
    assert "Stage" in run([tool("dvc"), "repro"], cwd=clone).stdout  # "Stage 'x' didn't change, skipping"
    assert "Running stage" not in run([tool("dvc"), "repro"], cwd=clone).stdout
    # A fresh clone has arbitrary mtimes and no .snakemake/ metadata: `--touch` records the
    # pulled outputs as up to date, after which Snakemake has nothing to do.
    run([tool("snakemake"), "--touch", "--cores", "1"], cwd=clone)
    assert "Nothing to be done" in run([tool("snakemake"), "-n", "--cores", "1"], cwd=clone).stdout
    for name in ("results/table.md", "results/metrics.csv"):
        assert (clone / name).read_text() == (origin / name).read_text()
    assert (clone / "runs/train/eps-eps.pt").read_bytes() == (origin / "runs/train/eps-eps.pt").read_bytes()


def test_metric_files_record_provenance(pushed):
    _, origin = pushed
    record = json.loads((origin / "results/metrics/eps-eps.json").read_text())["provenance"]
    assert len(record["commit"]) == 40 and record["dirty"] is False
    assert record["versions"]["torch"] and record["versions"]["torch-fidelity"]
    assert record["cell_params"]["weighting"] == "eps" and record["seeds"]["train"] == 0
    footer = (origin / "results/table.md").read_text().splitlines()[-1]
    assert footer.startswith("Computed from commit ") and "DIRTY" not in footer


def test_dirty_tree_is_marked(pushed, tmp_path):
    root, origin = pushed
    work = tmp_path / "dirty"
    shutil.copytree(origin, work, symlinks=True)
    with open(work / "pipeline" / "evaluate.py", "a") as f:
        f.write("\n# an uncommitted edit\n")
    run([tool("dvc"), "repro", "evaluate@eps-eps"], cwd=work)
    record = json.loads((work / "results/metrics/eps-eps.json").read_text())["provenance"]
    assert record["dirty"] is True


def test_a_copied_config_is_not_a_dirty_tree(tmp_path, monkeypatch):
    """Every experiment but the default is selected by copying its config over params.yaml:
    the record names the config instead of flagging the tree; any other edit is dirty."""
    monkeypatch.chdir(tmp_path)
    Path("configs").mkdir()
    Path("configs/other.yaml").write_text("other: 1\n")
    Path("params.yaml").write_text("default: 1\n")
    for args in (["init", "-q"], ["config", "user.email", "ci@example.invalid"], ["config", "user.name", "ci"],
                 ["add", "-A"], ["commit", "-qm", "init"]):
        git(tmp_path, *args)
    assert code_state()["dirty"] is False and code_state()["config"] is None
    shutil.copy("configs/other.yaml", "params.yaml")
    assert code_state()["dirty"] is False and code_state()["config"] == "configs/other.yaml"
    Path("params.yaml").write_text("other: 2\n")
    assert code_state()["dirty"] is True and code_state()["config"] is None


def test_only_result_inputs_make_a_tree_dirty(tmp_path, monkeypatch):
    """An edit to the README or a benchmark while the grid runs changes no number: not dirty.
    An edit to the library is."""
    monkeypatch.chdir(tmp_path)
    for name in ("README.md", "benchmarks/b.py", "diffusion/d.py", "params.yaml"):
        Path(name).parent.mkdir(exist_ok=True)
        Path(name).write_text("x = 1\n")
    for args in (["init", "-q"], ["config", "user.email", "ci@example.invalid"], ["config", "user.name", "ci"],
                 ["add", "-A"], ["commit", "-qm", "init"]):
        git(tmp_path, *args)
    Path("README.md").write_text("edited\n")
    Path("benchmarks/b.py").write_text("x = 2\n")
    assert code_state()["dirty"] is False
    Path("diffusion/d.py").write_text("x = 2\n")
    assert code_state()["dirty"] is True
