"""Stage `plot`: seaborn figures of the grid: FID heatmap over parameterization x
weighting, the spread of FID over seeds against the floors, the memorization check,
FID against training step (EMA snapshots), training-loss curves, per-t loss profiles, a panel of sample grids (scatters and score fields
on 2-D points, with sliced Wasserstein in the heatmap) and, for seed 004's uncertainty
model, its learned variance sigma_phi^2 against the noise level beside the seed's predicted
optimum s^2 + (mu_theta - x0)^2. A figure with nothing to draw (no such cell, or every cell
diverged) is written as a one-line note, so the stage always writes every figure."""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import load_json, run_stage  # noqa: E402
from .params import load_or_exit  # noqa: E402
from .report.plots import (fid_by_step, fid_heatmap, fid_spread, loss_curves, loss_profiles,  # noqa: E402
                           memorization, note_figure, sample_panel, uncertainty_plot)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", required=True, help="the aggregate stage's long CSV")
    parser.add_argument("--summary", required=True, help="the aggregate stage's per-row summary CSV")
    parser.add_argument("--reference", required=True, help="the reference stage's JSON (floors)")
    parser.add_argument("--train-dir", required=True, help="folder of per-cell loss and profile CSVs")
    parser.add_argument("--samples-dir", required=True, help="folder of per-cell PNG grids")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    sns.set_theme(style="whitegrid", context="notebook")
    np.random.seed(0)  # seaborn's strip-plot jitter draws from numpy's global RNG: same figures every run
    out = Path(args.out_dir)
    cells = list(params.cells)
    metrics = pd.read_csv(args.metrics)
    fid_heatmap(metrics, out / "fid_heatmap.png", "sw" if params.points else "fid")
    fid_by_step(metrics, out / "fid_by_step.png")
    summary, reference = pd.read_csv(args.summary), load_json(args.reference)
    if params.points:  # no FID spread or pixel memorization on 2-D points: say so in the figures
        for name in ("fid_spread", "memorization"):
            note_figure(out / f"{name}.png", f"{name}: not computed for 2-D point data ({params.data.name})")
    else:
        fid_spread(metrics, summary, reference, out / "fid_spread.png")
        memorization(metrics, reference, out / "memorization.png")
    loss_curves([Path(args.train_dir) / c / "losses.csv" for c in cells], out / "loss_curves.png")
    profiles = [Path(args.train_dir) / c / "profile.csv" for c in cells]
    loss_profiles(profiles, out / "loss_profile.png")
    uncertainty_plot(profiles, out / "uncertainty.png")
    sample_panel([Path(args.samples_dir) / f"{c}.png" for c in cells], out / "samples.png")
    print(f"plots written to {out}/")


if __name__ == "__main__":
    run_stage(main)
