"""Sets compared at a matched sample count (FID falls as n grows): the n (`matched_n`), FID of
random n-subsets on cached features (`fid_at_n`) and its result as flat JSON keys (`flat`),
as the reference stage scores its floor and ceiling rows and the scoring stages their samples;
and images as pixel vectors for the memorization distances (`flat_images`).
"""

from ..data import to_model
from ..io import StageError
from . import stats
from .fidelity import fid_from_statistics, fid_statistics


def matched_n(params, n_heldout):
    """Images per set when sets are compared at equal n (FID falls as n grows): the held-out
    set's size, or fewer samples if there are fewer, unless metrics.matched_n says."""
    n = params.metrics.matched_n or min(n_heldout, params.sample.num_samples)
    if n > n_heldout:
        raise StageError(f"metrics.matched_n: {n} is larger than the held-out set ({n_heldout} images)")
    return n


def fid_at_n(features, reference_stats, n, params, rng):
    """FID (torch-fidelity, on cached features) of random n-subsets of a set, as a flat dict."""
    m = params.metrics
    score = lambda idx: fid_from_statistics(fid_statistics(features[idx]), reference_stats)
    return stats.matched(score, len(features), n, m.draws, m.resamples, rng)


def flat(prefix, matched):
    """A stats.matched result as JSON keys: value, sd, how the sd was measured, draws."""
    return {prefix: matched["value"], f"{prefix}_sd": matched["sd"],
            f"{prefix}_spread": matched["spread"], f"{prefix}_draws": matched["draws"]}


def flat_images(images, levels):
    """uint8 images -> [N, D] float64 in the models' [-1, 1] space (for pixel distances)."""
    return to_model(images, levels).flatten(1).double().numpy()
