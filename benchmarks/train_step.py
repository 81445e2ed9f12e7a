"""Train-step time of our U-Net against diffusers' UNet2DModel of (nearly) equal parameter
count: same batch, same optimizer, same process. Prints seconds per step and the ratio
(ours / diffusers; goal <= 1.0). The two steps are timed in alternation (common.alternate).
`--device cuda --precision bf16` is the GPU figure (written to train_step_cuda_bf16.json)."""

import argparse

import torch

from common import alternate, import_diffusers, write
from diffusion import Objective, vp_process
from diffusion.nets import UNet
from diffusion.timesteps import UniformSampler


def count(model):
    return sum(p.numel() for p in model.parameters())


def ours(size, channels):
    return UNet(image_size=size, in_channels=3, model_channels=channels, channel_mult=(1, 2, 2),
                num_res_blocks=1, attention_resolutions=(size // 2,), dropout=0.0)


def theirs(size, channels):
    UNet2DModel = import_diffusers().UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(channels, 2 * channels, 2 * channels),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=None, norm_num_groups=min(32, channels))


class DiffusersNet(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return self.model(x, t).sample


def train_step(net, batch, size, precision, device):
    """One optimizer step of the eps objective on a fixed batch, as a function of nothing
    (synchronized on CUDA, so that wall time is the step's)."""
    net.to(device)
    process = vp_process("linear", 1000)
    objective = Objective(process, "eps", "eps")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
    sampler = UniformSampler(process.T)
    x0 = (torch.rand(batch, 3, size, size) * 2 - 1).to(device)
    g = torch.Generator(device).manual_seed(0)

    def step():
        t, _ = sampler.sample(batch, generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = objective(net, x0, t, eps)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on either)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    a, b = ours(args.size, args.channels), DiffusersNet(theirs(args.size, args.channels))
    times = alternate({"ours": train_step(a, args.batch, args.size, args.precision, device),
                       "diffusers": train_step(b, args.batch, args.size, args.precision, device)},
                      args.repeats, warmup=2)
    ta, tb = times["ours"], times["diffusers"]
    name = "train_step" if (device.type, args.precision) == ("cpu", "fp32") else \
        f"train_step_{device.type}_{args.precision}"
    write(name, {
        "config": vars(args), "params_ours": count(a), "params_diffusers": count(b),
        "seconds_per_step_ours": ta, "seconds_per_step_diffusers": tb, "ratio": ta / tb,
    })


if __name__ == "__main__":
    main()
