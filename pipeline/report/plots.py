"""The plot stage's seaborn figures of the grid (see pipeline/plot.py): FID heatmap, FID spread
over seeds against the floors, memorization, FID against training step, loss curves and per-t
loss profiles, seed 004's learned variance, the panel of sample grids; and a one-line note
figure for a plot with nothing to draw.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..io import read_csv, save_figure  # noqa: E402


def note_figure(path, text):
    """A figure of one line of text: what a plot would show is not there."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def heatmap_grid(metrics, metric="fid"):
    """metrics.csv's `metric` as (parameterization / Sigma) x weighting, mean over seeds. Rows
    that differ only in other settings (a schedule, gamma, the t sampler) share a square: each
    is then named by its replicate group rather than averaged with the others."""
    fid = metrics[metrics.metric.isin([metric, f"uncertainty_{metric}"])].copy()
    # images: the uncertainty score is a metric of its own (uncertainty_fid); points: a `score` column
    uncertainty = fid.metric.str.startswith("uncertainty_")
    if "score" in fid:
        uncertainty |= fid.score == "uncertainty"
    fid["row"] = fid.parameterization + " / " + fid.Sigma + uncertainty.map({False: "", True: " / uncertainty score"})
    if "group" in fid:
        shared = fid.groupby(["row", "weighting"]).group.transform("nunique") > 1
        fid.loc[shared, "row"] += " / " + fid.loc[shared, "group"]
    return fid.pivot_table(index="row", columns="weighting", values="value", aggfunc="mean")


def fid_heatmap(metrics, path, metric="fid"):
    """Heatmap of `metric` (FID; `sw` on 2-D points) over (parameterization / Sigma) x weighting,
    on a log colour scale (the grid spans two orders of magnitude). Seed 004's uncertainty
    model gets a second row for its samples drawn with the seed's own score."""
    label = {"fid": "FID", "sw": "sliced Wasserstein-2"}[metric]
    grid = heatmap_grid(metrics, metric)
    values = grid.stack()
    if values.empty:
        note_figure(path, f"{label}: no cell finished (every cell diverged)")
        return
    norm = LogNorm(values.min(), values.max()) if values.min() > 0 else None
    fig, ax = plt.subplots(figsize=(1.4 * max(3, grid.shape[1]) + 2, 0.6 * max(3, grid.shape[0]) + 1.5))
    sns.heatmap(grid, annot=True, fmt=".2f" if metric == "fid" else ".3f", cmap="viridis_r", ax=ax, norm=norm,
                cbar_kws={"label": f"{label} (log scale)" if norm else label}, mask=grid.isna())
    ax.grid(False)
    ax.set_title(f"{label} against the training set, mean over seeds (blank: diverged or not in grid)")
    ax.set_xlabel("weighting")
    ax.set_ylabel("parameterization / Sigma")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


SPREAD_PANELS = (  # (metric, title, reference row whose value is the floor at this n, its key)
    ("fid", "FID vs training set, all samples\n(the paper's protocol)", None, None),
    ("fid_matched", "FID@n vs training set\n(floor: held-out images; dotted: a copier)", "heldout", "fid_matched"),
    ("fid_heldout_matched", "FID@n vs held-out set\n(floor: training images)", "train", "fid_heldout_matched"),
)


def fid_spread(metrics, summary, reference, path):
    """Per-seed FID of every row (dots), mean and t-interval over seeds (bars), and the
    floors at the same n (line: value, band: its sd)."""
    ok = metrics[metrics.status == "ok"]
    if ok.empty:
        note_figure(path, "FID spread: no cell finished (every cell diverged)")
        return
    order = list(dict.fromkeys(metrics.group))
    fig, axes = plt.subplots(1, len(SPREAD_PANELS), figsize=(5.5 * len(SPREAD_PANELS), 0.32 * len(order) + 2),
                             sharey=True, squeeze=False)
    for ax, (metric, title, floor, key) in zip(axes.flat, SPREAD_PANELS):
        seeds = ok[ok.metric == metric]
        sns.stripplot(data=seeds, x="value", y="group", order=order, ax=ax, color="0.3", size=4, jitter=0.15)
        rows = summary[summary.metric == metric].set_index("group").reindex(order)
        have_ci = rows.ci_low.notna()
        y = [order.index(g) for g in rows.index[have_ci]]
        ax.errorbar(rows["mean"][have_ci], y, xerr=[rows["mean"][have_ci] - rows.ci_low[have_ci],
                                                   rows.ci_high[have_ci] - rows["mean"][have_ci]],
                    fmt="D", color="C3", markersize=5, capsize=3, label="mean, t-interval over seeds")
        if floor:
            ax.axvline(reference["rows"][floor][key], color="C2", linewidth=1, label="real-data floor")
            sd = reference["rows"][floor].get(f"{key}_sd")
            if sd == sd and sd:
                value = reference["rows"][floor][key]
                ax.axvspan(value - sd, value + sd, color="C2", alpha=0.15, linewidth=0)
        if metric == "fid_matched":
            ax.axvline(reference["rows"]["train"]["fid_matched"], color="C1", linestyle=":", linewidth=1,
                       label="training images (a copier)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("FID")
        ax.set_ylabel("")
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def memorization(metrics, reference, path):
    """Left: NN-distance ratio per seed (1.0: as far from the training set as held-out
    images). Right: FID@n against the training set versus that ratio: copying buys FID."""
    ok = metrics[metrics.status == "ok"]
    if ok.empty:
        note_figure(path, "memorization: no cell finished (every cell diverged)")
        return
    wide = ok.pivot_table(index=["cell", "group", "parameterization"], columns="metric", values="value").reset_index()
    order = list(dict.fromkeys(metrics.group))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.3 * len(order) + 2.5))
    if not wide.empty:
        sns.stripplot(data=wide, x="nn_ratio", y="group", order=order, hue="parameterization", ax=left, size=5,
                      jitter=0.15)
        sns.scatterplot(data=wide, x="nn_ratio", y="fid_matched", hue="parameterization", size="near_copy_fraction",
                        ax=right, sizes=(20, 200))
    left.axvline(1.0, color="C2", linewidth=1)
    left.set_xlim(left=0)
    left.set_title("Nearest-training-neighbour distance, samples / held-out\n(1.0: no copying; 0: exact copies)",
                   fontsize=10)
    left.set_xlabel("NN ratio")
    left.set_ylabel("")
    rows = reference["rows"]
    for name, row, color in (("held-out images", rows["heldout"], "C2"), ("training images", rows["train"], "C1")):
        right.scatter([row["nn_ratio"]], [row["fid_matched"]], marker="*", s=200, color=color, label=name,
                      edgecolor="k", zorder=3)
    right.set_title(f"FID@n (n = {reference['matched_n']}) vs training set against copying", fontsize=10)
    right.set_xlabel("NN ratio")
    right.set_ylabel("FID@n vs training set")
    right.legend(fontsize=7)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _read_csvs(paths):
    frames = [frame for frame in map(read_csv, paths) if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _per_cell_lines(paths, x, y, yscale, title, empty, path):
    """One line per cell of the curves stage's CSVs at `paths`, or a note when no cell logged a row."""
    data = _read_csvs(paths)
    if data.empty:
        note_figure(path, empty)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=data, x=x, y=y, hue="cell", ax=ax, linewidth=1)
    ax.set_yscale(**yscale)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def loss_curves(loss_paths, path):
    _per_cell_lines(loss_paths, "step", "loss", {"value": "symlog", "linthresh": 1e-2},
                    "Training loss (each cell's own objective, so scales differ)",
                    "training loss: no step logged (every cell diverged before its first log)", path)


def loss_profiles(profile_paths, path):
    _per_cell_lines(profile_paths, "t", "mse_eps", {"value": "log"}, "Per-t eps-space MSE of the EMA model, |eps - eps_hat|^2",
                    "per-t loss profile: no cell finished (every cell diverged)", path)


def fid_by_step(metrics, path):
    """FID against the training set at each EMA snapshot (train.eval_every), one panel per
    parameterization, one line per row of the table (mean over seeds): how fast each objective
    converges (Min-SNR's Figure 5)."""
    rows = metrics[metrics.metric.str.match(r"^fid@\d+$")].dropna(subset=["value"]).copy()
    if rows.empty:
        note_figure(path, "FID vs training step: no EMA snapshots in this grid (train.eval_every: 0)")
        return
    rows["training step"] = rows.metric.str[4:].astype(int)
    panels = list(dict.fromkeys(rows.parameterization))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, param in zip(axes.flat, panels):
        sns.lineplot(data=rows[rows.parameterization == param], x="training step", y="value", hue="group",
                     marker="o", errorbar=None, ax=ax)
        ax.set_yscale("log")
        ax.set_title(f"target {param}")
        ax.set_ylabel("FID against the training set (log)")
        ax.legend(fontsize=7, title=None)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def uncertainty_plot(profile_paths, path):
    """Seed 004: learned sigma_phi^2 (mean over pixels) against s, beside the seed's predicted
    optimum s^2 + (mu_theta - x0)^2 and Tweedie's implicit choice sigma_phi^2 = s^2."""
    profile = _read_csvs(profile_paths)
    fig, ax = plt.subplots(figsize=(7, 5))
    if profile.empty or "sigma_phi2" not in profile or profile["sigma_phi2"].isna().all():
        ax.text(0.5, 0.5, "no finished uncertainty cell (weighting: uncertainty) in the grid",
                ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
    else:
        rows = profile.dropna(subset=["sigma_phi2"])
        long = pd.concat([
            rows.assign(quantity="learned sigma_phi^2", value=rows.sigma_phi2),
            rows.assign(quantity="seed 004: s^2 + (mu - x0)^2", value=rows.seed_sigma_phi2),
            rows.assign(quantity="Tweedie: s^2", value=rows.s**2),
        ])
        sns.lineplot(data=long, x="s", y="value", hue="quantity", style="cell", ax=ax, linewidth=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("noise level s = sigma / alpha")
        ax.set_ylabel("variance of x0 given x_t (mean over pixels)")
        ax.legend(fontsize=7)
    ax.set_title("Seed 004's learned uncertainty against its predicted optimum")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def sample_panel(grid_paths, path, width=16.0):
    """The per-cell sample figures side by side, as many per row as fit `width` inches at
    about 2.6 inches of height (one per row for the wide point-data figures)."""
    images = [plt.imread(p) for p in grid_paths]
    aspect = float(np.median([im.shape[1] / im.shape[0] for im in images]))  # width over height
    w = min(2.6 * aspect, width)
    cols = max(1, min(6, len(images), int(width // w)))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, (w / aspect + 0.3) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, grid in zip(axes.flat, images, grid_paths):
        ax.imshow(image)
        ax.set_title(Path(grid).stem, fontsize=9)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
