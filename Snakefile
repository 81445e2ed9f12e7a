# The experiment DAG, built from the stage table (pipeline/dag.py: commands, inputs, outputs,
# params, threads, resources), which also writes dvc.yaml: validate -> prepare -> evaluator ->
# reference; per grid cell train -> curves and train -> sample -> evaluate, then aggregate ->
# plot; the sampler study samples trained cells once per (cell, sampler, NFE) of
# `sampler_study` and ends in sampler_table. All settings live in params.yaml, validated here
# before any job runs (with `--config`/`--configfile` values on top, which the stages then read
# too: pipeline/workflow.py). `--config experiment=NAME` runs configs/NAME.yaml's experiment
# from its folder experiments/NAME/ (pipeline/experiments.py). Each rule's `params:` names
# every section it depends on, transitively (sampling and scoring depend on the cell's
# training settings), and `rule all`
# asks for every artifact, so a missing or corrupt intermediate is remade. Every artifact
# records its fingerprint; aggregate and sampler_table refuse stale inputs
# (pipeline/provenance.py). GPUs, bf16, DDP and SLURM are params and profile settings
# (configs/cifar10.yaml, profiles/slurm), never other rules.
import sys

from snakemake_interface_executor_plugins.settings import ExecMode

from pipeline import dag, workflow as glue
from pipeline.params import ParamsError, Paths, validate_once
from pipeline.provenance import stage_code

try:  # every mistake is one line, before any job runs (cached while nothing changes)
    settings = workflow.config_settings
    EXPERIMENT = (settings.overwrite_config or {}).get("experiment")  # --config experiment=NAME
    PARAMS_FILE, effective = glue.effective_params(settings.configfiles, settings.overwrite_config, settings.config)
    validate_once(PARAMS_FILE)
except ParamsError as err:
    sys.exit(err.report())
config.clear()
config.update(effective)

# Every path is built from the experiment's folders (params.yaml `paths:`), so that each
# experiment keeps its outputs beside the others'.
PATHS = {**vars(Paths()), **config.get("paths", {})}


CELLS = list(config["cells"])
STUDY = config["sampler_study"]
ARTIFACTS = dag.artifacts(PATHS, config)
if workflow.exec_mode == ExecMode.DEFAULT and not workflow.touch:  # not inside a cluster job
    glue.remove_corrupt([*ARTIFACTS, f"{PATHS['runs']}/reference"])
    glue.age_edited(ARTIFACTS)
    glue.age_stale_unrecorded(PARAMS_FILE, {c: f"{PATHS['results']}/metrics/{c}.json" for c in CELLS}, PATHS["runs"])


onsuccess:
    glue.record_in_dvc(PARAMS_FILE, [sys.executable, "-m", "snakemake", "--cores", "1",
                                     *(["--config", f"experiment={EXPERIMENT}"] if EXPERIMENT else [])],
                       [PATHS[k] for k in ("data", "runs", "results")])


report: "report/workflow.rst"


wildcard_constraints:
    cell="|".join(CELLS) or "NONE",
    sampler="|".join(STUDY["samplers"]) or "NONE",
    nfe=r"\d+",


def cell_labels(w):
    """Report labels of a cell: its parameterization, weighting and Sigma."""
    cell = config["cells"][w.cell]
    return {"cell": w.cell, "parameterization": cell["parameterization"],
            "weighting": cell["weighting"], "Sigma": cell.get("Sigma", "fixed_large")}


def outputs(name):
    """A stage's outputs, folders filled: directories marked, figures and tables in the report."""
    stage, made = dag.STAGE[name], {}
    for key, out in stage.outputs.items():
        path = dag.with_roots(out.path, PATHS)
        if out.directory:
            path = directory(path)
        elif out.report:
            caption, category = out.report
            labels = cell_labels if stage.over == "cells" else None
            path = report(path, caption=caption, category=category, labels=labels)
        made[key] = path
    return made


def inputs(name):
    return {"code": stage_code(dag.STAGE[name].command_module), **dag.snakemake_inputs(dag.STAGE[name], PATHS, config)}


def params(name):
    return dag.snakemake_params(dag.STAGE[name], config)


def logs(name):
    stage = dag.STAGE[name]
    return {key: directory(path) if key in stage.logs and stage.logs[key].directory else path
            for key, path in dag.snakemake_logs(stage, PATHS).items()}


def benchmark_of(name):
    return dag.snakemake_benchmark(dag.STAGE[name], PATHS)


def threads(name):
    return dag.STAGE[name].threads or 1


def resources(name):
    return {"mem_mb": dag.STAGE[name].mem_mb} if dag.STAGE[name].mem_mb else {}


def local(name):
    return dag.STAGE[name].local


def command(name):
    """The stage's shell command (evaluated again when the job runs, hence by name)."""
    return dag.snakemake_shell(dag.STAGE[name], PARAMS_FILE, PATHS)


localrules:
    all,


rule all:
    input:
        ARTIFACTS,


# One rule per stage of the table, each declaring exactly the table's entry; the stage's
# comment in dvc.yaml (and pipeline/dag.py) says what it does.
rule validate:
    input:
        **inputs("validate"),
    output:
        **outputs("validate"),
    params:
        **params("validate"),
    log:
        **logs("validate"),
    benchmark:
        benchmark_of("validate")
    threads: threads("validate")
    resources:
        **resources("validate"),
    localrule: local("validate")
    shell:
        command("validate")


rule prepare:
    input:
        **inputs("prepare"),
    output:
        **outputs("prepare"),
    params:
        **params("prepare"),
    log:
        **logs("prepare"),
    benchmark:
        benchmark_of("prepare")
    threads: threads("prepare")
    resources:
        **resources("prepare"),
    localrule: local("prepare")
    shell:
        command("prepare")


rule evaluator:
    input:
        **inputs("evaluator"),
    output:
        **outputs("evaluator"),
    params:
        **params("evaluator"),
    log:
        **logs("evaluator"),
    benchmark:
        benchmark_of("evaluator")
    threads: threads("evaluator")
    resources:
        **resources("evaluator"),
    localrule: local("evaluator")
    shell:
        command("evaluator")


rule reference:
    input:
        **inputs("reference"),
    output:
        **outputs("reference"),
    params:
        **params("reference"),
    log:
        **logs("reference"),
    benchmark:
        benchmark_of("reference")
    threads: threads("reference")
    resources:
        **resources("reference"),
    localrule: local("reference")
    shell:
        command("reference")


# Cacheable between workflows and projects (`--cache` with SNAKEMAKE_OUTPUT_CACHE, see
# docs/caching.md): a cell is trained once per distinct hash of the shell command template,
# these params, the contents of the input files that no job makes (the code files: an edit,
# even a comment, changes it) and the hashes of the jobs making the others (prepare's data).
# The id is a param because the hash takes the command unformatted, and it is written into
# the outputs. One output file (the `curves` rule writes the small results from it) and no
# `benchmark:`, which Snakemake forbids on a cached rule; train's time and peak memory are in
# its log; its log `live` holds dvclive's training metrics while it runs.
rule train:
    input:
        **inputs("train"),
    output:
        **outputs("train"),
    cache: True
    params:
        cell_id=lambda w: w.cell,
        **params("train"),
    log:
        **logs("train"),
    threads: threads("train")
    resources:
        **resources("train"),
    shell:
        command("train")


rule curves:
    input:
        **inputs("curves"),
    output:
        **outputs("curves"),
    params:
        **params("curves"),
    log:
        **logs("curves"),
    benchmark:
        benchmark_of("curves")
    threads: threads("curves")
    resources:
        **resources("curves"),
    localrule: local("curves")
    shell:
        command("curves")


rule sample:
    input:
        **inputs("sample"),
    output:
        **outputs("sample"),
    params:
        **params("sample"),
    log:
        **logs("sample"),
    benchmark:
        benchmark_of("sample")
    threads: threads("sample")
    resources:
        **resources("sample"),
    localrule: local("sample")
    shell:
        command("sample")


rule evaluate:
    input:
        **inputs("evaluate"),
    output:
        **outputs("evaluate"),
    params:
        **params("evaluate"),
    log:
        **logs("evaluate"),
    benchmark:
        benchmark_of("evaluate")
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    localrule: local("evaluate")
    shell:
        command("evaluate")


rule aggregate:
    input:
        **inputs("aggregate"),
    output:
        **outputs("aggregate"),
    params:
        **params("aggregate"),
    log:
        **logs("aggregate"),
    benchmark:
        benchmark_of("aggregate")
    threads: threads("aggregate")
    resources:
        **resources("aggregate"),
    localrule: local("aggregate")
    shell:
        command("aggregate")


rule plot:
    input:
        **inputs("plot"),
    output:
        **outputs("plot"),
    params:
        **params("plot"),
    log:
        **logs("plot"),
    benchmark:
        benchmark_of("plot")
    threads: threads("plot")
    resources:
        **resources("plot"),
    localrule: local("plot")
    shell:
        command("plot")


rule sampler_study:
    input:
        **inputs("sampler_study"),
    output:
        **outputs("sampler_study"),
    params:
        **params("sampler_study"),
    log:
        **logs("sampler_study"),
    benchmark:
        benchmark_of("sampler_study")
    threads: threads("sampler_study")
    resources:
        **resources("sampler_study"),
    localrule: local("sampler_study")
    shell:
        command("sampler_study")


rule sampler_table:
    input:
        **inputs("sampler_table"),
    output:
        **outputs("sampler_table"),
    params:
        **params("sampler_table"),
    log:
        **logs("sampler_table"),
    benchmark:
        benchmark_of("sampler_table")
    threads: threads("sampler_table")
    resources:
        **resources("sampler_table"),
    localrule: local("sampler_table")
    shell:
        command("sampler_table")
