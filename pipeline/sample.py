"""Stage `sample`: draw N samples from one cell's EMA weights with the configured sampler,
quantized to the data's grey levels; saved as a uint8 tensor file and a PNG grid.

Samples are drawn `sample.batch_size` at a time on `sample.device` (a GPU when `auto` finds
one), with the noise drawn on that device; each finished batch moves to the host."""

import argparse
import json
import math
import sys
import time

import torch
from tqdm import tqdm

from diffusion import SAMPLERS, Denoiser

from . import accel
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


def load_denoiser(params, model_state, data_shape, device=torch.device("cpu"), weights=None, clip_x0=False):
    """The Denoiser of a trained cell on `device`, from its EMA weights (or `weights`)."""
    config = json.loads(model_state["config"])
    net = build_net(params.model, data_shape, config["sigma"])
    net.load_state_dict(model_state["ema"] if weights is None else weights)
    channels_last = accel.uses_channels_last(device, params.model)
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    net.eval()
    return Denoiser(accel.Forward(net, channels_last=channels_last), config["parameterization"],
                    build_process(params.process), config["sigma"], clip_x0=clip_x0)


def draw_samples(params, model_state, data_shape, levels, progress=True, device=torch.device("cpu"),
                 weights=None, num_samples=None):
    """Sample num_samples (default params.sample.num_samples) examples, quantized to uint8,
    from a trained cell's EMA weights (or the snapshot `weights`), in batches on `device`."""
    config = json.loads(model_state["config"])
    s = params.sample
    num_samples = s.num_samples if num_samples is None else num_samples
    denoiser = load_denoiser(params, model_state, data_shape, device, weights, clip_x0=s.clip_x0)
    # A replicate's train seed also moves the sampling noise (Params.cell_sample_seed).
    generator = torch.Generator(device).manual_seed(s.seed + int(config["train"]["seed"]))
    sampler = SAMPLERS[s.sampler]
    batches = []
    total = math.ceil(num_samples / s.batch_size)
    bar = tqdm(total=total * s.steps, desc=f"sample {config['cell']}", mininterval=1.0,
               disable=not (progress and sys.stderr.isatty()))
    with torch.inference_mode():
        for b in range(total):
            n = min(s.batch_size, num_samples - b * s.batch_size)
            x = sampler(denoiser, (n, *data_shape), steps=s.steps, generator=generator, device=device,
                        callback=lambda i, k: bar.update(1))
            batches.append(x.cpu())
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
    device = accel.resolve_device(params.sample.device, "sample.device")
    accel.tune_for(device)
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
    samples = draw_samples(params, state, data_shape, levels, device=device)
    seconds = time.perf_counter() - start
    save_torch({"status": "ok", "samples": samples, "seconds": seconds, "device": str(device)}, args.out)
    save_grid_png(samples, args.grid, title=f"{cell} ({params.sample.sampler}, {params.sample.steps} steps)")
    print(f"{cell}: {len(samples)} samples in {seconds:.1f} s on {device}")


if __name__ == "__main__":
    run_stage(main)
