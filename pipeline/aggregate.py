"""Stage `aggregate`: every cell's metrics into one long-format CSV, a per-row summary CSV
and a DDPM-Table-2-style Markdown and LaTeX table.

One table row per replicate group (cells that differ only in train.seed): the mean over
seeds with its t-interval and n, the FID difference to the baseline row with a bootstrap
interval over seeds and sample resamples, FID/KID against both references, the
memorization check, floors and ceilings at the matched sample count, the paper's CIFAR-10
values beside the rows that map and, under the table, how our ordering agrees with theirs
(DDPM, Min-SNR, EDM; Improved DDPM's findings as orderings, its loss noise read from the
curves stage's losses.csv).
Seed 004's uncertainty model is also scored on its samples drawn with the seed's proposed
score (`uncertainty_*` metrics, listed under the table). On 2-D point data the table's columns
are sliced Wasserstein, MMD^2 and NLL (`point_table`).
"""

import argparse
from pathlib import Path

import pandas as pd

from . import provenance
from .io import StageError, load_json, load_torch, read_csv, run_stage, save_text
from .params import load_or_exit
from .report import papers
from .report.summary import POINT_METRICS, collect, summarize
from .report.tables import footer, point_table, uncertainty_score_lines, to_latex, to_markdown, wide_table


def load_results(params, metrics_dir):
    """{cell id: its metrics JSON} for the cells in params, in grid order."""
    results = {}
    for cell_id in params.cells:
        path = Path(metrics_dir) / f"{cell_id}.json"
        if not path.exists():
            raise StageError(f"{path}: missing; run the evaluate stage for cell {cell_id}")
        results[cell_id] = load_json(path)
    return results


def per_cell_csv(params, folder, name, columns):
    """{cell id: `folder/<cell>/name`} as DataFrames (the curves stage's per-cell CSVs)."""
    return {c: read_csv(Path(folder) / c / name, columns) for c in params.cells}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics-dir", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--train", required=True, help="training split (.pt): its tensors are checked")
    parser.add_argument("--heldout", required=True, help="held-out split (.pt)")
    parser.add_argument("--evaluator", required=True, help="the evaluator's weights (.pt)")
    parser.add_argument("--evaluator-metrics", required=True, help="the evaluator stage's JSON")
    parser.add_argument("--ddpm-table1", required=True, help="papers/: DDPM Table 1's NLL (.csv)")
    parser.add_argument("--ddpm-table2", required=True, help="papers/: DDPM Table 2 (.csv)")
    parser.add_argument("--min-snr-table1", required=True, help="papers/: Min-SNR Table 1 (.csv)")
    parser.add_argument("--min-snr-table2", required=True, help="papers/: Min-SNR Table 2 (.csv)")
    parser.add_argument("--edm-table2", required=True, help="papers/: EDM Table 2 (.csv)")
    parser.add_argument("--losses-dir", required=True, help="the curves stage's folder: <cell>/losses.csv and profile.csv")
    parser.add_argument("--csv", required=True, help="output: long-format metrics (.csv)")
    parser.add_argument("--summary", required=True, help="output: one row per table row and metric (.csv)")
    parser.add_argument("--markdown", required=True, help="output: table (.md)")
    parser.add_argument("--latex", required=True, help="output: table (.tex)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    results = load_results(params, args.metrics_dir)
    reference = load_json(args.reference)
    shared, items = provenance.expected_shared(params, load_torch(args.train), load_torch(args.heldout),
                                               args.evaluator, load_json(args.evaluator_metrics), reference)
    provenance.check(items + [(f"cells.{c}", results[c].get("fingerprint"), provenance.expected_metrics(params, c, *shared))
                              for c in params.cells])
    if params.points:
        # One row per cell, score and metric; the NLL is the network's, the same for both scores.
        rows = [{"cell": c, "parameterization": cell.parameterization, "weighting": cell.weighting,
                 "Sigma": cell.Sigma, "status": results[c]["status"], "score": score, "metric": m,
                 "value": results[c].get(m if m == "nll_bpd" or score == "tweedie" else f"uncertainty_{m}")}
                for c, cell in params.cells.items()
                for score in (("tweedie", "uncertainty") if cell.weighting == "uncertainty" else ("tweedie",))
                for m in POINT_METRICS]
        long, summary = pd.DataFrame(rows), pd.DataFrame(columns=["group", "metric", "mean"])
        table, markdown = point_table(params, results, reference)
        markdown += "\n" + footer(results, list(params.cells)) + "\n"
    else:
        long = collect(params, results)
        summary = summarize(params, results)
        ddpm = papers.ddpm_table2(args.ddpm_table2)
        ddpm = ddpm if papers.ddpm_applies(params, ddpm) else {}
        table = wide_table(params, results, summary, reference, ddpm)
        lines = [*papers.ddpm_agreement(params, results, summary, ddpm),
                 *papers.ddpm_compute_lines(params, results, ddpm),
                 *papers.ddpm_settings_lines(params, results, ddpm),
                 *papers.ddpm_nll_lines(params, results, papers.ddpm_table1(args.ddpm_table1))] if ddpm else []
        if papers.min_snr_applies(params):
            lines += papers.min_snr_sections(params, results, papers.min_snr_table1(args.min_snr_table1),
                                             papers.min_snr_table2(args.min_snr_table2))
        if papers.edm_applies(params):
            profiles = per_cell_csv(params, args.losses_dir, "profile.csv", ["t", "mse_eps"])
            lines += papers.edm_lines(params, results, papers.edm_table2(args.edm_table2), profiles)
        if papers.iddpm_applies(params):
            curves = per_cell_csv(params, args.losses_dir, "losses.csv", ["step", "loss"])
            lines += papers.iddpm_lines(params, results, curves)
        markdown = (to_markdown(table, params, reference) + "\n".join(lines)
                    + "\n\n" + "\n".join(uncertainty_score_lines(params, results)) + footer(results, list(params.cells))
                    + "\n")
    save_text(long.to_csv(index=False), args.csv)
    save_text(summary.to_csv(index=False), args.summary)
    save_text(markdown, args.markdown)
    save_text(to_latex(table), args.latex)
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
