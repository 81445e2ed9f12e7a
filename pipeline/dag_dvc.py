"""The stage table as dvc.yaml: the same commands, inputs, outputs and params as the
Snakefile's rules; the grid as `foreach` over params.yaml's cells and the sampler study as a
`matrix`, so a new cell needs no regenerated file."""

from pathlib import Path

from .dag import ROOTS, STAGES, Each, command, unique

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


_CODE = {}


def _stage_code(module):
    """provenance.stage_code, read once while no module changes: writing every experiment's
    dvc.yaml asks each stage's code once per experiment, and each ask parses its imports."""
    from .provenance import ROOT, stage_code

    files = sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "diffusion").rglob("*.py")])
    key = (module, tuple((str(p), p.stat().st_mtime_ns) for p in files))
    if key not in _CODE:
        _CODE[key] = stage_code(module)
    return _CODE[key]


def dvc_yaml(params_file="params.yaml"):
    """dvc.yaml's text for the default experiment (params.yaml) or another one's params file."""
    lines = ["stages:"]
    for stage in STAGES:
        lines += dvc_stage(stage, _stage_code, params_file) + [""]
    if params_file == "params.yaml":
        return HEADER + "\n".join(lines) + "\n" + TOP_PLOTS
    header = EXPERIMENT_HEADER.format(params=params_file, dvc=Path(params_file).with_name("dvc.yaml"))
    plots = TOP_PLOTS.replace("${paths.", f"{_up(params_file)}/${{paths.")
    return header + "\n".join(lines) + "\n" + plots


