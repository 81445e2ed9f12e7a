"""DVC experiments on the tiny grid (two cells, one sampler-study point): `dvc exp run -S`
runs a changed parameter, `dvc exp show` lists it with the grid's metrics, `dvc metrics
diff` compares it with the baseline, `dvc plots show` renders the loss curves, and training
leaves dvclive's live curves in logs/live."""

import json
import shutil

import pytest
import yaml

from conftest import ROOT, init_repos, make_project, run, tool

pytestmark = pytest.mark.slow

CELLS = ("eps-eps", "eps-vlb")


def live_steps(project, cell):
    """The steps of a cell's live loss history (dvclive's tsv)."""
    lines = (project / f"logs/live/{cell}/plots/metrics/loss.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "loss"]
    return [int(line.split("\t")[0]) for line in lines[1:]]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_params):
    project = make_project(tmp_path_factory.mktemp("experiments"), tiny_params)
    shutil.copy2(ROOT / ".gitignore", project / ".gitignore")  # logs/ and runs/ stay out of git
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["cells"] = {cell: raw["cells"][cell] for cell in CELLS}
    raw["sampler_study"]["samplers"] = ["ddim"]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    init_repos(project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "commit", "-qm", "project"], cwd=project)  # dvclive needs a commit
    run([tool("dvc"), "repro"], cwd=project)
    for cell in CELLS:
        assert live_steps(project, cell) == list(range(10, 61, 10)), cell
    run(["git", "add", "-A"], cwd=project)
    run(["git", "commit", "-qm", "baseline"], cwd=project)
    run([tool("dvc"), "exp", "run", "-S", "train.steps=30", "-n", "short"], cwd=project)
    return project


def test_exp_run_trains_with_the_changed_param_and_logs_live(project):
    for cell in CELLS:
        assert live_steps(project, cell) == [10, 20, 30], cell
        assert json.loads((project / f"results/train/{cell}/summary.json").read_text())["step"] == 30


def test_exp_show_lists_the_experiment_with_the_grids_metrics(project):
    rows = json.loads(run([tool("dvc"), "exp", "show", "--json"], cwd=project).stdout)
    baseline = next(row for row in rows if row["rev"] != "workspace")
    exp = next(e["revs"][0] for e in baseline["experiments"] if e["revs"][0]["name"] == "short")
    for row, steps in ((baseline, 60), (exp, 30)):
        assert row["data"]["params"]["params.yaml"]["data"]["train"]["steps"] == steps
        metrics = row["data"]["metrics"]
        for cell in CELLS:
            assert metrics[f"results/metrics/{cell}.json"]["data"]["fid"] > 0, (steps, cell)


def test_metrics_diff_shows_changed_metrics(project):
    diff = json.loads(run([tool("dvc"), "metrics", "diff", "HEAD", "short", "--json"], cwd=project).stdout)
    for cell in CELLS:
        fid = diff[f"results/metrics/{cell}.json"]["fid"]
        assert fid["old"] != fid["new"], cell
        assert diff[f"results/train/{cell}/summary.json"]["step"] == {"old": 60, "new": 30, "diff": -30}


def test_plots_show_renders_the_loss_curves_and_fid_plots(project):
    shown = json.loads(run([tool("dvc"), "plots", "show", "--json"], cwd=project).stdout)
    curves = [f"results/train/{cell}/losses.csv" for cell in CELLS]
    live = [f"logs/live/{cell}/plots/metrics/{name}.tsv" for cell in CELLS for name in ("loss", "lr")]
    for name in curves + live:
        assert [p["type"] for p in shown["data"][name]] == ["vega"], name
    for name in ("fid_heatmap", "fid_spread"):
        assert [p["type"] for p in shown["data"][f"results/plots/{name}.png"]] == ["image"], name
    failed = {e["name"] for e in shown.get("errors", [])}
    assert not failed & set(curves + live) and not any(n.startswith("logs/live") for n in failed), failed
