"""What the scoring stages share: evaluate scores a cell's samples and sampler_study a study
point's with `sample_metrics` (IS / FID / KID against both references, FID at the matched n and
on bootstrap resamples, memorization, mode coverage; sliced Wasserstein and MMD^2 on 2-D
points); both take `scoring_arguments` and fingerprint `scoring_inputs`.
"""

import numpy as np
import torch

from .. import provenance
from ..io import load_json
from . import stats
from .classifier import load_classifier, to_unit_range
from .distances import point_metrics
from .fidelity import cached_reference_features, compute_metrics, extract_features, fid_from_statistics, fid_statistics
from .matched import fid_at_n, flat, flat_images, matched_n


@torch.no_grad()
def class_fractions(evaluator_path, images):
    """Fraction of samples the evaluator assigns to each class (mode coverage)."""
    model = load_classifier(evaluator_path).eval()
    predicted = model(to_unit_range(images)).argmax(1)
    counts = torch.bincount(predicted, minlength=model.config["num_classes"])
    return (counts.double() / len(images)).tolist()


def sample_metrics(params, samples, train, heldout, evaluator, cache_dir, extractor):
    """Every sample-set metric of one cell, as flat JSON keys (see the module docstring);
    sliced Wasserstein and MMD^2 against the training points for 2-D point data."""
    if params.points:
        return point_metrics(samples, train["images"], seed=params.metrics.seed)
    m = params.metrics
    x_train, x_held = train["images"], heldout["images"]
    common = dict(extractor_weights_path=evaluator, cache_root=cache_dir, seed=m.seed,
                  kid_subset_size=m.kid_subset_size, **extractor)
    out = compute_metrics(samples, x_train, reference_cache_name="train", **common)
    held = compute_metrics(samples, x_held, reference_cache_name="heldout", **common)
    out.update(fid_heldout=held["fid"], kid_heldout_mean=held["kid_mean"], kid_heldout_std=held["kid_std"])
    # FID falls as the sample count grows: score n-subsets, as the floors are scored.
    features = extract_features(samples, evaluator, **extractor)
    s_train = fid_statistics(cached_reference_features(x_train, evaluator, cache_dir, "train", **extractor))
    s_held = fid_statistics(cached_reference_features(x_held, evaluator, cache_dir, "heldout", **extractor))
    n, total = matched_n(params, len(x_held)), len(samples)
    rng = np.random.default_rng(m.seed)
    out["n_matched"] = n
    out.update(flat("fid_matched", fid_at_n(features, s_train, n, params, rng)))
    out.update(flat("fid_heldout_matched", fid_at_n(features, s_held, n, params, rng)))
    # Bootstrap resamples of the samples for the aggregate's intervals (same rng: reproducible).
    resample = lambda size, ref: [round(fid_from_statistics(fid_statistics(features[idx]), ref), 5)
                                  for idx in stats.bootstrap_indices(total, size, m.resamples, rng)]
    out["fid_boot"] = resample(total, s_train)
    out["fid_heldout_matched_boot"] = resample(n, s_held)
    levels = int(train["levels"]) or None
    copying = stats.memorization(flat_images(samples, levels), flat_images(x_held, levels),
                                 flat_images(x_train, levels), m.copy_threshold)
    out.update(nn_ratio=copying["nn_ratio"], near_copy_fraction=copying["near_copy_fraction"],
               nn_median=copying["nn_median"])
    if extractor["feature_extractor"] != "inception-v3-compat":  # Inception's classes are not the data's
        fractions = class_fractions(evaluator, samples)
        out["min_class_fraction"] = min(fractions)
        out["class_fractions"] = [round(f, 4) for f in fractions]
    return out


def scoring_arguments(parser):
    """The options every scoring stage takes (evaluate, sampler_study): inputs and the output."""
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cell", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--evaluator", required=True)
    parser.add_argument("--reference", required=True, help="the reference stage's JSON")
    parser.add_argument("--cache-dir", required=True, help="the reference stage's cache folder")
    parser.add_argument("--out", required=True, help="output: metrics (.json)")
    return parser


def scoring_inputs(args, train, heldout):
    """(data, evaluator, reference) as fingerprint inputs: the data's tensor hashes, the
    evaluator file's hash and the reference stage's fingerprint (its caches are complete)."""
    reference = load_json(args.reference).get("fingerprint") or {"id": None}
    return provenance.data_inputs(train, heldout), provenance.file_sha256(args.evaluator), reference
