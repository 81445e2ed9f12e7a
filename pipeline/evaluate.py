"""Stage `evaluate`: one cell's sample quality, memorization and NLL; one JSON per cell.

IS / FID / KID through torch-fidelity against both references, the training set (the
paper's protocol) and the held-out set; FID at the matched n (random subsets, comparable
with the reference stage's floors); FID on bootstrap resamples of the samples (torch-fidelity
on features extracted once) for the aggregate's intervals; the nearest-training-neighbour
memorization check; and the NLL in bits/dim on held-out data (the full T-step variational
bound, Ho et al. 2020 Table 1).
"""

import argparse
import json
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from diffusion import Denoiser, vlb_bits_per_dim

from .build import build_net, build_process
from .data import to_model
from . import stats
from .fidelity import (_to_unit_range, cached_reference_features, compute_metrics, extract_features,
                       fid_from_statistics, fid_statistics, load_classifier)
from .io import load_json, load_torch, run_stage, save_json, set_threads
from .params import load_or_exit
from .provenance import provenance
from .reference import fid_at_n, flat, flat_images, matched_n


def heldout_nll(params, state, heldout, levels):
    """Mean VLB (bits/dim) of the EMA model on the first metrics.nll_examples held-out images."""
    config = json.loads(state["config"])
    x0 = to_model(heldout["images"][: params.metrics.nll_examples], levels)
    process = build_process(params.process)
    net = build_net(params.model, tuple(x0.shape[1:]), config["sigma"])
    net.load_state_dict(state["ema"])
    net.eval()
    denoiser = Denoiser(net, config["parameterization"], process, config["sigma"])
    generator = torch.Generator().manual_seed(params.metrics.seed)
    bar = tqdm(total=process.T, desc=f"nll {config['cell']}", mininterval=1.0, disable=not sys.stderr.isatty())
    with torch.inference_mode():
        bpd, _ = vlb_bits_per_dim(denoiser, x0, generator, levels=levels, callback=lambda i, n: bar.update(1))
    bar.close()
    return float(bpd.mean())


@torch.no_grad()
def class_fractions(evaluator_path, images):
    """Fraction of samples the evaluator assigns to each class (mode coverage)."""
    model = load_classifier(evaluator_path).eval()
    predicted = model(_to_unit_range(images)).argmax(1)
    counts = torch.bincount(predicted, minlength=model.config["num_classes"])
    return (counts.double() / len(images)).tolist()


def sample_quality(params, samples, train, heldout, evaluator, cache_dir):
    """Every sample-set metric of one cell, as flat JSON keys (see the module docstring)."""
    m = params.metrics
    x_train, x_held = train["images"], heldout["images"]
    common = dict(extractor_weights_path=evaluator, cache_root=cache_dir, seed=m.seed,
                  kid_subset_size=m.kid_subset_size)
    out = compute_metrics(samples, x_train, reference_cache_name="train", **common)
    held = compute_metrics(samples, x_held, reference_cache_name="heldout", **common)
    out.update(fid_heldout=held["fid"], kid_heldout_mean=held["kid_mean"], kid_heldout_std=held["kid_std"])
    # FID falls as the sample count grows: score n-subsets, as the floors are scored.
    features = extract_features(samples, evaluator)
    s_train = fid_statistics(cached_reference_features(x_train, evaluator, cache_dir, "train"))
    s_held = fid_statistics(cached_reference_features(x_held, evaluator, cache_dir, "heldout"))
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
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cell", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--evaluator", required=True)
    parser.add_argument("--reference", required=True, help="the reference stage's JSON")
    parser.add_argument("--cache-dir", required=True, help="the reference stage's cache folder")
    parser.add_argument("--out", required=True, help="output: metrics (.json)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads()
    cell = params.cells.get(args.cell)
    if cell is None:
        raise SystemExit(f"error: cell {args.cell!r} is not in {args.params}")
    samples = load_torch(args.samples)
    state = load_torch(args.model)
    load_json(args.reference)  # the reference stage finished (its caches are complete)
    result = {"cell": args.cell, "parameterization": cell.parameterization,
              "weighting": cell.weighting, "sigma": cell.sigma,
              "status": state["status"], "step": int(state["step"]),
              "provenance": provenance(params, args.cell)}
    if samples["status"] != "ok":
        save_json(result, args.out)
        print(f"{args.cell}: {samples['status']}, metrics skipped")
        return
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    levels = int(train["levels"]) or None
    start = time.perf_counter()
    result.update(sample_quality(params, samples["samples"], train, heldout, args.evaluator, args.cache_dir))
    fractions = class_fractions(args.evaluator, samples["samples"])
    result["min_class_fraction"] = min(fractions)
    result["class_fractions"] = [round(f, 4) for f in fractions]
    result["nll_bpd"] = heldout_nll(params, state, heldout, levels)
    result["n_samples"] = len(samples["samples"])
    result["seconds"] = round(time.perf_counter() - start, 2)
    save_json(result, args.out)
    print(f"{args.cell}: IS {result['isc_mean']:.2f} FID {result['fid']:.3f} "
          f"KID {result['kid_mean']:.4f} NLL {result['nll_bpd']:.3f} bits/dim")


if __name__ == "__main__":
    run_stage(main)
