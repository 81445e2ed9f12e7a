"""Snakefile and dvc.yaml describe the same DAG, both built from the stage table
(pipeline/dag.py): the committed dvc.yaml is what the table writes; both tools run the same
commands with the same outputs, and count one training job per cell of params.yaml and one
sampler-study job per (cell, sampler, NFE) of its `sampler_study` section. Every module a
stage imports is one of its inputs in both tools, so a code edit reruns the stages it can
change, and no stage imports the table, so a DAG edit alone reruns nothing; a stage imports
helpers, never another stage."""

import ast
import re

import pytest
import yaml

from conftest import ROOT, make_project, run, tool
from pipeline import dag
from pipeline import dag_dvc
from pipeline.provenance import module_path, stage_modules

LOG_REDIRECT = re.compile(r"\s+2>\s*\S+\s*$")


def normalize(cmd):
    return " ".join(LOG_REDIRECT.sub("", cmd).split())


@pytest.fixture(scope="module")
def snakemake_jobs():
    """Every job of a forced dry run: its rule, outputs and shell command."""
    out = run([tool("snakemake"), "-n", "-p", "--forceall", "--cores", "1"], cwd=ROOT).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[.*\]\nrule )", out):
        rule = re.search(r"^rule (\w+):", block, re.M)
        shell = re.search(r"^Shell command: (.+)$", block, re.M)
        if not rule or not shell or shell.group(1) == "None":
            continue
        outputs = re.search(r"^\s+output: (.+)$", block, re.M)
        inputs = re.search(r"^\s+input: (.+)$", block, re.M)
        jobs[normalize(shell.group(1))] = {
            "rule": rule.group(1),
            "outputs": set(outputs.group(1).split(", ")) if outputs else set(),
            "inputs": set(inputs.group(1).split(", ")) if inputs else set(),
        }
    return jobs


@pytest.fixture(scope="module")
def dvc_stages():
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:  # the default experiment's file only (experiments/: test_swiss_roll.py)
        return {normalize(stage.cmd): {"name": stage.addressing, "outputs": {str(o.def_path) for o in stage.outs},
                                       "deps": {str(d.def_path) for d in stage.deps},
                                       "params": params_of(stage)}
                for stage in load_file(repo, "dvc.yaml").stages.values()}


def params_of(stage):
    """A DVC stage's declared params: keys, or "*" for a whole file."""
    declared = set()
    for dep in stage.deps:
        if hasattr(dep, "params"):
            declared |= set(dep.params) if dep.params else {"*"}
    return declared


def test_both_tools_count_one_train_job_per_cell(snakemake_jobs, dvc_stages):
    cells = yaml.safe_load((ROOT / "params.yaml").read_text())["cells"]
    sm_train = [j for j in snakemake_jobs.values() if j["rule"] == "train"]
    dvc_train = [s for s in dvc_stages.values() if s["name"].startswith("train@")]
    assert len(sm_train) == len(dvc_train) == len(cells)
    assert {s["name"] for s in dvc_train} == {f"train@{c}" for c in cells}


def test_both_tools_count_one_study_job_per_point(snakemake_jobs, dvc_stages):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    study, results = raw["sampler_study"], raw["paths"]["results"]
    points = {(c, s, n) for c in study["cells"] for s in study["samplers"] for n in study["nfe"]}
    sm = [j for j in snakemake_jobs.values() if j["rule"] == "sampler_study"]
    dvc = [s for s in dvc_stages.values() if s["name"].startswith("sampler_study@")]
    assert len(sm) == len(dvc) == len(points)
    expected = {f"{results}/sampler_study/{c}/{s}-{n}.json" for c, s, n in points}
    assert set().union(*(j["outputs"] for j in sm)) == expected
    assert set().union(*(s["outputs"] for s in dvc)) == expected


def test_same_commands(snakemake_jobs, dvc_stages):
    assert set(snakemake_jobs) == set(dvc_stages)


def test_same_outputs_per_command(snakemake_jobs, dvc_stages):
    for cmd, job in snakemake_jobs.items():
        assert job["outputs"] == dvc_stages[cmd]["outputs"], cmd


def test_every_imported_module_is_an_input(snakemake_jobs, dvc_stages):
    """A stage's code inputs are exactly the pipeline modules whose code it runs (see
    pipeline.provenance.stage_modules, which the fingerprints hash too), in both tools, plus the diffusion library when it uses it: an edit to any
    of them reruns the stage, and an edit elsewhere does not."""
    for cmd, job in snakemake_jobs.items():
        stage = re.search(r"python -m pipeline\.(\w+)", cmd)
        if stage is None:
            continue
        modules, uses_diffusion = stage_modules(stage.group(1))
        expected = {module_path(m) for m in modules}
        declared_sm = {i for i in job["inputs"] if i.startswith("pipeline/")}
        declared_dvc = {d for d in dvc_stages[cmd]["deps"] if d.startswith("pipeline/")}
        assert declared_sm == expected, (job["rule"], sorted(expected ^ declared_sm))
        assert declared_dvc == expected, (job["rule"], sorted(expected ^ declared_dvc))
        assert ("diffusion/process.py" in job["inputs"]) == uses_diffusion, job["rule"]
        assert ("diffusion" in dvc_stages[cmd]["deps"]) == uses_diffusion, job["rule"]


def test_dry_run_counts(snakemake_jobs):
    counts = {}
    for job in snakemake_jobs.values():
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    cells = yaml.safe_load((ROOT / "params.yaml").read_text())["cells"]
    for rule in ("train", "curves", "sample", "evaluate"):
        assert counts[rule] == len(cells), counts
    for rule in ("prepare", "evaluator", "reference", "aggregate", "plot", "sampler_table"):
        assert counts[rule] == 1, counts
    study = yaml.safe_load((ROOT / "params.yaml").read_text())["sampler_study"]
    assert counts["sampler_study"] == len(study["cells"]) * len(study["samplers"]) * len(study["nfe"])


def test_committed_dvc_yaml_is_what_the_stage_table_writes():
    assert (ROOT / "dvc.yaml").read_text() == dag_dvc.dvc_yaml(), "stale dvc.yaml: run `python -m pipeline.dag`"


def test_check_mode_names_a_stale_file(tmp_path, capsys):
    """`python -m pipeline.dag FILE --check` (its main, in-process): exit 1 naming a stale file;
    writing it makes the check pass."""
    stale = tmp_path / "dvc.yaml"
    stale.write_text(dag_dvc.dvc_yaml().replace("--threads 2", "--threads 3", 1))
    with pytest.raises(SystemExit) as exit:
        dag.main([str(stale), "--check"])
    assert "is not what the stage table makes" in str(exit.value.code)
    dag.main([str(stale)])
    dag.main([str(stale), "--check"])  # returns: current


def test_no_stage_imports_the_stage_table():
    for stage in dag.STAGES:
        assert not {"dag", "dag_dvc", "dag_snakemake"} & stage_modules(stage.command_module)[0], stage.name


def test_no_stage_imports_another_stage():
    """Stages are thin mains over helpers (validate's main is the params helper's own)."""
    mains = {stage.command_module for stage in dag.STAGES if stage.module is None}
    for main in mains:
        assert stage_modules(main)[0] & mains == {main}, main


def test_imports_are_followed_into_the_packages():
    """`from .report.summary import`, then `from ..metrics import stats` inside it: both count."""
    modules = stage_modules("aggregate")[0]
    assert {"report.summary", "report.tables", "report.papers", "metrics.stats", "provenance"} <= modules
    assert "metrics.torchvision_ops" in stage_modules("evaluate")[0]  # via metrics.fidelity, .extractor


def test_package_inits_hold_no_code():
    """A package's __init__.py runs before its modules but is no code input: only a docstring."""
    for init in sorted((ROOT / "pipeline").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value.value, str), init


def test_both_tools_declare_the_tables_params(dvc_stages):
    """DVC's params per stage are the table's (the Snakefile's come from the same entries)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in dag.STAGES:
        expected = dag_dvc.dvc_params(stage)
        for declared in (s["params"] for s in dvc_stages.values() if s["name"].split("@")[0] == stage.name):
            if expected == ["*"]:
                assert declared == {"*"}, stage.name
                continue
            key = next((k for k in declared if k.startswith("cells.")), None)
            cell = key.split(".", 1)[1] if key else None
            resolved = {p.replace("${key}", cell or "").replace("${item.cell}", cell or "") for p in expected}
            assert declared == resolved, stage.name
            assert not key or cell in raw["cells"], stage.name


def test_every_threaded_stage_gets_its_threads_in_both_tools(snakemake_jobs, dvc_stages):
    for cmd, job in snakemake_jobs.items():
        stage = dag.STAGE[job["rule"]]
        assert (f"--threads {stage.threads}" in cmd) == (stage.threads is not None), job["rule"]


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
def test_rules_run_their_own_commands(tmp_path, tiny_params):
    """A dry run prints each command as built when the Snakefile is read; a job runs it as
    evaluated again then. Two real jobs (validate, prepare) each make their own outputs."""
    project = make_project(tmp_path / "p", tiny_params)
    run([tool("snakemake"), "--cores", "1", "runs/params.valid", "data/train.pt"], cwd=project)
    assert (project / "runs/params.valid").read_text() == "valid\n"
    assert (project / "data/train.pt").stat().st_size > 0 and (project / "data/heldout.pt").exists()
