"""params.yaml validation: each mistake is one line naming its key, all of them at once, and
a nonzero exit, before any compute (through the validator, a stage and the Snakefile); the
schema's defaults are params.yaml's values and params.schema.json is the schema's."""

import copy
import dataclasses
import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import EXPERIMENTS, ROOT, experiment_params, make_project, run, tool
from diffusion import LEARNED_SIGMAS, PARAMETERIZATIONS, SIGMAS, WEIGHTINGS
from pipeline.build import build_net, build_objective, build_process
from pipeline.params import Params, ParamsError, json_schema, load, load_or_exit, load_yaml, parse

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())


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
    ("train.lr", "1e-3", "train.lr: expected a number, got '1e-3'"),
    ("train.steps", 10.5, "train.steps: expected an integer, got 10.5"),
    ("train.lr", float("nan"), "train.lr: must be a finite number, got nan"),
    ("process.sigma_max", float("inf"), "process.sigma_max: must be a finite number, got inf"),
    ("cells.eps-eps.train", {"seed": "1"}, "cells.eps-eps.train.seed: expected an integer, got '1'"),
    ("cells.eps-eps.train", {"steps": 10.5}, "cells.eps-eps.train.steps: expected an integer, got 10.5"),
    ("cells.eps-eps.train", {"lr": "1e-3"}, "cells.eps-eps.train.lr: expected a number, got '1e-3'"),
    ("cells.eps-eps.train", {"compile": "yes"}, "cells.eps-eps.train.compile: expected true or false"),
    ("cells.eps-eps.train", {"lr": float("nan")}, "cells.eps-eps.train.lr: must be a finite number, got nan"),
    ("cells.eps-eps", {"parameterization": "eps", "weighting": "eps", "Sigma": "learned",
                       "train": {"hybrid_lambda": 0}},
     "cells.eps-eps.train.hybrid_lambda: 0 leaves the learned Sigma head of cells.eps-eps (Sigma: learned, "
     "weighting: eps) without gradient; use weighting vlb or hybrid_lambda > 0"),
    ("cells.eps-eps.weighting", "l1", "cells.eps-eps.weighting: unknown value 'l1'"),
    ("cells.eps-eps.parameterization", "noise", "cells.eps-eps.parameterization: unknown value"),
    ("cells.eps-eps.Sigma", "big", "cells.eps-eps.Sigma: unknown value"),
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
    ("cells", DELETE, "cells: missing key"),
    ("train", 5, "train: expected a mapping, got 5"),
    ("cells.Bad Id", {"parameterization": "eps", "weighting": "eps"}, "cells.Bad Id: cell ids use"),
    ("cells.eps-copy", {"parameterization": "eps", "weighting": "eps", "Sigma": "fixed_large"},
     "cells.eps-copy: same objective and settings as cells.eps-eps"),
    # A replicate that repeats the resolved seed of another cell is the same run.
    ("cells.eps-eps-s0", {"parameterization": "eps", "weighting": "eps", "train": {"seed": 0}},
     "cells.eps-eps-s0: same objective and settings as cells.eps-eps"),
    ("cells.eps-eps-s7", {"parameterization": "eps", "weighting": "eps", "train": {"seed": 6}},
     "cells.eps-eps-s7: the id says seed 7 but train.seed is 6"),
    ("stats.baseline", "eps-nope", "stats.baseline: 'eps-nope' is not a cell of the grid"),
    ("stats.confidence", 1.5, "stats.confidence: must be < 1, got 1.5"),
    ("stats.confidence", 0, "stats.confidence: must be > 0, got 0"),  # an int is a float's value, not its type error
    ("metrics.matched_n", 5000, "metrics.matched_n: 5000 is larger than sample.num_samples"),
    ("metrics.draws", 0, "metrics.draws: must be > 0"),
    ("cells.x0-unc", {"parameterization": "x0", "weighting": "uncertainty", "Sigma": "learned"},
     "cells.x0-unc.Sigma: the uncertainty weighting (seed 004) needs a fixed Sigma"),
    ("model.sigma_data", 0.0, "model.sigma_data: must be > 0"),
    ("sample.langevin_steps_per_level", 0, "sample.langevin_steps_per_level: must be > 0"),
    ("sample.sigma_max", 0.0, "sample.sigma_max: must be > 0"),
    ("sample.sigma_max", float("inf"), "sample.sigma_max: must be a finite number"),
    ("sample.sigma_max", "80", "sample.sigma_max: expected a number"),
    ("sampler_study.cells", ["eps-eps", "nope"], "sampler_study.cells[1]: 'nope' is not a cell of cells:"),
    ("sampler_study.samplers", ["ddim", "dpm"], "sampler_study.samplers[1]: unknown value 'dpm'"),
    ("sampler_study.nfe", [10, -1], "sampler_study.nfe[1]: must be > 0"),
    ("sampler_study.nfe", [10, 2000], "sampler_study.nfe[1]: 2000 is more than process.T = 1000"),
    ("sampler_study.nfe", [10, 10], "sampler_study.nfe: duplicate entries"),
    ("sampler_study.cells", [], "sampler_study.cells: empty"),
    ("sampler_study.num_samples", 100, "metrics.kid_subset_size: 300 is larger than sampler_study.num_samples"),
    ("sampler_study.nfe", [10, 2.5], "sampler_study.nfe[1]: expected an integer, got 2.5"),
    ("sampler_study.samplers", "ddim", "sampler_study.samplers: expected a list, got 'ddim'"),
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
    ("process.decoder_cdf", "normal", "process.decoder_cdf: unknown value 'normal' (choose from erf, tanh)"),
    ("train.timestep_sampler", "beta", "train.timestep_sampler: unknown value 'beta'"),
    ("train.lognormal_std", 0.0, "train.lognormal_std: must be > 0, got 0.0"),
    ("train.lognormal_mean", "-1.2", "train.lognormal_mean: expected a number, got '-1.2'"),
    ("cells.eps-eps.train", {"lognormal_std": -1.0}, "cells.eps-eps.train.lognormal_std: must be > 0, got -1.0"),
    ("cells.eps-eps.train", {"timestep_sampler": "beta"}, "cells.eps-eps.train.timestep_sampler: unknown value"),
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


@pytest.mark.parametrize("config", sorted((ROOT / "tests" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_test_config_is_valid(config):
    assert load(config).cells


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_resolves_to_valid_params(name):
    """configs/<name>.yaml states differences only; on top of params.yaml it is valid."""
    assert parse(experiment_params(name)).cells


def test_paths_default_to_the_top_level_folders():
    raw = mutate("paths", DELETE)
    assert parse(raw).paths == parse(BASE).paths == parse(mutate("paths", {"results": "results"})).paths
    assert parse(mutate("paths.results", "results/mine")).paths.results == "results/mine"


@pytest.mark.parametrize("section", [key for key in BASE if key != "cells"])
def test_a_section_left_out_takes_its_defaults(section):
    assert parse(mutate(section, DELETE)) == parse(BASE)


def test_params_yaml_states_the_schema_defaults():
    """The committed params.yaml, minus its grid, is the schema's defaults key for key: the
    default experiment is written down once in the schema and once in the file, kept equal."""
    defaults = {f.name: json.loads(json.dumps(dataclasses.asdict(f.default)))  # tuples -> lists
                for f in dataclasses.fields(Params) if f.name != "cells"}
    assert {key: value for key, value in load_yaml(ROOT / "params.yaml").items() if key != "cells"} == defaults


def test_the_json_schema_is_current():
    assert (ROOT / "params.schema.json").read_text() == json_schema(), \
        "run `python -m pipeline.params --json-schema > params.schema.json`"
    assert (ROOT / "params.yaml").read_text().startswith("# yaml-language-server: $schema=params.schema.json\n")


def test_every_mistake_is_reported_at_once(tmp_path, capsys):
    """The schema's mistakes all together, each on its line; the checks' once the schema holds."""
    raw = mutate("train.steps", 10.5)
    raw["cells"]["eps-eps"]["train"] = {"seed": "1"}
    raw["sampler_study"]["nfe"] = [10, 20, -1]
    raw["cells"]["eps-vlb"]["weighting"] = "l1"  # a check's: reported once the schema holds
    path = _write(tmp_path, raw)
    with pytest.raises(SystemExit) as exit_:
        load_or_exit(path)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}: train.steps: expected an integer, got 10.5",
        f"error: {path}: cells.eps-eps.train.seed: expected an integer, got '1'",
        f"error: {path}: sampler_study.nfe[2]: must be > 0, got -1"]
    raw = mutate("cells.eps-vlb.weighting", "l1")
    raw["stats"]["baseline"] = "nope"
    with pytest.raises(ParamsError) as err:
        parse(raw)
    assert [line.split(":")[0] for line in str(err.value).splitlines()] == ["cells.eps-vlb.weighting", "stats.baseline"]


def test_shipped_experiments_keep_their_outputs_apart():
    """Every experiment has its own folders: the default the top-level ones, each config under
    configs/ its own subfolders, so that none overwrites another's results."""
    experiments = [load(ROOT / "params.yaml"), *(parse(experiment_params(name)) for name in EXPERIMENTS)]
    for key in ("data", "runs", "results", "logs"):
        folders = [getattr(p.paths, key) for p in experiments]
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


@pytest.mark.parametrize("text,value", [
    ("1e-3", 1e-3), ("-1.5E+3", -1500.0), (".5", 0.5), ("2.", 2.0), ("017", 17), ("0o17", 15), ("0x1F", 31),
    ("+12", 12), (".inf", math.inf), ("-.Inf", -math.inf), (".NaN", math.nan), ('"1e-3"', "1e-3"),
    ("1_000", "1_000"), ("yes", True),
])
def test_yaml_numbers_are_read_as_yaml_1_2(tmp_path, text, value):
    path = tmp_path / "numbers.yaml"
    path.write_text(f"x: {text}\n")
    x = load_yaml(path)["x"]
    assert (repr(x), type(x)) == (repr(value), type(value))  # repr: nan equals nan


@pytest.mark.parametrize("old,new,message", [
    ("lr: 1.0e-3", "lr: 1e-3", None),
    ("lr: 1.0e-3", 'lr: "1e-3"', "train.lr: expected a number, got '1e-3'"),
    ("lr: 1.0e-3", "lr: .nan", "train.lr: must be a finite number, got nan"),
    ("  eps-eps:", "  eps-eps-fast: {parameterization: eps, weighting: eps, train: {lr: 2e-3, seed: 1}}\n  eps-eps:",
     None),
    ("  eps-eps:", '  eps-eps-fast: {parameterization: eps, weighting: eps, train: {seed: "1"}}\n  eps-eps:',
     "cells.eps-eps-fast.train.seed: expected an integer, got '1'"),
], ids=["1e-3", "quoted", "nan", "override-2e-3", "override-quoted"])
def test_params_file_numbers(tmp_path, old, new, message):
    """YAML 1.2 numbers through load(): `1e-3` is a float, a quoted number is still refused."""
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace(old, new, 1))
    if message:
        with pytest.raises(ParamsError) as err:
            load(path)
        assert str(err.value) == f"{path}: {message}"
        return
    params = load(path)
    assert params.train.lr == 1e-3
    if "eps-eps-fast" in params.cells:
        assert params.cell_train("eps-eps-fast").lr == 2e-3


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


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
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


def one_cell(parameterization, weighting, sigma, hybrid_lambda):
    """The tiny params with a grid of one cell."""
    raw = copy.deepcopy(TINY)
    raw["cells"] = {"cell": {"parameterization": parameterization, "weighting": weighting, "Sigma": sigma,
                             "train": {"hybrid_lambda": hybrid_lambda}}}
    raw["stats"]["baseline"] = "cell"
    raw["sampler_study"]["cells"] = ["cell"]
    return raw


def head_gradients(params, data_shape=(2,)):
    """After one backward pass of the cell's objective on a small MLP: the gradient of every
    extra output channel (a learned Sigma's, seed 004's log-ratio) and of every parameter of
    the objective (the adaptive weightings' u(t) head)."""
    cell = params.cells["cell"]
    process = build_process(params.process)
    net = build_net(params.model, data_shape, cell.Sigma, cell.weighting)
    objective = build_objective(params, "cell", process, levels=None)
    outputs = []
    net.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, *data_shape, generator=generator)
    t = torch.randint(process.T, (64,), generator=generator)
    loss = objective(net, x0, t, torch.randn(x0.shape, generator=generator))["loss"].mean()
    grads = torch.autograd.grad(loss, [outputs[0], *objective.parameters()], allow_unused=True)
    extra = grads[0][:, data_shape[0]:]  # the channels after the data's: none without a second head
    return ([extra] if extra.numel() else []) + [torch.zeros(()) if g is None else g for g in grads[1:]]


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_validation_refuses_exactly_the_objectives_that_leave_a_head_untrained(weighting):
    """Every accepted (parameterization, weighting, Sigma, hybrid_lambda) trains every head it
    has; the refused ones are a learned Sigma without the VLB's gradient (or beside seed 004's
    uncertainty channels)."""
    parameterizations = [name for name, p in PARAMETERIZATIONS.items() if "vp" in p.processes]
    for parameterization, sigma, hybrid_lambda in itertools.product(parameterizations, SIGMAS, (0.0, 1e-3)):
        case = f"{parameterization} / {weighting} / {sigma} / hybrid_lambda {hybrid_lambda}"
        starved = sigma in LEARNED_SIGMAS and (weighting == "uncertainty" or (weighting != "vlb" and not hybrid_lambda))
        try:
            params = parse(one_cell(parameterization, weighting, sigma, hybrid_lambda))
        except ParamsError:
            assert starved, f"{case}: refused"
            continue
        assert all(g.abs().sum() > 0 for g in head_gradients(params)), f"{case}: a head gets no gradient"
        assert not starved, f"{case}: accepted"


def test_a_learned_sigma_under_eps_needs_the_hybrid_term():
    with pytest.raises(ParamsError, match=r"^cells\.cell\.train\.hybrid_lambda: 0 leaves the learned Sigma head"):
        parse(one_cell("eps", "eps", "learned_range", 0.0))
    params = parse(one_cell("eps", "eps", "learned_range", 1e-3))
    assert all(g.abs().sum() > 0 for g in head_gradients(params))
