"""How samples are scored, by concern: `torchvision_ops` (the one workaround that lets torchvision
import without its compiled ops), `classifier` (the offline feature extractor: model, training,
checkpoint), `extractor` (its registration with torch-fidelity), `fidelity` (IS / FID / KID
through torch-fidelity and the reference-feature cache), `inception` (torch-fidelity's
Inception weights, offline-safe), `distances` (2-D points), `stats` (intervals, draws,
memorization), `matched` (FID at a matched sample count) and `scoring` (what the scoring
stages share).

Only a docstring: a package's __init__ runs before its modules, and this one is no stage's code
input (tests/test_dag.py keeps it free of code).
"""
