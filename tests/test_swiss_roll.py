"""Issue 11 end to end on 2-D data: the tiny NCSN Swiss-roll config through Snakemake gives
scatter plots instead of image grids, distances instead of FID, seed 004's two scores as two
table rows, its variance plot, and the sampler study, all under the config's own folders
(`paths:`); each experiment folder (experiments/) is the same DAG in both tools."""

import json

import pandas as pd
import pytest
import yaml

from conftest import ROOT, make_project, run, table_rows, tool
from test_dag import normalize

pytestmark = pytest.mark.slow
TINY = ROOT / "tests" / "configs" / "tiny_swiss_roll.yaml"
PATHS = yaml.safe_load(TINY.read_text())["paths"]
RESULTS, RUNS = PATHS["results"], PATHS["runs"]


@pytest.fixture(scope="module")
def swiss_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("swiss"), TINY)
    run([tool("snakemake"), "--cores", "2"], cwd=project)
    assert RESULTS != "results" and sorted(p.name for p in (project / "results").iterdir()) == ["tiny_swiss_roll"]
    return project


def test_point_metrics_and_two_scores(swiss_project):
    p = swiss_project
    dsm = json.loads((p / RESULTS / "metrics/score-lambda_sigma2.json").read_text())
    unc = json.loads((p / RESULTS / "metrics/x0-uncertainty.json").read_text())
    for m in (dsm, unc):
        assert m["status"] == "ok"
        assert "fid" not in m and m["sw"] > 0 and m["mmd"] == m["mmd"] and m["nll_bpd"] == m["nll_bpd"]
    assert unc["uncertainty_sw"] > 0 and "uncertainty_sw" not in dsm
    table = (p / RESULTS / "table.md").read_text()
    assert "SW" in table_rows(table)["cell"] and "FID" not in table.splitlines()[0]
    assert "x0-uncertainty (uncertainty score)" in table and "held-out real data (floor)" in table
    long = pd.read_csv(p / RESULTS / "metrics.csv")
    assert set(long.score) == {"tweedie", "uncertainty"} and set(long.metric) == {"sw", "mmd", "nll_bpd"}


def test_scatter_plots_score_field_and_variance_plot(swiss_project):
    p = swiss_project
    for cell in ("score-lambda_sigma2", "x0-uncertainty"):
        assert (p / RESULTS / f"samples/{cell}.png").stat().st_size > 5000
    for name in ("fid_heatmap", "samples", "uncertainty", "sampler_study"):
        assert (p / RESULTS / f"plots/{name}.png").stat().st_size > 5000, name
    profile = pd.read_csv(p / RESULTS / "train/x0-uncertainty/profile.csv")
    assert {"s", "sigma_phi2", "seed_sigma_phi2"} <= set(profile.columns)
    assert (profile.sigma_phi2 > 0).all() and (profile.seed_sigma_phi2 >= profile.s**2 * 0.999).all()
    samples = __import__("torch").load(p / RUNS / "samples/x0-uncertainty.pt", weights_only=True)
    assert samples["samples"].dtype.is_floating_point and samples["samples"].shape == (200, 2)
    assert samples["samples_uncertainty"].shape == (200, 2)


def test_sampler_study_on_points(swiss_project):
    p = swiss_project
    study = pd.read_csv(p / RESULTS / "sampler_table.csv")
    assert set(study.sampler) == {"langevin", "heun"} and set(study.metric) == {"sw", "mmd"}
    point = json.loads((p / RESULTS / "sampler_study/score-lambda_sigma2/heun-20.json").read_text())
    assert point["nfe"] == 19 and point["steps"] == 10  # Heun: 2 per step but the last
    point = json.loads((p / RESULTS / "sampler_study/score-lambda_sigma2/langevin-20.json").read_text())
    assert point["nfe"] <= 20 and point["steps"] == 9  # 2 per level plus the final denoising
    assert "Nothing to be done" in run([tool("snakemake"), "--cores", "2", "-n"], cwd=p).stdout


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (ROOT / "experiments").glob("*/dvc.yaml")))
def test_each_experiment_folder_is_the_same_dag_in_both_tools(name):
    """`snakemake --config experiment=<name>` and experiments/<name>/dvc.yaml: the same commands."""
    out = run([tool("snakemake"), "-n", "-p", "--forceall", "--cores", "1", "--config", f"experiment={name}"],
              cwd=ROOT).stdout
    sm = {normalize(line.split("Shell command: ", 1)[1]) for line in out.splitlines()
          if line.startswith("Shell command: ") and line.strip() != "Shell command: None"}
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:  # that folder's file only
        dvc = {normalize(stage.cmd) for stage in load_file(repo, f"experiments/{name}/dvc.yaml").stages.values()}
    assert sm == dvc and dvc
    with_params = [cmd for cmd in dvc if "--params" in cmd]  # curves reads its settings from the model
    assert with_params and all(f"--params experiments/{name}/params.yaml" in cmd for cmd in with_params)
