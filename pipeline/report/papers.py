# Long: one section per paper (DDPM, Min-SNR, EDM, Improved DDPM) on shared comparison helpers.
"""The papers' published numbers beside ours, for the aggregate stage's table.md.

Every paper value is read from `papers/*.csv` (transcribed and checked twice; papers/SOURCES.md
says from where), which are inputs of the aggregate stage in both tools: nothing here types a
paper's number. Which tables apply follows from the grid's process, as the papers' setups do:

- DDPM Tables 1 and 2 (Ho et al. 2020): linear-schedule VP grids. Table 2's rows map by
  (parameterization, weighting, Sigma); for each pair the paper orders, our FID difference
  with its bootstrap interval over seeds and sample resamples (`ddpm_agreement`), at every
  EMA snapshot (`ddpm_compute_lines`) and under each training setting a grid sweeps
  (`ddpm_settings_lines`). Table 1's NLL: L with a fixed Sigma against L_simple, over seeds
  (`ddpm_nll_lines`).
- Min-SNR Tables 1 and 2 (Hang et al. 2023): cosine-schedule VP grids with min_snr cells.
  Table 1: FID at every EMA snapshot (train.eval_every) for each target's own loss (`native`,
  the paper's baseline) and min_snr with gamma 5; Table 2: final FID over the gamma sweep;
  and FID vs steps for every cell (their Figure 5 as a table), with the claim "min-SNR
  converges faster for every target" checked budget by budget (`min_snr_sections`).
- EDM Table 2 (Karras et al. 2022): grids with at least two of its objective rows, C (eps
  prediction, L_simple, t uniform), D (+ EDM's preconditioning) and E (+ EDM's loss weight and
  log-normal noise levels), in the process's column (VP or VE): each step's FID difference
  against the paper's direction, and Spearman over the rows (`edm_lines`).
- Improved DDPM (Nichol & Dhariwal 2021): grids of L_simple, L_hybrid and L_vlb rows, under one
  schedule or both: its findings as orderings (their numbers are not transcribed): NLL, FID,
  loss noise, the cosine schedule's NLL with where in t it differs (`iddpm_lines`), and FID
  at fewer sampling steps from the sampler study (`iddpm_steps_lines`, the sampler_table's).

Our values are 8x8 digits with a small MLP, theirs CIFAR-10 and ImageNet: only orderings are
compared, never values.
"""

import itertools
import re
import zlib

import numpy as np
import pandas as pd

from ..metrics import stats

# Differences between rows: (metric, its bootstrap resamples in the cell's JSON).
COMPARED = {"fid": "fid_boot", "fid_heldout_matched": "fid_heldout_matched_boot"}
SNAPSHOT = re.compile(r"^fid@(\d+)$")  # metrics.csv's FID at an EMA snapshot's step


def rng_for(label, seed):
    """One generator per comparison, so an interval does not depend on the grid's order."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def replicates(results, cells, metric):
    """(point, bootstrap resamples) of every seed that finished, for stats.difference_interval."""
    return [(results[c][metric], results[c].get(COMPARED.get(metric))) for c in cells
            if results[c]["status"] == "ok" and results[c].get(metric) is not None]


def _read(path):
    # the CSVs' `sigma` column is the reverse-variance choice, our `Sigma`
    return pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns={"sigma": "Sigma"})


def _verdict(diff):
    return "holds" if diff["low"] > 0 else "reversed" if diff["high"] < 0 else "unresolved"


def _compare(params, results, worse, better, label):
    """Our FID difference (worse minus better group) with its bootstrap interval, or None."""
    a, b = replicates(results, worse, "fid"), replicates(results, better, "fid")
    if not a or not b:
        return None
    s = params.stats
    diff = stats.difference_interval(a, b, s.bootstrap, s.confidence, rng_for(label, s.seed))
    return {**diff, "n": (len(a), len(b)), "verdict": _verdict(diff)}


def _diff_text(diff, better_first=False):
    """_compare's difference, `+d [low, high] (n = x vs y seeds)`, the seeds counted in the
    sentence's order: worse then better ("A minus B"), or better first ("B < A")."""
    n = diff["n"][::-1] if better_first else diff["n"]
    return f"{diff['diff']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] (n = {n[0]} vs {n[1]} seeds)"


def _interval_text(diff, better_first=False):
    return f"{_diff_text(diff, better_first)}: {diff['verdict']}"


def _welch(higher, lower, confidence):
    """mean(higher) - mean(lower) over seeds with Welch's interval, and the verdict on the
    finding that `higher` is the larger."""
    diff = stats.welch_interval(higher, lower, confidence)
    return diff, "unresolved (one seed on a side: no interval)" if np.isnan(diff["low"]) else _verdict(diff)


def _welch_text(higher, lower, confidence, digits=3):
    diff, verdict = _welch(higher, lower, confidence)
    interval = "" if np.isnan(diff["low"]) else f" [{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"
    return f"{diff['diff']:+.{digits}f}{interval} (Welch over {diff['n_a']} and {diff['n_b']} seeds): {verdict}"


def _row_groups(params, rows, trains, train_keys, process_keys=()):
    """{paper row: the first replicate group that trains it}. `rows`: {paper row: what its
    cells train}; `trains(cell id)`: what a cell trains, in the same terms (None: no row). A
    group that overrides other train settings than `train_keys`, or other process settings
    than `process_keys`, trains something else and maps to no row."""
    out = {}
    for label, cells in params.replicate_groups().items():
        cell = params.cells[cells[0]]
        if cell.train.keys() - set(train_keys) or cell.process.keys() - set(process_keys):
            continue
        row = next((r for r, v in rows.items() if v == trains(cells[0])), None)
        if row is not None:
            out.setdefault(row, label)
    return out


# ----- DDPM Table 2 ----------------------------------------------------------------------------
def ddpm_table2(path):
    """Ho et al. 2020, Table 2 (CIFAR-10, unconditional): (parameterization, weighting, Sigma)
    -> (IS, FID), None for a row the paper reports as unstable. The paper's "fixed isotropic
    Sigma" is our fixed_large (beta_t; it found beta-tilde_t similar), and eps's native loss is
    L_simple, so eps-native maps to the same row as eps-eps."""
    rows = {}
    for (param, weighting, Sigma), group in _read(path).groupby(["parameterization", "weighting", "Sigma"],
                                                                 sort=False):
        values = dict(zip(group.metric, group.value))
        rows[(param, weighting, Sigma or "fixed_large")] = (
            (float(values["is"]), float(values["fid"])) if values.get("fid") else None)
    rows[("eps", "native", "fixed_large")] = rows[("eps", "eps", "fixed_large")]
    return rows


def _ddpm_key(params, cells, paper):
    """The Table 2 row (`paper`: ddpm_table2()'s key) a replicate group trains, or None."""
    cell = params.cells[cells[0]]
    if cell.train.keys() - {"seed"} or cell.process:
        return None  # a row with other training or process settings is not the paper's row
    key = (cell.parameterization, cell.weighting, cell.Sigma)
    return key if key in paper else None


def ddpm_applies(params, paper):
    """A linear-schedule VP grid that trains at least two of Table 2's rows with values: one
    row alone has no ordering to compare."""
    if params.process.kind != "vp" or params.process.schedule != "linear" or params.points:
        return False
    keys = {_ddpm_key(params, cells, paper) for cells in params.replicate_groups().values()} - {None}
    return len({paper[k] for k in keys if paper[k] is not None}) >= 2


def _ddpm_rows(params, results, paper):
    """({label: {paper FID, row, cells, n}} of the groups that train a Table 2 row with a value,
    [(label, cells, n)] of those the paper reports as unstable); n: the seeds that finished.
    eps-native is eps-eps's objective, one paper row: it counts once, with the group of most seeds."""
    mapped, unstable = {}, []
    for label, cells in params.replicate_groups().items():
        key = _ddpm_key(params, cells, paper)
        if key is None:
            continue
        n_ok = len(replicates(results, cells, "fid"))
        if paper[key] is None:
            unstable.append((label, cells, n_ok))
            continue
        same = next((k for k, v in mapped.items() if v["row"] == paper[key]), None)
        if same is not None and mapped[same]["n"] >= n_ok:
            continue
        mapped.pop(same, None)
        mapped[label] = {"paper": paper[key][1], "row": paper[key], "cells": cells, "n": n_ok}
    return mapped, unstable


def ddpm_compute_lines(params, results, paper):
    """With EMA snapshots (train.eval_every): every ordering of Table 2 at every snapshot's
    step, and the NLL at each step when metrics.snapshot_nll kept it: mean over seeds per row,
    each pair's difference (worse minus better row by the paper's FID) with Welch's interval
    over seeds. Does an ordering move toward the paper's with compute?"""
    mapped, _ = _ddpm_rows(params, results, paper)
    by_step = {label: {} for label in mapped}  # label -> step -> [(fid, nll) per seed]
    for label, row in mapped.items():
        for c in row["cells"]:
            for snap in results[c].get("fid_by_step", []) if results[c]["status"] == "ok" else ():
                by_step[label].setdefault(snap["step"], []).append((snap["fid"], snap.get("nll_bpd")))
    labels = [g for g in mapped if by_step[g]]
    steps = sorted(set.intersection(*(set(by_step[g]) for g in labels))) if len(labels) >= 2 else []
    if not steps:
        return []
    pairs = [(a, b) if mapped[a]["paper"] < mapped[b]["paper"] else (b, a)
             for a, b in itertools.combinations(labels, 2) if mapped[a]["paper"] != mapped[b]["paper"]]
    nll = all(v[1] is not None for g in labels for step in steps for v in by_step[g][step])
    conf = params.stats.confidence

    def values(label, step, i):
        return [v[i] for v in by_step[label][step] if v[i] is not None]
    lines = ["", f"**DDPM Table 2 with compute** (FID against the training set at each EMA snapshot, "
                 f"{params.metrics.snapshot_samples} samples by {params.sample.sampler} with {params.sample.steps} "
                 f"steps" + (f"; NLL on {params.metrics.nll_examples} held-out images" if nll else "")
                 + f"; mean over seeds; each pair the paper orders: worse minus better row, Welch's "
                 f"{conf:.0%} interval over seeds and whether the paper's ordering holds):", "",
             "| step | " + " | ".join(f"{g} FID" for g in labels) + "".join(f" | {w} - {b}" for b, w in pairs)
             + "".join(f" | {g} NLL" for g in labels if nll) + " |",
             "|---" * (1 + len(labels) * (2 if nll else 1) + len(pairs)) + "|"]
    for step in steps:
        means = [_fid(np.mean(values(g, step, 0))) for g in labels]
        diffs = []
        for b, w in pairs:
            diffs.append(_cell_diff(*_welch(values(w, step, 0), values(b, step, 0), conf)))
        nlls = [f"{np.mean(values(g, step, 1)):.3f}" for g in labels] if nll else []
        lines.append(f"| {step} | " + " | ".join(means + diffs + nlls) + " |")
    return lines


def ddpm_settings_lines(params, results, paper):
    """When the grid trains Table 2's rows under more than one training setting (a group's
    `train:` overrides besides its seed: the learning rate, the gradient clip, ...): each row's
    FID and NLL under each setting, and each pair the paper orders with our bootstrap interval
    of the difference. Does an ordering follow the optimizer's settings?"""
    groups = []  # (label, cells, paper row) of the groups that train a row with a value
    for label, cells in params.replicate_groups().items():
        cell = params.cells[cells[0]]
        key = (cell.parameterization, cell.weighting, cell.Sigma)
        if not cell.process and paper.get(key) is not None:
            groups.append((label, cells, paper[key]))
    swept = sorted({k for _, cells, _ in groups for k in params.cells[cells[0]].train if k != "seed"})
    settings = {}  # the swept keys' resolved values -> {paper row: (label, cells)}
    for label, cells, row in groups:
        values = tuple(getattr(params.cell_train(cells[0]), k) for k in swept)
        settings.setdefault(values, {}).setdefault(row, (label, cells))
    rows = [r for r in paper.values() if r is not None and all(r in s for s in settings.values())]
    rows = sorted(set(rows), key=lambda r: r[1])
    if not swept or len(settings) < 2 or len(rows) < 2:
        return []
    first = next(iter(settings.values()))
    name = {row: first[row][0] for row in rows}  # the group's label under the first setting
    pairs = [(a, b) for a, b in itertools.combinations(rows, 2) if a[1] != b[1]]  # (better, worse) by the paper
    nll = f"NLL (bits/dim, {params.metrics.nll_examples} held-out images)"
    lines = ["", f"**DDPM Table 2 under training settings** ({', '.join(swept)}; FID against the training set, "
                 f"mean over seeds; each pair the paper orders: worse minus better row with the "
                 f"{params.stats.confidence:.0%} bootstrap interval over seeds and sample resamples, and "
                 f"whether the paper's ordering holds; {nll}):", "",
             "| " + " | ".join(swept) + "".join(f" | {name[row]} FID" for row in rows)
             + "".join(f" | {name[w]} - {name[b]}" for b, w in pairs)
             + "".join(f" | {name[row]} NLL" for row in rows) + " |",
             "|---" * (len(swept) + 2 * len(rows) + len(pairs)) + "|"]
    for values, by_row in settings.items():
        cells = {row: by_row[row][1] for row in rows}
        fids = [_mean_text(results, cells[row], "fid", 2) for row in rows]
        diffs = []
        for better, worse in pairs:
            diff = _compare(params, results, cells[worse], cells[better], by_row[worse][0] + by_row[better][0])
            diffs.append("-" if diff is None else _cell_diff(diff, diff["verdict"]))
        nlls = [_mean_text(results, cells[row], "nll_bpd", 3) for row in rows]
        shown = [str(v) if isinstance(v, (str, bool)) else f"{v:g}" for v in values]
        lines.append("| " + " | ".join([*shown, *fids, *diffs, *nlls]) + " |")
    return lines


def _mean_text(results, cells, metric, digits):
    """`mean (n)` of a metric over the finished seeds, `-` when none finished."""
    values = [v for v, _ in replicates(results, cells, metric)]
    return f"{np.mean(values):.{digits}f} (n = {len(values)})" if values else "-"


def _cell_diff(diff, verdict):
    """A difference in a table cell: `+d [low, high] verdict`, or `+d (one seed: no interval)`."""
    if np.isnan(diff["low"]):
        return f"{diff['diff']:+.2f} (one seed: no interval)"
    return f"{diff['diff']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}] {verdict}"


def ddpm_agreement(params, results, summary, paper):
    """Lines under the table: which of DDPM Table 2's pairwise FID orderings hold here (with
    our bootstrap interval of the difference), Spearman's rank correlation over the rows
    that map, and what became of the rows the paper calls unstable. `paper`: ddpm_table2()."""
    s = params.stats
    mapped, unstable = _ddpm_rows(params, results, paper)
    lines = ["", f"**Agreement with DDPM Table 2** (FID against the training set, the paper's protocol; "
                 f"the paper's values are CIFAR-10, so only the ordering is compared). For each pair the "
                 f"paper orders, our difference (worse minus better row) with its "
                 f"{s.confidence:.0%} bootstrap interval over seeds and sample resamples:", ""]
    done = {k: v for k, v in mapped.items() if v["n"]}
    verdicts = []
    for a, b in itertools.combinations(done, 2):
        better, worse = (a, b) if done[a]["paper"] < done[b]["paper"] else (b, a)
        if done[a]["paper"] == done[b]["paper"]:
            continue
        diff = _compare(params, results, done[worse]["cells"], done[better]["cells"], better + worse)
        verdicts.append(diff["verdict"])
        lines.append(f"- paper {better} ({done[better]['paper']}) < {worse} ({done[worse]['paper']}): "
                     f"ours {_interval_text(diff, better_first=True)}")
    if not verdicts:
        lines.append("- fewer than two rows map to the paper's table with finished cells: nothing to compare")
    means = {label: summary[(summary.group == label) & (summary.metric == "fid")]["mean"].iloc[0] for label in done}
    rho, k = stats.rank_correlation([done[g]["paper"] for g in done], [means[g] for g in done])
    lines += ["", f"{verdicts.count('holds')} of {len(verdicts)} orderings hold, {verdicts.count('reversed')} "
                  f"reversed, {verdicts.count('unresolved')} unresolved (interval covers 0). Spearman rank "
                  f"correlation of mean FID with the paper's over the {k} rows that map: "
                  f"{'undefined (fewer than 3 rows)' if np.isnan(rho) else f'{rho:+.2f}'}."]
    if unstable:
        what = [f"{label} ({'all ' + str(len(cells)) + ' diverged' if not n_ok else f'trained, n = {n_ok}'})"
                for label, cells, n_ok in unstable]
        lines.append(f"Rows the paper reports as unstable: {', '.join(what)}.")
    return lines


# ----- DDPM Table 1 (NLL) -----------------------------------------------------------------------
def decoder(params):
    """How the NLL's t = 0 term was computed (process.decoder_cdf), for every table that shows it."""
    if params.process.decoder_cdf == "tanh":
        return ("its t = 0 term with the discretized Gaussian decoder's CDF by the tanh approximation "
                "of DDPM's and improved-diffusion's code (process.decoder_cdf: tanh)")
    return ("its t = 0 term with the discretized Gaussian decoder's CDF computed exactly (erf; DDPM's and "
            "improved-diffusion's code use a tanh approximation there; process.decoder_cdf)")


def ddpm_table1(path):
    """Ho et al. 2020, Table 1's NLL column on the test split: {(parameterization, weighting):
    bits/dim}. The table does not name the L row's parameterization; its IS and FID equal Table
    2's eps row with L and a fixed Sigma, so it maps to eps-vlb (papers/SOURCES.md)."""
    rows = {}
    for _, r in _read(path).iterrows():
        if r.metric == "nll_bits_per_dim" and r.note.startswith("test split") and r.value:
            rows[(r.parameterization or "eps", r.weighting)] = float(r.value)
    return rows


def ddpm_nll_lines(params, results, table1):
    """DDPM Table 1's NLL ordering (L with a fixed Sigma below L_simple) against ours: the
    held-out NLL of eps-vlb and eps-eps over seeds, with Welch's interval of the difference."""
    rows = {}
    for label, cells in params.replicate_groups().items():
        cell = params.cells[cells[0]]
        key = (cell.parameterization, "eps" if cell.weighting == "native" else cell.weighting)
        if key in table1 and cell.Sigma == "fixed_large" and not cell.train.keys() - {"seed"} and not cell.process:
            values = [results[c]["nll_bpd"] for c in cells
                      if results[c]["status"] == "ok" and results[c].get("nll_bpd") is not None]
            if len(values) > len(rows.get(key, ("", []))[1]):
                rows[key] = (label, values)
    vlb, simple = rows.get(("eps", "vlb")), rows.get(("eps", "eps"))
    if not vlb or not simple:
        return []  # the grid has not both rows (eps-vlb, and eps-eps or eps-native)
    lines = ["", f"**DDPM Table 1, NLL** (bits/dim on {params.metrics.nll_examples} held-out images, "
                 f"{decoder(params)}):", ""]
    return lines + [
        f"- paper: L, fixed Sigma {table1[('eps', 'vlb')]:.2f} < L_simple {table1[('eps', 'eps')]:.2f} (upper bounds, "
        f"CIFAR-10 test set); ours: {vlb[0]} {np.mean(vlb[1]):.3f} vs {simple[0]} {np.mean(simple[1]):.3f}; "
        f"L_simple minus L {_welch_text(simple[1], vlb[1], params.stats.confidence)}"]


# ----- Min-SNR Tables 1 and 2 -------------------------------------------------------------------
def min_snr_table1(path):
    """Hang et al. 2023, Table 1 (UNet): {(parameterization, weighting): {iterations: FID}};
    the baseline's weighting, which the table leaves unstated, is the target's own loss
    (`native`)."""
    rows = {}
    for _, r in _read(path).iterrows():
        if r.metric == "fid" and r.value:
            rows.setdefault((r.parameterization, r.weighting or "native"), {})[int(r.steps_or_iters)] = float(r.value)
    return rows


def min_snr_table2(path):
    """Hang et al. 2023, Table 2: {(backbone, parameterization): {gamma: FID}} (gamma as the
    note states it, `gamma=N`; the backbone as the row label names it)."""
    rows = {}
    for _, r in _read(path).iterrows():
        gamma = re.search(r"gamma=(\d+(?:\.\d+)?)", r.note)
        if r.metric == "fid" and r.value and gamma:
            backbone = r.row_label.split(" ")[0]
            rows.setdefault((backbone, r.parameterization), {})[float(gamma.group(1))] = float(r.value)
    return rows


def min_snr_applies(params):
    return (params.process.kind == "vp" and params.process.schedule == "cosine"
            and any(c.weighting == "min_snr" for c in params.cells.values()))


def _groups_by_objective(params):
    """{(parameterization, weighting, gamma or None): replicate group label} for rows whose
    only override is the min-SNR gamma (and seeds); gamma only for min_snr."""
    out = {}
    for label, cells in params.replicate_groups().items():
        cell = params.cells[cells[0]]
        if cell.train.keys() - {"seed", "min_snr_gamma"} or cell.Sigma != "fixed_large" or cell.process:
            continue
        gamma = params.cell_train(cells[0]).min_snr_gamma if cell.weighting == "min_snr" else None
        out.setdefault((cell.parameterization, cell.weighting, gamma), label)
    return out


def _curve(results, cells):
    """{step: mean FID over the finished seeds' snapshots}."""
    points = {}
    for c in cells:
        for row in results[c].get("fid_by_step", []) if results[c]["status"] == "ok" else []:
            if row["fid"] is not None:
                points.setdefault(row["step"], []).append(row["fid"])
    return {step: float(np.mean(v)) for step, v in sorted(points.items())}


def _fid(value):
    return "-" if value is None else f"{value:.2f}"


def min_snr_sections(params, results, table1, table2):
    """Lines for table.md: Min-SNR Table 1 beside ours, the claim of their Figure 5 checked on
    every target the grid trains, and Table 2's gamma sweep."""
    groups = params.replicate_groups()
    by_objective = _groups_by_objective(params)
    steps = sorted({s for label in by_objective.values() for s in _curve(results, groups[label])})
    nfe = f"{params.sample.sampler}, {params.sample.steps} steps"
    lines = ["", f"**Min-SNR Table 1** (Hang et al. 2023, UNet on ImageNet 256 latents; ours: FID against "
                 f"the training set of each EMA snapshot, {params.metrics.snapshot_samples} samples "
                 f"({nfe}); the paper's values are ImageNet, so only orderings are compared):", ""]
    paper_iters = sorted({i for row in table1.values() for i in row})
    lines += ["| target | weighting | " + " | ".join(f"ours @ {s}" for s in steps) + " | "
              + " | ".join(f"paper @ {i // 1000}k" for i in paper_iters) + " |",
              "|" + "---|" * (2 + len(steps) + len(paper_iters))]
    checks = []
    for param in ("x0", "eps", "v"):
        native, min_snr = by_objective.get((param, "native", None)), by_objective.get((param, "min_snr", 5.0))
        if native is None or min_snr is None:
            continue
        curves = {}
        for weighting, label in (("native", native), ("min_snr", min_snr)):
            curves[weighting] = _curve(results, groups[label])
            paper = table1.get((param, weighting), {})
            lines.append(f"| {param} | {weighting}{' (gamma 5)' if weighting == 'min_snr' else ''} | "
                         + " | ".join(_fid(curves[weighting].get(s)) for s in steps) + " | "
                         + " | ".join(_fid(paper.get(i)) for i in paper_iters) + " |")
        ours = sum(curves["min_snr"].get(s, np.inf) < curves["native"].get(s, -np.inf) for s in steps)
        paper = table1.get((param, "native"), {}), table1.get((param, "min_snr"), {})
        theirs = sum(paper[1][i] < paper[0][i] for i in paper_iters if i in paper[0] and i in paper[1])
        diff = _compare(params, results, groups[native], groups[min_snr], f"min_snr-{param}")
        checks.append(f"- {param}: min_snr below native at {ours} of {len(steps)} of our budgets"
                      + (f" (paper: {theirs} of {len(paper_iters)})" if paper[0] else " (not in the paper's table)")
                      + (f"; final FID native minus min_snr: {_interval_text(diff)}" if diff else ""))
    lines += ["", *checks]
    lines += figure5_lines(params, results, by_objective, groups, steps)
    lines += gamma_lines(params, results, by_objective, groups, table2)
    return lines


FIGURE5 = ("native", "eps", "trunc_snr", "min_snr")  # weightings on each target (their Figure 5)


def figure5_lines(params, results, by_objective, groups, steps):
    """FID vs steps for every (target, weighting) of Figure 5 the grid trains, and how often
    min_snr is the lowest of a target's weightings."""
    lines = ["", "**FID vs training steps** (their Figure 5 as a table; `eps` weighting = their "
                 "SNR strategy, lambda = SNR on the x0 loss; min_snr with gamma 5):", "",
             "| target | weighting | " + " | ".join(f"@ {s}" for s in steps) + " |",
             "|" + "---|" * (2 + len(steps))]
    claims = []
    for param in ("eps", "x0", "v"):
        curves = {w: _curve(results, groups[by_objective[(param, w, 5.0 if w == "min_snr" else None)]])
                  for w in FIGURE5 if (param, w, 5.0 if w == "min_snr" else None) in by_objective}
        for weighting, curve in curves.items():
            lines.append(f"| {param} | {weighting} | " + " | ".join(_fid(curve.get(s)) for s in steps) + " |")
        if "min_snr" in curves and len(curves) > 1 and steps:
            best = [min(curves, key=lambda w: curves[w].get(s, np.inf)) for s in steps]
            claims.append(f"{param}: min_snr lowest of {len(curves)} weightings at {best.count('min_snr')} of "
                          f"{len(steps)} budgets (first budget: {best[0]})")
    if claims:
        lines += ["", "Their claim, min-SNR converges faster for every target: " + "; ".join(claims) + "."]
    return lines


def gamma_lines(params, results, by_objective, groups, table2):
    """Table 2: final FID over the gamma sweep for each target, beside the paper's."""
    gammas = sorted({g for (_, w, g) in by_objective if w == "min_snr"})
    targets = [p for p in ("x0", "eps", "v") if sum((p, "min_snr", g) in by_objective for g in gammas) > 1]
    if not targets:
        return []
    paper_cols = [(b, p) for p in targets for b in sorted({b for b, _ in table2}) if (b, p) in table2]
    lines = ["", f"**Min-SNR Table 2** (gamma sweep; ours: final FID against the training set, "
                 f"{params.sample.num_samples} samples, mean over seeds; the paper's: ImageNet 256):", "",
             "| gamma | " + " | ".join(f"ours {p}" for p in targets) + " | "
             + " | ".join(f"paper {b} {p}" for b, p in paper_cols) + " |",
             "|" + "---|" * (1 + len(targets) + len(paper_cols))]
    means = {}
    for g in gammas:
        row = []
        for p in targets:
            label = by_objective.get((p, "min_snr", g))
            reps = replicates(results, groups[label], "fid") if label else []
            means[(p, g)] = float(np.mean([v for v, _ in reps])) if reps else None
            row.append(_fid(means[(p, g)]))
        lines.append(f"| {g:g} | " + " | ".join(row) + " | "
                     + " | ".join(_fid(table2[k].get(g)) for k in paper_cols) + " |")
    lines.append("")
    for p in targets:
        done = [g for g in gammas if means[(p, g)] is not None]
        if not done:
            lines.append(f"- {p}: no gamma finished (every seed diverged): nothing to compare")
            continue
        ours_best = min(done, key=lambda g: means[(p, g)])
        for backbone, param in paper_cols:
            if param != p:
                continue
            shared = [g for g in done if g in table2[(backbone, p)]]
            rho, k = stats.rank_correlation([table2[(backbone, p)][g] for g in shared], [means[(p, g)] for g in shared])
            theirs = min(table2[(backbone, p)], key=table2[(backbone, p)].get)
            lines.append(f"- {p} vs paper {backbone}: best gamma ours {ours_best:g}, theirs {theirs:g}; Spearman "
                         f"over {k} gammas: {'undefined' if np.isnan(rho) else f'{rho:+.2f}'}")
        base = by_objective.get((p, "min_snr", 5.0))
        for g in done:
            if g != 5.0 and base:
                diff = _compare(params, results, groups[by_objective[(p, "min_snr", g)]], groups[base],
                                f"gamma-{p}-{g:g}")
                if diff:
                    which = {"holds": "gamma 5 lower", "reversed": f"gamma {g:g} lower"}.get(diff["verdict"], "unresolved")
                    lines.append(f"- {p}: FID at gamma {g:g} minus at gamma 5: {_diff_text(diff)}: {which}")
    return lines


# ----- EDM Table 2 ----------------------------------------------------------------------------
# Its objective rows by what our cells train: (parameterization, weighting, timestep sampler).
EDM_ROWS = {"C": ("eps", "eps", "uniform"), "D": ("edm", "eps", "uniform"), "E": ("edm", "edm", "lognormal")}
EDM_NAMES = {"C": "baseline loss (eps prediction, L_simple, t uniform)", "D": "+ EDM preconditioning",
             "E": "+ EDM loss (lambda = 1/c_out^2, log-normal sigma)"}


def edm_table2(path, dataset="CIFAR-10 32x32 unconditional"):
    """Karras et al. 2022, Table 2, one data set's column pair: {(row letter, 'VP' | 'VE'): FID}."""
    rows = {}
    for _, r in _read(path).iterrows():
        column = re.match(r"column=(VP|VE)", r.note)
        if r.dataset == dataset and r.metric == "fid" and column:
            rows[(r.row_label[0], column.group(1))] = float(r.value)
    return rows


def _edm_groups(params):
    """{row letter: replicate group label} for the cells that train an EDM Table 2 row (the
    first such group of each row; rows with other overrides than seed and sampler do not map)."""
    def trains(c):
        cell = params.cells[c]
        weighting = "eps" if cell.weighting == "native" and cell.parameterization == "eps" else cell.weighting
        return ((cell.parameterization, weighting, params.cell_train(c).timestep_sampler)
                if cell.Sigma == "fixed_large" else None)
    return _row_groups(params, EDM_ROWS, trains, {"seed", "timestep_sampler"})


def edm_applies(params):
    return not params.points and len(_edm_groups(params)) >= 2


def edm_lines(params, results, table2, profiles=None):
    """EDM Table 2's C -> D -> E beside ours in the process's column: mean FID over seeds, each
    step's difference with its bootstrap interval against the paper's direction (holds,
    reversed or unresolved; the paper's change also as a share of its FID, since some steps
    are tiny), Spearman; with `profiles` ({cell: its profile.csv as a DataFrame}), where in t
    the rows' denoisers differ."""
    column = params.process.kind.upper()
    groups, rows = params.replicate_groups(), _edm_groups(params)
    s = params.sample
    lines = ["", f"**EDM Table 2, objective rows** (Karras et al. 2022, CIFAR-10 unconditional, {column} "
                 f"column; ours: FID against the training set, {s.num_samples} samples by {s.sampler} with "
                 f"{s.steps} steps, mean over seeds; their A -> C changes the network and hyperparameters, "
                 f"which we do not reproduce, so only C -> D -> E is compared, as orderings):", "",
             "| row | what changes | ours | n | paper |", "|---|---|---|---|---|"]
    means = {}
    for row in sorted(rows):
        reps = replicates(results, groups[rows[row]], "fid")
        means[row] = float(np.mean([v for v, _ in reps])) if reps else None
        lines.append(f"| {row} ({rows[row]}) | {EDM_NAMES[row]} | {_fid(means[row])} | {len(reps)} | "
                     f"{_fid(table2.get((row, column)))} |")
    lines.append("")
    for before, after in (("C", "D"), ("D", "E"), ("C", "E")):
        if before not in rows or after not in rows or (before, column) not in table2:
            continue
        paper = table2[(after, column)] - table2[(before, column)]
        diff = _compare(params, results, groups[rows[after]], groups[rows[before]], f"edm-{before}{after}")
        if diff is None:
            lines.append(f"- {before} -> {after}: a row has no finished cell: nothing to compare")
            continue
        theirs = "lower" if paper < 0 else "higher"
        # _verdict reads a difference as worse minus better: the paper's worse row is `after` when it rose
        verdict = _verdict(diff if paper > 0 else {"low": -diff["high"], "high": -diff["low"]})
        lines.append(f"- {before} -> {after}: paper {table2[(before, column)]:.2f} -> {table2[(after, column)]:.2f} "
                     f"({paper:+.2f}, {theirs}, {abs(paper) / table2[(before, column)]:.0%}); ours {after} minus "
                     f"{before} {_diff_text(diff)}: {verdict}")
    done = [r for r in sorted(rows) if means[r] is not None and (r, column) in table2]
    rho, k = stats.rank_correlation([table2[(r, column)] for r in done], [means[r] for r in done])
    lines.append(f"- Spearman rank correlation of mean FID with the paper's over the {k} rows: "
                 f"{'undefined (fewer than 3 rows)' if np.isnan(rho) else f'{rho:+.2f}'}")
    return lines + (_error_by_t(params, results, rows, profiles) if profiles else [])


def _error_by_t(params, results, rows, profiles):
    """Where the rows' denoisers differ: each row's eps-space MSE of the EMA model (the curves
    stage's profile.csv) averaged over ranges of t, mean over seeds, and the ratio of
    consecutive rows. An eps error at t reaches x0 multiplied by sigma_t / alpha_t, largest at
    the top of the range, where the sampler starts."""
    T, groups = params.process.T, params.replicate_groups()
    edges = [0, T // 2, 7 * T // 10, 9 * T // 10, T]
    spans = list(zip(edges[:-1], edges[1:]))
    mse = {}
    for row, label in sorted(rows.items()):
        frames = [profiles[c] for c in groups[label] if results[c]["status"] == "ok" and not profiles[c].empty]
        if frames:
            mse[row] = [np.mean([f.mse_eps[(f.t >= lo) & (f.t < hi)].mean() for f in frames]) for lo, hi in spans]
    if len(mse) < 2:
        return []
    lines = ["", "Where the rows' denoisers differ: the EMA model's eps-space MSE |eps - eps_hat|^2 over ranges of "
                 "t (the curves stage's per-t profile), mean over seeds, and the ratio of consecutive rows:", "",
             "| row | " + " | ".join(f"t {lo}-{hi - 1}" for lo, hi in spans) + " |", "|---" * (len(spans) + 1) + "|"]
    lines += [f"| {row} ({rows[row]}) | " + " | ".join(f"{v:.3g}" for v in values) + " |" for row, values in mse.items()]
    for before, after in itertools.pairwise(mse):
        lines.append(f"| {before} / {after} | " + " | ".join(f"{a / b:.2f}" for a, b in zip(mse[before], mse[after])) + " |")
    return lines


# ----- Improved DDPM (Nichol & Dhariwal 2021) ----------------------------------------------------
# Its objectives by what our cells train: (weighting, Sigma, timestep sampler), eps prediction.
# Their numbers are not transcribed (papers/ has none), so their findings are checked as orderings.
IDDPM_ROWS = {"simple": ("eps", "fixed_large", "uniform"), "hybrid": ("eps", "learned_range", "uniform"),
              "vlb": ("vlb", "learned_range", "importance"), "vlb_uniform": ("vlb", "learned_range", "uniform")}
IDDPM_NAMES = {"simple": "L_simple (fixed Sigma = beta)", "hybrid": "L_hybrid = L_simple + 0.001 L_vlb (learned Sigma)",
               "vlb": "L_vlb, t importance-sampled (learned Sigma)", "vlb_uniform": "L_vlb, t uniform (learned Sigma)"}
IDDPM_SHORT = {"simple": "L_simple", "hybrid": "L_hybrid", "vlb": "L_vlb, importance", "vlb_uniform": "L_vlb, uniform"}


def _iddpm_groups(params):
    """{(schedule, row): replicate group label} for the cells that train an Improved DDPM
    objective (eps prediction; only seed, t sampler, the VLB's scale and the schedule may differ
    from the experiment's), in grid order."""
    schedules = dict.fromkeys(params.cell_process(c).schedule for c in params.cells)
    rows = {(schedule, row): (schedule, *v) for schedule in schedules for row, v in IDDPM_ROWS.items()}

    def trains(c):
        cell = params.cells[c]
        weighting = "eps" if cell.weighting == "native" else cell.weighting
        return ((params.cell_process(c).schedule, weighting, cell.Sigma, params.cell_train(c).timestep_sampler)
                if cell.parameterization == "eps" else None)
    return _row_groups(params, rows, trains, {"seed", "timestep_sampler", "vlb_scale"}, {"schedule"})


def iddpm_applies(params):
    rows = _iddpm_groups(params)
    return not params.points and any((schedule, "simple") in rows and {(schedule, "hybrid"), (schedule, "vlb")} & rows.keys()
                                      for schedule, _ in rows)


def loss_noise(losses):
    """How noisy a training-loss curve is: the standard deviation of log(loss) about a
    quadratic in log(step), over the second half of training (the logged means of
    train.log_every steps), so the trend (a power law and its bend) is removed and the
    estimator's spread remains. NaN when a loss is not positive or fewer than 5 points remain."""
    late = losses[losses.step > losses.step.max() / 2]
    step, loss = late.step.to_numpy(dtype=float), late.loss.to_numpy(dtype=float)
    if len(loss) < 5 or (loss <= 0).any():
        return float("nan")
    x, y = np.log(step), np.log(loss)
    residual = y - np.polyval(np.polyfit(x, y, 2), x)
    return float(np.sqrt((residual**2).sum() / (len(y) - 3)))


def iddpm_lines(params, results, curves):
    """Improved DDPM's findings on this grid's rows (`curves`: {cell: its losses.csv as a
    DataFrame}): a table of mean FID, NLL and loss noise over seeds per schedule and row, each
    finding within a schedule with the interval of its difference (FID: bootstrap; NLL and
    noise: Welch over seeds) and whether it holds, is reversed or unresolved; with both
    schedules, the cosine schedule's NLL against the linear one's, row by row, and where in t
    the two differ (the NLL's terms over ranges of t, evaluate's nll_bpd_by_t)."""
    groups, rows, s = params.replicate_groups(), _iddpm_groups(params), params.sample
    ok = {key: [c for c in groups[label] if results[c]["status"] == "ok"] for key, label in rows.items()}
    nll = {key: [results[c]["nll_bpd"] for c in cells if results[c].get("nll_bpd") is not None] for key, cells in ok.items()}
    noise = {key: [loss_noise(curves[c]) for c in cells] for key, cells in ok.items()}
    schedules = list(dict.fromkeys(schedule for schedule, _ in rows))
    lines = ["", f"**Improved DDPM** (Nichol & Dhariwal 2021; their findings checked as orderings, their numbers are "
                 f"not transcribed; FID against the training set of {s.num_samples} samples by {s.sampler} with "
                 f"{s.steps} steps, NLL in bits/dim on {params.metrics.nll_examples} held-out images, "
                 f"{decoder(params)}; loss noise: the standard deviation of log(training loss) about its trend over "
                 f"the second half):", "",
             "| schedule | row | objective | FID | NLL | loss noise | n |", "|---|---|---|---|---|---|---|"]
    for (schedule, row), label in rows.items():
        fids = [v for v, _ in replicates(results, groups[label], "fid")]
        values = (f"{_fid(np.mean(fids))} | {np.mean(nll[schedule, row]):.3f} | {np.nanmean(noise[schedule, row]):.4f}"
                  if fids and nll[schedule, row] else "- | - | -")
        lines.append(f"| {schedule} | {label} | {IDDPM_NAMES[row]} | {values} | {len(ok[schedule, row])} |")
    lines.append("")

    def welch(higher, lower, values, what):
        """`what`: the finding that `higher` (a (schedule, row) key) has the larger value."""
        if higher in rows and lower in rows:
            lines.append(f"- {what}: {rows[higher]} minus {rows[lower]} "
                         f"{_welch_text(values[higher], values[lower], params.stats.confidence, 4)}")

    for sc in schedules:
        welch((sc, "simple"), (sc, "hybrid"), nll, f"L_hybrid's NLL below L_simple's ({sc})")
        if {(sc, "hybrid"), (sc, "simple")} <= rows.keys():  # the claim is a similar FID: unresolved agrees
            hybrid, simple = rows[sc, "hybrid"], rows[sc, "simple"]
            diff = _compare(params, results, groups[hybrid], groups[simple], f"iddpm-hybrid-simple-{sc}")
            if diff is not None:
                similar = {"holds": "L_hybrid worse", "reversed": "L_hybrid better",
                           "unresolved": "similar (no resolved difference)"}[diff["verdict"]]
                lines.append(f"- at a similar FID ({sc}): {hybrid} minus {simple} FID {_diff_text(diff)}: {similar}")
        welch((sc, "hybrid"), (sc, "vlb"), nll, f"L_vlb's NLL below L_hybrid's ({sc})")
        welch((sc, "simple"), (sc, "vlb"), nll, f"L_vlb's NLL below L_simple's ({sc})")
        if {(sc, "vlb"), (sc, "simple")} <= rows.keys():
            diff = _compare(params, results, groups[rows[sc, "vlb"]], groups[rows[sc, "simple"]], f"iddpm-vlb-simple-{sc}")
            lines.append(f"- L_vlb's FID worse than L_simple's ({sc}): " + (
                "a row has no finished cell: nothing to compare" if diff is None else
                f"{rows[sc, 'vlb']} minus {rows[sc, 'simple']} FID {_interval_text(diff)}"))
        welch((sc, "vlb_uniform"), (sc, "vlb"), noise,
              f"importance sampling makes L_vlb train with less noise ({sc}; loss noise, uniform minus importance)")
    if {"linear", "cosine"} <= set(schedules):
        for row in IDDPM_ROWS:
            welch(("linear", row), ("cosine", row), nll, f"the cosine schedule improves NLL ({IDDPM_SHORT[row]})")
        lines += _nll_by_t_table(results, rows, ok)
    return lines


def _nll_by_t_table(results, rows, ok):
    """Where the two schedules' NLLs differ: for each row on both, the mean over seeds of the
    NLL's terms summed over ranges of t (evaluate's nll_bpd_by_t), cosine minus linear."""
    pairs = [row for row in IDDPM_ROWS if ok.get(("linear", row)) and ok.get(("cosine", row))]
    spans = [list(results[ok["linear", row][0]].get("nll_bpd_by_t", {})) for row in pairs]
    if not pairs or not spans[0] or any(span != spans[0] for span in spans):
        return []

    def mean(key, span):
        return np.mean([results[c]["nll_bpd_by_t"][span] for c in ok[key]])
    lines = ["", "Where the schedules' NLLs differ: the NLL's terms summed over ranges of t (t = 0 the decoder's, "
                 "the prior's ~0 left out), mean over seeds, cosine minus linear, bits/dim:", "",
             "| row | " + " | ".join(spans[0]) + " | total |", "|---" * (len(spans[0]) + 2) + "|"]
    for row in pairs:
        diffs = [mean(("cosine", row), span) - mean(("linear", row), span) for span in spans[0]]
        lines.append(f"| {rows['cosine', row]} - {rows['linear', row]} | "
                     + " | ".join(f"{d:+.3f}" for d in diffs) + f" | {sum(diffs):+.3f} |")
    return lines


def iddpm_steps_lines(params, study):
    """Improved DDPM's "a learned Sigma loses less FID with fewer sampling steps" on the sampler
    study (`study`: the sampler_table's long rows): per schedule and sampler, each seed's FID at
    fewer steps minus its FID at the most steps, L_simple's against L_hybrid's (Welch over seeds)."""
    rows, groups = _iddpm_groups(params), params.replicate_groups()
    fid = study[(study.metric == "fid") & (study.status == "ok")].dropna(subset=["value"])
    value = {(r.cell, r.sampler, r.nfe_budget): r.value for r in fid.itertuples()}
    budgets = sorted(fid.nfe_budget.unique())
    lines = []
    for schedule in dict.fromkeys(schedule for schedule, _ in rows):
        if (schedule, "simple") not in rows or (schedule, "hybrid") not in rows:
            continue
        for sampler in dict.fromkeys(fid.sampler):
            most = budgets[-1]

            def loss(row, nfe):
                cells = groups[rows[schedule, row]]
                return [value[c, sampler, nfe] - value[c, sampler, most] for c in cells
                        if (c, sampler, nfe) in value and (c, sampler, most) in value]
            for nfe in budgets[:-1]:
                simple, hybrid = loss("simple", nfe), loss("hybrid", nfe)
                if simple and hybrid:
                    lines.append(f"- a learned Sigma loses less FID at {nfe} than at {most} {sampler} steps ({schedule}): "
                                 f"FID({nfe}) - FID({most}) {rows[schedule, 'simple']} {np.mean(simple):+.3f}, "
                                 f"{rows[schedule, 'hybrid']} {np.mean(hybrid):+.3f}; difference "
                                 f"{_welch_text(simple, hybrid, params.stats.confidence)}")
    if not lines:
        return []
    return ["", "**Improved DDPM, fewer sampling steps** (Nichol & Dhariwal 2021: a learned Sigma, L_hybrid's, "
                "loses less FID than L_simple's fixed one when sampling with fewer steps; per seed, FID at fewer "
                "steps minus FID at the most):", "", *lines]
