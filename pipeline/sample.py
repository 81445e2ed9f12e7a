"""Stage `sample`: draw N samples from one cell's EMA weights with the configured sampler;
saved as a tensor file and a figure. Images are quantized to the data's grey levels and shown
as a grid; 2-D points are kept as floats and shown as a scatter over the data beside the
learned score field (its direction at a few noise levels, colored by magnitude). Seed 004's
uncertainty model is sampled twice from the same network: with Tweedie's score and with the
seed's proposed score -(x - mu_theta)/sigma_phi^2 (`samples_seed004`).

Samples are drawn `sample.batch_size` at a time on `sample.device` (a GPU when `auto` finds
one), with the noise drawn on that device; each finished batch moves to the host."""

import argparse
import json
import math
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

from diffusion import SAMPLERS
from diffusion.samplers import score_ve

from . import accel, provenance
from .build import load_denoiser, scores_of
from .data import quantize
from .io import add_threads_argument, load_torch, run_stage, save_figure, save_torch, set_threads
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


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid_png(images, path, title=None, panels=None):
    """A grid of up to 64 images, or one grid per entry of `panels` ({title: images})."""
    plt = _plt()
    panels = panels or {title: images}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], panels.items()):
        if imgs is None or len(imgs) == 0:
            ax.text(0.5, 0.5, name or "no samples", ha="center", va="center", fontsize=14)
        else:
            grid = image_grid(imgs[:64])
            ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
                      cmap="gray_r" if grid.shape[-1] == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            if name:
                ax.set_title(name, fontsize=10)
        ax.axis("off")
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def field_levels(process, n=3):
    """n noise levels s = sigma/alpha spread geometrically over the middle of the process."""
    s = (process.sigma / process.alpha).double()
    lo, hi = math.log(float(s[0])), math.log(float(s[-1]))
    return [math.exp(lo + f * (hi - lo)) for f in torch.linspace(0.2, 0.8, n).tolist()]


@torch.no_grad()
def save_points_figure(panels, data, denoiser, path, title=None):
    """Scatter of each sample set ({title: points}) over the data (grey), then the score field
    of `denoiser` at three noise levels: arrows along the score (unit length, so the field
    reads everywhere) colored by |s score| = |D(x; s) - x| / s, which is O(1) where x is
    typical for noise level s and grows away from it."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    data = data.float()
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.25 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    levels = field_levels(denoiser.process) if denoiser is not None else []
    ncols = len(panels) + len(levels)
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.8), squeeze=False)
    for ax, (name, x) in zip(axes[0], panels.items()):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="data")
        if x is not None and len(x):
            ax.scatter(x[:, 0], x[:, 1], s=2, c="C0", label="samples")
        ax.set_title(name, fontsize=9)
    n = 17
    gx, gy = torch.meshgrid(torch.linspace(float(lo[0]), float(hi[0]), n),
                            torch.linspace(float(lo[1]), float(hi[1]), n), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    step = 0.7 * float((hi - lo).min()) / (n - 1)
    for ax, s in zip(axes[0][len(panels):], levels):
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8")
        score = score_ve(denoiser, grid, s)
        size = score.norm(dim=1, keepdim=True).clamp(min=1e-12)
        arrow = score / size * step
        q = ax.quiver(grid[:, 0], grid[:, 1], arrow[:, 0], arrow[:, 1], (size[:, 0] * s).clamp(min=1e-3),
                      cmap="viridis", norm=LogNorm(), angles="xy", scale_units="xy", scale=1, width=0.005)
        fig.colorbar(q, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(which="both", labelsize=6)
        ax.set_title(f"score direction at s = {s:.3g} (color |s score|)", fontsize=8)
    for ax in axes[0]:
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


class CountingNet(nn.Module):
    """Counts network evaluations (NFE): one per batched call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, t):
        self.calls += 1
        return self.net(x, t)


def sampler_kwargs(sample, sampler):
    if sampler == "langevin":
        return {"steps_per_level": sample.langevin_steps_per_level, "step_size": sample.langevin_step_size}
    if sampler in ("heun", "euler_maruyama"):
        return {"sigma_max": sample.sigma_max}
    return {}


def draw_samples(params, model_state, data_shape, levels, progress=True, score="tweedie", sampler=None,
                 steps=None, num_samples=None, seed=None, device=torch.device("cpu"), weights=None):
    """Samples from a trained cell's EMA weights (or the snapshot `weights`), quantized uint8
    for images and floats for points, drawn in batches on `device`, and the number of network
    evaluations per batch. Defaults come from params.sample; a replicate's train seed also
    moves the sampling noise (Params.cell_sample_seed)."""
    config = json.loads(model_state["config"])
    s = params.sample
    sampler = sampler or s.sampler
    steps = steps or s.steps
    num_samples = num_samples or s.num_samples
    seed = s.seed + int(config["train"]["seed"]) if seed is None else seed
    denoiser = load_denoiser(params, model_state, data_shape, device=device, weights=weights,
                             clip_x0=s.clip_x0, score=score)
    denoiser.net = CountingNet(denoiser.net)
    generator = torch.Generator(device).manual_seed(seed)
    fn, kwargs = SAMPLERS[sampler], sampler_kwargs(s, sampler)
    batches = []
    total = math.ceil(num_samples / s.batch_size)
    bar = tqdm(total=total * steps, desc=f"sample {config['cell']}", mininterval=1.0,
               disable=not (progress and sys.stderr.isatty()))
    with torch.inference_mode():
        for b in range(total):
            n = min(s.batch_size, num_samples - b * s.batch_size)
            x = fn(denoiser, (n, *data_shape), steps=steps, generator=generator, device=device,
                   callback=lambda i, k: bar.update(1), **kwargs)
            batches.append(x.cpu())
    bar.close()
    x = torch.cat(batches)
    nfe = denoiser.net.calls // total
    return (quantize(x, levels) if levels else x), nfe


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
    if "seed004" in drawn:
        out["samples_seed004"] = drawn["seed004"][0]
    save_torch(out, args.out)
    how = f"{s.sampler}, {s.steps} steps"
    titles = {"tweedie": f"{cell} ({how})", "seed004": f"{cell}, seed-004 score ({how})"}
    panels = {titles[k]: v[0] for k, v in drawn.items()}
    if params.points:
        # the field of Tweedie's score (seed 004's has the same direction, shrunk by s^2/sigma_phi^2)
        save_points_figure(panels, data["images"], load_denoiser(params, state, data_shape), args.grid)
    else:
        save_grid_png(None, args.grid, panels=panels)
    print(f"{cell}: {len(samples)} samples x {len(drawn)} score(s) in {seconds:.1f} s on {device}")


if __name__ == "__main__":
    run_stage(main)
