"""Sampling throughput (images/s) per sampler at equal steps, against diffusers' DDPM and DDIM
scheduler loops over the same network (the default MLP on 8x8 digits). Ratio = ours /
diffusers (goal >= 1.0).

The network is most of a step, so the two loops differ by a few percent at most and the
order of runs matters as much: ours and theirs are timed alternately, `--repeats` rounds,
and the medians compared. A second figure isolates what the loops themselves cost: the
same loops over a network that only scales its input, in milliseconds per step."""

import argparse

import torch

from common import alternate, import_diffusers, write
from diffusion import Denoiser, vp_process
from diffusion.nets import MLP
from diffusion.samplers import SAMPLERS

THEIRS = {"ancestral": "DDPMScheduler", "ddim": "DDIMScheduler"}


class Scale(torch.nn.Module):
    """A network that costs next to nothing, to time a sampler's own per-step work."""

    def forward(self, x, t):
        return 0.5 * x


def diffusers_loop(scheduler, net, n, steps, generator):
    scheduler.set_timesteps(steps)
    x = torch.randn((n, 1, 8, 8), generator=generator)
    for t in scheduler.timesteps:
        eps = net(x, t.float().expand(n))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


def loops(net, n, steps, diffusers):
    """{label: zero-argument function} for our four samplers and diffusers' two loops."""
    denoiser = Denoiser(net, "eps", vp_process("linear", 1000), "fixed_large", clip_x0=True)
    g = torch.Generator()
    fns = {f"ours/{name}": (lambda name=name: SAMPLERS[name](denoiser, (n, 1, 8, 8), steps=steps,
                                                              generator=g.manual_seed(0)))
           for name in ("ancestral", "ddim", "heun", "euler_maruyama")}
    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                  clip_sample=True)
    for name, cls in THEIRS.items():
        scheduler = getattr(diffusers, cls)(**common)
        fns[f"diffusers/{name}"] = lambda s=scheduler: diffusers_loop(s, net, n, steps, g.manual_seed(0))
    return fns


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    diffusers = import_diffusers()
    torch.manual_seed(0)
    net = MLP((1, 8, 8)).eval()
    for p in net.parameters():  # non-trivial outputs (the output layer starts at zero)
        torch.nn.init.normal_(p, std=0.02)
    with torch.inference_mode():
        full = alternate(loops(net, args.n, args.steps, diffusers), args.repeats)
        bare = alternate(loops(Scale(), args.n, args.steps, diffusers), args.repeats)
    ours = {k.split("/")[1]: args.n / v for k, v in full.items() if k.startswith("ours/")}
    theirs = {k.split("/")[1]: args.n / v for k, v in full.items() if k.startswith("diffusers/")}
    per_step = {k: 1e3 * v / args.steps for k, v in bare.items()}
    write("sampling", {
        "config": vars(args), "images_per_s_ours": ours, "images_per_s_diffusers": theirs,
        "ratio": {k: ours[k] / theirs[k] for k in theirs},
        "loop_ms_per_step_without_network": per_step,
        "loop_overhead_ratio": {k: per_step[f"diffusers/{k}"] / per_step[f"ours/{k}"] for k in THEIRS},
        "note": "heun uses 2 network evaluations per step (2*steps-1 in all); loop_overhead_ratio is "
                "diffusers' per-step cost over ours without the network (> 1: ours is cheaper)"})


if __name__ == "__main__":
    main()
