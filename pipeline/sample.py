"""Stage `sample`: draw N samples from one cell's EMA weights with the configured sampler,
quantized to the data's grey levels; saved as a uint8 tensor file and a PNG grid."""

import argparse
import json
import math
import sys
import time

import torch
from tqdm import tqdm

from diffusion import SAMPLERS, Denoiser

from .build import build_net, build_process
from .data import quantize
from .io import load_torch, run_stage, save_figure, save_torch, set_threads
from .params import load_or_exit


def image_grid(images, nrow=None):
    """uint8 [N, C, H, W] -> one [H', W', C] uint8 grid with 1-pixel borders."""
    n, c, h, w = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = torch.full((c, ncol * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = images[i]
    return grid.permute(1, 2, 0)


def save_grid_png(images, path, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4.3))
    if images is None or len(images) == 0:
        ax.text(0.5, 0.5, title or "no samples", ha="center", va="center", fontsize=14)
    else:
        grid = image_grid(images[:64])
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray_r" if grid.shape[-1] == 1 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        if title:
            ax.set_title(title, fontsize=10)
    ax.axis("off")
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def draw_samples(params, model_state, data_shape, levels, progress=True):
    """Sample params.sample.num_samples examples (quantized uint8) from a trained cell."""
    config = json.loads(model_state["config"])
    s = params.sample
    process = build_process(params.process)
    net = build_net(params.model, data_shape, config["sigma"])
    net.load_state_dict(model_state["ema"])
    net.eval()
    denoiser = Denoiser(net, config["parameterization"], process, config["sigma"], clip_x0=s.clip_x0)
    # A replicate's train seed also moves the sampling noise (Params.cell_sample_seed).
    generator = torch.Generator().manual_seed(s.seed + int(config["train"]["seed"]))
    sampler = SAMPLERS[s.sampler]
    batches = []
    total = math.ceil(s.num_samples / s.batch_size)
    bar = tqdm(total=total * s.steps, desc=f"sample {config['cell']}", mininterval=1.0,
               disable=not (progress and sys.stderr.isatty()))
    with torch.inference_mode():
        for b in range(total):
            n = min(s.batch_size, s.num_samples - b * s.batch_size)
            x = sampler(denoiser, (n, *data_shape), steps=s.steps, generator=generator,
                        callback=lambda i, k: bar.update(1))
            batches.append(x)
    bar.close()
    x = torch.cat(batches)
    return quantize(x, levels) if levels else x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="trained weights (.pt)")
    parser.add_argument("--data", required=True, help="training split (for shape and levels)")
    parser.add_argument("--out", required=True, help="output: samples (.pt)")
    parser.add_argument("--grid", required=True, help="output: PNG grid")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads()
    state = load_torch(args.model)
    data = load_torch(args.data)
    levels = int(data["levels"]) or None
    cell = json.loads(state["config"])["cell"]
    data_shape = tuple(data["images"].shape[1:])
    if state["status"] != "ok":
        save_torch({"status": state["status"], "samples": torch.zeros(0, *data_shape, dtype=torch.uint8)}, args.out)
        save_grid_png(None, args.grid, title=f"{cell}: {state['status']} at step {state['step']}")
        print(f"{cell}: {state['status']}, no samples drawn")
        return
    start = time.perf_counter()
    samples = draw_samples(params, state, data_shape, levels)
    seconds = time.perf_counter() - start
    save_torch({"status": "ok", "samples": samples, "seconds": seconds}, args.out)
    save_grid_png(samples, args.grid, title=f"{cell} ({params.sample.sampler}, {params.sample.steps} steps)")
    print(f"{cell}: {len(samples)} samples in {seconds:.1f} s")


if __name__ == "__main__":
    run_stage(main)
