"""The stage table: the one description of the experiment DAG. The Snakefile builds its rules
from it and `python -m pipeline.dag` writes dvc.yaml from it (tests/test_dag.py fails when the
committed dvc.yaml is not what it writes), so both tools run the same commands on the same
inputs and outputs, declare the same params, and pin the same torch threads.

    validate -> prepare -> evaluator -> reference
    per cell:  train -> curves,  train -> sample -> evaluate
    grid:      aggregate -> plot
    study:     per (cell, sampler, NFE) sampler_study -> sampler_table

Paths start with one of the experiment's folders from params.yaml `paths:` ({data}, {runs},
{results}, {logs}); {cell}, {sampler} and {nfe} are the grid's wildcards. Commands use
Snakemake's placeholders ({input.x}, {output.x}, {log.x}, {wildcards.x}); the DVC writer
substitutes the same paths. No stage imports this module: editing the DAG reruns nothing
unless a command, an input or a declared param changes.

This module is the table; `pipeline.dag_snakemake` gives the Snakefile each rule's parts and
`pipeline.dag_dvc` writes dvc.yaml (`python -m pipeline.dag`, below).
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOTS = ("data", "runs", "results", "logs")


@dataclass(frozen=True)
class Out:
    """An output. `kind`: "cached" (large, in DVC's cache, not in git), or committed to git
    (DVC `cache: false`) as a "result", a "metric" (JSON that `dvc metrics` reads) or a
    "plot" (an image, or a CSV drawn with `x` and `y`). DVC keeps a stage in its run cache
    only when every committed output is a metric or a plot."""

    path: str
    kind: str = "cached"
    x: str | None = None
    y: str | None = None
    directory: bool = False
    persist: bool = False
    report: tuple[str, str] | None = None  # Snakemake report: (caption file, category)


@dataclass(frozen=True)
class Each:
    """An input made once per cell (or study point): Snakemake lists every file, DVC the
    folder that holds them (a new cell needs no regenerated dvc.yaml)."""

    path: str
    folder: str
    over: str = "cells"


@dataclass(frozen=True)
class Stage:
    name: str
    args: str
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    # Params sections the stage depends on, transitively ("cell": the cell's own entry;
    # "study_cells": the studied cells' entries; "*": every param; dotted keys allowed).
    params: tuple = ()
    over: str | None = None  # None, "cells" (one job per cell) or "study" (per cell, sampler, NFE)
    threads: int | None = None  # pinned torch threads (`--threads`); None: the stage takes none
    mem_mb: int | None = None
    local: bool = False  # on the submitting host under a cluster executor
    reads_params: bool = True  # gets `--params`
    module: str | None = None  # python -m pipeline.<module> (default: the name)
    logs: dict = field(default_factory=dict)  # named logs besides stderr
    cache: bool = False  # Snakemake's between-workflow output cache
    dvc_inputs: tuple = ()  # inputs only DVC declares (see validate)
    comment: str = ""  # written above the stage in dvc.yaml

    @property
    def command_module(self):
        return self.module or self.name

    @property
    def wildcards(self):
        return {None: (), "cells": ("cell",), "study": ("cell", "sampler", "nfe")}[self.over]


TRAINED = ("cell", "train", "model", "process", "data")  # what a cell's model depends on
SCORING = ("data", "evaluator", "metrics", "sample")  # the shared scores: evaluator, reference
GRID = ("cells", "train", "model", "process", *SCORING, "stats")  # a table row: every cell

DATA = {"train": "{data}/train.pt", "heldout": "{data}/heldout.pt"}
EVALUATOR = {"evaluator": "{runs}/evaluator.pt", "reference": "{results}/reference.json"}
MODEL = "{runs}/train/{cell}.pt"
# The grid's figures: Snakemake report (caption, category) of each.
PLOTS = {"fid_heatmap": ("fid_heatmap", "Grid"), "fid_spread": ("fid_spread", "Grid"),
         "memorization": ("memorization", "Grid"), "loss_curves": ("loss_curves", "Training"),
         "loss_profile": ("loss_profile", "Training"), "samples": ("samples_panel", "Grid"),
         "uncertainty": ("uncertainty", "Training"), "fid_by_step": ("fid_by_step", "Training")}

# The published tables aggregate sets ours beside (pipeline/report/papers.py), as transcribed in papers/.
PAPER_TABLES = {"ddpm_table1": "papers/ddpm_2006.11239_table1_nll.csv",
                "ddpm_table2": "papers/ddpm_2006.11239_table2.csv",
                "min_snr_table1": "papers/minsnr_2303.09556_table1_unet.csv",
                "min_snr_table2": "papers/minsnr_2303.09556_table2_gamma.csv",
                "edm_table2": "papers/edm_2206.00364_table2.csv"}

STAGES = (
    Stage(
        "validate",
        "--stamp {output.stamp}",
        outputs={"stamp": Out("{runs}/params.valid", persist=True)},
        params=("*",),
        module="params",
        local=True,
        comment="Validates every param before any stage runs: prepare (and so every stage) depends on its\n"
                "stamp under DVC, so a bad param stops `dvc repro` here, before DVC removes any stage's\n"
                "outputs. The stamp's bytes never change, so a valid edit alone reruns nothing downstream;\n"
                "the Snakefile also validates before planning.",
    ),
    Stage(
        "prepare",
        "--train {output.train} --heldout {output.heldout}",
        outputs={"train": Out(DATA["train"]), "heldout": Out(DATA["heldout"])},
        params=("data",),
        mem_mb=1000,
        local=True,
        dvc_inputs=("{runs}/params.valid",),
    ),
    Stage(
        "evaluator",
        "--train {input.train} --heldout {input.heldout} --out {output.weights} --metrics {output.metrics}",
        inputs=DATA,
        outputs={"weights": Out("{runs}/evaluator.pt"), "metrics": Out("{results}/evaluator.json", "metric")},
        params=("data", "evaluator", "metrics"),
        threads=2,
        mem_mb=1000,
        local=True,
    ),
    Stage(
        "reference",
        "--train {input.train} --heldout {input.heldout} --evaluator {input.evaluator}"
        " --cache-dir {output.cache} --out {output.metrics}",
        inputs={**DATA, "evaluator": EVALUATOR["evaluator"]},
        outputs={"cache": Out("{runs}/reference", directory=True),
                 "metrics": Out("{results}/reference.json", "metric")},
        params=SCORING,
        threads=2,
        mem_mb=2000,
    ),
    Stage(
        "train",
        "--cell {wildcards.cell} --data {input.data} --out {output.model}"
        " --checkpoint {runs}/checkpoints/{wildcards.cell}.pt --live {log.live}",
        inputs={"data": DATA["train"]},
        outputs={"model": Out(MODEL)},
        params=TRAINED,
        over="cells",
        threads=1,
        mem_mb=2000,
        logs={"live": Out("{logs}/live/{cell}", directory=True)},
        cache=True,
    ),
    Stage(
        "curves",
        "--model {input.model} --losses {output.losses} --profile {output.profile} --summary {output.summary}",
        inputs={"model": MODEL},
        outputs={"losses": Out("{results}/train/{cell}/losses.csv", "plot", x="step", y="loss"),
                 "profile": Out("{results}/train/{cell}/profile.csv", "plot", x="t", y="loss"),
                 "summary": Out("{results}/train/{cell}/summary.json", "metric")},
        params=TRAINED,
        over="cells",
        local=True,
        reads_params=False,
    ),
    Stage(
        "sample",
        "--model {input.model} --data {input.data} --out {output.samples} --grid {output.grid}",
        inputs={"model": MODEL, "data": DATA["train"]},
        outputs={"samples": Out("{runs}/samples/{cell}.pt"),
                 "grid": Out("{results}/samples/{cell}.png", "plot", report=("report/samples.rst", "Samples"))},
        params=(*TRAINED, "sample"),
        over="cells",
        threads=1,
        mem_mb=2000,
    ),
    Stage(
        "evaluate",
        "--cell {wildcards.cell} --model {input.model} --samples {input.samples} --train {input.train}"
        " --heldout {input.heldout} --evaluator {input.evaluator} --reference {input.reference}"
        " --cache-dir {input.cache} --out {output.metrics}",
        inputs={"model": MODEL, "samples": "{runs}/samples/{cell}.pt", **DATA, **EVALUATOR,
                "cache": "{runs}/reference"},
        outputs={"metrics": Out("{results}/metrics/{cell}.json", "metric")},
        params=(*TRAINED, *SCORING),
        over="cells",
        threads=1,
        mem_mb=2000,
    ),
    Stage(
        "aggregate",
        "--metrics-dir {input.metrics} --reference {input.reference} --train {input.train}"
        " --heldout {input.heldout} --evaluator {input.evaluator} --evaluator-metrics {input.evaluator_metrics}"
        " --ddpm-table1 {input.ddpm_table1} --ddpm-table2 {input.ddpm_table2}"
        " --min-snr-table1 {input.min_snr_table1} --min-snr-table2 {input.min_snr_table2}"
        " --edm-table2 {input.edm_table2} --losses-dir {input.losses} --csv {output.csv} --summary {output.summary}"
        " --markdown {output.markdown} --latex {output.latex}",
        inputs={"metrics": Each("{results}/metrics/{cell}.json", "{results}/metrics"),
                "reference": EVALUATOR["reference"], **DATA, "evaluator": EVALUATOR["evaluator"],
                "evaluator_metrics": "{results}/evaluator.json", **PAPER_TABLES,
                "losses": Each("{results}/train/{cell}/losses.csv", "{results}/train"),
                "profiles": Each("{results}/train/{cell}/profile.csv", "{results}/train")},  # read from --losses-dir
        outputs={"csv": Out("{results}/metrics.csv", "result"), "summary": Out("{results}/summary.csv", "result"),
                 "markdown": Out("{results}/table.md", "result", report=("report/table.rst", "Table")),
                 "latex": Out("{results}/table.tex", "result")},
        params=GRID,
        local=True,
    ),
    Stage(
        "plot",
        "--metrics {input.metrics} --summary {input.summary} --reference {input.reference}"
        " --train-dir {input.losses} --samples-dir {input.grids} --out-dir {results}/plots",
        inputs={"metrics": "{results}/metrics.csv", "summary": "{results}/summary.csv",
                "reference": EVALUATOR["reference"],
                "losses": Each("{results}/train/{cell}/losses.csv", "{results}/train"),
                "grids": Each("{results}/samples/{cell}.png", "{results}/samples")},
        outputs={name: Out(f"{{results}}/plots/{name}.png", "plot", report=(f"report/{caption}.rst", category))
                 for name, (caption, category) in PLOTS.items()},
        params=GRID,
        local=True,
    ),
    Stage(
        "sampler_study",
        "--cell {wildcards.cell} --sampler {wildcards.sampler} --nfe {wildcards.nfe} --model {input.model}"
        " --train {input.train} --heldout {input.heldout} --evaluator {input.evaluator}"
        " --reference {input.reference} --cache-dir {input.cache} --out {output.metrics}",
        inputs={"model": MODEL, **DATA, **EVALUATOR, "cache": "{runs}/reference"},
        outputs={"metrics": Out("{results}/sampler_study/{cell}/{sampler}-{nfe}.json", "metric")},
        params=(*TRAINED, "sampler_study.num_samples", "sampler_study.seed", *SCORING),
        over="study",
        threads=1,
        mem_mb=2000,
    ),
    Stage(
        "sampler_table",
        "--study-dir {input.points} --reference {input.reference} --train {input.train} --heldout {input.heldout}"
        " --evaluator {input.evaluator} --evaluator-metrics {input.evaluator_metrics}"
        " --csv {output.csv} --markdown {output.markdown} --plot {output.plot}",
        inputs={"points": Each("{results}/sampler_study/{cell}/{sampler}-{nfe}.json", "{results}/sampler_study",
                               over="study"),
                "reference": EVALUATOR["reference"], **DATA, "evaluator": EVALUATOR["evaluator"],
                "evaluator_metrics": "{results}/evaluator.json"},
        outputs={"csv": Out("{results}/sampler_table.csv", "result"),
                 "markdown": Out("{results}/sampler_table.md", "result"),
                 "plot": Out("{results}/plots/sampler_study.png", "plot")},
        params=("study_cells", "train", "model", "process", *SCORING, "sampler_study"),
        local=True,
    ),
)
STAGE = {stage.name: stage for stage in STAGES}


def unique(items):
    return list(dict.fromkeys(items))


def with_roots(text, paths):
    """Fill the folder placeholders ({data}, {runs}, ...) with `paths`' values."""
    for root in ROOTS:
        text = text.replace(f"{{{root}}}", paths[root])
    return text


def command(stage, params_file):
    """The stage's command line, before the tool fills its placeholders."""
    parts = [f"python -m pipeline.{stage.command_module}"]
    if stage.reads_params:
        parts.append(f"--params {params_file}")
    if stage.threads is not None:
        parts.append(f"--threads {stage.threads}")
    return " ".join([*parts, stage.args])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write dvc.yaml (and every experiment folder's) from the stage table.")
    parser.add_argument("out", nargs="?", default="dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    args = parser.parse_args(argv)
    from . import experiments
    from .dag_dvc import dvc_yaml

    text, path = dvc_yaml(), Path(args.out)
    try:
        if args.check:
            if not path.exists() or path.read_text() != text:
                sys.exit(f"error: {path} is not what the stage table makes: run `python -m pipeline.dag {path}`")
            behind = [str(p) for name in experiments.with_folder() for p in experiments.stale(name)]
            if behind:
                sys.exit(f"error: {', '.join(behind)} not current: run `python -m pipeline.dag`")
            return
        path.write_text(text)
        print(f"wrote {path}")
        for name in experiments.with_folder():
            experiments.write(name)  # only what changed
    except experiments.ParamsError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
