"""Pipeline stages around the `diffusion` library: files, stages and params, no diffusion math.

Each stage is `python -m pipeline.<stage>` with explicit paths, called identically by the
Snakefile and dvc.yaml: prepare, evaluator, reference, train, sample, evaluate,
aggregate, plot.
"""
