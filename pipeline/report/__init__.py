"""The tables and figures the reporting stages write, apart from their mains: `summary` and
`tables` (aggregate), `papers` (the published numbers beside ours), `plots` (plot),
`study` (sampler_table) and `sample_figures` (sample).

Only a docstring: a package's __init__ runs before its modules, and this one is no stage's code
input (tests/test_dag.py keeps it free of code).
"""
