"""Shared fixtures: a copy of the project with a chosen params file, tool runners, and the
tiny grid made once per session by each tool (tests work on copies of it: `copy_project`)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ("Snakefile", "dvc.yaml", ".dvcignore", "pipeline", "diffusion", "report", "profiles", "papers")


def tool(name):
    """A console script of the running environment (snakemake, dvc), else from PATH."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def tool_env(env=None):
    """os.environ (plus env) with this environment's bin first on PATH, so the `python` in
    Snakemake's and DVC's shell commands is this interpreter even without an activated venv."""
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd, cwd, check=True, env=None):
    env = tool_env(env)
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_project(dest, params_file, source=ROOT):
    """Copy the project's DAG and code (from `source`: this checkout, or a copy of it) into
    dest with params_file as its params.yaml."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = Path(source) / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(params_file, dest / "params.yaml")
    return dest


def table_rows(text):
    """A Markdown pipe table's rows (header and body, not the rule) as lists of stripped cells,
    keyed by their first cell: {"eps-eps": ["eps-eps", "eps", ...], ...}."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|:- "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))


def experiment_params(name):
    """configs/<name>.yaml resolved on top of params.yaml (pipeline/experiments.py): a mapping."""
    from pipeline.experiments import resolve

    return resolve(name, root=ROOT)


def write_params(raw, path):
    """A params mapping written as a params file; returns its path."""
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False))
    return Path(path)


@pytest.fixture(scope="session")
def tiny_params():
    return ROOT / "tests" / "configs" / "tiny.yaml"


def unavailable(reason, setup):
    """Skip a test whose service (SLURM, an sshd) is missing, saying why and how to set it
    up; under CI=true fail instead: CI must run these tests, not report them skipped."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} -- CI=true, where a skip is a failure ({setup})", pytrace=False)
    pytest.skip(f"{reason} ({setup})")


def init_repos(project):
    """git and DVC initialized in `project` (a commit needs a user)."""
    run(["git", "init", "-q"], cwd=project)
    run(["git", "config", "user.email", "ci@example.invalid"], cwd=project)
    run(["git", "config", "user.name", "ci"], cwd=project)
    run([tool("dvc"), "init", "-q"], cwd=project)
    run([tool("dvc"), "config", "core.analytics", "false"], cwd=project)
    return project


def assert_fresh_clone_has_nothing_to_do(origin, clone):
    """After `dvc pull` into a fresh git clone of `origin`: DVC has nothing to do and `dvc
    repro` runs nothing; a fresh clone has arbitrary mtimes and no .snakemake/ metadata, so
    `snakemake --touch` records the pulled outputs, after which Snakemake has nothing to do;
    the pulled files equal the origin's."""
    assert "Data and pipelines are up to date" in run([tool("dvc"), "status"], cwd=clone).stdout
    repro = run([tool("dvc"), "repro"], cwd=clone).stdout
    assert "Stage" in repro and "Running stage" not in repro  # "Stage 'x' didn't change, skipping"
    run([tool("snakemake"), "--touch", "--cores", "1"], cwd=clone)
    assert "Nothing to be done" in run([tool("snakemake"), "-n", "--cores", "1"], cwd=clone).stdout
    for name in ("results/table.md", "results/metrics.csv"):
        assert (clone / name).read_text() == (origin / name).read_text()
    assert (clone / "runs/train/eps-eps.pt").read_bytes() == (origin / "runs/train/eps-eps.pt").read_bytes()


def copy_project(source, dest):
    """A copy of a finished project: file times, Snakemake's metadata, DVC's cache and lock
    kept, so both tools see it exactly as the original."""
    shutil.copytree(source, dest, symlinks=True)
    return Path(dest)


@pytest.fixture(scope="session")
def snakemake_grid(tmp_path_factory, tiny_params):
    """The tiny grid made from empty by `snakemake --cores 2` in a git + DVC repository (its
    onsuccess records the run in dvc.lock). Read it; change only a copy."""
    project = init_repos(make_project(tmp_path_factory.mktemp("grids") / "snakemake", tiny_params))
    result = run([tool("snakemake"), "--cores", "2"], cwd=project)
    assert "dvc.lock records this run" in result.stderr
    return project


@pytest.fixture(scope="session")
def dvc_grid(tmp_path_factory, tiny_params):
    """The tiny grid made from empty by `dvc repro` in a git + DVC repository (its run cache
    in .dvc/cache). Read it; change only a copy."""
    project = init_repos(make_project(tmp_path_factory.mktemp("grids") / "dvc", tiny_params))
    run([tool("dvc"), "repro"], cwd=project)
    return project
