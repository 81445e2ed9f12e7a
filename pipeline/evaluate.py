"""Stage `evaluate`: IS / FID / KID of one cell's samples through torch-fidelity (against
the training set, the paper's protocol) and NLL in bits/dim on held-out data (the full
T-step variational bound, Ho et al. 2020 Table 1); one JSON per cell. On 2-D point data the
sample metrics are the sliced Wasserstein distance and MMD^2 to the training points
(pipeline/distances.py), and the NLL uses a continuous Gaussian decoder. Seed 004's
uncertainty model also gets its seed-score samples scored, under `seed004_<metric>`."""

import argparse
import sys
import time

import torch
from tqdm import tqdm

from diffusion import vlb_bits_per_dim

from .build import load_denoiser
from .data import to_model
from .distances import point_metrics
from .io import load_json, load_torch, run_stage, save_json, set_threads
from .params import load_or_exit
from .provenance import provenance


def heldout_nll(params, state, heldout, levels):
    """Mean VLB (bits/dim) of the EMA model on the first metrics.nll_examples held-out examples."""
    x0 = to_model(heldout["images"][: params.metrics.nll_examples], levels)
    denoiser = load_denoiser(params, state, tuple(x0.shape[1:]))
    process = denoiser.process
    generator = torch.Generator().manual_seed(params.metrics.seed)
    bar = tqdm(total=process.T, desc="nll", mininterval=1.0, disable=not sys.stderr.isatty())
    with torch.inference_mode():
        bpd, _ = vlb_bits_per_dim(denoiser, x0, generator, levels=levels, callback=lambda i, n: bar.update(1))
    bar.close()
    return float(bpd.mean())


@torch.no_grad()
def class_fractions(evaluator_path, images):
    """Fraction of samples the evaluator assigns to each class (mode coverage)."""
    from .fidelity import _to_unit_range, load_classifier

    model = load_classifier(evaluator_path).eval()
    predicted = model(_to_unit_range(images)).argmax(1)
    counts = torch.bincount(predicted, minlength=model.config["num_classes"])
    return (counts.double() / len(images)).tolist()


def sample_metrics(params, samples, train, heldout, evaluator, cache_dir):
    """Metrics of one set of samples: IS/FID/FID@n/KID and class coverage for images, sliced
    Wasserstein and MMD^2 for points (both against the training set)."""
    if params.points:
        return point_metrics(samples, train["images"], seed=params.metrics.seed)
    from .fidelity import compute_metrics

    common = dict(extractor_weights_path=evaluator, cache_root=cache_dir,
                  reference_cache_name="train", seed=params.metrics.seed,
                  kid_subset_size=params.metrics.kid_subset_size)
    result = compute_metrics(samples, train["images"], **common)
    # FID depends on the sample count: also score as many samples as the held-out floor has.
    n_matched = len(heldout["images"])
    if n_matched < len(samples):
        result["fid_matched"] = compute_metrics(samples[:n_matched], train["images"], **common)["fid"]
        result["n_matched"] = n_matched
    else:
        result["fid_matched"], result["n_matched"] = result["fid"], len(samples)
    fractions = class_fractions(evaluator, samples)
    result["min_class_fraction"] = min(fractions)
    result["class_fractions"] = [round(f, 4) for f in fractions]
    return result


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
    load_json(args.reference)
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
    result.update(sample_metrics(params, samples["samples"], train, heldout, args.evaluator, args.cache_dir))
    if "samples_seed004" in samples:
        seed = sample_metrics(params, samples["samples_seed004"], train, heldout, args.evaluator, args.cache_dir)
        result.update({f"seed004_{k}": v for k, v in seed.items()})
    result["nll_bpd"] = heldout_nll(params, state, heldout, levels)
    result["n_samples"] = len(samples["samples"])
    result["nfe"] = samples.get("nfe")
    result["seconds"] = round(time.perf_counter() - start, 2)
    save_json(result, args.out)
    if params.points:
        print(f"{args.cell}: SW {result['sw']:.4f} MMD^2 {result['mmd']:.5f} NLL {result['nll_bpd']:.3f} bits/dim")
    else:
        print(f"{args.cell}: IS {result['isc_mean']:.2f} FID {result['fid']:.3f} "
              f"KID {result['kid_mean']:.4f} NLL {result['nll_bpd']:.3f} bits/dim")


if __name__ == "__main__":
    run_stage(main)
