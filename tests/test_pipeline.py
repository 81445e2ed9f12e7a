"""End to end: the tiny grid through Snakemake (and DVC) produces every table and plot; a
second run does nothing; changing one cell's learning rate reruns that cell only."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import copy_project, make_project, run, table_rows, tool

pytestmark = pytest.mark.slow

TABLES = ("results/metrics.csv", "results/summary.csv", "results/table.md", "results/table.tex",
          "results/sampler_table.md", "results/sampler_table.csv")
PLOTS = ("fid_heatmap", "fid_spread", "memorization", "loss_curves", "loss_profile", "samples", "uncertainty",
         "fid_by_step", "sampler_study")


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
def snakemake_project(tmp_path_factory, snakemake_grid):
    return copy_project(snakemake_grid, tmp_path_factory.mktemp("snakemake") / "grid")


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
        # the NLL's terms over ranges of t (T = 100: 0 | 1-9 | 10-49 | 50-98 | 99) add up to it but the prior
        assert list(metrics["nll_bpd_by_t"]) == ["t=0", "t=1-9", "t=10-49", "t=50-98", "t=99"]
        assert 0 < sum(metrics["nll_bpd_by_t"].values()) <= metrics["nll_bpd"] + 1e-4  # float32 sums
        assert long[(long.cell == cell) & (long.metric == "nll_bpd[t=99]")].value.item() == metrics["nll_bpd_by_t"]["t=99"]
        summary = json.loads((p / f"results/train/{cell}/summary.json").read_text())
        assert set(summary) >= {"status", "step", "fingerprint"} and "seconds" not in summary
    table = (p / "results/table.md").read_text()
    for row in ("held-out images (floor vs train)", "training images (copier; floor vs held-out)",
                "uniform noise (ceiling)", "**Agreement with DDPM Table 2**"):
        assert row in table, row


def test_two_references_seeds_and_memorization_are_reported(snakemake_project):
    p = snakemake_project
    raw = yaml.safe_load((p / "params.yaml").read_text())
    long = pd.read_csv(p / "results/metrics.csv")
    against = long.drop_duplicates("metric").set_index("metric").against
    assert against["fid"] == "train" and against["fid_heldout"] == "heldout"
    assert against["fid_heldout_matched"] == "heldout" and against["kid_heldout_mean"] == "heldout"
    assert set(long[long.cell == "eps-eps-s1"].group) == {"eps-eps"}
    metrics = json.loads((p / "results/metrics/eps-eps-s1.json").read_text())
    assert len(metrics["fid_boot"]) == len(metrics["fid_heldout_matched_boot"]) == raw["metrics"]["resamples"]
    assert 0 <= metrics["near_copy_fraction"] <= 1 and metrics["nn_ratio"] > 0
    assert metrics["fingerprint"]["inputs"]["samples"]["settings"]["seed"] == raw["sample"]["seed"] + 1
    summary = pd.read_csv(p / "results/summary.csv")
    fid = summary[summary.metric == "fid"].set_index("group")
    assert fid.loc["eps-eps", "n"] == 2 and fid.loc["eps-eps", "ci_low"] < fid.loc["eps-eps", "ci_high"]
    assert fid.loc["x0-eps", "diff_low"] <= fid.loc["x0-eps", "diff"] <= fid.loc["x0-eps", "diff_high"]
    rows = table_rows((p / "results/table.md").read_text())
    assert "eps-eps-s1" not in rows  # a replicate is part of its group's row
    assert rows["eps-eps"][4] == "2" and "baseline" in " ".join(rows["eps-eps"])
    reference = json.loads((p / "results/reference.json").read_text())
    assert reference["rows"]["train"]["near_copy_fraction"] == 1.0 and reference["rows"]["heldout"]["nn_ratio"] == 1.0


def test_snakemake_report_builds_with_every_category(snakemake_project):
    run([tool("snakemake"), "--report", "report.html"], cwd=snakemake_project)
    html = (snakemake_project / "report.html").read_text(errors="replace")
    for text in ("fid_heatmap.png", "loss_curves.png", "table.md", "eps-vlb.png", "Samples", "Training"):
        assert text in html, text


def test_cells_cli_lists_and_shows_cells(snakemake_project):
    import sys

    listing = run([sys.executable, "-m", "pipeline.cells", "list"], cwd=snakemake_project).stdout
    cells = yaml.safe_load((snakemake_project / "params.yaml").read_text())["cells"]
    for cell in cells:
        assert re.search(rf"^{re.escape(cell)}\s.*\bdone\b", listing, re.M), listing
    shown = json.loads(run([sys.executable, "-m", "pipeline.cells", "show", "eps-eps"], cwd=snakemake_project).stdout)
    assert shown["status"] == "done" and shown["params"]["weighting"] == "eps"
    assert shown["metrics"]["fid"] > 0 and not shown["paths"]["model"].endswith("(missing)")
    missing = run([sys.executable, "-m", "pipeline.cells", "show", "nope"], cwd=snakemake_project, check=False)
    assert missing.returncode != 0 and "no cell 'nope'" in missing.stderr


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
    assert sorted(jobs) == ["all", "sampler_table", "validate"]  # validate: any params edit


def test_changing_one_cell_reruns_that_cell_only(snakemake_project):
    p = snakemake_project
    text = (p / "params.yaml").read_text()
    text = text.replace("eps-vlb:  {parameterization: eps, weighting: vlb, Sigma: fixed_large}",
                        "eps-vlb:  {parameterization: eps, weighting: vlb, Sigma: fixed_large, train: {lr: 5.0e-4}}")
    (p / "params.yaml").write_text(text)
    jobs = planned_jobs(p)
    assert jobs.pop("train") == ["eps-vlb"]
    assert jobs.pop("sample") == ["eps-vlb"]
    assert jobs.pop("evaluate") == ["eps-vlb"]
    assert jobs.pop("curves") == ["eps-vlb"]
    assert sorted(jobs) == ["aggregate", "all", "plot", "validate"]  # validate: any params edit


def test_dvc_repro_runs_and_second_repro_does_nothing(dvc_grid, tmp_path):
    project = copy_project(dvc_grid, tmp_path / "dvc")  # `dvc repro` from empty
    for name in TABLES:
        assert (project / name).stat().st_size > 0, name
    again = run([tool("dvc"), "repro"], cwd=project).stdout
    assert "Data and pipelines are up to date" in again
    shown = run([tool("dvc"), "metrics", "show", "--json"], cwd=project).stdout
    assert "fid" in shown


def test_readme_walkthrough_adds_a_weighting(tmp_path, tiny_params):
    """README's "Adding a weighting": one function, one registry line, one params entry; the
    new weighting appears in the DAG and in the table."""
    project = make_project(tmp_path / "p", tiny_params)
    source = project / "diffusion" / "weightings.py"
    text = source.read_text()
    text = text.replace("MSE_WEIGHTINGS = {", "def _sqrt_snr(process, param, options):\n"
                        "    return torch.exp(process.log_snr / 2)\n\n\nMSE_WEIGHTINGS = {", 1)
    text = text.replace('    "trunc_snr": _trunc_snr,\n', '    "trunc_snr": _trunc_snr,\n    "sqrt_snr": _sqrt_snr,\n', 1)
    source.write_text(text)
    params = (project / "params.yaml").read_text()
    params = params.replace("cells:\n", "cells:\n  v-sqrt_snr:  {parameterization: v, weighting: sqrt_snr, Sigma: fixed_large}\n", 1)
    (project / "params.yaml").write_text(params)
    assert "v-sqrt_snr" in planned_jobs(project)["train"]
    run([tool("snakemake"), "--cores", "2"], cwd=project)
    table = (project / "results/table.md").read_text()
    row = table_rows(table)["v-sqrt_snr"]
    assert row[1:4] == ["v", "sqrt_snr", "fixed_large"] and "ok" in row
