"""Stage `sample`: draw N samples from one cell's EMA weights with the configured sampler;
saved as a tensor file and a figure. Images are quantized to the data's grey levels and shown
as a grid; 2-D points are kept as floats and shown as a scatter over the data beside the
learned score field (its direction at a few noise levels, colored by magnitude). Seed 004's
uncertainty model is sampled twice from the same network: with Tweedie's score and with the
seed's proposed score -(x - mu_theta)/sigma_phi^2 (`samples_uncertainty`).

Samples are drawn `sample.batch_size` at a time on `sample.device` (a GPU when `auto` finds
one), with the noise drawn on that device; each finished batch moves to the host."""

import argparse
import json
import time

import torch

from . import accel, provenance
from .build import load_denoiser, scores_of
from .io import add_threads_argument, load_torch, run_stage, save_torch, set_threads
from .params import load_or_exit
from .report.sample_figures import save_grid_png, save_points_figure
from .sampling import draw_samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="trained weights (.pt)")
    parser.add_argument("--data", required=True, help="training split (for shape and levels)")
    parser.add_argument("--out", required=True, help="output: samples (.pt)")
    parser.add_argument("--grid", required=True, help="output: PNG grid (images) or scatter (points)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads(args.threads)
    device = accel.resolve_device(params.sample.device, "sample.device")
    accel.tune_for(device)
    state = load_torch(args.model)
    data = load_torch(args.data)
    levels = int(data["levels"]) or None
    config = json.loads(state["config"])
    cell = config["cell"]
    data_shape = tuple(data["images"].shape[1:])
    s = params.sample
    made_by = provenance.samples_record(params, cell, state["fingerprint"])
    if state["status"] != "ok":
        dtype = torch.float32 if params.points else torch.uint8
        save_torch({"status": state["status"], "samples": torch.zeros(0, *data_shape, dtype=dtype),
                    "fingerprint": made_by}, args.out)
        note = f"{cell}: {state['status']} at step {state['step']}"
        if params.points:
            save_points_figure({note: None}, data["images"], None, args.grid)
        else:
            save_grid_png(None, args.grid, title=note)
        print(f"{cell}: {state['status']}, no samples drawn")
        return
    start = time.perf_counter()
    drawn = {score: draw_samples(params, state, data_shape, levels, score=score, device=device) for score in scores_of(config)}
    seconds = time.perf_counter() - start
    samples = drawn["tweedie"][0]
    out = {"status": "ok", "samples": samples, "nfe": drawn["tweedie"][1], "device": str(device),
           "fingerprint": made_by}
    if "uncertainty" in drawn:
        out["samples_uncertainty"] = drawn["uncertainty"][0]
    save_torch(out, args.out)
    how = f"{s.sampler}, {s.steps} steps"
    titles = {"tweedie": f"{cell} ({how})", "uncertainty": f"{cell}, uncertainty score ({how})"}
    panels = {titles[k]: v[0] for k, v in drawn.items()}
    if params.points:
        # the field of Tweedie's score (seed 004's has the same direction, shrunk by s^2/sigma_phi^2)
        save_points_figure(panels, data["images"], load_denoiser(params, state, data_shape), args.grid)
    else:
        save_grid_png(None, args.grid, panels=panels)
    print(f"{cell}: {len(samples)} samples x {len(drawn)} score(s) in {seconds:.1f} s on {device}")


if __name__ == "__main__":
    run_stage(main)
