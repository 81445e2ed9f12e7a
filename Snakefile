# The experiment DAG, built from the stage table (pipeline/dag.py, which also writes dvc.yaml
# and says what each stage does). Settings live in params.yaml, validated here before any job
# runs, with `--config`/`--configfile` values on top (pipeline/workflow.py); `--config
# experiment=NAME` runs configs/NAME.yaml from experiments/NAME/ (pipeline/experiments.py).
# `rule all` asks for every artifact, so a missing or corrupt intermediate is remade; every
# artifact records its fingerprint, and aggregate and sampler_table refuse stale inputs
# (pipeline/provenance.py). GPUs, bf16, DDP and SLURM are params and profile settings.
import sys

from snakemake_interface_executor_plugins.settings import ExecMode

from pipeline import dag, workflow as glue
from pipeline import dag_snakemake
from pipeline.params import ParamsError, Paths, validate_once

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
ARTIFACTS = dag_snakemake.artifacts(PATHS, config)
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


localrules:
    all,


rule all:
    input:
        ARTIFACTS,


# One rule per stage of the table, each declaring exactly the table's entry (evaluated here,
# once per stage); the stage's comment in dvc.yaml (and pipeline/dag.py) says what it does.
RULES = {stage.name: dag_snakemake.rule(stage.name, PATHS, config, PARAMS_FILE) for stage in dag.STAGES}

for name, parts in RULES.items():
    if dag.STAGE[name].cache:
        continue  # train, below: Snakemake's output cache makes it special

    rule:
        name:
            name
        input:
            **parts["input"],
        output:
            **parts["output"],
        params:
            **parts["params"],
        log:
            **parts["log"],
        benchmark:
            parts["benchmark"]
        threads: parts["threads"]
        resources:
            **parts["resources"],
        localrule: parts["local"]
        shell:  # read now (this stage: `name`) and again when a job runs, after the loop,
            # where Snakemake passes the job's rule name as `rule`
            RULES[locals().get("rule", name)]["shell"]


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
        **RULES["train"]["input"],
    output:
        **RULES["train"]["output"],
    cache: True
    params:
        cell_id=lambda w: w.cell,
        **RULES["train"]["params"],
    log:
        **RULES["train"]["log"],
    threads: RULES["train"]["threads"]
    resources:
        **RULES["train"]["resources"],
    shell:
        RULES["train"]["shell"]
