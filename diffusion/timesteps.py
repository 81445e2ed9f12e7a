"""Which t each training example gets: uniform, importance-sampled by the loss, or EDM's log-normal.

`ImportanceSampler` draws t with probability proportional to sqrt(E[L_t^2]) over a
history of the last 10 losses per t, mixed with a uniform floor (Nichol & Dhariwal 2021,
sec. 3.3; seed 003). Both return (t, weight) with weight = 1 / (T p_t), so that
mean(weight * L) is an unbiased estimate of the uniform-t loss.

`LogNormalSampler` is EDM's training noise distribution, ln(sigma/alpha) ~ N(P_mean, P_std^2)
(Karras et al. 2022, Table 1: -1.2, 1.2), on a discrete process: each draw goes to the t
whose ln(sigma_t/alpha_t) it equals (linear interpolation in t, rounded: the tables are
indexed by integer t), draws beyond the process's range to its first or last t. Its weight is
1: the distribution is part of EDM's objective, not a variance reduction to undo, so the loss
weight stays the weighting's own.

`UniformSampler(T)`, `ImportanceSampler(T, history, uniform_prob)`, `LogNormalSampler(process,
mean, std)`: the last needs the process's noise levels. `timestep_sampler(name, process,
TimestepOptions(...))` builds any of them by name with its settings bound once.
"""

import dataclasses
import math

import torch

__all__ = ["UniformSampler", "ImportanceSampler", "LogNormalSampler", "TIMESTEP_SAMPLERS", "TimestepOptions",
           "timestep_sampler"]


class UniformSampler:
    def __init__(self, T):
        self.T = T
        self._uniform = {}  # device -> the constant uniform table, copied there once

    def probabilities(self):
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)

    def _probabilities_on(self, device):
        if type(self).probabilities is not UniformSampler.probabilities:
            return self.probabilities().to(device)
        if device not in self._uniform:
            self._uniform[device] = self.probabilities().to(device)
        return self._uniform[device]

    def sample(self, batch_size, generator=None, device="cpu"):
        """t drawn on the generator's device (a CUDA generator draws on the GPU)."""
        p = self._probabilities_on(generator.device if generator is not None else torch.device("cpu"))
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weight = 1.0 / (self.T * p[t])
        return t.to(device), weight.to(device=device, dtype=torch.float32)

    def update(self, t, losses):
        """Record per-example losses (no-op for uniform sampling)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ImportanceSampler(UniformSampler):
    def __init__(self, T, history=10, uniform_prob=1e-3):
        super().__init__(T)
        self.history, self.uniform_prob = history, uniform_prob
        self.losses = torch.zeros(T, history, dtype=torch.float64)
        self.counts = torch.zeros(T, dtype=torch.long)

    def probabilities(self):
        if bool((self.counts < self.history).any()):  # warm up on uniform t
            return super().probabilities()
        p = self.losses.pow(2).mean(1).sqrt()
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t, losses):
        for ti, li in zip(t.tolist(), losses.detach().double().tolist()):
            slot = self.counts[ti] % self.history
            self.losses[ti, slot] = li
            self.counts[ti] += 1

    def state_dict(self):
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state):
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


class LogNormalSampler(UniformSampler):
    def __init__(self, process, mean=-1.2, std=1.2):
        super().__init__(process.T)
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.mean, self.std = mean, std
        self.log_s = (-0.5 * process.log_snr).double().cpu()  # ln(sigma_t / alpha_t), increasing in t
        if not bool((self.log_s.diff() > 0).all()):
            raise ValueError("the process's sigma/alpha must increase with t")

    def to_t(self, log_s):
        """The integer t of each ln(sigma/alpha): interpolated in t, rounded, clipped to [0, T-1]."""
        grid = self.log_s.to(log_s.device)
        i = torch.searchsorted(grid, log_s).clamp(1, self.T - 1)
        lo, hi = grid[i - 1], grid[i]
        return (i - 1 + (log_s - lo) / (hi - lo)).round().clamp(0, self.T - 1).long()

    def probabilities(self):
        """P(t) exactly: the normal mass of ln(sigma/alpha) between the midpoints that round to t."""
        edges = torch.cat([self.log_s.new_tensor([-math.inf]), (self.log_s[:-1] + self.log_s[1:]) / 2,
                           self.log_s.new_tensor([math.inf])])
        cdf = 0.5 * (1 + torch.erf((edges - self.mean) / (self.std * math.sqrt(2.0))))
        return cdf.diff()

    def sample(self, batch_size, generator=None, device="cpu"):
        draw_device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(batch_size, generator=generator, device=draw_device, dtype=torch.float64)
        t = self.to_t(self.mean + self.std * z)
        return t.to(device), torch.ones(batch_size, device=device)


@dataclasses.dataclass(frozen=True)
class TimestepOptions:
    """The t samplers' settings, bound once: every sampler is built as fn(process, options)."""
    lognormal_mean: float = -1.2     # EDM's P_mean (Karras et al. 2022, Table 1)
    lognormal_std: float = 1.2       # EDM's P_std
    history: int = 10                # importance: losses kept per t (Nichol & Dhariwal 2021)
    uniform_prob: float = 1e-3       # importance: the uniform floor's mass


TIMESTEP_SAMPLERS = {
    "uniform": lambda process, options: UniformSampler(process.T),
    "importance": lambda process, options: ImportanceSampler(process.T, options.history, options.uniform_prob),
    "lognormal": lambda process, options: LogNormalSampler(process, options.lognormal_mean, options.lognormal_std),
}


def timestep_sampler(name, process, options=TimestepOptions()):
    """The t distribution `name` (a TIMESTEP_SAMPLERS key) for `process`, with its settings."""
    if name not in TIMESTEP_SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; choose from {sorted(TIMESTEP_SAMPLERS)}")
    return TIMESTEP_SAMPLERS[name](process, options)
