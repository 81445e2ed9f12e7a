# Long: the stage table and both of its renderings (Snakemake's rule parts, dvc.yaml) in one place.
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
        " --edm-table2 {input.edm_table2} --csv {output.csv} --summary {output.summary}"
        " --markdown {output.markdown} --latex {output.latex}",
        inputs={"metrics": Each("{results}/metrics/{cell}.json", "{results}/metrics"),
                "reference": EVALUATOR["reference"], **DATA, "evaluator": EVALUATOR["evaluator"],
                "evaluator_metrics": "{results}/evaluator.json", **PAPER_TABLES},
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


# ---- Snakemake: what a rule declares (the Snakefile wraps outputs in report()/directory()) ----

def study_points(config):
    study = config["sampler_study"]
    return [{"cell": c, "sampler": s, "nfe": n} for c in study["cells"] for s in study["samplers"] for n in study["nfe"]]


def expand_over(path, over, config):
    if over == "cells":
        return [path.format(cell=c) for c in config["cells"]]
    return [path.format(**point) for point in study_points(config)]


def snakemake_inputs(stage, paths, config):
    """Named inputs, folders filled; an `Each` input lists every file it stands for."""
    inputs = {}
    for name, spec in stage.inputs.items():
        if isinstance(spec, Each):
            inputs[name] = expand_over(with_roots(spec.path, paths), spec.over, config)
        else:
            inputs[name] = with_roots(spec, paths)
    return inputs


def snakemake_shell(stage, params_file, paths):
    """The shell command: `Each` inputs name their folder (as under DVC), stderr to the log."""
    text = command(stage, params_file)
    for name, spec in stage.inputs.items():
        if isinstance(spec, Each):
            text = text.replace(f"{{input.{name}}}", spec.folder)
    return with_roots(text, paths) + " 2> {log.stderr}"


LOG_SUFFIX = {None: "", "cells": "/{cell}", "study": "/{cell}/{sampler}-{nfe}"}


def snakemake_logs(stage, paths):
    logs = {"stderr": f"{{logs}}/{stage.name}{LOG_SUFFIX[stage.over]}.log"}
    logs.update({name: out.path for name, out in stage.logs.items()})
    return {name: with_roots(path, paths) for name, path in logs.items()}


def snakemake_benchmark(stage, paths):
    """Time and peak memory per job, beside the logs; none on a cached rule (Snakemake
    forbids it: train's are in its log)."""
    if stage.cache:
        return None
    return with_roots(f"{{logs}}/benchmarks/{stage.name}{LOG_SUFFIX[stage.over]}.tsv", paths)


def snakemake_params(stage, config):
    """The params a rule declares (a change reruns it): plain values, or a function of the
    job's wildcards for the cell's own entry."""
    params = {}
    for key in stage.params:
        if key == "*":
            params.update(config)
        elif key == "cell":
            params["cell"] = lambda w: config["cells"][w.cell]
        elif key == "study_cells":
            params["study_cells"] = {c: config["cells"][c] for c in config["sampler_study"]["cells"]}
        else:
            section, _, sub = key.partition(".")
            params[key.replace(".", "_")] = config[section][sub] if sub else config[section]
    return params


def artifacts(paths, config):
    """Every output of every job (the Snakefile's `rule all`: Snakemake does not remake a
    missing intermediate whose downstream files exist, so all of them are targets)."""
    files = []
    for stage in STAGES:
        for out in stage.outputs.values():
            path = with_roots(out.path, paths)
            files += expand_over(path, stage.over, config) if stage.over else [path]
    return files


# ---- DVC: dvc.yaml ----

def dvc_path(text, stage):
    """Our placeholders as DVC's: folders from params.yaml `paths:`, wildcards from
    `foreach` (${key}) or `matrix` (${item.x})."""
    for root in ROOTS:
        text = text.replace(f"{{{root}}}", f"${{paths.{root}}}")
    for wildcard in stage.wildcards:
        dvc = "${key}" if stage.over == "cells" else f"${{item.{wildcard}}}"
        text = text.replace(f"{{wildcards.{wildcard}}}", dvc).replace(f"{{{wildcard}}}", dvc)
    return text


STUDY_LISTS = {"cell": "cells", "sampler": "samplers", "nfe": "nfe"}  # sampler_study's lists


def dvc_params(stage):
    params = []
    for key in stage.params:
        if key == "cell":
            params.append(dvc_path("cells.{cell}", stage))
        elif key != "study_cells":  # DVC cannot list them; their models' changes reach it as file deps
            params.append(key)
    return unique(params)


def dvc_cmd(stage, params_file="params.yaml"):
    text = command(stage, params_file)
    named = {**{f"input.{k}": (v.folder if isinstance(v, Each) else v) for k, v in stage.inputs.items()},
             **{f"output.{k}": v.path for k, v in stage.outputs.items()},
             **{f"log.{k}": v.path for k, v in stage.logs.items()}}
    for name, path in named.items():
        text = text.replace(f"{{{name}}}", path)
    return dvc_path(text, stage)


def _wrap(cmd, width=110):
    """Lines of at most `width` characters (longer only for one long option) that never part
    an option from its value."""
    lines = [""]
    for chunk in cmd.replace(" --", "\0--").split("\0"):
        if lines[-1] and len(lines[-1]) + 1 + len(chunk) > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {chunk}".strip()
    return lines


def _block(key, lines, indent):
    return [f"{indent}{key}:", *[f"{indent}  {line}" for line in lines]] if lines else []


def _out_lines(out, stage):
    path = dvc_path(out.path, stage)
    options = []
    if out.kind != "cached":
        options.append("cache: false")
    if out.persist:
        options.append("persist: true")
    if out.x:
        options += [f"x: {out.x}", f"y: {out.y}"]
    if not options:
        return [f"- {path}"]
    return [f"- {path}:", *[f"    {option}" for option in options]]


def dvc_stage(stage, stage_code, params_file="params.yaml"):
    """One stage of dvc.yaml as lines (indented under `stages:`); for another experiment's
    params file, run from the repository root (`wdir`) and tracking that file's keys."""
    lines = [f"  # {line}".rstrip() for line in stage.comment.splitlines()] + [f"  {stage.name}:"]
    indent = "    "
    if stage.over == "cells":
        lines += ["    foreach: ${cells}", "    do:"]
        indent = "      "
    elif stage.over == "study":
        lines += ["    matrix:", *(f"      {w}: ${{sampler_study.{STUDY_LISTS[w]}}}" for w in stage.wildcards)]
    if params_file != "params.yaml":
        lines.append(f"{indent}wdir: {_up(params_file)}")
    lines += [f"{indent}cmd: >-", *(f"{indent}  {line}" for line in _wrap(dvc_cmd(stage, params_file)))]
    files = stage_code(stage.command_module)
    code = [path for path in files if not path.startswith("diffusion/")]
    if len(code) < len(files):
        code.append("diffusion")  # the library as one folder
    deps = [*code, *(
        dvc_path(spec.folder if isinstance(spec, Each) else spec, stage) for spec in stage.inputs.values()),
        *(dvc_path(path, stage) for path in stage.dvc_inputs)]
    lines += _block("deps", [f"- {dep}" for dep in unique(deps)], indent)
    params = dvc_params(stage)
    if params_file == "params.yaml":
        lines += _block("params", ["- params.yaml:"] if params == ["*"] else [f"- {p}" for p in params], indent)
    else:
        keys = [] if params == ["*"] else [f"  - {p}" for p in params]
        lines += _block("params", [f"- {params_file}:", *keys], indent)
    for key, kinds in (("outs", ("cached", "result")), ("metrics", ("metric",)), ("plots", ("plot",))):
        outs = [line for out in stage.outputs.values() if out.kind in kinds for line in _out_lines(out, stage)]
        lines += _block(key, outs, indent)
    return lines


HEADER = """\
# Generated from the stage table (pipeline/dag.py) by `python -m pipeline.dag`: edit the
# table, not this file (tests/test_dag.py fails when this file is stale). The same DAG as the
# Snakefile: the same commands, inputs, outputs and params; the grid from params.yaml's
# `cells:` (foreach: a new cell needs no regeneration) and the sampler study from the lists
# of its `sampler_study:` section (a matrix: cells x samplers x NFE). Small results are
# committed to git (`cache: false`); checkpoints and samples are cached. Each stage's code
# deps are the modules it imports (pipeline.provenance.stage_code) and its params every
# section it depends on, transitively. After `dvc repro`, `python -m pipeline.sync` records
# the outputs for Snakemake.
"""

TOP_PLOTS = """\
plots:
  - ${paths.results}/train:
      x: step
      y: loss
  - ${paths.logs}/live:  # dvclive's loss and lr histories while cells train (not outputs: logs)
      x: step
"""


EXPERIMENT_HEADER = """\
# Generated from the stage table (pipeline/dag.py) for {params} by `python -m
# pipeline.experiments`: edit the table or configs/, not this file. The default experiment's
# DAG (see ../../dvc.yaml), run from the repository root, reading this folder's params.yaml;
# DVC keeps this experiment's dvc.lock beside it: `dvc repro {dvc}`.
"""


def _up(params_file):
    """The repository root seen from the folder of `params_file`."""
    return "/".join([".."] * len(Path(params_file).parent.parts)) or "."


def dvc_yaml(params_file="params.yaml"):
    """dvc.yaml's text for the default experiment (params.yaml) or another one's params file."""
    from .provenance import stage_code

    lines = ["stages:"]
    for stage in STAGES:
        lines += dvc_stage(stage, stage_code, params_file) + [""]
    if params_file == "params.yaml":
        return HEADER + "\n".join(lines) + "\n" + TOP_PLOTS
    header = EXPERIMENT_HEADER.format(params=params_file, dvc=Path(params_file).with_name("dvc.yaml"))
    plots = TOP_PLOTS.replace("${paths.", f"{_up(params_file)}/${{paths.")
    return header + "\n".join(lines) + "\n" + plots


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write dvc.yaml (and every experiment folder's) from the stage table.")
    parser.add_argument("out", nargs="?", default="dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    args = parser.parse_args(argv)
    from . import experiments

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
