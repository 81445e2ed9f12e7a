"""Statistics behind numbers a reviewer can trust: t-intervals over seeds, subsample draws
at a matched sample count, the hierarchical (seeds x sample resamples) bootstrap of a
difference, nearest-neighbour memorization measures and rank agreement.

Pure numpy / scipy on arrays: no files, no diffusion math and no FID of its own; every FID
comes from torch-fidelity (pipeline.metrics.fidelity), these functions only choose which images
it scores and summarize what it returns. Everything random takes a numpy Generator.
"""

import math

import numpy as np
from scipy import stats as st

NAN = float("nan")


# ----- intervals over seeds -----------------------------------------------------------------
def t_interval(values, confidence=0.95):
    """Mean of independent replicates (seeds) with its two-sided Student-t interval.

    NaNs (diverged seeds) are dropped and `n` counts the rest; with one value the interval is
    undefined (NaN), with identical values it collapses onto the mean.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"mean": NAN, "sd": NAN, "low": NAN, "high": NAN, "half_width": NAN, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "sd": NAN, "low": NAN, "high": NAN, "half_width": NAN, "n": 1}
    sd = float(x.std(ddof=1))
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "half_width": half, "n": n}


def welch_interval(a, b, confidence=0.95):
    """mean(a) - mean(b) with Welch's t-interval and two-sided p-value (needs 2+ values each)."""
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"diff": NAN, "low": NAN, "high": NAN, "p": NAN, "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        if len(a) and len(b):
            out["diff"] = float(a.mean() - b.mean())
        return out
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # no spread at all: the difference is exact
        return {**out, "diff": diff, "low": diff, "high": diff, "p": 1.0 if diff == 0 else 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(st.t.ppf((1 + confidence) / 2, df)) * se
    p = float(2 * st.t.sf(abs(diff) / se, df))
    return {**out, "diff": diff, "low": diff - half, "high": diff + half, "p": p}


# ----- draws at a matched sample count -------------------------------------------------------
def subsets(pool_size, n, draws, rng):
    """Index arrays of `draws` random n-subsets (without replacement) of a pool. When n is
    the pool's size every subset is the pool itself, so one draw is returned."""
    if not 0 < n <= pool_size:
        raise ValueError(f"cannot draw {n} of {pool_size} images")
    if n == pool_size:
        return [np.arange(pool_size)]
    return [np.sort(rng.choice(pool_size, n, replace=False)) for _ in range(draws)]


def bootstrap_indices(pool_size, n, resamples, rng):
    """`resamples` index arrays of n draws with replacement from a pool."""
    return rng.integers(0, pool_size, size=(resamples, n))


def matched(metric, pool_size, n, draws, resamples, rng):
    """A set's metric at n images: mean and sd over `draws` random n-subsets of its pool
    (`metric` maps an index array to a number). A pool of exactly n images has one distinct
    subset: its value is the whole pool's and its sd comes from `resamples` bootstrap
    resamples instead; `spread` says which ('draws' or 'bootstrap')."""
    values = [float(metric(idx)) for idx in subsets(pool_size, n, draws, rng)]
    if len(values) > 1:
        return {"value": float(np.mean(values)), "sd": float(np.std(values, ddof=1)), "n": n,
                "draws": len(values), "spread": "draws", "values": values}
    boot = [float(metric(idx)) for idx in bootstrap_indices(pool_size, n, resamples, rng)]
    return {"value": values[0], "sd": float(np.std(boot, ddof=1)) if len(boot) > 1 else NAN, "n": n,
            "draws": 1, "spread": "bootstrap", "values": values}


# ----- hierarchical bootstrap ------------------------------------------------------------------
def replicate_means(replicates, resamples, rng):
    """Bootstrap distribution of a group's mean over seeds.

    `replicates` is one (point, boot) pair per seed: the seed's value and that value
    recomputed on bootstrap resamples of its samples (or None). Each draw resamples the seeds
    with replacement and, for every chosen seed, one of its sample resamples centred on its
    point, so a resampling bias (FID rises when duplicates shrink the effective sample)
    cancels and only the spread is kept.
    """
    points = np.array([float(p) for p, _ in replicates])
    k = len(points)
    devs = [np.asarray(b, dtype=float) - np.mean(b) if b is not None and len(b) else np.zeros(1)
            for _, b in replicates]
    longest = max(len(d) for d in devs)
    table = np.zeros((k, longest))
    lengths = np.array([len(d) for d in devs])
    for i, d in enumerate(devs):
        table[i, : len(d)] = d
    seeds = rng.integers(0, k, size=(resamples, k))
    picks = np.floor(rng.random((resamples, k)) * lengths[seeds]).astype(int)
    return (points[seeds] + table[seeds, picks]).mean(axis=1)


def difference_interval(a, b, resamples=2000, confidence=0.95, rng=None):
    """Percentile bootstrap interval of mean(a) - mean(b) over seeds and sample resamples
    (`a`, `b`: lists of (point, boot) as in replicate_means). `significant` when the
    interval excludes 0."""
    rng = rng if rng is not None else np.random.default_rng(0)
    diff = float(np.mean([p for p, _ in a]) - np.mean([p for p, _ in b]))
    spread = replicate_means(a, resamples, rng) - replicate_means(b, resamples, rng)
    low, high = (float(q) for q in np.quantile(spread, [(1 - confidence) / 2, (1 + confidence) / 2]))
    return {"diff": diff, "low": low, "high": high, "significant": bool(low > 0 or high < 0),
            "n_a": len(a), "n_b": len(b)}


# ----- memorization ----------------------------------------------------------------------------
def nearest_neighbour_distances(x, reference, batch=256):
    """L2 distance from each row of x to its nearest row of reference (both [n, d])."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    ref_sq = (reference ** 2).sum(1)
    out = np.empty(len(x))
    for start in range(0, len(x), batch):
        xb = x[start: start + batch]
        nearest = (ref_sq[None, :] - 2 * xb @ reference.T).argmin(1)  # |x|^2 is the same per row
        out[start: start + batch] = np.sqrt(((xb - reference[nearest]) ** 2).sum(1))  # exact: 0 for a copy
    return out


def memorization(samples, heldout, train, threshold=1.0):
    """How much a set copies the training set: its median nearest-training-neighbour
    distance over that of held-out real images (`nn_ratio`: 1.0 is no closer to the
    training set than new real data, 0 is exact copies) and the fraction of near-copies
    (distance < threshold)."""
    d_samples = nearest_neighbour_distances(samples, train)
    d_heldout = nearest_neighbour_distances(heldout, train)
    median_heldout = float(np.median(d_heldout))
    return {
        "nn_ratio": float(np.median(d_samples)) / median_heldout if median_heldout > 0 else NAN,
        "near_copy_fraction": float(np.mean(d_samples < threshold)),
        "nn_median": float(np.median(d_samples)),
        "heldout_nn_median": median_heldout,
        "heldout_near_copy_fraction": float(np.mean(d_heldout < threshold)),
    }


# ----- agreement with a published ordering -------------------------------------------------------
def rank_correlation(x, y):
    """Spearman's rank correlation of paired values and the number of pairs (NaN below 3)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or len(set(x[keep])) < 2 or len(set(y[keep])) < 2:
        return NAN, n
    return float(st.spearmanr(x[keep], y[keep]).statistic), n
