"""Stage `sampler_table`: the sampler study's points into one long CSV, a Markdown table
(one row per cell and sampler, one column per NFE) and a seaborn line plot of FID and KID
(sliced Wasserstein and MMD^2 for 2-D points) against the number of network evaluations,
with the held-out real data as the floor."""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import provenance  # noqa: E402
from .io import StageError, load_json, load_torch, run_stage, save_figure, save_text  # noqa: E402
from .params import load_or_exit  # noqa: E402


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--study-dir", required=True, help="folder of the sampler_study points")
    parser.add_argument("--reference", required=True, help="the reference stage's JSON (the floor)")
    parser.add_argument("--train", required=True, help="training split (.pt): its tensors are checked")
    parser.add_argument("--heldout", required=True, help="held-out split (.pt)")
    parser.add_argument("--evaluator", required=True, help="the evaluator's weights (.pt)")
    parser.add_argument("--evaluator-metrics", required=True, help="the evaluator stage's JSON")
    parser.add_argument("--csv", required=True, help="output: long-format table (.csv)")
    parser.add_argument("--markdown", required=True, help="output: table (.md)")
    parser.add_argument("--plot", required=True, help="output: line plot (.png)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    sns.set_theme(style="whitegrid", context="notebook")
    long, metrics, found = collect(params, args.study_dir)
    reference = load_json(args.reference)
    shared, items = provenance.expected_shared(params, load_torch(args.train), load_torch(args.heldout),
                                               args.evaluator, load_json(args.evaluator_metrics), reference)
    provenance.check(items + [(f"sampler_study {c} {s}-{n}", record, provenance.expected_study(params, c, s, n, *shared))
                              for (c, s, n), record in found.items()])
    heldout = reference["rows"]["heldout"]
    floors = {m: heldout.get(m) for m in metrics}
    s = params.sampler_study
    parts = [f"Sampler study: {s.num_samples} samples per point (seed {s.seed}, the same noise for every "
             f"sampler) against the training set; columns are the NFE budgets (the JSONs record the "
             f"evaluations actually made: Heun spends 2 per step but the last, Langevin "
             f"{params.sample.langevin_steps_per_level} per level plus a final denoising step)."]
    for metric in metrics[:2]:
        parts += ["", f"### {metric}", "", to_markdown(long, metric, params, floors[metric])]
    markdown = "\n".join(parts) + "\n"
    save_text(long.to_csv(index=False), args.csv)
    save_text(markdown, args.markdown)
    line_plot(long, metrics, floors, args.plot)
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
