"""Sampling throughput (images/s) per sampler at equal steps, against diffusers' DDPM and DDIM
scheduler loops over the same network (the default MLP on 8x8 digits). Ratio = ours /
diffusers (goal >= 1.0)."""

import argparse

import torch

from common import import_diffusers, median_seconds, write
from diffusion import Denoiser, vp_process
from diffusion.nets import MLP
from diffusion.samplers import SAMPLERS


def throughput(fn, n, repeats=3):
    """Images per second: n over the median wall time of `repeats` runs (after one warm-up)."""
    with torch.inference_mode():
        return n / median_seconds(fn, repeats=repeats, warmup=1)


def diffusers_loop(scheduler, net, n, steps, generator):
    scheduler.set_timesteps(steps)
    x = torch.randn((n, 1, 8, 8), generator=generator)
    for t in scheduler.timesteps:
        eps = net(x, t.float().expand(n))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    diffusers = import_diffusers()
    torch.manual_seed(0)
    net = MLP((1, 8, 8)).eval()
    for p in net.parameters():  # non-trivial outputs (the output layer starts at zero)
        torch.nn.init.normal_(p, std=0.02)
    denoiser = Denoiser(net, "eps", vp_process("linear", 1000), "fixed_large", clip_x0=True)
    shape, g = (args.n, 1, 8, 8), torch.Generator()
    ours = {name: throughput(lambda: SAMPLERS[name](denoiser, shape, steps=args.steps, generator=g.manual_seed(0)), args.n)
            for name in ("ancestral", "ddim", "heun", "euler_maruyama")}
    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    theirs = {
        "ancestral": throughput(lambda: diffusers_loop(diffusers.DDPMScheduler(**common, clip_sample=True), net,
                                                       args.n, args.steps, g.manual_seed(0)), args.n),
        "ddim": throughput(lambda: diffusers_loop(diffusers.DDIMScheduler(**common, clip_sample=True), net,
                                                  args.n, args.steps, g.manual_seed(0)), args.n),
    }
    write("sampling", {"config": vars(args), "images_per_s_ours": ours, "images_per_s_diffusers": theirs,
                       "ratio": {k: ours[k] / theirs[k] for k in theirs},
                       "note": "heun uses 2 network evaluations per step (2*steps-1 in all)"})


if __name__ == "__main__":
    main()
