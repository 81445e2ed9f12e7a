"""The grid's numbers for the aggregate stage: every cell's metrics as long-format rows
(`collect`), and per replicate group (cells that differ only in train.seed) the mean over
seeds with its t-interval and, for the compared metrics, the difference to the baseline group
with a bootstrap interval over seeds and sample resamples (`summarize`).
"""

import numpy as np
import pandas as pd

from ..metrics import stats
from .papers import COMPARED, replicates, rng_for

# metric -> what it is measured against: the training set, the held-out set, or nothing.
METRICS = {
    "isc_mean": "", "isc_std": "",
    "fid": "train", "kid_mean": "train", "kid_std": "train",
    "fid_heldout": "heldout", "kid_heldout_mean": "heldout", "kid_heldout_std": "heldout",
    "fid_matched": "train", "fid_matched_sd": "train",
    "fid_heldout_matched": "heldout", "fid_heldout_matched_sd": "heldout",
    "nll_bpd": "heldout",
    "nn_ratio": "train", "near_copy_fraction": "train",
}
UNCERTAINTY_SCORE = ("isc_mean", "fid", "fid_matched", "kid_mean", "nn_ratio")  # seed 004's own score
POINT_METRICS = ("sw", "mmd", "nll_bpd")  # 2-D point data
BEST = ("fid_best", "fid_best_step")  # the lowest FID over EMA snapshots and its step


def _n_images(metric, result, params):
    if metric == "nll_bpd":
        return params.metrics.nll_examples
    if "matched" in metric:
        return result.get("n_matched")
    return result.get("n_samples")


def collect(params, results):
    """Long-format rows: one per cell and metric, with its replicate group, seed, what it is
    measured against and on how many images."""
    rows = []
    for cell_id, cell in params.cells.items():
        result = results[cell_id]
        base = {"cell": cell_id, "group": params.group_of(cell_id), "seed": params.cell_train(cell_id).seed,
                "parameterization": cell.parameterization, "weighting": cell.weighting, "Sigma": cell.Sigma,
                "status": result["status"], "step": result["step"]}
        for metric, against in METRICS.items():
            rows.append({**base, "metric": metric, "against": against,
                         "n_images": _n_images(metric, result, params), "value": result.get(metric)})
        for metric in UNCERTAINTY_SCORE if cell.weighting == "uncertainty" else ():
            rows.append({**base, "metric": f"uncertainty_{metric}", "against": METRICS.get(metric, "train"),
                         "n_images": _n_images(metric, result, params), "value": result.get(f"uncertainty_{metric}")})
        for metric in BEST:  # only with train.eval_every snapshots
            if metric in result:
                rows.append({**base, "metric": metric, "against": "train" if metric == "fid_best" else "",
                             "n_images": params.metrics.snapshot_samples, "value": result[metric]})
        for span, value in result.get("nll_bpd_by_t", {}).items():  # the NLL's terms over a range of t
            rows.append({**base, "metric": f"nll_bpd[{span}]", "against": "heldout",
                         "n_images": params.metrics.nll_examples, "value": value})
        for snapshot in result.get("fid_by_step", []):  # FID (and NLL) of the EMA weights at that step
            rows.append({**base, "metric": f"fid@{snapshot['step']}", "against": "train",
                         "n_images": params.metrics.snapshot_samples, "value": snapshot["fid"]})
            if "nll_bpd" in snapshot:
                rows.append({**base, "metric": f"nll_bpd@{snapshot['step']}", "against": "heldout",
                             "n_images": params.metrics.nll_examples, "value": snapshot["nll_bpd"]})
    return pd.DataFrame(rows)


def summarize(params, results):
    """One row per (replicate group, metric): mean, t-interval and n over seeds, and for the
    compared metrics the difference to the baseline group with its bootstrap interval."""
    s = params.stats
    groups = params.replicate_groups()
    baseline = params.group_of(s.baseline)
    rows = []
    for label, cells in groups.items():
        cell = params.cells[cells[0]]
        ok = [c for c in cells if results[c]["status"] == "ok"]
        overrides = {**{k: v for k, v in cell.train.items() if k != "seed"},
                     **{f"process.{k}": v for k, v in cell.process.items()}}
        for metric, against in METRICS.items():
            values = [results[c].get(metric) for c in ok]
            interval = stats.t_interval([np.nan if v is None else v for v in values], s.confidence)
            row = {"group": label, "cells": " ".join(cells), "parameterization": cell.parameterization,
                   "weighting": cell.weighting, "Sigma": cell.Sigma, "overrides": str(overrides or ""),
                   "seeds": len(cells), "diverged": len(cells) - len(ok), "metric": metric, "against": against,
                   "n": interval["n"], "mean": interval["mean"], "sd": interval["sd"],
                   "ci_low": interval["low"], "ci_high": interval["high"]}
            if metric in COMPARED and label != baseline and interval["n"] and groups[baseline]:
                base_reps = replicates(results, groups[baseline], metric)
                if base_reps:
                    diff = stats.difference_interval(replicates(results, cells, metric), base_reps, s.bootstrap,
                                                     s.confidence, rng_for(label + metric, s.seed))
                    welch = stats.welch_interval([p for p, _ in replicates(results, cells, metric)],
                                                 [p for p, _ in base_reps], s.confidence)
                    row.update(diff=diff["diff"], diff_low=diff["low"], diff_high=diff["high"],
                               significant=diff["significant"], welch_p=welch["p"])
            rows.append(row)
    return pd.DataFrame(rows)
