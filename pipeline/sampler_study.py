"""Stage `sampler_study`: one (cell, sampler, NFE) point of the sampler study (seeds 000, 001,
004): draw `sampler_study.num_samples` samples from a trained cell with the sampler given
about `nfe` network evaluations (diffusion.samplers.steps_for_nfe), count the evaluations
actually made, and score them as the evaluate stage does (IS / FID / KID for images,
sliced Wasserstein / MMD^2 for 2-D points). Every point uses the same seed, so all samplers
start from the same noise. One JSON per point."""

import argparse
import json
import sys
import time

from diffusion.samplers import steps_for_nfe

from . import accel, provenance
from .io import add_threads_argument, load_torch, run_stage, save_json, set_threads
from .metrics.fidelity import extractor_settings
from .metrics.scoring import sample_metrics, scoring_arguments, scoring_inputs
from .params import load_or_exit
from .sampling import draw_samples


def main(argv=None):
    parser = scoring_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--nfe", required=True, type=int, help="budget of network evaluations")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads(args.threads)
    study = params.sampler_study
    if args.cell not in study.cells or args.sampler not in study.samplers or args.nfe not in study.nfe:
        raise SystemExit(f"error: ({args.cell}, {args.sampler}, {args.nfe}) is not in {args.params}'s sampler_study")
    state = load_torch(args.model)
    config = json.loads(state["config"])
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    made_by = provenance.study_record(params, args.sampler, args.nfe, *scoring_inputs(args, train, heldout),
                                      state.get("fingerprint"))
    s = params.sample
    steps = steps_for_nfe(args.sampler, args.nfe, s.langevin_steps_per_level)
    result = {"cell": args.cell, "parameterization": config["parameterization"],
              "weighting": config["weighting"], "Sigma": config["Sigma"], "sampler": args.sampler,
              "nfe_budget": args.nfe, "steps": steps, "status": state["status"],
              "fingerprint": made_by, "versions": provenance.versions()}
    if state["status"] != "ok":
        save_json(result, args.out)
        print(f"{args.cell}: {state['status']}, sampler study point skipped")
        return
    levels = int(train["levels"]) or None
    data_shape = tuple(train["images"].shape[1:])
    device = accel.resolve_device(params.metrics.device, "metrics.device")
    start = time.perf_counter()
    samples, nfe = draw_samples(params, state, data_shape, levels, sampler=args.sampler, steps=steps,
                                num_samples=study.num_samples, seed=study.seed, device=device)
    print(f"{args.cell} {args.sampler}: sampled in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    result["nfe"] = nfe
    extractor = extractor_settings(params.metrics.feature_extractor, device)
    result.update(sample_metrics(params, samples, train, heldout, args.evaluator, args.cache_dir, extractor))
    result["n_samples"] = len(samples)
    save_json(result, args.out)
    key = "sw" if params.points else "fid"
    print(f"{args.cell} {args.sampler} NFE {nfe} ({steps} steps): {key} {result[key]:.4f}")


if __name__ == "__main__":
    run_stage(main)
