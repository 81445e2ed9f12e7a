"""Stage `plot`: seaborn figures of the grid: FID heatmap over parameterization x
weighting, training-loss curves, per-t loss profiles and a panel of sample grids."""

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import run_stage, save_figure  # noqa: E402
from .params import load_or_exit  # noqa: E402


def fid_heatmap(metrics, path):
    fid = metrics[metrics.metric == "fid"].copy()
    fid["row"] = fid.parameterization + " / " + fid.sigma
    grid = fid.pivot_table(index="row", columns="weighting", values="value", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.4 * max(3, grid.shape[1]) + 2, 0.6 * max(3, grid.shape[0]) + 1.5))
    sns.heatmap(grid, annot=True, fmt=".2f", cmap="viridis_r", ax=ax, cbar_kws={"label": "FID"},
                mask=grid.isna())
    ax.set_title("FID against the training set (blank: diverged or not in grid)")
    ax.set_xlabel("weighting")
    ax.set_ylabel("parameterization / Sigma")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _read_csvs(paths):
    frames = [pd.read_csv(p) for p in paths if Path(p).stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_curves(loss_paths, path):
    losses = _read_csvs(loss_paths)
    fig, ax = plt.subplots(figsize=(8, 5))
    if not losses.empty:
        sns.lineplot(data=losses, x="step", y="loss", hue="cell", ax=ax, linewidth=1)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("Training loss (each cell's own objective, so scales differ)")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def loss_profiles(profile_paths, path):
    profile = _read_csvs(profile_paths)
    fig, ax = plt.subplots(figsize=(8, 5))
    if not profile.empty:
        sns.lineplot(data=profile, x="t", y="mse_eps", hue="cell", ax=ax, linewidth=1)
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("Per-t eps-space MSE of the EMA model, |eps - eps_hat|^2")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def sample_panel(grid_paths, path):
    n = len(grid_paths)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, grid in zip(axes.flat, grid_paths):
        ax.imshow(plt.imread(grid))
        ax.set_title(Path(grid).stem, fontsize=9)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", required=True, help="the aggregate stage's long CSV")
    parser.add_argument("--train-dir", required=True, help="folder of per-cell loss and profile CSVs")
    parser.add_argument("--samples-dir", required=True, help="folder of per-cell PNG grids")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    sns.set_theme(style="whitegrid", context="notebook")
    out = Path(args.out_dir)
    cells = list(params.cells)
    metrics = pd.read_csv(args.metrics)
    fid_heatmap(metrics, out / "fid_heatmap.png")
    loss_curves([Path(args.train_dir) / c / "losses.csv" for c in cells], out / "loss_curves.png")
    loss_profiles([Path(args.train_dir) / c / "profile.csv" for c in cells], out / "loss_profile.png")
    sample_panel([Path(args.samples_dir) / f"{c}.png" for c in cells], out / "samples.png")
    print(f"plots written to {out}/")


if __name__ == "__main__":
    run_stage(main)
