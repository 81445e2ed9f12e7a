"""Stage `reference`: real-data statistics for torch-fidelity, computed once per data set
and keyed by the evaluator's weights (and the images) so they never go stale, for both
references (the training set, the paper's protocol, and the held-out set); also the
table's floor and ceiling rows, scored at the cells' matched sample count.

Rows: `heldout` (real images the model never saw: the floor against the training set),
`train` (training images: the floor against the held-out set, and what a model that
copies its training data scores against the training set) and `noise` (uniform noise:
the ceiling). At the matched n every set is scored on random n-subsets of its images
(pipeline.metrics.stats.matched); the held-out set is used whole when n is its size.
On 2-D point data the rows are distances (sliced Wasserstein, MMD^2) to the training points,
the ceiling is uniform noise over the data's bounding box, and the cache folder holds only a
note.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from . import accel, provenance
from .io import add_threads_argument, load_torch, run_stage, save_json, set_threads
from .metrics import stats
from .metrics.distances import point_metrics
from .metrics.fidelity import (cached_reference_features, compute_metrics, extract_features, extractor_settings,
                               fid_statistics, precompute_reference)
from .metrics.matched import fid_at_n, flat, flat_images, matched_n
from .params import load_or_exit


def point_reference(params, train, heldout, cache_dir, out, made_by):
    x = train["images"].double()
    lo, hi = x.min(0).values, x.max(0).values
    n = params.sample.num_samples
    generator = torch.Generator().manual_seed(params.metrics.seed)
    noise = lo + (hi - lo) * torch.rand(n, x.shape[1], generator=generator, dtype=torch.float64)
    seed = params.metrics.seed
    rows = {
        "train": {"n": len(x)},
        "heldout": {"n": len(heldout["images"]), **point_metrics(heldout["images"], x, seed=seed)},
        "noise": {"n": n, **point_metrics(noise, x, seed=seed)},
    }
    save_json({"note": "2-D points: distances to the training set, no feature extractor"},
              Path(cache_dir) / "points.json")
    save_json({"cache_key": None, "rows": rows, "fingerprint": made_by}, out)
    print(f"reference: held-out SW {rows['heldout']['sw']:.4f}, noise SW {rows['noise']['sw']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--evaluator", required=True, help="classifier weights (.pt)")
    parser.add_argument("--cache-dir", required=True, help="output: torch-fidelity cache folder")
    parser.add_argument("--out", required=True, help="output: floor and ceiling metrics (.json)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads(args.threads)
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    made_by = provenance.reference_record(params, provenance.data_inputs(train, heldout),
                                          provenance.file_sha256(args.evaluator))
    if params.points:
        return point_reference(params, train, heldout, args.cache_dir, args.out, made_by)
    x_train, x_held = train["images"], heldout["images"]
    levels = int(train["levels"]) or None
    extractor = extractor_settings(params.metrics.feature_extractor,
                                   accel.resolve_device(params.metrics.device, "metrics.device"))
    ref = precompute_reference(x_train, args.evaluator, args.cache_dir, "train", **extractor)
    precompute_reference(x_held, args.evaluator, args.cache_dir, "heldout", **extractor)
    m = params.metrics
    n = matched_n(params, len(x_held))
    common = dict(extractor_weights_path=args.evaluator, cache_root=args.cache_dir, seed=m.seed, **extractor,
                  kid_subset_size=m.kid_subset_size)
    vs_train, vs_held = dict(common, reference_cache_name="train"), dict(common, reference_cache_name="heldout")
    generator = torch.Generator().manual_seed(m.seed)
    noise = torch.randint(0, 256, (params.sample.num_samples, *x_train.shape[1:]), generator=generator,
                          dtype=torch.uint8)
    f_train = cached_reference_features(x_train, args.evaluator, args.cache_dir, "train", **extractor)
    f_held = cached_reference_features(x_held, args.evaluator, args.cache_dir, "heldout", **extractor)
    s_train, s_held = fid_statistics(f_train), fid_statistics(f_held)
    f_noise = extract_features(noise, args.evaluator, **extractor)
    rng = np.random.default_rng(m.seed)
    pixels = {"train": flat_images(x_train, levels), "heldout": flat_images(x_held, levels),
              "noise": flat_images(noise, levels)}

    def copying(name):
        out = stats.memorization(pixels[name], pixels["heldout"], pixels["train"], m.copy_threshold)
        return {"nn_ratio": out["nn_ratio"], "near_copy_fraction": out["near_copy_fraction"]}

    def against_heldout(images):
        out = compute_metrics(images, x_held, **vs_held)
        return {"fid_heldout": out["fid"], "kid_heldout_mean": out["kid_mean"], "kid_heldout_std": out["kid_std"]}

    rows = {
        "heldout": {"n": len(x_held), **compute_metrics(x_held, x_train, **vs_train),
                    **flat("fid_matched", fid_at_n(f_held, s_train, n, params, rng)), **copying("heldout")},
        "train": {"n": len(x_train), "isc_mean": ref["isc_mean"], "isc_std": ref["isc_std"],
                  **flat("fid_matched", fid_at_n(f_train, s_train, n, params, rng)),
                  **flat("fid_heldout_matched", fid_at_n(f_train, s_held, n, params, rng)),
                  **against_heldout(x_train), **copying("train")},
        "noise": {"n": len(noise), **compute_metrics(noise, x_train, **vs_train), **against_heldout(noise),
                  **flat("fid_matched", fid_at_n(f_noise, s_train, n, params, rng)),
                  **flat("fid_heldout_matched", fid_at_n(f_noise, s_held, n, params, rng)), **copying("noise")},
    }
    save_json({"cache_key": ref["cache_key"], "feature_extractor": extractor["feature_extractor"], "matched_n": n, "copy_threshold": m.copy_threshold,
               "rows": rows, "fingerprint": made_by}, args.out)
    print(f"reference: at n = {n}, held-out FID vs train {rows['heldout']['fid_matched']:.3f}, training "
          f"images FID vs held-out {rows['train']['fid_heldout_matched']:.3f}, noise FID vs train "
          f"{rows['noise']['fid_matched']:.2f}")


if __name__ == "__main__":
    run_stage(main)
