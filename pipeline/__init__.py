"""Pipeline stages around the `diffusion` library: files, stages and params, no diffusion math.

Each stage is `python -m pipeline.<stage>` with explicit paths, called identically by the
Snakefile and dvc.yaml (the list is pipeline/dag.py's STAGES). A stage is a thin main that
imports helpers, never another stage: the helpers here (data, build, sampling, io, params,
provenance, ...), how samples are scored in pipeline.metrics, the tables and figures in
pipeline.report.
"""
