# The experiment DAG (the same as dvc.yaml): prepare -> evaluator -> reference, and per grid
# cell train -> curves and train -> sample -> evaluate, then aggregate -> plot; the sampler study
# samples trained cells once per (cell, sampler, NFE) of `sampler_study` and ends in
# sampler_table. All settings live in params.yaml, validated here before any job runs (with
# `--config`/`--configfile` values on top, which the stages then read too: pipeline/workflow.py).
# Each rule's `params:` names every section it depends on, transitively (sampling and scoring
# depend on the cell's training settings), and `rule all` asks for every artifact, so a missing
# or corrupt intermediate is remade. Each stage pins its own torch threads (pipeline/dag.py),
# the same under DVC. Every artifact records its fingerprint; aggregate and sampler_table
# refuse stale inputs (pipeline/provenance.py). GPUs, bf16, DDP and SLURM are params and
# profile settings (configs/cifar10.yaml, profiles/slurm), never other rules.
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


def command(stage, args, **paths):
    """A stage's shell command: every stage reads the params Snakemake planned with. `paths`
    fill `<name>` placeholders in `args` (folders from params.yaml `paths:`)."""
    for name, path in paths.items():
        args = args.replace(f"<{name}>", path)
    return f"python -m pipeline.{stage} --params {PARAMS_FILE} {args}"


def data(path):
    return f"{PATHS['data']}/{path}"


def runs(path):
    return f"{PATHS['runs']}/{path}"


def results(path):
    return f"{PATHS['results']}/{path}"


def logs(path):
    return f"{PATHS['logs']}/{path}"


CELLS = list(config["cells"])
STUDY = config["sampler_study"]
STUDY_POINTS = expand(results("sampler_study/{cell}/{sampler}-{nfe}.json"),
                      cell=STUDY["cells"], sampler=STUDY["samplers"], nfe=STUDY["nfe"])
PLOTS = ("fid_heatmap", "fid_spread", "memorization", "loss_curves", "loss_profile", "samples", "uncertainty")
CELL_ARTIFACTS = [runs("train/{cell}.pt"), results("train/{cell}/losses.csv"), results("train/{cell}/profile.csv"),
                  results("train/{cell}/summary.json"), runs("samples/{cell}.pt"), results("samples/{cell}.png"),
                  results("metrics/{cell}.json")]
# Every artifact: Snakemake does not remake a missing intermediate whose downstream files
# exist, so all of them are targets.
ARTIFACTS = [runs("params.valid"), data("train.pt"), data("heldout.pt"), runs("evaluator.pt"),
             results("evaluator.json"), results("reference.json"), *expand(CELL_ARTIFACTS, cell=CELLS),
             *STUDY_POINTS, results("metrics.csv"), results("summary.csv"), results("table.md"),
             results("table.tex"), *expand(results("plots/{name}.png"), name=PLOTS), results("sampler_table.md"),
             results("sampler_table.csv"), results("plots/sampler_study.png")]
if workflow.exec_mode == ExecMode.DEFAULT and not workflow.touch:  # not inside a cluster job
    glue.remove_corrupt([*ARTIFACTS, runs("reference")])
    glue.age_edited(ARTIFACTS)
    glue.age_stale_unrecorded(PARAMS_FILE, {c: results(f"metrics/{c}.json") for c in CELLS}, PATHS["runs"])


onsuccess:
    glue.record_in_dvc(PARAMS_FILE, [sys.executable, "-m", "snakemake", "--cores", "1"],
                       [PATHS[k] for k in ("data", "runs", "results")])


report: "report/workflow.rst"


def cell_labels(w):
    """Report labels of a cell: its parameterization, weighting and Sigma."""
    cell = config["cells"][w.cell]
    return {"cell": w.cell, "parameterization": cell["parameterization"],
            "weighting": cell["weighting"], "Sigma": cell.get("sigma", "fixed_large")}


def sections(*names):
    return {name: config[name] for name in names}


def trained(w):
    """What a cell's model depends on: every artifact made from it declares these too."""
    return {"cell": config["cells"][w.cell], **sections("train", "model", "process", "data")}


# What the shared scores depend on: the evaluator (trained on the data) and the metrics.
SCORING = ("data", "evaluator", "metrics", "sample")
# Everything a table row depends on: every cell's training, sampling and scoring.
GRID = ("cells", "train", "model", "process", *SCORING)


wildcard_constraints:
    cell="|".join(CELLS) or "NONE",
    sampler="|".join(STUDY["samplers"]) or "NONE",
    nfe=r"\d+",


# Under a cluster executor (profiles/slurm) these run on the submitting host: they are light,
# and prepare/evaluator may need the network (CIFAR-10, Inception weights) that nodes lack.
localrules:
    all,
    validate,
    prepare,
    evaluator,
    curves,
    aggregate,
    plot,


rule all:
    input:
        ARTIFACTS,


# DVC's first stage (every stage depends on it there, so that a bad param stops `dvc repro`
# before it removes any output); here the Snakefile validates before planning, and the rule
# only makes the same file.
rule validate:
    input:
        stage_code("params"),
    output:
        runs("params.valid"),
    params:
        **config,
    log:
        logs("validate.log"),
    threads: 1
    shell:
        command("params", "--stamp {output} 2> {log}")


rule prepare:
    input:
        stage_code("prepare"),
    output:
        train=data("train.pt"),
        heldout=data("heldout.pt"),
    params:
        data=config["data"],
    log:
        logs("prepare.log"),
    benchmark:
        logs("benchmarks/prepare.tsv"),
    threads: dag.threads("prepare")
    resources:
        mem_mb=1000,
    shell:
        command("prepare", "--train {output.train} --heldout {output.heldout} 2> {log}")


rule evaluator:
    input:
        stage_code("evaluator"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
    output:
        weights=runs("evaluator.pt"),
        metrics=results("evaluator.json"),
    params:
        **sections("data", "evaluator", "metrics"),
    log:
        logs("evaluator.log"),
    benchmark:
        logs("benchmarks/evaluator.tsv"),
    threads: dag.threads("evaluator")
    resources:
        mem_mb=1000,
    shell:
        command(
            "evaluator",
            "--train {input.train} --heldout {input.heldout}"
            " --out {output.weights} --metrics {output.metrics} 2> {log}",
        )


rule reference:
    input:
        stage_code("reference"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
    output:
        cache=directory(runs("reference")),
        metrics=results("reference.json"),
    params:
        **sections(*SCORING),
    log:
        logs("reference.log"),
    benchmark:
        logs("benchmarks/reference.tsv"),
    threads: dag.threads("reference")
    resources:
        mem_mb=2000,
    shell:
        command(
            "reference",
            "--train {input.train} --heldout {input.heldout}"
            " --evaluator {input.evaluator} --cache-dir {output.cache} --out {output.metrics} 2> {log}",
        )


# Cacheable between workflows and projects (`--cache` with SNAKEMAKE_OUTPUT_CACHE, see
# README): a cell is trained once per distinct hash of the shell command template, these
# params, the contents of the input files that no job makes (the code files: an edit, even a
# comment, changes it) and the hashes of the jobs making the others (prepare's data). The id
# is a param because the hash takes the command unformatted, and it is written into the
# outputs. One output file (the `curves` rule writes the small results from it) and no
# `benchmark:`, which Snakemake forbids on a cached rule; train's time and peak memory are in
# its log.
rule train:
    input:
        stage_code("train"),
        data=data("train.pt"),
    output:
        model=runs("train/{cell}.pt"),
    cache: True
    params:
        cell_id=lambda w: w.cell,
        trained=trained,
    log:  # live: dvclive's training metrics while it runs (README, "DVC experiments and live metrics")
        stderr=logs("train/{cell}.log"),
        live=directory(logs("live/{cell}")),
    threads: dag.threads("train")
    resources:
        mem_mb=2000,
    shell:
        command(
            "train",
            "--cell {wildcards.cell} --data {input.data} --out {output.model}"
            " --checkpoint <checkpoint> --live {log.live} 2> {log.stderr}",
            checkpoint=runs("checkpoints/{wildcards.cell}.pt"),
        )


rule curves:
    input:
        stage_code("curves"),
        model=runs("train/{cell}.pt"),
    output:
        losses=results("train/{cell}/losses.csv"),
        profile=results("train/{cell}/profile.csv"),
        summary=results("train/{cell}/summary.json"),
    params:
        trained=trained,
    log:
        logs("curves/{cell}.log"),
    benchmark:
        logs("benchmarks/curves/{cell}.tsv"),
    threads: dag.threads("curves")
    shell:
        "python -m pipeline.curves --model {input.model} --losses {output.losses}"
        " --profile {output.profile} --summary {output.summary} 2> {log}"


rule sample:
    input:
        stage_code("sample"),
        model=runs("train/{cell}.pt"),
        data=data("train.pt"),
    output:
        samples=runs("samples/{cell}.pt"),
        grid=report(
            results("samples/{cell}.png"),
            caption="report/samples.rst",
            category="Samples",
            labels=cell_labels,
        ),
    params:
        trained=trained,
        sample=config["sample"],
    log:
        logs("sample/{cell}.log"),
    benchmark:
        logs("benchmarks/sample/{cell}.tsv"),
    threads: dag.threads("sample")
    resources:
        mem_mb=2000,
    shell:
        command(
            "sample",
            "--model {input.model} --data {input.data}"
            " --out {output.samples} --grid {output.grid} 2> {log}",
        )


rule evaluate:
    input:
        stage_code("evaluate"),
        model=runs("train/{cell}.pt"),
        samples=runs("samples/{cell}.pt"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
        reference=results("reference.json"),
        cache=runs("reference"),
    output:
        metrics=results("metrics/{cell}.json"),
    params:
        trained=trained,
        **sections(*SCORING),
    log:
        logs("evaluate/{cell}.log"),
    benchmark:
        logs("benchmarks/evaluate/{cell}.tsv"),
    threads: dag.threads("evaluate")
    resources:
        mem_mb=2000,
    shell:
        command(
            "evaluate",
            "--cell {wildcards.cell} --model {input.model}"
            " --samples {input.samples} --train {input.train} --heldout {input.heldout}"
            " --evaluator {input.evaluator} --reference {input.reference}"
            " --cache-dir {input.cache} --out {output.metrics} 2> {log}",
        )


rule aggregate:
    input:
        stage_code("aggregate"),
        metrics=expand(results("metrics/{cell}.json"), cell=CELLS),
        reference=results("reference.json"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
        evaluator_metrics=results("evaluator.json"),
    output:
        csv=results("metrics.csv"),
        summary=results("summary.csv"),
        markdown=report(results("table.md"), caption="report/table.rst", category="Table"),
        latex=results("table.tex"),
    params:
        **sections(*GRID, "stats"),
    log:
        logs("aggregate.log"),
    benchmark:
        logs("benchmarks/aggregate.tsv"),
    threads: dag.threads("aggregate")
    shell:
        command(
            "aggregate",
            "--metrics-dir <metrics> --reference {input.reference} --train {input.train} --heldout {input.heldout}"
            " --evaluator {input.evaluator} --evaluator-metrics {input.evaluator_metrics}"
            " --csv {output.csv} --summary {output.summary} --markdown {output.markdown}"
            " --latex {output.latex} 2> {log}",
            metrics=results("metrics"),
        )


rule plot:
    input:
        stage_code("plot"),
        metrics=results("metrics.csv"),
        summary=results("summary.csv"),
        reference=results("reference.json"),
        losses=expand(results("train/{cell}/losses.csv"), cell=CELLS),
        grids=expand(results("samples/{cell}.png"), cell=CELLS),
    output:
        heatmap=report(results("plots/fid_heatmap.png"), caption="report/fid_heatmap.rst", category="Grid"),
        spread=report(results("plots/fid_spread.png"), caption="report/fid_spread.rst", category="Grid"),
        memorization=report(results("plots/memorization.png"), caption="report/memorization.rst", category="Grid"),
        curves=report(results("plots/loss_curves.png"), caption="report/loss_curves.rst", category="Training"),
        profile=report(results("plots/loss_profile.png"), caption="report/loss_profile.rst", category="Training"),
        samples=report(results("plots/samples.png"), caption="report/samples_panel.rst", category="Grid"),
        uncertainty=report(results("plots/uncertainty.png"), caption="report/uncertainty.rst", category="Training"),
    params:
        **sections(*GRID, "stats"),
    log:
        logs("plot.log"),
    benchmark:
        logs("benchmarks/plot.tsv"),
    threads: dag.threads("plot")
    shell:
        command(
            "plot",
            "--metrics {input.metrics} --summary {input.summary}"
            " --reference {input.reference} --train-dir <train> --samples-dir <samples> --out-dir <plots> 2> {log}",
            train=results("train"),
            samples=results("samples"),
            plots=results("plots"),
        )


rule sampler_study:
    input:
        stage_code("sampler_study"),
        model=runs("train/{cell}.pt"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
        reference=results("reference.json"),
        cache=runs("reference"),
    output:
        metrics=results("sampler_study/{cell}/{sampler}-{nfe}.json"),
    params:
        trained=trained,
        study={k: config["sampler_study"][k] for k in ("num_samples", "seed")},
        **sections(*SCORING),
    log:
        logs("sampler_study/{cell}/{sampler}-{nfe}.log"),
    benchmark:
        logs("benchmarks/sampler_study/{cell}/{sampler}-{nfe}.tsv"),
    threads: dag.threads("sampler_study")
    resources:
        mem_mb=2000,
    shell:
        command(
            "sampler_study",
            "--cell {wildcards.cell} --sampler {wildcards.sampler}"
            " --nfe {wildcards.nfe} --model {input.model} --train {input.train} --heldout {input.heldout}"
            " --evaluator {input.evaluator} --reference {input.reference} --cache-dir {input.cache}"
            " --out {output.metrics} 2> {log}",
        )


rule sampler_table:
    input:
        stage_code("sampler_table"),
        points=STUDY_POINTS,
        reference=results("reference.json"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
        evaluator_metrics=results("evaluator.json"),
    output:
        csv=results("sampler_table.csv"),
        markdown=results("sampler_table.md"),
        plot=results("plots/sampler_study.png"),
    params:
        cells={c: config["cells"][c] for c in STUDY["cells"]},
        **sections("train", "model", "process", *SCORING, "sampler_study"),
    log:
        logs("sampler_table.log"),
    benchmark:
        logs("benchmarks/sampler_table.tsv"),
    threads: dag.threads("sampler_table")
    shell:
        command(
            "sampler_table",
            "--study-dir <study> --reference {input.reference} --train {input.train} --heldout {input.heldout}"
            " --evaluator {input.evaluator} --evaluator-metrics {input.evaluator_metrics}"
            " --csv {output.csv} --markdown {output.markdown} --plot {output.plot} 2> {log}",
            study=results("sampler_study"),
        )