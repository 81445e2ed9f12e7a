"""The aggregate stage's table: the grid's summary as a DDPM-Table-2-style Markdown table (with
its notes and a fingerprint footer) and LaTeX table, floors and ceilings at the matched sample
count, the paper's CIFAR-10 values beside the rows that map, seed 004's lines, and the table
for 2-D point data (sliced Wasserstein, MMD^2, NLL).
"""

import numpy as np
import pandas as pd

from .. import provenance
from . import papers


def _fmt(value, digits=2, scale=1.0):
    if value is None or pd.isna(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def _mean_ci(summary, metric, digits, scale=1.0):
    """'mean ± half-width' over seeds (the t-interval), just the mean for one seed."""
    r = summary.get(metric)
    if r is None or not r["n"]:
        return "-"
    text = _fmt(r["mean"], digits, scale)
    if r["n"] > 1:
        text += f" ± {_fmt((r['ci_high'] - r['mean']), digits, scale)}"
    return text


def _diff(summary, metric, digits=2):
    r = summary.get(metric)
    if r is None or pd.isna(r.get("diff", np.nan)):
        return "-"
    star = "*" if r["significant"] else ""
    return f"{r['diff']:+.{digits}f} [{r['diff_low']:+.{digits}f}, {r['diff_high']:+.{digits}f}]{star}"


def _floor(row, metric, digits=3):
    """A floor or ceiling at the matched n: value and its sd ('bootstrap' when the set is
    used whole)."""
    if row.get(metric) is None:
        return "-"
    tag = " boot" if row.get(f"{metric}_spread") == "bootstrap" else ""
    return f"{_fmt(row[metric], digits)} (sd {_fmt(row.get(f'{metric}_sd'), digits)}{tag})"


def wide_table(params, results, summary, reference, paper):
    """The Markdown / LaTeX table: one row per replicate group, then floors and the ceiling;
    `paper`: papers.ddpm_table2() ({} where it does not apply)."""
    baseline = params.group_of(params.stats.baseline)
    lines = []
    for label, cells in params.replicate_groups().items():
        cell = params.cells[cells[0]]
        by_metric = {r["metric"]: r for r in summary[summary.group == label].to_dict("records")}
        n_ok = by_metric["fid"]["n"]
        row = paper.get((cell.parameterization, cell.weighting, cell.Sigma), "n/a")
        paper_is, paper_fid = ("unstable", "unstable") if row is None else (("", "") if row == "n/a" else row)
        failed = [c for c in cells if results[c]["status"] != "ok"]
        if len(cells) == 1 and failed:
            status = f"{results[cells[0]]['status']} at step {results[cells[0]]['step']}"
        else:
            status = "; ".join(f"{c} {results[c]['status']} at step {results[c]['step']}" for c in failed) or "ok"
        is_base = label == baseline
        lines.append({
            "cell": label, "param": cell.parameterization, "weighting": cell.weighting, "Sigma": cell.Sigma,
            "n": n_ok,
            "IS": _mean_ci(by_metric, "isc_mean", 2),
            "FID train": _mean_ci(by_metric, "fid", 3),
            "ΔFID train": "baseline" if is_base and n_ok else _diff(by_metric, "fid"),
            "FID@n train": _mean_ci(by_metric, "fid_matched", 3),
            "FID@n held-out": _mean_ci(by_metric, "fid_heldout_matched", 3),
            "ΔFID@n held-out": "baseline" if is_base and n_ok else _diff(by_metric, "fid_heldout_matched"),
            "KIDx1e3 train": _mean_ci(by_metric, "kid_mean", 2, 1e3),
            "KIDx1e3 held-out": _mean_ci(by_metric, "kid_heldout_mean", 2, 1e3),
            "NLL": _mean_ci(by_metric, "nll_bpd", 3),
            "NN ratio": _mean_ci(by_metric, "nn_ratio", 2),
            "copies %": _mean_ci(by_metric, "near_copy_fraction", 1, 100),
            "status": status, "paper IS": paper_is, "paper FID": paper_fid,
        })
    ref = reference["rows"]
    blank = {k: "-" for k in lines[0]} if lines else {}
    floor_rows = [
        ("held-out images (floor vs train)", ref["heldout"], {
            "IS": _fmt(ref["heldout"].get("isc_mean")), "FID@n train": _floor(ref["heldout"], "fid_matched"),
            "KIDx1e3 train": _fmt(ref["heldout"].get("kid_mean"), 2, 1e3)}),
        ("training images (copier; floor vs held-out)", ref["train"], {
            "IS": _fmt(ref["train"].get("isc_mean")), "FID@n train": _floor(ref["train"], "fid_matched"),
            "FID@n held-out": _floor(ref["train"], "fid_heldout_matched"),
            "KIDx1e3 held-out": _fmt(ref["train"].get("kid_heldout_mean"), 2, 1e3)}),
        ("uniform noise (ceiling)", ref["noise"], {
            "IS": _fmt(ref["noise"].get("isc_mean")), "FID train": _fmt(ref["noise"].get("fid"), 3),
            "FID@n train": _floor(ref["noise"], "fid_matched"),
            "FID@n held-out": _floor(ref["noise"], "fid_heldout_matched"),
            "KIDx1e3 train": _fmt(ref["noise"].get("kid_mean"), 2, 1e3),
            "KIDx1e3 held-out": _fmt(ref["noise"].get("kid_heldout_mean"), 2, 1e3)}),
    ]
    for name, row, values in floor_rows:
        lines.append({**blank, "cell": name, "param": "", "weighting": "", "Sigma": "", "n": "",
                      **values, "NN ratio": _fmt(row.get("nn_ratio")),
                      "copies %": _fmt(row.get("near_copy_fraction"), 1, 100),
                      "status": f"{row['n']} images", "paper IS": "", "paper FID": ""})
    table = pd.DataFrame(lines)
    return table if paper else table.drop(columns=["paper IS", "paper FID"])  # DDPM's process only


def pipe_table(table):
    """A table of formatted strings as a Markdown pipe table (pandas through tabulate)."""
    return table.to_markdown(index=False, disable_numparse=True)


def footer(results, cells):
    """One line on the code, data and packages that made the numbers (their fingerprints,
    which the stage checked against the current params, code and data before writing)."""
    made_by = results[cells[0]]["fingerprint"] if cells else {}
    model = made_by.get("inputs", {}).get("model", {})
    v = results[cells[0]].get("versions", {}) if cells else {}
    code = ", ".join(f"{stage} {provenance.code_hash(stage)[:8]}" for stage in ("train", "sample", "evaluate"))
    return (f"Every number above matches the current params and code by its fingerprint (code: {code}; "
            f"training data {model.get('inputs', {}).get('data', {}).get('train', '?')[:8]}); "
            f"computed with torch {v.get('torch')}, torch-fidelity {v.get('torch-fidelity')}.")


def to_markdown(table, params, reference):
    s, m = params.stats, params.metrics
    n = params.sample.num_samples
    n_matched = reference["matched_n"]
    inception = reference.get("feature_extractor", "classifier") == "inception-v3-compat"
    extractor = "torch-fidelity's InceptionV3 (inception-v3-compat)" if inception else "the offline classifier"
    comparable = "comparable" if inception and params.data.name == "cifar10" else "for the ordering only"
    notes = [
        "",
        f"One row per cell, or per group of seed replicates (cells that differ only in train.seed); "
        f"n is the number of seeds that finished. Values are means over seeds, ± the half-width of "
        f"their {s.confidence:.0%} t-interval (shown when n >= 2; with 2 or 3 seeds it is wide, "
        f"which is the honest answer). IS, FID and KID come from torch-fidelity with {extractor} "
        f"as feature extractor. **train** columns score against the training set (the "
        f"paper's protocol, which rewards copying training images); **held-out** columns score "
        f"against the {reference['rows']['heldout']['n']} held-out images no model saw. "
        f"FID train uses all {n} samples ({params.sample.sampler}, {params.sample.steps} steps). "
        f"FID falls as the sample count grows, so the FID@n columns score every set at the same "
        f"n = {n_matched} images: the mean over {m.draws} random subsets of a cell's samples (a set "
        f"of exactly n images is used whole). Floor and ceiling rows show the mean and sd over their "
        f"draws ('boot': a set of exactly n images, whose sd is that of {m.resamples} bootstrap "
        f"resamples): held-out images are the real-data floor against the training set; training "
        f"images are the floor against the held-out set and what a model that copies its training data "
        f"scores against the training set; uniform noise is the ceiling.",
        "",
        f"ΔFID: the row's mean minus the baseline's ({s.baseline}'s row), with a {s.confidence:.0%} "
        f"percentile bootstrap interval ({s.bootstrap} draws) over seeds and over {m.resamples} "
        f"bootstrap resamples of each seed's samples, FID recomputed by torch-fidelity on each; "
        f"* marks an interval that excludes 0. With one seed on either side the interval reflects "
        f"sample noise only, not seed-to-seed variation (FID moved 12-15% between two seeds of one "
        f"cell on 8x8 digits), so it is too narrow.",
        "",
        f"Memorization: NN ratio is the median L2 distance (pixels in [-1, 1]) from a sample to its "
        f"nearest training image over the same for held-out images (1.0: no closer to the training "
        f"set than new real data; 0: exact copies); copies % is the share of samples within "
        f"{m.copy_threshold:g} of a training image. NLL is the held-out VLB in bits/dim, {papers.decoder(params)}. "
        + (f"Paper columns: Ho et al. 2020 Table 2 on CIFAR-10 (Inception features), {comparable}; "
           if "paper FID" in table else "")
        + "'-' marks a cell that diverged.",
    ]
    return "\n".join([pipe_table(table), *notes]) + "\n"


def to_latex(table):
    cols = list(table.columns)
    escape = lambda s: (str(s).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")
                        .replace("±", r"$\pm$").replace("Δ", r"$\Delta$"))
    lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(cols) - 4) + "}", r"\toprule",
             " & ".join(escape(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def uncertainty_score_lines(params, results):
    """Seed 004's claim under test: the same network sampled with its proposed score."""
    lines = []
    for cell_id, cell in params.cells.items():
        r = results[cell_id]
        if cell.weighting == "uncertainty" and r["status"] == "ok":
            lines.append(f"- {cell_id}: FID {_fmt(r.get('fid'), 3)} with Tweedie's score, "
                         f"{_fmt(r.get('uncertainty_fid'), 3)} with seed 004's -(x - mu)/sigma_phi^2 "
                         f"(IS {_fmt(r.get('isc_mean'))} vs {_fmt(r.get('uncertainty_isc_mean'))}).")
    if lines:
        lines.insert(0, "Seed 004's uncertainty model, one network sampled with two scores:")
        lines.append("")
    return lines


def point_table(params, results, reference):
    """The table for 2-D point data: sliced Wasserstein and MMD^2 to the training points, NLL."""
    lines = []
    for cell_id, cell in params.cells.items():
        r = results[cell_id]
        ok = r["status"] == "ok"
        for prefix, label in (("", ""), ("uncertainty_", " (uncertainty score)")):
            if prefix and cell.weighting != "uncertainty":
                continue
            lines.append({"cell": cell_id + label, "param": cell.parameterization, "weighting": cell.weighting,
                          "Sigma": cell.Sigma, "SW": _fmt(r.get(prefix + "sw"), 4) if ok else "-",
                          "MMD2x1e3": _fmt(r.get(prefix + "mmd"), 3, 1e3) if ok else "-",
                          "NLL": _fmt(r.get("nll_bpd"), 3) if ok else "-",
                          "status": "ok" if ok else f"{r['status']} at step {r['step']}"})
    for name, key in (("held-out real data (floor)", "heldout"), ("uniform noise (ceiling)", "noise")):
        row = reference["rows"][key]
        lines.append({"cell": name, "param": "", "weighting": "", "Sigma": "", "SW": _fmt(row["sw"], 4),
                      "MMD2x1e3": _fmt(row["mmd"], 3, 1e3), "NLL": "-", "status": f"n = {row['n']}"})
    table = pd.DataFrame(lines)
    notes = ["", f"{params.sample.num_samples} samples per cell ({params.sample.sampler}, {params.sample.steps} "
             f"steps) on {params.data.name}, 2-D points: SW is the sliced Wasserstein-2 distance and MMD2 the "
             f"unbiased MMD^2 (Gaussian kernels) to the training points (pipeline/metrics/distances.py); the floor is "
             f"the {reference['rows']['heldout']['n']} held-out points. NLL is the held-out VLB in bits/dim with "
             f"a continuous Gaussian decoder (a density, so it can be negative); '-' marks a cell that diverged."]
    return table, "\n".join([pipe_table(table), *notes]) + "\n"
