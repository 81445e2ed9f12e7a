# The experiment DAG (the same as dvc.yaml): prepare -> evaluator -> reference, and per grid
# cell train -> curves and train -> sample -> evaluate, then aggregate -> plot; the sampler study
# samples trained cells once per (cell, sampler, NFE) of `sampler_study` and ends in
# sampler_table. All settings live in params.yaml, validated here before any job runs; each
# rule's `params:` names only the sections it uses, so a change reruns only what depends on
# it. Torch threads follow each rule's `threads` (Snakemake exports them as OMP_NUM_THREADS).
# GPUs, bf16, DDP and SLURM are params and profile settings (configs/cifar10.yaml,
# profiles/slurm), never other rules.
import sys
from glob import glob

from pipeline.params import ParamsError, Paths, validate_once

configfile: "params.yaml"

try:  # every mistake is one line, before any job runs (cached while nothing changes)
    validate_once("params.yaml")
except ParamsError as err:
    sys.exit(f"error: {err}")

# Every path is built from the experiment's folders (params.yaml `paths:`), so that each
# experiment keeps its outputs beside the others'.
PATHS = {**vars(Paths()), **config.get("paths", {})}


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

report: "report/workflow.rst"


def cell_labels(w):
    """Report labels of a cell: its parameterization, weighting and Sigma."""
    cell = config["cells"][w.cell]
    return {"cell": w.cell, "parameterization": cell["parameterization"],
            "weighting": cell["weighting"], "Sigma": cell.get("sigma", "fixed_large")}


# Code dependencies as files: a directory's mtime misses edits inside it.
DIFFUSION = sorted(glob("diffusion/**/*.py", recursive=True))
COMMON = ["pipeline/params.py", "pipeline/io.py"]


wildcard_constraints:
    cell="|".join(CELLS) or "NONE",
    sampler="|".join(STUDY["samplers"]) or "NONE",
    nfe=r"\d+",


# Under a cluster executor (profiles/slurm) these run on the submitting host: they are light,
# and prepare/evaluator may need the network (CIFAR-10, Inception weights) that nodes lack.
localrules:
    all,
    prepare,
    evaluator,
    curves,
    aggregate,
    plot,


rule all:
    input:
        results("table.md"),
        results("plots/fid_heatmap.png"),
        results("sampler_table.md"),


rule prepare:
    input:
        "pipeline/prepare.py",
        "pipeline/data.py",
        COMMON,
    output:
        train=data("train.pt"),
        heldout=data("heldout.pt"),
    params:
        data=config["data"],
    log:
        logs("prepare.log"),
    benchmark:
        logs("benchmarks/prepare.tsv"),
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "python -m pipeline.prepare --train {output.train} --heldout {output.heldout} 2> {log}"


rule evaluator:
    input:
        "pipeline/evaluator.py",
        "pipeline/fidelity.py",
        "pipeline/inception.py",
        COMMON,
        train=data("train.pt"),
        heldout=data("heldout.pt"),
    output:
        weights=runs("evaluator.pt"),
        metrics=results("evaluator.json"),
    params:
        evaluator=config["evaluator"],
        feature_extractor=config["metrics"].get("feature_extractor", "classifier"),
        inception_weights=config["metrics"].get("inception_weights"),
    log:
        logs("evaluator.log"),
    benchmark:
        logs("benchmarks/evaluator.tsv"),
    threads: 2
    resources:
        mem_mb=1000,
    shell:
        "python -m pipeline.evaluator --train {input.train} --heldout {input.heldout}"
        " --out {output.weights} --metrics {output.metrics} 2> {log}"


rule reference:
    input:
        "pipeline/reference.py",
        "pipeline/fidelity.py",
        "pipeline/stats.py",
        "pipeline/accel.py",
        "pipeline/distances.py",
        "pipeline/data.py",
        COMMON,
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
    output:
        cache=directory(runs("reference")),
        metrics=results("reference.json"),
    params:
        metrics=config["metrics"],
        num_samples=config["sample"]["num_samples"],
    log:
        logs("reference.log"),
    benchmark:
        logs("benchmarks/reference.tsv"),
    threads: 2
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.reference --train {input.train} --heldout {input.heldout}"
        " --evaluator {input.evaluator} --cache-dir {output.cache} --out {output.metrics} 2> {log}"


# Cacheable between workflows and projects (`--cache` with SNAKEMAKE_OUTPUT_CACHE, see
# README): a cell is trained once per distinct hash of the shell command template, these
# params, the contents of the input files that no job makes (the code files below: an edit,
# even a comment, changes it) and the hashes of the jobs making the others (prepare's
# data). The id is a param because the hash takes the command unformatted, and it is
# written into the outputs. One output file (the `curves` rule writes the small results
# from it) and no `benchmark:`, which Snakemake forbids on a cached rule; train's seconds
# and peak memory are in its summary.
rule train:
    input:
        "pipeline/train.py",
        "pipeline/accel.py",
        "pipeline/build.py",
        "pipeline/data.py",
        COMMON,
        DIFFUSION,
        data=data("train.pt"),
    output:
        model=runs("train/{cell}.pt"),
    cache: True
    params:
        cell_id=lambda w: w.cell,
        cell=lambda w: config["cells"][w.cell],
        train=config["train"],
        model=config["model"],
        process=config["process"],
        data=config["data"],
    log:  # live: dvclive's training metrics while it runs (README, "DVC experiments and live metrics")
        stderr=logs("train/{cell}.log"),
        live=directory(logs("live/{cell}")),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.train --cell {wildcards.cell} --data {input.data}"
        " --out {output.model} --checkpoint " + runs("checkpoints/{wildcards.cell}.pt")
        + " --live {log.live} 2> {log.stderr}"


rule curves:
    input:
        "pipeline/curves.py",
        "pipeline/io.py",
        model=runs("train/{cell}.pt"),
    output:
        losses=results("train/{cell}/losses.csv"),
        profile=results("train/{cell}/profile.csv"),
        summary=results("train/{cell}/summary.json"),
    log:
        logs("curves/{cell}.log"),
    benchmark:
        logs("benchmarks/curves/{cell}.tsv"),
    threads: 1
    shell:
        "python -m pipeline.curves --model {input.model} --losses {output.losses}"
        " --profile {output.profile} --summary {output.summary} 2> {log}"


rule sample:
    input:
        "pipeline/sample.py",
        "pipeline/accel.py",
        "pipeline/build.py",
        "pipeline/data.py",
        COMMON,
        DIFFUSION,
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
        sample=config["sample"],
    log:
        logs("sample/{cell}.log"),
    benchmark:
        logs("benchmarks/sample/{cell}.tsv"),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.sample --model {input.model} --data {input.data}"
        " --out {output.samples} --grid {output.grid} 2> {log}"


rule evaluate:
    input:
        "pipeline/evaluate.py",
        "pipeline/fidelity.py",
        "pipeline/reference.py",
        "pipeline/stats.py",
        "pipeline/sample.py",
        "pipeline/accel.py",
        "pipeline/distances.py",
        "pipeline/provenance.py",
        "pipeline/build.py",
        "pipeline/data.py",
        COMMON,
        DIFFUSION,
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
        metrics=config["metrics"],
        sample=config["sample"],
    log:
        logs("evaluate/{cell}.log"),
    benchmark:
        logs("benchmarks/evaluate/{cell}.tsv"),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.evaluate --cell {wildcards.cell} --model {input.model}"
        " --samples {input.samples} --train {input.train} --heldout {input.heldout}"
        " --evaluator {input.evaluator} --reference {input.reference}"
        " --cache-dir {input.cache} --out {output.metrics} 2> {log}"


rule aggregate:
    input:
        "pipeline/aggregate.py",
        "pipeline/stats.py",
        COMMON,
        metrics=expand(results("metrics/{cell}.json"), cell=CELLS),
        reference=results("reference.json"),
    output:
        csv=results("metrics.csv"),
        summary=results("summary.csv"),
        markdown=report(results("table.md"), caption="report/table.rst", category="Table"),
        latex=results("table.tex"),
    params:
        cells=config["cells"],
        sample=config["sample"],
        metrics=config["metrics"],
        stats=config["stats"],
    log:
        logs("aggregate.log"),
    benchmark:
        logs("benchmarks/aggregate.tsv"),
    threads: 1
    shell:
        "python -m pipeline.aggregate --metrics-dir " + results("metrics") + " --reference {input.reference}"
        " --csv {output.csv} --summary {output.summary} --markdown {output.markdown}"
        " --latex {output.latex} 2> {log}"


rule plot:
    input:
        "pipeline/plot.py",
        COMMON,
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
        cells=config["cells"],
    log:
        logs("plot.log"),
    benchmark:
        logs("benchmarks/plot.tsv"),
    threads: 1
    shell:
        "python -m pipeline.plot --metrics {input.metrics} --summary {input.summary}"
        " --reference {input.reference} --train-dir " + results("train")
        + " --samples-dir " + results("samples") + " --out-dir " + results("plots") + " 2> {log}"


rule sampler_study:
    input:
        "pipeline/sampler_study.py",
        "pipeline/sample.py",
        "pipeline/evaluate.py",
        "pipeline/fidelity.py",
        "pipeline/distances.py",
        "pipeline/accel.py",
        "pipeline/provenance.py",
        "pipeline/reference.py",
        "pipeline/stats.py",
        "pipeline/build.py",
        "pipeline/data.py",
        COMMON,
        DIFFUSION,
        model=runs("train/{cell}.pt"),
        train=data("train.pt"),
        heldout=data("heldout.pt"),
        evaluator=runs("evaluator.pt"),
        reference=results("reference.json"),
        cache=runs("reference"),
    output:
        metrics=results("sampler_study/{cell}/{sampler}-{nfe}.json"),
    params:
        study={k: config["sampler_study"][k] for k in ("num_samples", "seed")},
        sample=config["sample"],
        metrics=config["metrics"],
    log:
        logs("sampler_study/{cell}/{sampler}-{nfe}.log"),
    benchmark:
        logs("benchmarks/sampler_study/{cell}/{sampler}-{nfe}.tsv"),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.sampler_study --cell {wildcards.cell} --sampler {wildcards.sampler}"
        " --nfe {wildcards.nfe} --model {input.model} --train {input.train} --heldout {input.heldout}"
        " --evaluator {input.evaluator} --reference {input.reference} --cache-dir {input.cache}"
        " --out {output.metrics} 2> {log}"


rule sampler_table:
    input:
        "pipeline/sampler_table.py",
        COMMON,
        points=STUDY_POINTS,
        reference=results("reference.json"),
    output:
        csv=results("sampler_table.csv"),
        markdown=results("sampler_table.md"),
        plot=results("plots/sampler_study.png"),
    params:
        sampler_study=config["sampler_study"],
    log:
        logs("sampler_table.log"),
    benchmark:
        logs("benchmarks/sampler_table.tsv"),
    threads: 1
    shell:
        "python -m pipeline.sampler_table --study-dir " + results("sampler_study") + " --reference {input.reference}"
        " --csv {output.csv} --markdown {output.markdown} --plot {output.plot} 2> {log}"
