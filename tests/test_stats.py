"""pipeline.metrics.stats on synthetic inputs with known answers: intervals on identical and known
samples, draws and bootstrap resamples, the hierarchical bootstrap of a difference, the
memorization measures of exact copies and of fresh data, and rank agreement."""

import math

import numpy as np
import pytest
from scipy import stats as st

from pipeline.metrics import stats


def test_t_interval_of_identical_values_collapses_onto_the_mean():
    out = stats.t_interval([3.0, 3.0, 3.0, 3.0])
    assert out == {"mean": 3.0, "sd": 0.0, "low": 3.0, "high": 3.0, "half_width": 0.0, "n": 4}


def test_t_interval_matches_the_textbook_formula_and_drops_nan():
    x = [1.0, 2.0, 4.0, float("nan")]
    out = stats.t_interval(x, confidence=0.9)
    half = st.t.ppf(0.95, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(7 / 3)
    assert (out["low"], out["high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half))


def test_t_interval_of_one_seed_is_undefined():
    out = stats.t_interval([5.0])
    assert out["mean"] == 5.0 and out["n"] == 1 and math.isnan(out["low"]) and math.isnan(out["half_width"])
    assert stats.t_interval([])["n"] == 0


def test_welch_on_identical_samples_is_no_difference():
    a = [1.0, 2.0, 3.5]
    out = stats.welch_interval(a, list(a))
    assert out["diff"] == 0 and out["p"] == pytest.approx(1.0) and out["low"] == pytest.approx(-out["high"])
    exact = stats.welch_interval([2.0, 2.0], [2.0, 2.0])
    assert (exact["diff"], exact["low"], exact["high"], exact["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_welch_p_value_is_scipys():
    a, b = [1.0, 2.0, 3.0, 4.5], [3.0, 4.0, 6.0]
    out = stats.welch_interval(a, b)
    assert out["p"] == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert out["low"] < out["diff"] < out["high"]


def test_subsets_are_without_replacement_and_the_whole_pool_is_one_draw():
    rng = np.random.default_rng(0)
    draws = stats.subsets(10, 4, 5, rng)
    assert len(draws) == 5 and all(len(set(d.tolist())) == 4 for d in draws)
    assert [d.tolist() for d in stats.subsets(6, 6, 5, rng)] == [list(range(6))]
    with pytest.raises(ValueError):
        stats.subsets(3, 4, 1, rng)


def test_floor_from_the_same_data_is_zero():
    """A 'floor' drawn from the reference's own images at the reference's size is the
    reference itself: its distance (here |mean difference| + |sd difference|) is exactly 0."""
    pool = np.random.default_rng(0).normal(size=40)
    distance = lambda idx: abs(pool[idx].mean() - pool.mean()) + abs(pool[idx].std() - pool.std())
    out = stats.matched(distance, 40, 40, 5, 50, np.random.default_rng(1))
    assert out["value"] == 0.0 and out["values"] == [0.0] and out["sd"] > 0  # the sd is the bootstrap's
    smaller = stats.matched(distance, 40, 20, 5, 50, np.random.default_rng(1))
    assert smaller["draws"] == 5 and smaller["spread"] == "draws" and smaller["value"] > 0


def test_matched_uses_bootstrap_spread_when_the_pool_is_exhausted():
    pool = np.random.default_rng(1).normal(size=50)
    mean_of = lambda idx: pool[idx].mean()
    out = stats.matched(mean_of, 50, 50, 5, 400, np.random.default_rng(2))
    assert out["spread"] == "bootstrap" and out["draws"] == 1
    assert out["value"] == pytest.approx(pool.mean())
    assert out["sd"] == pytest.approx(pool.std() / math.sqrt(50), rel=0.2)  # the standard error


def test_bootstrap_interval_covers_zero_for_identical_inputs():
    rng = np.random.default_rng(0)
    group = [(4.0 + s, rng.normal(4.0 + s, 0.3, size=200)) for s in (0.0, 0.4, -0.2)]
    out = stats.difference_interval(group, list(group), resamples=2000, rng=np.random.default_rng(1))
    assert out["diff"] == 0 and out["low"] < 0 < out["high"] and not out["significant"]
    assert out["n_a"] == out["n_b"] == 3


def test_bootstrap_interval_without_spread_is_the_exact_difference():
    out = stats.difference_interval([(1.0, [5.0, 5.0])], [(3.0, None)], resamples=100)
    assert (out["diff"], out["low"], out["high"], out["significant"]) == (-2.0, -2.0, -2.0, True)


def test_bootstrap_resampling_bias_cancels():
    """Resamples biased upward by +10 (as FID is under duplicate images) leave the
    interval centred on the points' difference."""
    rng = np.random.default_rng(0)
    a = [(5.0, 15.0 + rng.normal(0, 0.1, 300))]
    b = [(2.0, 12.0 + rng.normal(0, 0.1, 300))]
    out = stats.difference_interval(a, b, resamples=2000, rng=rng)
    assert out["low"] < 3.0 < out["high"] and out["high"] - out["low"] < 1.0


def test_exact_copies_have_zero_distance_and_are_all_near_copies():
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, size=(300, 64))
    heldout = rng.uniform(-1, 1, size=(80, 64))
    copies = train[rng.choice(300, 100)]
    assert stats.nearest_neighbour_distances(copies, train).max() == 0.0
    out = stats.memorization(copies, heldout, train, threshold=1.0)
    assert out["nn_ratio"] == 0.0 and out["near_copy_fraction"] == 1.0
    assert out["heldout_near_copy_fraction"] == 0.0


def test_fresh_samples_from_the_data_distribution_have_ratio_one():
    rng = np.random.default_rng(0)
    train, heldout, fresh = (rng.uniform(-1, 1, size=(n, 64)) for n in (400, 400, 400))
    out = stats.memorization(fresh, heldout, train)
    assert out["nn_ratio"] == pytest.approx(1.0, abs=0.05) and out["near_copy_fraction"] == 0.0


def test_nearest_neighbour_distance_is_exact():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    ref = np.array([[3.0, 0.0], [0.0, 1.0], [3.0, 5.0]])
    assert stats.nearest_neighbour_distances(x, ref).tolist() == [1.0, 1.0]


def test_rank_correlation():
    assert stats.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == (1.0, 4)
    assert stats.rank_correlation([1, 2, 3], [3, 2, 1]) == (-1.0, 3)
    rho, n = stats.rank_correlation([1, 2], [1, 2])
    assert math.isnan(rho) and n == 2
