"""Training helpers any loop can call: EMA with warm-up, learning-rate warm-up, one step.

EMA decay follows min(decay, (1 + n) / (10 + n)) after n updates (the warm-up of
TensorFlow's ExponentialMovingAverage that DDPM's code uses), so a short run's EMA is not
dominated by the initial weights. `training_step` never calls `.item()`: the loss stays on
the device, and the caller decides when to synchronize.
"""

import copy

import torch

__all__ = ["EMA", "warmup_lr", "training_step"]


class EMA:
    """Exponential moving average of a module's parameters and buffers."""

    def __init__(self, model, decay=0.9999, warmup=True):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self):
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model):
        decay = self.current_decay()
        self.num_updates += 1
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self):
        return {"model": self.model.state_dict(), "num_updates": torch.tensor(self.num_updates)}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


def warmup_lr(step, base_lr, warmup_steps):
    """Linear warm-up to base_lr over warmup_steps (Ho et al. 2020, App. B: 5000 steps)."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def training_step(net, objective, optimizer, x0, timestep_sampler, generator=None,
                  grad_clip=1.0, ema=None, lr=None, forward=None, shard=None, gather=None):
    """One optimizer step on a batch x0; returns (loss, t, per-example losses) on the device.

    The loss minimized is mean(weight * L) with the timestep sampler's importance weights.
    `forward` is the module the loss calls in place of `net` (the same parameters seen
    through DDP, torch.compile or autocast); the EMA always follows `net` itself. Noise is
    drawn on the generator's device, so a CUDA generator never round-trips through the host.

    Data parallelism without changing the run: every process passes the same global batch
    x0 and an identically seeded generator, and its own `shard` (a slice of the batch). t
    and the noise are drawn for the whole batch, each process computes the loss of its
    rows, and the gradient averaged over equal shards (DDP) is the whole batch's; `gather`
    (per-example losses of every shard, concatenated in order) lets the timestep sampler see
    the whole batch, so N processes take the steps one process takes.
    """
    device = x0.device
    t, weight = timestep_sampler.sample(x0.shape[0], generator=generator, device=device)
    noise_device = generator.device if generator is not None else "cpu"
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=noise_device).to(device)
    if shard is not None:
        x0, t_mine, weight, eps = x0[shard], t[shard], weight[shard], eps[shard]
    else:
        t_mine = t
    terms = objective(net if forward is None else forward, x0, t_mine, eps)
    loss = (terms["loss"] * weight).mean()
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update(net)
    per_example = terms["loss"].detach()
    timestep_sampler.update(t, per_example if gather is None else gather(per_example))
    return loss.detach(), t_mine, terms
