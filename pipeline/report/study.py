"""The sampler study's points for the sampler_table stage: read into one long table
(`collect`), one Markdown table per metric (a row per cell and sampler, a column per NFE, the
held-out floor under it) and a seaborn line plot against the number of network evaluations.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..io import StageError, load_json, save_figure  # noqa: E402


def point_path(study_dir, cell, sampler, nfe):
    return Path(study_dir) / cell / f"{sampler}-{nfe}.json"


def collect(params, study_dir):
    metrics = ("sw", "mmd") if params.points else ("fid", "kid_mean", "isc_mean", "fid_matched")
    rows, found = [], {}
    s = params.sampler_study
    for cell in s.cells:
        for sampler in s.samplers:
            for nfe in s.nfe:
                path = point_path(study_dir, cell, sampler, nfe)
                if not path.exists():
                    raise StageError(f"{path}: missing; run the sampler_study stage for it")
                r = load_json(path)
                found[cell, sampler, nfe] = r.get("fingerprint")
                base = {"cell": cell, "sampler": sampler, "nfe_budget": nfe, "nfe": r.get("nfe"),
                        "steps": r.get("steps"), "status": r["status"]}
                rows += [{**base, "metric": m, "value": r.get(m)} for m in metrics]
    return pd.DataFrame(rows), metrics, found


def to_markdown(long, metric, params, floor):
    table = long[long.metric == metric].pivot_table(index=["cell", "sampler"], columns="nfe_budget",
                                                    values="value", aggfunc="first")
    digits = 4 if metric in ("sw", "mmd", "kid_mean") else 3
    table = table.map(lambda v: "-" if pd.isna(v) else f"{v:.{digits}f}")
    table.columns = [f"NFE {c}" for c in table.columns]
    table = table.reset_index()
    if floor is not None:
        table.loc[len(table)] = ["held-out real data (floor)", "", f"{floor:.{digits}f}", *[""] * (table.shape[1] - 3)]
    return table.to_markdown(index=False, disable_numparse=True)


def line_plot(long, metrics, floors, path):
    data = long[long.metric.isin(metrics[:2])].dropna(subset=["value"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, metrics[:2]):
        sub = data[data.metric == metric]
        if not sub.empty:
            sns.lineplot(data=sub, x="nfe", y="value", hue="sampler", style="cell", markers=True,
                         dashes=False, ax=ax)
        if floors.get(metric) is not None:
            ax.axhline(floors[metric], color="0.4", ls="--", lw=1, label="held-out floor")
        ax.set_xscale("log")
        if metric != "mmd":
            ax.set_yscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle("Sampler study: sample quality against network evaluations")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
