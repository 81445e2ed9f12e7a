"""Where a stage computes: the device (`auto | cpu | cuda`), bf16 autocast, channels_last,
torch.compile, and data-parallel training over several GPUs (DDP under torchrun).

None of it changes the experiment: a single-process fp32 CPU run is the reference, and each
option only moves, speeds up or lowers the precision of the same computation. A stage that
needs N processes relaunches itself under `torch.distributed.run`, so Snakemake and DVC keep
one command per stage whatever `train.gpus` is.
"""

import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

from .io import StageError

# Rank r draws its dropout masks from seed + r * SEED_STRIDE (rank 0: the seed); batches, t and
# noise come from one generator seeded alike on every rank (pipeline/train.py).
SEED_STRIDE = 1_000_003


def resolve_device(setting, key, local_rank=0):
    """torch.device for a params setting `auto | cpu | cuda` (`key` names it in errors)."""
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise StageError(f"{key}: process {local_rank} has no GPU (torch sees "
                             f"{torch.cuda.device_count()}); lower train.gpus")
        return torch.device("cuda", local_rank)
    if setting == "cuda":
        raise StageError(f"{key}: cuda requested but torch sees no GPU "
                         "(torch.cuda.is_available() is False); use auto or cpu")
    return torch.device("cpu")


def tune_for(device):
    """Library switches that only pay off on a GPU: cuDNN picks the fastest convolution for
    the fixed input shapes (GPU results are already not bitwise reproducible, see docs/reliability.md)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class Forward(nn.Module):
    """The network as the loss or a sampler calls it: inputs in channels_last where that
    helps (conv nets on CUDA), the forward under bf16 autocast with a float32 output, so the
    loss, its weights and the VLB terms stay in float32 (only the network runs in bf16)."""

    def __init__(self, net, precision="fp32", channels_last=False):
        super().__init__()
        self.net = net
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.channels_last = channels_last

    def forward(self, x, t):
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.net(x, t)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            out = self.net(x, t)
        return out.float()


def uses_channels_last(device, model_params):
    """channels_last helps conv nets on CUDA (tensor-core convolutions); on CPU it does not."""
    return device.type == "cuda" and model_params.net == "unet"


def compiled(module, enabled, backend="inductor"):
    """torch.compile(module) when enabled (parameters stay shared with `module`)."""
    return torch.compile(module, backend=backend) if enabled else module


def cpu_state(module):
    """A module's state dict as contiguous CPU tensors (what every output file holds)."""
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for k, v in module.state_dict().items()}


# ----- several processes (DDP) ---------------------------------------------------------------
def in_torchrun():
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc, module, argv):
    """Run `python -m module argv` as `nproc` processes under torch.distributed.run (torchrun,
    single node) and wait for them; a failed process becomes one StageError line."""
    from torch.distributed.run import main as torchrun

    args = ["--standalone", f"--nproc-per-node={nproc}", "--module", module, *argv]
    print(f"{module}: relaunching under torchrun with {nproc} processes", file=sys.stderr, flush=True)
    try:
        torchrun(args)
    except SystemExit as err:
        if err.code:
            raise StageError(f"{module}: torchrun exited with {err.code}") from None
    except Exception as err:  # ChildFailedError: the workers printed their own errors above
        first = str(err).strip().splitlines()
        raise StageError(f"{module}: {type(err).__name__} under torchrun with {nproc} processes"
                         f"{': ' + first[0] if first else ''}; see the workers' errors above") from None


@dataclass
class Runtime:
    """This process's place in a run: its device, rank and the number of processes."""
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self):
        return self.rank == 0

    def gather(self, obj):
        """Every rank's `obj` as a list on every rank (one element without DDP)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_gather(self, tensor):
        """Every rank's `tensor` concatenated along dim 0 in rank order (itself without DDP)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out)

    def mean(self, value):
        """The mean of a device scalar over ranks (itself without DDP)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.world

    def close(self):
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def setup(device_setting, processes, key="train.device"):
    """The Runtime of this process; under torchrun, joins the process group (NCCL on GPUs,
    gloo on CPU, which is how the tests exercise DDP without a GPU)."""
    if processes == 1 or not in_torchrun():
        device = resolve_device(device_setting, key)
        tune_for(device)
        return Runtime(device)
    import torch.distributed as dist

    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if world != processes:
        raise StageError(f"train.gpus: {processes} but torchrun started {world} processes")
    device = resolve_device(device_setting, key, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    tune_for(device)
    return Runtime(device, rank, world)


def data_parallel(net, runtime, extra_params=()):
    """DDP view of `net` (gradients averaged over ranks during backward); parameters outside
    the net (the adaptive weighting's head) are averaged by hooks, so every rank steps alike."""
    if runtime.world == 1:
        return net
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    def average(grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad / runtime.world

    for p in extra_params:
        p.register_hook(average)
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)
