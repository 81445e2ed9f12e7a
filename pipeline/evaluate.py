"""Stage `evaluate`: IS / FID / KID of one cell's samples through torch-fidelity (against
the training set, the paper's protocol) and NLL in bits/dim on held-out data (the full
T-step variational bound, Ho et al. 2020 Table 1); one JSON per cell. With EMA snapshots
from `train.eval_every`, also FID against training step (`metrics.snapshot_samples` samples
each) and the best of them, the number DDPM reports. Sampling and NLL run on
`metrics.device`."""

import argparse
import json
import sys
import time

import torch
from tqdm import tqdm

from diffusion import vlb_bits_per_dim

from . import accel
from .data import to_model
from .fidelity import _to_unit_range, compute_metrics, extractor_settings, load_classifier
from .io import load_json, load_torch, run_stage, save_json, set_threads
from .params import load_or_exit
from .provenance import provenance
from .sample import draw_samples, load_denoiser


def heldout_nll(params, state, heldout, levels, device=torch.device("cpu")):
    """Mean VLB (bits/dim) of the EMA model on the first metrics.nll_examples held-out images,
    sample.batch_size images at a time on `device`."""
    config = json.loads(state["config"])
    x_all = to_model(heldout["images"][: params.metrics.nll_examples], levels)
    denoiser = load_denoiser(params, state, tuple(x_all.shape[1:]), device)
    generator = torch.Generator(device).manual_seed(params.metrics.seed)
    chunks = torch.split(x_all, params.sample.batch_size)
    T = denoiser.process.T
    bar = tqdm(total=T * len(chunks), desc=f"nll {config['cell']}", mininterval=1.0,
               disable=not sys.stderr.isatty())
    bpd = []
    with torch.inference_mode():
        for x0 in chunks:
            bpd.append(vlb_bits_per_dim(denoiser, x0.to(device), generator, levels=levels,
                                        callback=lambda i, n: bar.update(1))[0].cpu())
    bar.close()
    return float(torch.cat(bpd).mean())


def fid_by_step(params, state, reference_images, levels, common, device):
    """FID (and IS) of every EMA snapshot the train stage kept, on metrics.snapshot_samples
    samples each; a snapshot with non-finite weights scores None."""
    rows = []
    shape = tuple(reference_images.shape[1:])
    for snap in state.get("snapshots", []):
        row = {"step": int(snap["step"]), "fid": None, "isc_mean": None}
        if all(bool(torch.isfinite(v).all()) for v in snap["ema"].values() if v.is_floating_point()):
            samples = draw_samples(params, state, shape, levels, device=device, weights=snap["ema"],
                                   num_samples=params.metrics.snapshot_samples)
            m = compute_metrics(samples, reference_images, **common)
            row.update(fid=m["fid"], isc_mean=m["isc_mean"])
        rows.append(row)
        print(f"{json.loads(state['config'])['cell']}: step {row['step']} FID {row['fid']}", file=sys.stderr)
    return rows


@torch.no_grad()
def class_fractions(evaluator_path, images):
    """Fraction of samples the evaluator assigns to each class (mode coverage)."""
    model = load_classifier(evaluator_path).eval()
    predicted = model(_to_unit_range(images)).argmax(1)
    counts = torch.bincount(predicted, minlength=model.config["num_classes"])
    return (counts.double() / len(images)).tolist()


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
    device = accel.resolve_device(params.metrics.device, "metrics.device")
    accel.tune_for(device)
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
    extractor = extractor_settings(params.metrics.feature_extractor, device)
    common = dict(extractor_weights_path=args.evaluator, cache_root=args.cache_dir,
                  reference_cache_name="train", seed=params.metrics.seed,
                  kid_subset_size=params.metrics.kid_subset_size, **extractor)
    result.update(compute_metrics(samples["samples"], train["images"], **common))
    # FID depends on the sample count: also score as many samples as the held-out floor has.
    n_matched = len(heldout["images"])
    if n_matched < len(samples["samples"]):
        matched = compute_metrics(samples["samples"][:n_matched], train["images"], **common)
        result["fid_matched"], result["n_matched"] = matched["fid"], n_matched
    else:
        result["fid_matched"], result["n_matched"] = result["fid"], len(samples["samples"])
    if params.metrics.feature_extractor == "classifier":  # Inception's classes are not the data's
        fractions = class_fractions(args.evaluator, samples["samples"])
        result["min_class_fraction"] = min(fractions)
        result["class_fractions"] = [round(f, 4) for f in fractions]
    result["nll_bpd"] = heldout_nll(params, state, heldout, levels, device)
    if state.get("snapshots"):
        curve = fid_by_step(params, state, train["images"], levels, common, device)
        scored = [r for r in curve if r["fid"] is not None]
        result["fid_by_step"] = curve
        if scored:
            best = min(scored, key=lambda r: r["fid"])
            result["fid_best"], result["fid_best_step"] = best["fid"], best["step"]
    result["feature_extractor"] = extractor["feature_extractor"]
    result["n_samples"] = len(samples["samples"])
    result["seconds"] = round(time.perf_counter() - start, 2)
    save_json(result, args.out)
    print(f"{args.cell}: IS {result['isc_mean']:.2f} FID {result['fid']:.3f} "
          f"KID {result['kid_mean']:.4f} NLL {result['nll_bpd']:.3f} bits/dim")


if __name__ == "__main__":
    run_stage(main)
