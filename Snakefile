# The experiment DAG, built from the stage table (pipeline/dag.py: commands, inputs, outputs,
# params, threads, resources), which also writes dvc.yaml: validate -> prepare -> evaluator ->
# reference; per grid cell train -> curves and train -> sample -> evaluate, then aggregate ->
# plot; the sampler study samples trained cells once per (cell, sampler, NFE) of
# `sampler_study` and ends in sampler_table. All settings live in params.yaml, validated here
# before any job runs (with `--config`/`--configfile` values on top, which the stages then read
# too: pipeline/workflow.py). Each rule's `params:` names every section it depends on,
# transitively (sampling and scoring depend on the cell's training settings), and `rule all`
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
    PARAMS_FILE, effective = glue.effective_params(settings.configfiles, settings.overwrite_config, settings.config)
    validate_once(PARAMS_FILE)
except ParamsError as err:
    sys.exit(f"error: {err}")
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
    glue.record_in_dvc(PARAMS_FILE, [sys.executable, "-m", "snakemake", "--cores", "1"],
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
            "weighting": cell["weighting"], "Sigma": cell.get("sigma", "fixed_large")}


def outputs(stage):
    """A stage's outputs, folders filled: directories marked, figures and tables in the report."""
    made = {}
    for name, out in stage.outputs.items():
        path = dag.with_roots(out.path, PATHS)
        if out.directory:
            path = directory(path)
        elif out.report:
            caption, category = out.report
            labels = cell_labels if stage.over == "cells" else None
            path = report(path, caption=caption, category=category, labels=labels)
        made[name] = path
    return made


def logs(stage):
    return {name: directory(path) if name in stage.logs and stage.logs[name].directory else path
            for name, path in dag.snakemake_logs(stage, PATHS).items()}


def resources(stage):
    return {"mem_mb": stage.mem_mb} if stage.mem_mb else {}


localrules:
    all,


rule all:
    input:
        ARTIFACTS,


# Every stage from the table, except train (below: its outputs are cached between workflows).
for stage in dag.STAGES:
    if stage.cache:
        continue

    rule:
        name:
            stage.name
        input:
            stage_code(stage.command_module),
            **dag.snakemake_inputs(stage, PATHS, config),
        output:
            **outputs(stage),
        params:
            **dag.snakemake_params(stage, config),
        log:
            **logs(stage),
        benchmark:
            dag.snakemake_benchmark(stage, PATHS)
        threads: stage.threads or 1
        resources:
            **resources(stage),
        localrule: stage.local
        shell:
            dag.snakemake_shell(stage, PARAMS_FILE, PATHS)


# Cacheable between workflows and projects (`--cache` with SNAKEMAKE_OUTPUT_CACHE, see
# docs/caching.md): a cell is trained once per distinct hash of the shell command template, these
# params, the contents of the input files that no job makes (the code files: an edit, even a
# comment, changes it) and the hashes of the jobs making the others (prepare's data). The id
# is a param because the hash takes the command unformatted, and it is written into the
# outputs. One output file (the `curves` rule writes the small results from it) and no
# `benchmark:`, which Snakemake forbids on a cached rule; train's time and peak memory are in
# its log.
TRAIN = dag.STAGE["train"]


rule train:
    input:
        stage_code(TRAIN.command_module),
        **dag.snakemake_inputs(TRAIN, PATHS, config),
    output:
        **outputs(TRAIN),
    cache: True
    params:
        cell_id=lambda w: w.cell,
        **dag.snakemake_params(TRAIN, config),
    log:  # live: dvclive's training metrics while it runs (docs/workflow.md, "DVC experiments and live metrics")
        **logs(TRAIN),
    threads: TRAIN.threads
    resources:
        **resources(TRAIN),
    shell:
        dag.snakemake_shell(TRAIN, PARAMS_FILE, PATHS)
