"""Drawing samples from a trained cell: what the sample stage draws, what evaluate draws from
each EMA snapshot and what sampler_study draws per (sampler, NFE). Samples are drawn
`sample.batch_size` at a time on a device, with the noise drawn on that device; each finished
batch moves to the host, and the network evaluations are counted.
"""

import json
import math
import sys

import torch
from torch import nn
from tqdm import tqdm

from diffusion import SAMPLERS

from .build import load_denoiser
from .data import quantize


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
