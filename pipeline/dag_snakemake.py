"""The stage table as Snakemake's rule parts: the Snakefile's rules declare what `rule()`
returns (folders filled from the experiment's `paths:`, per-cell inputs listed file by file,
outputs marked as directories or report items)."""

from snakemake.io import directory, report

from .dag import STAGE, STAGES, Each, command, with_roots
from .provenance import stage_code

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




def cell_labels(config):
    """Report labels of a cell's figure: its parameterization, weighting and Sigma."""
    def labels(w):
        cell = config["cells"][w.cell]
        return {"cell": w.cell, "parameterization": cell["parameterization"],
                "weighting": cell["weighting"], "Sigma": cell.get("Sigma", "fixed_large")}
    return labels


def snakemake_outputs(stage, paths, config):
    """Named outputs, folders filled: directories marked, figures and tables in the report."""
    made = {}
    for key, out in stage.outputs.items():
        path = with_roots(out.path, paths)
        if out.directory:
            path = directory(path)
        elif out.report:
            caption, category = out.report
            path = report(path, caption=caption, category=category,
                          labels=cell_labels(config) if stage.over == "cells" else None)
        made[key] = path
    return made


def rule(name, paths, config, params_file):
    """Everything the Snakefile's rule for stage `name` declares, evaluated once."""
    stage = STAGE[name]
    logs = {key: directory(path) if key in stage.logs and stage.logs[key].directory else path
            for key, path in snakemake_logs(stage, paths).items()}
    return {"input": {"code": stage_code(stage.command_module), **snakemake_inputs(stage, paths, config)},
            "output": snakemake_outputs(stage, paths, config), "params": snakemake_params(stage, config),
            "log": logs, "benchmark": snakemake_benchmark(stage, paths), "threads": stage.threads or 1,
            "resources": {"mem_mb": stage.mem_mb} if stage.mem_mb else {}, "local": stage.local,
            "shell": snakemake_shell(stage, params_file, paths)}
