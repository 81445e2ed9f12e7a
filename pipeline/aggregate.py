"""Stage `aggregate`: every cell's metrics into one long-format CSV and a DDPM-Table-2-style
Markdown and LaTeX table, with the paper's CIFAR-10 values beside the rows that map and
rows for held-out real data (the floor) and uniform noise (the ceiling). On 2-D point data
the columns are sliced Wasserstein, MMD^2 and NLL. Seed 004's uncertainty model gets two
rows: its samples with Tweedie's score and with the seed's proposed score."""

import argparse
from pathlib import Path

import pandas as pd

from .io import StageError, load_json, run_stage, save_text
from .params import load_or_exit

# Ho et al. 2020, Table 2 (CIFAR-10, unconditional): (parameterization, weighting, Sigma) ->
# (IS, FID); None marks the rows the paper reports as unstable.
PAPER_TABLE2 = {
    ("mu", "vlb", "learned"): (7.28, 23.69),
    ("mu", "vlb", "fixed_large"): (8.06, 13.22),
    ("mu", "native", "fixed_large"): None,
    ("eps", "vlb", "learned"): None,
    ("eps", "vlb", "fixed_large"): (7.67, 13.51),
    ("eps", "eps", "fixed_large"): (9.46, 3.17),
    ("eps", "native", "fixed_large"): (9.46, 3.17),
}
METRICS = ("isc_mean", "isc_std", "fid", "fid_matched", "kid_mean", "kid_std", "nll_bpd")
POINT_METRICS = ("sw", "mmd", "nll_bpd")
SCORE_LABEL = {"tweedie": "", "seed004": " (seed-004 score)"}


def collect(params, metrics_dir):
    """Long-format rows (one per cell, score and metric) for the cells in params, in grid order;
    `score` is `tweedie`, or `seed004` for the uncertainty model's second set of samples."""
    rows = []
    for cell_id, cell in params.cells.items():
        path = Path(metrics_dir) / f"{cell_id}.json"
        if not path.exists():
            raise StageError(f"{path}: missing; run the evaluate stage for cell {cell_id}")
        result = load_json(path)
        base = {"cell": cell_id, "parameterization": cell.parameterization,
                "weighting": cell.weighting, "sigma": cell.sigma, "status": result["status"],
                "step": result["step"]}
        scores = ("tweedie", "seed004") if cell.weighting == "uncertainty" else ("tweedie",)
        for score in scores:
            prefix = "" if score == "tweedie" else "seed004_"
            for metric in (POINT_METRICS if params.points else METRICS):
                # the NLL is the model's (one network); only the samples differ by score
                key = metric if metric == "nll_bpd" else prefix + metric
                rows.append({**base, "score": score, "metric": metric, "value": result.get(key)})
    return pd.DataFrame(rows)


def _fmt(value, digits=2, scale=1.0):
    if value is None or pd.isna(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def _wide(long):
    long = long.assign(row=long.cell + long.score.map(SCORE_LABEL))
    meta = long.drop_duplicates("row").set_index("row")[
        ["cell", "parameterization", "weighting", "sigma", "status", "step"]]
    values = long.pivot(index="row", columns="metric", values="value")
    return meta.join(values).reset_index(drop=True).assign(cell=list(meta.index))


def point_table(long, reference):
    lines = []
    for _, r in _wide(long).iterrows():
        ok = r.status == "ok"
        lines.append({"cell": r.cell, "param": r.parameterization, "weighting": r.weighting, "Sigma": r.sigma,
                      "SW": _fmt(r.get("sw"), 4) if ok else "-",
                      "MMD2x1e3": _fmt(r.get("mmd"), 3, 1e3) if ok else "-",
                      "NLL": _fmt(r.get("nll_bpd"), 3) if ok else "-",
                      "status": r.status if ok else f"{r.status} at step {r.step}"})
    ref = reference["rows"]
    for name, key in (("held-out real data (floor)", "heldout"), ("uniform noise (ceiling)", "noise")):
        row = ref[key]
        lines.append({"cell": name, "param": "", "weighting": "", "Sigma": "", "SW": _fmt(row["sw"], 4),
                      "MMD2x1e3": _fmt(row["mmd"], 3, 1e3), "NLL": "-", "status": f"n = {row['n']}"})
    return pd.DataFrame(lines)


def wide_table(long, reference):
    lines = []
    for _, r in _wide(long).iterrows():
        paper = PAPER_TABLE2.get((r.parameterization, r.weighting, r.sigma), "n/a")
        paper_is, paper_fid = ("unstable", "unstable") if paper is None else (("", "") if paper == "n/a" else paper)
        ok = r.status == "ok"
        lines.append({
            "cell": r.cell, "param": r.parameterization, "weighting": r.weighting, "Sigma": r.sigma,
            "IS": _fmt(r.get("isc_mean")) if ok else "-",
            "FID": _fmt(r.get("fid"), 3) if ok else "-",
            "FID@n": _fmt(r.get("fid_matched"), 3) if ok else "-",
            "KIDx1e3": _fmt(r.get("kid_mean"), 2, 1e3) if ok else "-",
            "NLL": _fmt(r.get("nll_bpd"), 3) if ok else "-",
            "status": r.status if ok else f"{r.status} at step {r.step}",
            "paper IS": paper_is, "paper FID": paper_fid,
        })
    ref = reference["rows"]
    for name, key in (("held-out real data (floor)", "heldout"), ("uniform noise (ceiling)", "noise")):
        row = ref[key]
        lines.append({"cell": name, "param": "", "weighting": "", "Sigma": "",
                      "IS": _fmt(row["isc_mean"]), "FID": _fmt(row["fid"], 3),
                      "FID@n": _fmt(row["fid"], 3), "KIDx1e3": _fmt(row["kid_mean"], 2, 1e3),
                      "NLL": "-", "status": f"n = {row['n']}", "paper IS": "", "paper FID": ""})
    return pd.DataFrame(lines)


def footer(metrics_dir, cells):
    """One line on the code and packages that made the numbers, flagging dirty trees."""
    records = [load_json(Path(metrics_dir) / f"{c}.json").get("provenance", {}) for c in cells]
    commits = sorted({r.get("commit", "unknown")[:12] for r in records})
    dirty = [c for c, r in zip(cells, records) if r.get("dirty")]
    v = records[0].get("versions", {}) if records else {}
    line = (f"Computed from commit {', '.join(commits)} with torch {v.get('torch')}, "
            f"torch-fidelity {v.get('torch-fidelity')}, diffusion-ablations {v.get('diffusion-ablations')}.")
    if dirty:
        line += f" DIRTY TREE (uncommitted changes) for: {', '.join(dirty)}."
    return line


def to_markdown(table, params, reference):
    n = params.sample.num_samples
    n_floor = reference["rows"]["heldout"]["n"]
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    if params.points:
        notes = ["", f"{n} samples per cell ({params.sample.sampler}, {params.sample.steps} steps) on "
                 f"{params.data.name}, 2-D points: SW is the sliced Wasserstein-2 distance and MMD2 the "
                 f"unbiased MMD^2 (Gaussian kernels) to the training points (pipeline/distances.py); the "
                 f"floor is the {n_floor} held-out points. NLL is the held-out VLB in bits/dim with a "
                 f"continuous Gaussian decoder (a density, so it can be negative). '(seed-004 score)' rows "
                 f"sample the same network with seed 004's score -(x - mu)/sigma_phi^2; '-' marks a "
                 f"cell that diverged."]
        return "\n".join([header, rule, *body, *notes]) + "\n"
    notes = [
        "",
        f"IS, FID and KID from torch-fidelity with the offline classifier as feature extractor, "
        f"{n} samples per cell ({params.sample.sampler}, {params.sample.steps} steps) against the "
        f"training set (the paper's protocol). FID@n scores the first {n_floor} samples, as many "
        f"as the held-out floor has, because FID falls as the sample count grows. NLL is the "
        f"held-out VLB in bits/dim. Paper columns: Ho et al. 2020 Table 2 on CIFAR-10 (Inception "
        f"features), for the ordering only; '-' marks a cell that diverged. '(seed-004 score)' "
        f"rows sample seed 004's uncertainty model with its proposed score -(x - mu)/sigma_phi^2 "
        f"instead of Tweedie's (same network, same NLL).",
    ]
    return "\n".join([header, rule, *body, *notes]) + "\n"


def to_latex(table):
    cols = list(table.columns)
    escape = lambda s: str(s).replace("_", r"\_").replace("&", r"\&")
    lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(cols) - 4) + "}", r"\toprule",
             " & ".join(escape(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics-dir", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--csv", required=True, help="output: long-format metrics (.csv)")
    parser.add_argument("--markdown", required=True, help="output: table (.md)")
    parser.add_argument("--latex", required=True, help="output: table (.tex)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    long = collect(params, args.metrics_dir)
    reference = load_json(args.reference)
    table = point_table(long, reference) if params.points else wide_table(long, reference)
    save_text(long.to_csv(index=False), args.csv)
    markdown = to_markdown(table, params, reference) + "\n" + footer(args.metrics_dir, list(params.cells)) + "\n"
    save_text(markdown, args.markdown)
    save_text(to_latex(table), args.latex)
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
