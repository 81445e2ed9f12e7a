"""What both tools need to know about each stage beyond its command: for now the torch
threads it runs with (the Snakefile's `threads:` and the stage's own setting read this, so a
stage computes with the same thread count under Snakemake and under DVC; a float reduction's
result depends on it). Stages not listed run on one thread."""

THREADS = {"evaluator": 2, "reference": 2}


def threads(stage):
    return THREADS.get(stage, 1)
