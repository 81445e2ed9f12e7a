"""Stage `reference`: real-data statistics for torch-fidelity, computed once per data set
and keyed by the evaluator's weights (and the images) so they never go stale; also the
table's floor (held-out real data) and ceiling (uniform noise) rows. On 2-D point data the
rows are distances (sliced Wasserstein, MMD^2) to the training points, the ceiling is
uniform noise over the data's bounding box, and the cache folder holds only a note."""

import argparse
from pathlib import Path

import torch

from .distances import point_metrics
from .io import load_torch, run_stage, save_json, set_threads
from .params import load_or_exit


def point_reference(params, train, heldout, cache_dir, out):
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
    save_json({"cache_key": None, "rows": rows}, out)
    print(f"reference: held-out SW {rows['heldout']['sw']:.4f}, noise SW {rows['noise']['sw']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--evaluator", required=True, help="classifier weights (.pt)")
    parser.add_argument("--cache-dir", required=True, help="output: torch-fidelity cache folder")
    parser.add_argument("--out", required=True, help="output: floor and ceiling metrics (.json)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads()
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    if params.points:
        return point_reference(params, train, heldout, args.cache_dir, args.out)
    from .fidelity import compute_metrics, precompute_reference

    ref = precompute_reference(train["images"], args.evaluator, args.cache_dir, "train")
    kid = params.metrics.kid_subset_size
    common = dict(extractor_weights_path=args.evaluator, cache_root=args.cache_dir,
                  reference_cache_name="train", seed=params.metrics.seed)
    n = params.sample.num_samples
    generator = torch.Generator().manual_seed(params.metrics.seed)
    noise = torch.randint(0, 256, (n, *train["images"].shape[1:]), generator=generator, dtype=torch.uint8)
    rows = {
        "train": {"n": len(train["images"]), "isc_mean": ref["isc_mean"], "isc_std": ref["isc_std"]},
        "heldout": {"n": len(heldout["images"]),
                    **compute_metrics(heldout["images"], train["images"], kid_subset_size=kid, **common)},
        "noise": {"n": n, **compute_metrics(noise, train["images"], kid_subset_size=kid, **common)},
    }
    save_json({"cache_key": ref["cache_key"], "rows": rows}, args.out)
    print(f"reference: held-out FID {rows['heldout']['fid']:.3f}, noise FID {rows['noise']['fid']:.2f}")


if __name__ == "__main__":
    run_stage(main)
