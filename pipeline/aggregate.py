"""Stage `aggregate`: every cell's metrics into one long-format CSV and a DDPM-Table-2-style
Markdown and LaTeX table, with the paper's CIFAR-10 values beside the rows that map and
rows for held-out real data (the floor) and uniform noise (the ceiling)."""

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
BEST = ("fid_best", "fid_best_step")  # only with train.eval_every snapshots


def collect(params, metrics_dir):
    """Long-format rows (one per cell and metric) for the cells in params, in grid order."""
    rows = []
    for cell_id, cell in params.cells.items():
        path = Path(metrics_dir) / f"{cell_id}.json"
        if not path.exists():
            raise StageError(f"{path}: missing; run the evaluate stage for cell {cell_id}")
        result = load_json(path)
        base = {"cell": cell_id, "parameterization": cell.parameterization,
                "weighting": cell.weighting, "sigma": cell.sigma, "status": result["status"],
                "step": result["step"]}
        for metric in METRICS + tuple(m for m in BEST if m in result):
            rows.append({**base, "metric": metric, "value": result.get(metric)})
    return pd.DataFrame(rows)


def _fmt(value, digits=2, scale=1.0):
    if value is None or pd.isna(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def wide_table(long, reference):
    meta = long.drop_duplicates("cell").set_index("cell")[["parameterization", "weighting", "sigma", "status", "step"]]
    values = long.pivot(index="cell", columns="metric", values="value")
    wide = meta.join(values).reset_index()
    lines = []
    for _, r in wide.iterrows():
        paper = PAPER_TABLE2.get((r.parameterization, r.weighting, r.sigma), "n/a")
        paper_is, paper_fid = ("unstable", "unstable") if paper is None else (("", "") if paper == "n/a" else paper)
        ok = r.status == "ok"
        lines.append({
            "cell": r.cell, "param": r.parameterization, "weighting": r.weighting, "Sigma": r.sigma,
            "IS": _fmt(r.get("isc_mean")) if ok else "-",
            "FID": _fmt(r.get("fid"), 3) if ok else "-",
            **({"best FID (step)": f"{_fmt(r.get('fid_best'), 3)} ({_fmt(r.get('fid_best_step'), 0)})"
                if ok and not pd.isna(r.get("fid_best")) else "-"} if "fid_best" in wide else {}),
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
                      **({"best FID (step)": ""} if "fid_best" in wide else {}),
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
    inception = reference.get("feature_extractor", "classifier") == "inception-v3-compat"
    extractor = ("torch-fidelity's InceptionV3 (inception-v3-compat)" if inception
                 else "the offline classifier")
    best = (f" Best FID: the lowest FID over the EMA snapshots kept every {params.train.eval_every} "
            f"training steps, {params.metrics.snapshot_samples} samples each (the paper reports the "
            f"best over training)." if "best FID (step)" in table.columns else "")
    notes = [
        "",
        f"IS, FID and KID from torch-fidelity with {extractor} as feature extractor, "
        f"{n} samples per cell ({params.sample.sampler}, {params.sample.steps} steps) against the "
        f"training set (the paper's protocol). FID@n scores the first {n_floor} samples, as many "
        f"as the held-out floor has, because FID falls as the sample count grows. NLL is the "
        f"held-out VLB in bits/dim.{best} Paper columns: Ho et al. 2020 Table 2 on CIFAR-10 (Inception "
        f"features), {'comparable' if inception and params.data.name == 'cifar10' else 'for the ordering only'}; "
        f"'-' marks a cell that diverged.",
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
    table = wide_table(long, reference)
    save_text(long.to_csv(index=False), args.csv)
    markdown = to_markdown(table, params, reference) + "\n" + footer(args.metrics_dir, list(params.cells)) + "\n"
    save_text(markdown, args.markdown)
    save_text(to_latex(table), args.latex)
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
