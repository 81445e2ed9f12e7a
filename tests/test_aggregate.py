"""The aggregate on synthetic metric files for the default grid (no training): replicate
groups become one row with n and an interval, a diverged seed is named and left out, the
baseline comparison is marked, and a grid that reproduces the paper's ordering is reported
as agreeing with it."""

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pipeline.report import papers, tables
from pipeline.report.summary import METRICS, collect, summarize
from pipeline.params import load

METRIC_KEYS = [m for m in METRICS]
PAPER = papers.ddpm_table2(ROOT / "papers" / "ddpm_2006.11239_table2.csv")


def fake_results(params, fid_of, diverged=(), noise=0.01):
    rng = np.random.default_rng(0)
    results = {}
    for cell_id, cell in params.cells.items():
        if cell_id in diverged:
            results[cell_id] = {"status": "diverged", "step": 300}
            continue
        fid = fid_of(cell) + rng.normal(0, noise)
        result = {"status": "ok", "step": params.train.steps, "n_samples": 1000, "n_matched": 359,
                  **{m: 1.0 for m in METRIC_KEYS}, "fid": fid, "fid_heldout_matched": fid + 1,
                  "nn_ratio": 0.9, "near_copy_fraction": 0.01}
        result["fid_boot"] = list(fid + 0.3 + rng.normal(0, noise, 50))  # biased resamples: the bias cancels
        result["fid_heldout_matched_boot"] = list(fid + 1.5 + rng.normal(0, noise, 50))
        results[cell_id] = result
    return results


def fake_reference():
    row = {"n": 359, "isc_mean": 9.0, "fid": 0.5, "kid_mean": 0.001, "fid_matched": 0.5, "fid_matched_sd": 0.05,
           "fid_matched_spread": "bootstrap", "fid_heldout_matched": 0.6, "fid_heldout_matched_sd": 0.04,
           "fid_heldout_matched_spread": "draws", "kid_heldout_mean": 0.0, "nn_ratio": 1.0,
           "near_copy_fraction": 0.0}
    return {"matched_n": 359, "rows": {"heldout": row, "train": {**row, "n": 1438, "nn_ratio": 0.0},
                                       "noise": {**row, "n": 1000, "fid": 300.0}}}


@pytest.fixture(scope="module")
def params():
    return load(ROOT / "params.yaml")


def paper_like(cell):
    """FID in the paper's order (scaled), 10 for rows the paper does not have."""
    paper = PAPER.get((cell.parameterization, cell.weighting, cell.Sigma))
    return paper[1] / 2 if paper else 10.0


def test_the_papers_table_is_read_from_its_csv(tmp_path):
    """papers/'s layout: one line per (row, metric); an empty Sigma is the paper's fixed one
    (our fixed_large), an empty value an unstable row; eps-native shares eps-eps's row."""
    header = "paper,table,dataset,row_label,parameterization,weighting,sigma,schedule,timestep_sampler,steps_or_iters,metric,value,note"
    lines = ["P,T2,D,a,mu,vlb,learned,linear,,,is,7.5,±0.1", "P,T2,D,a,mu,vlb,learned,linear,,,fid,20.25,",
             "P,T2,D,b,eps,eps,,linear,uniform,,is,9.5,", "P,T2,D,b,eps,eps,,linear,uniform,,fid,3.5,",
             "P,T2,D,c,mu,native,,linear,,,is,,unstable", "P,T2,D,c,mu,native,,linear,,,fid,,unstable"]
    (tmp_path / "t.csv").write_text("\n".join([header, *lines]) + "\n")
    assert papers.ddpm_table2(tmp_path / "t.csv") == {
        ("mu", "vlb", "learned"): (7.5, 20.25), ("eps", "eps", "fixed_large"): (9.5, 3.5),
        ("mu", "native", "fixed_large"): None, ("eps", "native", "fixed_large"): (9.5, 3.5)}
    assert len(PAPER) == 7 and sum(v is None for v in PAPER.values()) == 2  # the committed table: 6 rows


def test_replicates_are_one_row_with_n_and_a_diverged_seed_is_named(params):
    results = fake_results(params, paper_like, diverged={"mu-vlb-s1"})
    summary = summarize(params, results)
    table = tables.wide_table(params, results, summary, fake_reference(), PAPER)
    rows = table.set_index("cell")
    assert len(table) == len(params.replicate_groups()) + 3
    assert "eps-eps-s1" not in rows.index
    assert rows.loc["eps-eps", "n"] == 3 and "±" in rows.loc["eps-eps", "FID train"]
    assert rows.loc["eps-eps", "ΔFID train"] == "baseline"
    assert rows.loc["mu-vlb", "n"] == 1 and rows.loc["mu-vlb", "status"] == "mu-vlb-s1 diverged at step 300"
    assert "±" not in rows.loc["mu-vlb", "FID train"]
    assert rows.loc["x0-eps", "ΔFID train"].endswith("*")  # 10 vs ~1.6: clearly worse
    assert "(sd 0.050 boot)" in rows.loc["held-out images (floor vs train)", "FID@n train"]
    long = collect(params, {c: {**r, "step": r["step"]} for c, r in results.items()})
    assert set(long.cell) == set(params.cells) and set(long.against) == {"", "train", "heldout"}
    assert tables.to_latex(table).count(r"\\") == len(table) + 1


def test_a_grid_in_the_paper_order_agrees_with_the_paper(params):
    results = fake_results(params, paper_like)
    summary = summarize(params, results)
    lines = "\n".join(papers.ddpm_agreement(params, results, summary, PAPER))
    # eps-eps (3 seeds) stands for the paper's eps row; eps-native is not counted twice.
    assert "eps-native" not in lines.split("Rows the paper")[0]
    assert "6 of 6 orderings hold, 0 reversed, 0 unresolved" in lines
    assert "rows that map: +1.00" in lines
    assert "mu-native (trained, n = 1)" in lines


def test_orderings_within_the_noise_are_unresolved(params):
    results = fake_results(params, paper_like, noise=0.2)  # mu-vlb vs eps-vlb differ by 0.15
    lines = "\n".join(papers.ddpm_agreement(params, results, summarize(params, results), PAPER))
    assert "paper mu-vlb (13.22) < eps-vlb (13.51)" in lines
    assert next(l for l in lines.splitlines() if "mu-vlb (13.22) < eps-vlb" in l).endswith("unresolved")


def test_a_reversed_grid_is_reported_as_reversed(params):
    results = fake_results(params, lambda cell: 100 - paper_like(cell))
    lines = "\n".join(papers.ddpm_agreement(params, results, summarize(params, results), PAPER))
    assert "0 of 6 orderings hold, 6 reversed" in lines and "rows that map: -1.00" in lines


def test_summary_difference_and_interval(params):
    results = fake_results(params, paper_like)
    summary = summarize(params, results)
    fid = summary[summary.metric == "fid"].set_index("group")
    assert pd.isna(fid.loc["eps-eps", "diff"])  # the baseline is not compared with itself
    row = fid.loc["mu-vlb"]
    assert row["diff_low"] < row["diff"] < row["diff_high"] and row["significant"]
    assert row["diff"] == pytest.approx(13.22 / 2 - 3.17 / 2, abs=0.2)
