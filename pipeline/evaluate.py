"""Stage `evaluate`: one cell's sample quality, memorization and NLL; one JSON per cell.

IS / FID / KID through torch-fidelity against both references, the training set (the
paper's protocol) and the held-out set; FID at the matched n (random subsets, comparable
with the reference stage's floors); FID on bootstrap resamples of the samples (torch-fidelity
on features extracted once) for the aggregate's intervals; the nearest-training-neighbour
memorization check; and the NLL in bits/dim on held-out data (the full T-step variational
bound, Ho et al. 2020 Table 1) with its terms summed over ranges of t (where a schedule spends it).
With EMA snapshots from `train.eval_every`, also FID (and with `metrics.snapshot_nll` the NLL)
against training step and the best FID of them, the number DDPM reports. Sampling and NLL run on `metrics.device`.
On 2-D point data the sample metrics are the sliced Wasserstein distance and MMD^2 to the
training points (pipeline/metrics/distances.py), and the NLL uses a continuous Gaussian decoder.
Seed 004's uncertainty model also gets its seed-score samples scored, under `uncertainty_<metric>`.
"""

import argparse
import json
import sys
import time

import torch
from tqdm import tqdm

from diffusion import vlb_bits_per_dim

from . import accel, provenance
from .build import load_denoiser
from .data import to_model
from .io import add_threads_argument, load_torch, run_stage, save_json, set_threads
from .metrics.fidelity import compute_metrics, extractor_settings
from .metrics.scoring import sample_metrics, scoring_arguments, scoring_inputs
from .params import load_or_exit
from .sampling import draw_samples


def nll_bins(T):
    """Edges that split the VLB's T terms (t = 0 is the decoder's, t = T - 1 the last before the
    prior) into the first and last terms and ranges growing toward the middle, where a
    schedule's NLL is spent: for T = 1000, 0 | 1-9 | 10-99 | 100-499 | 500-989 | 990-998 | 999."""
    return sorted({e for e in (0, 1, T // 100, T // 10, T // 2, T - T // 100, T - 1, T) if 0 <= e <= T})


def heldout_nll(params, state, heldout, levels, device=torch.device("cpu"), weights=None):
    """Mean VLB (bits/dim) of the EMA model (or the snapshot `weights`) on the first
    metrics.nll_examples held-out images, sample.batch_size images at a time on `device`, and
    its terms summed over the ranges of t of `nll_bins` ({"t=a-b": bits/dim}; the prior term,
    ~0, is in the total only)."""
    config = json.loads(state["config"])
    x_all = to_model(heldout["images"][: params.metrics.nll_examples], levels)
    denoiser = load_denoiser(params, state, tuple(x_all.shape[1:]), device, weights=weights)
    generator = torch.Generator(device).manual_seed(params.metrics.seed)
    chunks = torch.split(x_all, params.sample.batch_size)
    T = denoiser.process.T
    bar = tqdm(total=T * len(chunks), desc=f"nll {config['cell']}", mininterval=1.0,
               disable=not sys.stderr.isatty())
    bpd, terms = [], []
    with torch.inference_mode():
        for x0 in chunks:
            total, per_t = vlb_bits_per_dim(denoiser, x0.to(device), generator, levels=levels,
                                            cdf=params.cell_process(config["cell"]).decoder_cdf,
                                            callback=lambda i, n: bar.update(1))
            bpd.append(total.cpu())
            terms.append(per_t.cpu())
    bar.close()
    mean_t = torch.cat(terms, dim=1).mean(1)
    edges = nll_bins(T)
    by_t = {f"t={a}" if b == a + 1 else f"t={a}-{b - 1}": float(mean_t[a:b].sum()) for a, b in zip(edges, edges[1:])}
    return float(torch.cat(bpd).mean()), by_t


def fid_by_step(params, state, reference_images, heldout, levels, common, device):
    """FID (and IS) of every EMA snapshot the train stage kept, on metrics.snapshot_samples
    samples each, and with metrics.snapshot_nll its held-out NLL; a snapshot with non-finite
    weights scores None."""
    rows = []
    shape = tuple(reference_images.shape[1:])
    for snap in state.get("snapshots", []):
        row = {"step": int(snap["step"]), "fid": None, "isc_mean": None}
        if params.metrics.snapshot_nll:
            row["nll_bpd"] = None
        if all(bool(torch.isfinite(v).all()) for v in snap["ema"].values() if v.is_floating_point()):
            samples, _ = draw_samples(params, state, shape, levels, device=device, weights=snap["ema"],
                                   num_samples=params.metrics.snapshot_samples)
            m = compute_metrics(samples, reference_images, **common)
            row.update(fid=m["fid"], isc_mean=m["isc_mean"])
            if params.metrics.snapshot_nll:
                row["nll_bpd"] = heldout_nll(params, state, heldout, levels, device, weights=snap["ema"])[0]
        rows.append(row)
        print(f"{json.loads(state['config'])['cell']}: step {row['step']} FID {row['fid']}"
              + (f" NLL {row['nll_bpd']}" if params.metrics.snapshot_nll else ""), file=sys.stderr)
    return rows


def main(argv=None):
    parser = scoring_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--samples", required=True)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads(args.threads)
    device = accel.resolve_device(params.metrics.device, "metrics.device")
    accel.tune_for(device)
    cell = params.cells.get(args.cell)
    if cell is None:
        raise SystemExit(f"error: cell {args.cell!r} is not in {args.params}")
    samples = load_torch(args.samples)
    state = load_torch(args.model)
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    made_by = provenance.metrics_record(params, *scoring_inputs(args, train, heldout), state.get("fingerprint"),
                                        samples.get("fingerprint"))
    result = {"cell": args.cell, "parameterization": cell.parameterization,
              "weighting": cell.weighting, "Sigma": cell.Sigma,
              "status": state["status"], "step": int(state["step"]),
              "fingerprint": made_by, "versions": provenance.versions()}
    if samples["status"] != "ok":
        save_json(result, args.out)
        print(f"{args.cell}: {samples['status']}, metrics skipped")
        return
    levels = int(train["levels"]) or None
    start = time.perf_counter()
    extractor = extractor_settings(params.metrics.feature_extractor, device)
    result.update(sample_metrics(params, samples["samples"], train, heldout, args.evaluator, args.cache_dir,
                                 extractor))
    if "samples_uncertainty" in samples:
        seed = sample_metrics(params, samples["samples_uncertainty"], train, heldout, args.evaluator, args.cache_dir,
                              extractor)
        result.update({f"uncertainty_{k}": v for k, v in seed.items()})
    result["nll_bpd"], result["nll_bpd_by_t"] = heldout_nll(params, state, heldout, levels, device)
    if state.get("snapshots") and not params.points:
        common = dict(extractor_weights_path=args.evaluator, cache_root=args.cache_dir,
                      reference_cache_name="train", seed=params.metrics.seed,
                      kid_subset_size=params.metrics.kid_subset_size, **extractor)
        curve = fid_by_step(params, state, train["images"], heldout, levels, common, device)
        scored = [r for r in curve if r["fid"] is not None]
        result["fid_by_step"] = curve
        if scored:
            best = min(scored, key=lambda r: r["fid"])
            result["fid_best"], result["fid_best_step"] = best["fid"], best["step"]
    result["feature_extractor"] = None if params.points else extractor["feature_extractor"]
    result["n_samples"] = len(samples["samples"])
    result["nfe"] = samples.get("nfe")
    save_json(result, args.out)
    print(f"{args.cell}: scored in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if params.points:
        print(f"{args.cell}: SW {result['sw']:.4f} MMD^2 {result['mmd']:.5f} NLL {result['nll_bpd']:.3f} bits/dim")
    else:
        print(f"{args.cell}: IS {result['isc_mean']:.2f} FID {result['fid']:.3f} "
              f"KID {result['kid_mean']:.4f} NLL {result['nll_bpd']:.3f} bits/dim")


if __name__ == "__main__":
    run_stage(main)
