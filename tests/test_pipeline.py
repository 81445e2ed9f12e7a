"""End to end: the tiny grid through Snakemake (and DVC) produces every table and plot; a
second run does nothing; changing one cell's learning rate reruns that cell only."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import make_project, run, tool

pytestmark = pytest.mark.slow

TABLES = ("results/metrics.csv", "results/table.md", "results/table.tex", "results/sampler_table.md",
          "results/sampler_table.csv")
PLOTS = ("fid_heatmap", "loss_curves", "loss_profile", "samples", "uncertainty", "sampler_study")


def planned_jobs(project):
    """{rule: [wildcards...]} of the jobs a dry run would execute."""
    out = run([tool("snakemake"), "-n", "--cores", "2"], cwd=project).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[.*\]\nrule )", out):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if rule:
            cell = re.search(r"^\s+wildcards: cell=(\S+)", block, re.M)
            jobs.setdefault(rule.group(1), []).append(cell.group(1) if cell else None)
    return jobs


@pytest.fixture(scope="module")
def snakemake_project(tmp_path_factory, tiny_params):
    project = make_project(tmp_path_factory.mktemp("snakemake"), tiny_params)
    run([tool("snakemake"), "--cores", "2"], cwd=project)
    return project


def test_every_table_and_plot_is_produced(snakemake_project):
    p = snakemake_project
    for name in TABLES:
        assert (p / name).stat().st_size > 0, name
    for name in PLOTS:
        assert (p / "results" / "plots" / f"{name}.png").stat().st_size > 1000, name
    long = pd.read_csv(p / "results/metrics.csv")
    cells = yaml.safe_load((p / "params.yaml").read_text())["cells"]
    assert set(long.cell) == set(cells)
    for cell in cells:
        metrics = json.loads((p / f"results/metrics/{cell}.json").read_text())
        assert metrics["status"] == "ok"
        for key in ("isc_mean", "fid", "kid_mean", "nll_bpd"):
            assert metrics[key] == metrics[key], (cell, key)  # not NaN
        summary = json.loads((p / f"results/train/{cell}/summary.json").read_text())
        assert summary["threads"] == 1  # Snakemake's threads reach torch: no oversubscription
    table = (p / "results/table.md").read_text()
    assert "held-out real data (floor)" in table and "uniform noise (ceiling)" in table


def test_second_run_does_nothing(snakemake_project):
    out = run([tool("snakemake"), "--cores", "2", "-n"], cwd=snakemake_project).stdout
    assert "Nothing to be done" in out


def test_sampler_study_points_and_adding_an_nfe_adds_only_its_jobs(snakemake_project):
    p = snakemake_project
    study = pd.read_csv(p / "results/sampler_table.csv")
    assert set(study.sampler) == {"ddim", "heun"} and set(study.cell) == {"eps-eps"}
    for sampler, nfe in (("ddim", 10), ("heun", 9)):  # Heun: 2 evaluations per step but the last
        point = json.loads((p / f"results/sampler_study/eps-eps/{sampler}-10.json").read_text())
        assert point["nfe"] == nfe and point["fid"] == point["fid"] and point["n_samples"] == 100
    text = (p / "params.yaml").read_text()
    (p / "params.yaml").write_text(text.replace("  nfe: [10]", "  nfe: [10, 20]"))
    try:
        jobs = planned_jobs(p)
    finally:
        (p / "params.yaml").write_text(text)
    assert sorted(jobs.pop("sampler_study")) == ["eps-eps,", "eps-eps,"]  # ddim-20 and heun-20
    assert sorted(jobs) == ["all", "sampler_table"]


def test_changing_one_cell_reruns_that_cell_only(snakemake_project):
    p = snakemake_project
    text = (p / "params.yaml").read_text()
    text = text.replace("eps-vlb:  {parameterization: eps, weighting: vlb, sigma: fixed_large}",
                        "eps-vlb:  {parameterization: eps, weighting: vlb, sigma: fixed_large, train: {lr: 5.0e-4}}")
    (p / "params.yaml").write_text(text)
    jobs = planned_jobs(p)
    assert jobs.pop("train") == ["eps-vlb"]
    assert jobs.pop("sample") == ["eps-vlb"]
    assert jobs.pop("evaluate") == ["eps-vlb"]
    assert sorted(jobs) == ["aggregate", "all", "plot"]


def test_dvc_repro_runs_and_second_repro_does_nothing(tmp_path, tiny_params):
    project = make_project(tmp_path / "dvc", tiny_params)
    run(["git", "init", "-q"], cwd=project)
    run([tool("dvc"), "init", "-q"], cwd=project)
    run([tool("dvc"), "config", "core.analytics", "false"], cwd=project)
    run([tool("dvc"), "repro"], cwd=project)
    for name in TABLES:
        assert (project / name).stat().st_size > 0, name
    again = run([tool("dvc"), "repro"], cwd=project).stdout
    assert "Data and pipelines are up to date" in again
    shown = run([tool("dvc"), "metrics", "show", "--json"], cwd=project).stdout
    assert "fid" in shown
