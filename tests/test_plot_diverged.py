"""The plot stage on a grid where every cell diverged: every figure is written (a note where
there is nothing to draw) and the stage finishes."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from conftest import ROOT  # noqa: E402
from pipeline import plot  # noqa: E402
from pipeline.params import load  # noqa: E402

FIGURES = ("fid_heatmap", "fid_spread", "memorization", "loss_curves", "loss_profile", "samples", "uncertainty",
           "fid_by_step")
IMAGE_METRICS = ("isc_mean", "fid", "fid_matched", "fid_heldout_matched", "nn_ratio", "near_copy_fraction")
POINT_METRICS = ("sw", "mmd", "nll_bpd")


def diverged_inputs(config, root):
    """What the Snakefile's plot rule passes the stage, as aggregate, curves and sample write
    them when every cell diverged at step 10: no metric values, empty loss curves and
    profiles, one note image per cell. Returns the stage's arguments."""
    params = load(config)
    base = [{"cell": c, "parameterization": cell.parameterization, "weighting": cell.weighting,
             "Sigma": cell.Sigma, "status": "diverged"} for c, cell in params.cells.items()]
    if params.points:
        metrics = pd.DataFrame([{**row, "score": "tweedie", "metric": m, "value": None}
                                for row in base for m in POINT_METRICS])
        summary = pd.DataFrame(columns=["group", "metric", "mean"])
    else:
        metrics = pd.DataFrame([{**row, "group": params.group_of(row["cell"]), "step": 10, "metric": m,
                                 "against": "train", "value": None} for row in base for m in IMAGE_METRICS])
        summary = pd.DataFrame([{"group": g, "cells": " ".join(cells), "seeds": len(cells), "diverged": len(cells),
                                 "metric": m, "n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
                                for g, cells in params.replicate_groups().items() for m in IMAGE_METRICS])
    metrics.to_csv(root / "metrics.csv", index=False)
    summary.to_csv(root / "summary.csv", index=False)
    floor = {"n": 100, "fid_matched": 1.0, "fid_matched_sd": 0.1, "fid_heldout_matched": 1.0, "nn_ratio": 1.0,
             "sw": 0.1, "mmd": 0.01}
    (root / "reference.json").write_text(json.dumps(
        {"matched_n": 100, "rows": {"heldout": floor, "train": floor, "noise": floor}}))
    for cell in params.cells:
        (root / "train" / cell).mkdir(parents=True)
        (root / "train" / cell / "losses.csv").write_text("")
        (root / "train" / cell / "profile.csv").write_text("")
        (root / "samples").mkdir(exist_ok=True)
        plt.imsave(root / "samples" / f"{cell}.png", np.ones((40, 60, 3)))
    return ["--params", str(config), "--metrics", str(root / "metrics.csv"), "--summary", str(root / "summary.csv"),
            "--reference", str(root / "reference.json"), "--train-dir", str(root / "train"),
            "--samples-dir", str(root / "samples"), "--out-dir", str(root / "plots")]


@pytest.mark.parametrize("config", [ROOT / "tests" / "configs" / "tiny.yaml",
                                    ROOT / "experiments" / "ncsn_swiss_roll" / "params.yaml"],
                         ids=["tiny", "ncsn_swiss_roll"])
def test_plot_writes_every_figure_when_every_cell_diverged(config, tmp_path):
    plot.main(diverged_inputs(config, tmp_path))
    for name in FIGURES:
        figure = plt.imread(tmp_path / "plots" / f"{name}.png")
        assert figure.size, name
