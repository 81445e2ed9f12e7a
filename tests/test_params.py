"""params.yaml validation: each mistake is one line naming its key, and a nonzero exit,
before any compute (through the validator, a stage and the Snakefile)."""

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, make_project, run, tool
from pipeline.params import ParamsError, load, parse

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def mutate(path, value):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


DELETE = object()

CASES = [
    ("train.stpes", 5, "train.stpes: unknown key"),
    ("train.steps", "many", "train.steps: expected an integer"),
    ("train.steps", -5, "train.steps: must be > 0"),
    ("train.lr", True, "train.lr: expected a number"),
    ("cells.eps-eps.weighting", "l1", "cells.eps-eps.weighting: unknown value 'l1'"),
    ("cells.eps-eps.parameterization", "noise", "cells.eps-eps.parameterization: unknown value"),
    ("cells.eps-eps.sigma", "big", "cells.eps-eps.sigma: unknown value"),
    ("cells.eps-eps.train", {"lr": -1.0}, "cells.eps-eps.train.lr: must be > 0"),
    ("cells.eps-eps.train", {"lrate": 1.0}, "cells.eps-eps.train.lrate: unknown key"),
    ("cells.eps-eps.weighting", DELETE, "cells.eps-eps.weighting: missing key"),
    ("cells", {}, "cells: the grid is empty"),
    ("metrics.kid_subset_size", 5000, "metrics.kid_subset_size: 5000 is larger than sample.num_samples"),
    ("data.path", "/no/such/folder", "data.path: /no/such/folder does not exist"),
    ("data.name", "imagenet", "data.name: unknown value 'imagenet'"),
    ("process.schedule", "sqrt", "process.schedule: unknown value"),
    ("sample.sampler", "dpm", "sample.sampler: unknown value"),
    ("model.net", "transformer", "model.net: unknown value"),
    ("metrics", DELETE, "metrics: missing section"),
    ("cells.Bad Id", {"parameterization": "eps", "weighting": "eps"}, "cells.Bad Id: cell ids use"),
    ("cells.eps-copy", {"parameterization": "eps", "weighting": "eps", "sigma": "fixed_large"},
     "cells.eps-copy: same objective and settings as cells.eps-eps"),
    # A replicate that repeats the resolved seed of another cell is the same run.
    ("cells.eps-eps-s0", {"parameterization": "eps", "weighting": "eps", "train": {"seed": 0}},
     "cells.eps-eps-s0: same objective and settings as cells.eps-eps"),
    ("cells.eps-eps-s7", {"parameterization": "eps", "weighting": "eps", "train": {"seed": 6}},
     "cells.eps-eps-s7: the id says seed 7 but train.seed is 6"),
    ("stats.baseline", "eps-nope", "stats.baseline: 'eps-nope' is not a cell of the grid"),
    ("stats.confidence", 1.5, "stats.confidence: must be in (0, 1)"),
    ("stats", DELETE, "stats: missing section"),
    ("metrics.matched_n", 5000, "metrics.matched_n: 5000 is larger than sample.num_samples"),
    ("metrics.draws", 0, "metrics.draws: must be > 0"),
    ("cells.x0-unc", {"parameterization": "x0", "weighting": "uncertainty", "sigma": "learned"},
     "cells.x0-unc.sigma: the uncertainty weighting (seed 004) needs a fixed Sigma"),
    ("model.sigma_data", 0.0, "model.sigma_data: must be > 0"),
    ("sample.langevin_steps_per_level", 0, "sample.langevin_steps_per_level: must be > 0"),
    ("sampler_study.cells", ["eps-eps", "nope"], "sampler_study.cells[1]: 'nope' is not a cell of cells:"),
    ("sampler_study.samplers", ["ddim", "dpm"], "sampler_study.samplers[1]: unknown value 'dpm'"),
    ("sampler_study.nfe", [10, -1], "sampler_study.nfe[1]: must be > 0"),
    ("sampler_study.nfe", [10, 2000], "sampler_study.nfe[1]: 2000 is more than process.T = 1000"),
    ("sampler_study.nfe", [10, 10], "sampler_study.nfe: duplicate entries"),
    ("sampler_study.cells", [], "sampler_study.cells: empty"),
    ("sampler_study.num_samples", 100, "metrics.kid_subset_size: 300 is larger than sampler_study.num_samples"),
    ("sampler_study", DELETE, "sampler_study: missing section"),
    ("train.device", "tpu", "train.device: unknown value 'tpu'"),
    ("train.precision", "fp16", "train.precision: unknown value 'fp16'"),
    ("train.compile", "yes", "train.compile: expected true or false"),
    ("train.gpus", 3, "train.batch_size: 128 is not divisible by train.gpus = 3"),
    ("train.eval_every", -1, "train.eval_every: must be >= 0"),
    ("cells.eps-eps.train", {"gpus": 0}, "cells.eps-eps.train.gpus: must be > 0"),
    ("data.heldout_fraction", 0.0, "data.heldout_fraction: 0 (the data set's own test split) is only available"),
    ("sample.device", "gpu", "sample.device: unknown value 'gpu'"),
    ("metrics.device", "gpu", "metrics.device: unknown value 'gpu'"),
    ("metrics.feature_extractor", "clip", "metrics.feature_extractor: unknown value 'clip'"),
    ("metrics.inception_weights", "/no/such.pth", "metrics.inception_weights: /no/such.pth does not exist"),
    ("metrics.snapshot_samples", 5, "metrics.snapshot_samples: must be >= 10"),
    ("paths.results", "../elsewhere", "paths.results: must be 'results' or 'results/<name>'"),
    ("paths.runs", "/scratch/runs", "paths.runs: must be 'runs' or 'runs/<name>'"),
    ("paths.results", "runs/mine", "paths.results: must be 'results' or 'results/<name>'"),
    ("paths.results", "results/metrics", "paths.results: must be 'results' or 'results/<name>'"),
    ("paths.logs", "logs/a/b", "paths.logs: must be 'logs' or 'logs/<name>'"),
    ("paths.cache", "cache", "paths.cache: unknown key"),
]


@pytest.mark.parametrize("path,value,message", CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_each_mistake_is_one_line_naming_the_key(path, value, message):
    with pytest.raises(ParamsError) as err:
        parse(mutate(path, value))
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_the_default_and_tiny_params_are_valid(tiny_params):
    assert len(load(ROOT / "params.yaml").cells) == len(BASE["cells"])
    assert len(load(tiny_params).cells) == 5


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(config):
    assert load(config).cells


def test_paths_default_to_the_top_level_folders():
    raw = mutate("paths", DELETE)
    assert parse(raw).paths == parse(BASE).paths == parse(mutate("paths", {"results": "results"})).paths
    assert parse(mutate("paths.results", "results/mine")).paths.results == "results/mine"


def test_shipped_experiments_keep_their_outputs_apart():
    """Every experiment has its own folders: the default the top-level ones, each config under
    configs/ its own subfolders, so that none overwrites another's results."""
    configs = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]
    for key in ("data", "runs", "results", "logs"):
        folders = [getattr(load(c).paths, key) for c in configs]
        assert len(set(folders)) == len(folders), (key, folders)


def test_point_data_refuses_clipping():
    raw = mutate("data.name", "swiss_roll")
    with pytest.raises(ParamsError, match="sample.clip_x0: must be false for 2-D point data"):
        parse(raw)


def test_duplicate_yaml_key_is_refused(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace(
        "  eps-eps:", "  eps-native:      {parameterization: x0, weighting: eps}\n  eps-eps:", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match="duplicate key 'eps-native'"):
        load(path)


def test_per_cell_override_is_applied():
    raw = mutate("cells.eps-eps.train", {"lr": 5e-4})
    params = parse(raw)
    assert params.cell_train("eps-eps").lr == 5e-4
    assert params.cell_train("eps-native").lr == params.train.lr


def _write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_exits_nonzero_with_one_line(tmp_path):
    path = _write(tmp_path, mutate("train.steps", -1))
    result = subprocess.run([sys.executable, "-m", "pipeline.params", "--params", str(path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "train.steps: must be > 0" in result.stderr


def test_stage_refuses_bad_params_before_compute(tmp_path):
    path = _write(tmp_path, mutate("cells.eps-eps.weighting", "l1"))
    out = tmp_path / "model.pt"
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--params", str(path), "--cell", "eps-eps",
                             "--data", "data/none.pt", "--out", str(out), "--checkpoint", str(tmp_path / "c.pt")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: cells.eps-eps.weighting: unknown value 'l1' (choose from adaptive, edm, eps, "
        "lambda_inv_sigma2, lambda_learned, lambda_one, lambda_sigma2, min_snr, native, snr, trunc_snr, "
        "uncertainty, vlb)"]
    assert not out.exists()


def test_snakemake_refuses_bad_params_before_any_job(tmp_path, tiny_params):
    project = make_project(tmp_path / "p", tiny_params)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["steps"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    result = run([tool("snakemake"), "--cores", "1"], cwd=project, check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.steps: must be > 0" in result.stderr + result.stdout
    assert not (project / "data").exists()


def test_replicates_validate_and_group_into_one_row():
    params = load(ROOT / "params.yaml")
    groups = params.replicate_groups()
    assert groups["eps-eps"] == ["eps-eps", "eps-eps-s1", "eps-eps-s2"]
    assert groups["mu-vlb"] == ["mu-vlb", "mu-vlb-s1"] and groups["eps-vlb"] == ["eps-vlb", "eps-vlb-s1"]
    assert groups["eps-native"] == ["eps-native"]  # the same objective under another slug: its own row
    assert len(groups) == len(params.cells) - 4
    assert [params.cell_train(c).seed for c in groups["eps-eps"]] == [0, 1, 2]
    assert [params.cell_sample_seed(c) for c in groups["eps-eps"]] == [1, 2, 3]  # sampling noise moves too
    assert params.group_of("eps-eps-s2") == "eps-eps"


def test_a_replicate_with_another_override_is_another_row():
    raw = mutate("cells.eps-eps-slow", {"parameterization": "eps", "weighting": "eps", "train": {"lr": 5e-4}})
    raw["cells"]["eps-eps-slow-s1"] = {"parameterization": "eps", "weighting": "eps",
                                        "train": {"lr": 5e-4, "seed": 1}}
    groups = parse(raw).replicate_groups()
    assert groups["eps-eps-slow"] == ["eps-eps-slow", "eps-eps-slow-s1"]
    assert "eps-eps-slow" not in groups["eps-eps"]
