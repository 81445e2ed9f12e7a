"""Experiments as folders (pipeline/experiments.py): configs/<name>.yaml states what differs from
params.yaml; experiments/<name>/ holds its resolved params.yaml and generated dvc.yaml, and DVC
its dvc.lock; `snakemake --config experiment=<name>` and `dvc repro experiments/<name>/dvc.yaml`
run it, and neither touches the default experiment."""

import shutil

import pytest
import yaml

from conftest import ROOT, make_project, run, tool
from pipeline import experiments
from pipeline.params import ParamsError, load_yaml, parse

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
# One cell of its own, its own folders, another sampling seed: the tiny grid's differences.
MINI = """\
paths: {data: data/mini, runs: runs/mini, results: results/mini, logs: logs/mini}
cells:
  eps-eps: {parameterization: eps, weighting: eps, Sigma: fixed_large}
sample: {seed: 7}
sampler_study: {cells: [eps-eps]}
stats: {baseline: eps-eps}
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder with the tiny params.yaml and configs/mini.yaml, as the working directory."""
    shutil.copy2(TINY, tmp_path / "params.yaml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mini.yaml").write_text(MINI)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_config_on_top_of_params_merges_sections_and_replaces_the_grid(workspace):
    base, resolved = load_yaml("params.yaml"), experiments.resolve("mini")
    assert list(resolved["cells"]) == ["eps-eps"]  # the grid replaced, never merged
    assert resolved["sample"]["seed"] == 7
    assert {k: v for k, v in resolved["sample"].items() if k != "seed"} == \
        {k: v for k, v in base["sample"].items() if k != "seed"}  # the rest of the section inherited
    assert resolved["train"] == base["train"] and resolved["paths"]["results"] == "results/mini"
    assert parse(resolved).cells["eps-eps"].weighting == "eps"


def test_the_folder_holds_the_resolved_params_and_a_dvc_yaml_run_from_the_root(workspace):
    path = experiments.write("mini")
    assert path == "experiments/mini/params.yaml"
    assert load_yaml(path) == experiments.resolve("mini")  # numbers as YAML 1.2 reads them
    dvc = yaml.safe_load((workspace / "experiments/mini/dvc.yaml").read_text())
    train = dvc["stages"]["train"]["do"]
    assert train["wdir"] == "../.." and "--params experiments/mini/params.yaml" in train["cmd"]
    [tracked] = train["params"]
    assert list(tracked) == ["experiments/mini/params.yaml"] and "cells.${key}" in tracked["experiments/mini/params.yaml"]
    assert experiments.stale("mini") == []


def test_a_mistake_in_a_config_names_the_config_and_the_key(workspace):
    (workspace / "configs" / "mini.yaml").write_text(MINI + "train: {stepz: 3}\n")
    with pytest.raises(ParamsError, match=r"^configs/mini.yaml \(on top of params.yaml\): train.*stepz"):
        experiments.resolve("mini")
    with pytest.raises(ParamsError, match=r"experiment 'nope': configs/nope.yaml not found \(experiments: mini\)"):
        experiments.resolve("nope")
    with pytest.raises(ParamsError, match=r"experiment '../mini': a name is a-z, 0-9 and _"):
        experiments.resolve("../mini")


def test_replicates_write_out_one_cell_per_seed_as_params_yaml_spells_them(workspace):
    """`replicates: [1, 2]` in a config is the two `-sN` cells written by hand: same entry,
    train.seed on top (the cell's own train overrides kept), right after the cell, with the
    keys in the hand-written order, so that converting a config reruns nothing."""
    (workspace / "configs" / "mini.yaml").write_text(MINI.replace(
        "eps-eps: {parameterization: eps, weighting: eps, Sigma: fixed_large}",
        "eps-eps: {parameterization: eps, weighting: eps, Sigma: fixed_large, replicates: [1, 2]}\n"
        "  x0-eps: {parameterization: x0, weighting: eps, process: {schedule: cosine}, train: {lr: 5.0e-4}, replicates: [3]}"))
    cells = experiments.resolve("mini")["cells"]
    assert list(cells) == ["eps-eps", "eps-eps-s1", "eps-eps-s2", "x0-eps", "x0-eps-s3"]
    assert cells["eps-eps"] == {"parameterization": "eps", "weighting": "eps", "Sigma": "fixed_large"}
    assert cells["eps-eps-s2"] == {**cells["eps-eps"], "train": {"seed": 2}}
    assert list(cells["x0-eps-s3"]) == ["parameterization", "weighting", "train", "process"]
    assert cells["x0-eps-s3"]["train"] == {"lr": 5.0e-4, "seed": 3}
    written = (workspace / experiments.write("mini")).read_text()
    assert "&id" not in written  # each replicate its own mappings: no YAML anchors
    replicate = parse(experiments.resolve("mini")).cells["x0-eps-s3"]
    assert replicate.train == {"lr": 5.0e-4, "seed": 3} and replicate.process == {"schedule": "cosine"}


@pytest.mark.parametrize("entry, message", [
    ("replicates: 2", r"cells.eps-eps.replicates: expected a list of train seeds \(integers >= 0\), got 2"),
    ("replicates: [1, 1.5]", r"cells.eps-eps.replicates: expected a list of train seeds"),
    ("replicates: [1, 1]", r"cells.eps-eps.replicates: \[1, 1\] lists a seed twice"),
    ("train: {seed: 1}, replicates: [1]", r"cells.eps-eps.replicates: seed 1 is the cell's own train.seed"),
])
def test_a_bad_replicates_list_is_one_line_naming_the_config_and_key(workspace, entry, message):
    (workspace / "configs" / "mini.yaml").write_text(MINI.replace("Sigma: fixed_large}", f"Sigma: fixed_large, {entry}}}"))
    with pytest.raises(ParamsError, match=rf"^configs/mini.yaml: {message}"):
        experiments.resolve("mini")


def test_a_replicate_listed_twice_is_refused(workspace):
    (workspace / "configs" / "mini.yaml").write_text(MINI.replace(
        "Sigma: fixed_large}", "Sigma: fixed_large, replicates: [1]}\n  eps-eps-s1: {parameterization: eps, weighting: eps}"))
    with pytest.raises(ParamsError, match=r"eps-eps-s1 is listed as a cell too; list it once"):
        experiments.resolve("mini")


def test_params_yaml_which_dvc_reads_literally_refuses_replicates(tmp_path):
    text = (ROOT / "tests/configs/tiny.yaml").read_text()
    data = yaml.safe_load(text)
    first = next(iter(data["cells"]))
    data["cells"][first]["replicates"] = [1]
    with pytest.raises(ParamsError, match=rf"cells.{first}.replicates: unknown key"):
        parse(data)


def test_check_names_a_stale_folder(workspace, capsys):
    experiments.write("mini")
    experiments.main(["--check"])
    assert "current: mini" in capsys.readouterr().out
    (workspace / "configs" / "mini.yaml").write_text(MINI.replace("seed: 7", "seed: 8"))
    with pytest.raises(SystemExit, match="experiments/mini/params.yaml not current: run `python -m pipeline.experiments mini`"):
        experiments.main(["--check"])


def test_the_committed_experiment_folders_are_current(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert experiments.with_folder(), "no experiment folder committed"
    for name in experiments.with_folder():
        assert experiments.stale(name) == [], f"run `python -m pipeline.experiments {name}`"


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
def test_an_unknown_experiment_is_one_line_from_snakemake(tmp_path):
    project = make_project(tmp_path / "p", TINY)
    result = run([tool("snakemake"), "-n", "--cores", "1", "--config", "experiment=nope"], cwd=project, check=False)
    assert result.returncode != 0
    assert "error: experiment 'nope': configs/nope.yaml not found" in result.stderr


@pytest.mark.slow
def test_an_experiment_runs_from_its_folder_in_both_tools(tmp_path):
    """Snakemake with `--config experiment=mini` records its run in experiments/mini/dvc.lock;
    `dvc repro experiments/mini/dvc.yaml` in a fresh copy makes the same bytes, and sync brings
    Snakemake along; the default experiment is never run."""
    projects = []
    for name in ("snakemake", "dvc"):
        project = make_project(tmp_path / name, TINY)
        (project / "configs").mkdir()
        (project / "configs" / "mini.yaml").write_text(MINI)
        run([tool("dvc"), "init", "--no-scm", "-q"], cwd=project)
        projects.append(project)
    by_snakemake, by_dvc = projects
    mini = ["--config", "experiment=mini"]
    result = run([tool("snakemake"), "--cores", "2", *mini], cwd=by_snakemake)
    assert "experiments/mini/dvc.lock records this run" in result.stderr
    assert "Nothing to be done" in run([tool("snakemake"), "-n", "--cores", "1", *mini], cwd=by_snakemake).stdout
    status = run([tool("dvc"), "status", "experiments/mini/dvc.yaml"], cwd=by_snakemake).stdout
    assert "Data and pipelines are up to date" in status
    assert not (by_snakemake / "results" / "table.md").exists()  # the default experiment is not run

    run([tool("python"), "-m", "pipeline.experiments", "mini"], cwd=by_dvc)
    run([tool("dvc"), "repro", "experiments/mini/dvc.yaml"], cwd=by_dvc)
    for path in sorted((by_snakemake / "results/mini/metrics").glob("*.json")) + [by_snakemake / "results/mini/table.md"]:
        relative = path.relative_to(by_snakemake)
        assert (by_dvc / relative).read_bytes() == path.read_bytes(), relative
    synced = run([tool("python"), "-m", "pipeline.sync", "--experiment", "mini"], cwd=by_dvc)
    assert "both have nothing to do" in synced.stdout
    assert "Nothing to be done" in run([tool("snakemake"), "-n", "--cores", "1", *mini], cwd=by_dvc).stdout
