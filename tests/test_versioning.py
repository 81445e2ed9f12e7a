"""Cached and versioned for a team: push the tiny grid's outputs to a DVC remote, clone the
repository fresh, pull, and neither DVC nor Snakemake finds anything to do; every metric
file carries its fingerprint."""

import json
import shutil

import pytest

from conftest import ROOT, assert_fresh_clone_has_nothing_to_do, copy_project, run, tool
from pipeline.provenance import code_hash

pytestmark = pytest.mark.slow


def git(project, *args):
    return run(["git", *args], cwd=project)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, snakemake_grid):
    """The session's Snakemake-made tiny grid (recorded in dvc.lock by its onsuccess),
    committed to git and pushed to a DVC remote."""
    root = tmp_path_factory.mktemp("team")
    project = copy_project(snakemake_grid, root / "origin")
    shutil.copy2(ROOT / ".gitignore", project / ".gitignore")  # as in this repository
    run([tool("dvc"), "remote", "add", "-d", "shared", str(root / "dvc-remote")], cwd=project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny grid and its results")
    run([tool("dvc"), "push"], cwd=project)
    return root, project


def test_fresh_clone_pulls_and_has_nothing_to_do(pushed):
    root, origin = pushed
    clone = root / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=root)
    run([tool("dvc"), "pull"], cwd=clone)
    assert_fresh_clone_has_nothing_to_do(origin, clone)


def test_metric_files_record_their_fingerprint(pushed):
    """Every metric file records what made it (settings, code, data), not the git state: the
    same inputs give the same bytes in any commit or clone."""
    _, origin = pushed
    metrics = json.loads((origin / "results/metrics/eps-eps.json").read_text())
    made_by = metrics["fingerprint"]
    assert made_by["stage"] == "evaluate" and made_by["code"] == code_hash("evaluate")
    model = made_by["inputs"]["model"]
    assert model["settings"]["weighting"] == "eps" and model["settings"]["train"]["seed"] == 0
    assert model["code"] == code_hash("train")
    assert metrics["versions"]["torch"] and metrics["versions"]["torch-fidelity"]
    assert "provenance" not in metrics and "seconds" not in metrics
    footer = (origin / "results/table.md").read_text().splitlines()[-1]
    assert footer.startswith("Every number above matches the current params and code by its fingerprint")


def test_a_code_edit_makes_the_table_refuse_until_rerun(pushed, tmp_path):
    """Edit the scoring code and remake only the table: aggregate refuses, naming the cells and
    the stage whose code changed; `dvc repro` then remakes what the edit concerns."""
    root, origin = pushed
    work = tmp_path / "edited"
    shutil.copytree(origin, work, symlinks=True)
    with open(work / "pipeline" / "evaluate.py", "a") as f:
        f.write("\n# an edit\n")
    stale = run([tool("dvc"), "repro", "--single-item", "--force", "aggregate"], cwd=work, check=False)
    assert stale.returncode != 0
    assert "cells.eps-eps" in stale.stderr and "the code of stage evaluate changed" in stale.stderr
    run([tool("dvc"), "repro"], cwd=work)
    assert json.loads((work / "results/metrics/eps-eps.json").read_text())["fingerprint"]["code"] != \
        json.loads((origin / "results/metrics/eps-eps.json").read_text())["fingerprint"]["code"]
