"""Which t each training example gets: uniform, or importance-sampled by the loss.

`ImportanceSampler` draws t with probability proportional to sqrt(E[L_t^2]) over a
history of the last 10 losses per t, mixed with a uniform floor (Nichol & Dhariwal 2021,
sec. 3.3; seed 003). Both return (t, weight) with weight = 1 / (T p_t), so that
mean(weight * L) is an unbiased estimate of the uniform-t loss.
"""

import torch

__all__ = ["UniformSampler", "ImportanceSampler", "TIMESTEP_SAMPLERS"]


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


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "importance": ImportanceSampler}
