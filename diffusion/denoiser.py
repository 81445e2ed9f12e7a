"""The model as samplers and losses see it: (network, parameterization, process, Sigma).

`Denoiser(x_t, t)` returns x0_hat and eps_hat whatever the network predicts, so every
sampler works with every parameterization (style.md). `reverse(x_t, t)` gives the
reverse step p(x_{t-1} | x_t) = N(mean, exp(log_var)) with the chosen Sigma:
    fixed_large    s^2 = beta_t                      (Ho et al. 2020, sec. 3.2)
    fixed_small    s^2 = beta_tilde_t
    learned_range  log s^2 = f log beta + (1 - f) log beta_tilde, f = (v + 1)/2
                   (Nichol & Dhariwal 2021, eq. 15)
    learned        log s^2 = network output (DDPM's learned diagonal Sigma)
A learned Sigma takes as many extra output channels as the data has.

Seed 004's uncertainty model (`uncertainty=True`) also takes extra channels: a per-pixel
r = log(sigma_phi^2 / s^2), the learned variance of x0 given x_t relative to the noise
variance s^2 = sigma^2/alpha^2 (an O(1) output at every noise level). With
`score="uncertainty"` the samplers use seed 004's score -(x_ve - mu_theta)/sigma_phi^2 in place
of Tweedie's -(x_ve - mu_theta)/s^2 (x_ve = x_t/alpha, mu_theta = x0_hat): that is the
Tweedie score times s^2/sigma_phi^2 = exp(-r), so eps_hat becomes exp(-r) eps_hat.
"""

from functools import partial

import torch
from torch import nn

from .parameterizations import eps_from_x0, get_parameterization, x0_from_eps
from .process import append_dims
from .weightings import reverse_variance_table

__all__ = ["SIGMAS", "LEARNED_SIGMAS", "SCORES", "Prediction", "Denoiser"]

SIGMAS = ("fixed_large", "fixed_small", "learned_range", "learned")
LEARNED_SIGMAS = ("learned_range", "learned")
SCORES = ("tweedie", "uncertainty")


class Prediction:
    """The denoiser's output at (x_t, t): the network's raw `out` (in its own space), x0_hat,
    eps_hat, and the extra channels of a learned Sigma (`var_out`) or of seed 004's
    uncertainty model (`log_ratio`, r = log(sigma_phi^2 / s^2) per pixel).

    `eps` may be given as a function computing it, evaluated on first read: after clipping,
    eps_hat is derived from x_t and the clipped x0, and an ancestral step (which reads only
    x0) should not pay for it."""

    def __init__(self, out, x0, eps, var_out=None, log_ratio=None):
        self.out, self.x0, self._eps = out, x0, eps
        self.var_out, self.log_ratio = var_out, log_ratio

    @property
    def eps(self):
        if callable(self._eps):
            self._eps = self._eps()
        return self._eps


class Denoiser(nn.Module):
    """Wraps a plain network with a parameterization; `clip_x0` clamps x0_hat to [-1, 1]
    and recomputes eps_hat from it (as the official DDPM and improved-diffusion samplers)."""

    def __init__(self, net, parameterization, process, Sigma="fixed_large", clip_x0=False,
                 uncertainty=False, score="tweedie", sigma_data=None):
        super().__init__()
        if Sigma not in SIGMAS:
            raise ValueError(f"unknown Sigma {Sigma!r}; choose from {list(SIGMAS)}")
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose from {list(SCORES)}")
        if uncertainty and Sigma in LEARNED_SIGMAS:
            raise ValueError("the uncertainty model needs a fixed Sigma (both use extra channels)")
        if score == "uncertainty" and not uncertainty:
            raise ValueError("score='uncertainty' needs the uncertainty model's sigma_phi")
        self.net = net
        self.process = process
        self.param = get_parameterization(parameterization, process, sigma_data)
        self.Sigma = Sigma
        self.clip_x0 = clip_x0
        self._log_var_tables = {}
        self.uncertainty, self.score = uncertainty, score

    @property
    def learned_sigma(self):
        return self.Sigma in LEARNED_SIGMAS

    def forward(self, x_t, t, clip_x0=None):
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        c = self.param.coefs(self.process, t, x_t)
        out = self.net(self.param.net_input(x_t, c), self.param.net_time(self.process, t, c))
        var_out = log_ratio = None
        if self.learned_sigma:
            out, var_out = out.chunk(2, dim=1)
        elif self.uncertainty:
            out, log_ratio = out.chunk(2, dim=1)
        x0, eps = self.param.to_x0_eps(out, x_t, c)
        clip = self.clip_x0 if clip_x0 is None else clip_x0
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = partial(eps_from_x0, x_t, x0, c["alpha"], c["sigma"])  # computed when read
        if self.score == "uncertainty":  # seed 004, "A Better Score Function"
            eps = torch.exp(-log_ratio) * (eps() if clip else eps)
            x0 = x0_from_eps(x_t, eps, c["alpha"], c["sigma"])
        return Prediction(out=out, x0=x0, eps=eps, var_out=var_out, log_ratio=log_ratio)

    def reverse_log_variance(self, pred, t, x_t, process=None):
        """log s_t^2 of p(x_{t-1} | x_t) at integer t of `process` (default: the denoiser's
        own; a respaced one for fast ancestral sampling, as improved-diffusion does)."""
        process = self.process if process is None else process
        if self.Sigma == "learned":
            return pred.var_out
        if self.Sigma == "learned_range":
            frac = (pred.var_out + 1) / 2
            max_log = process.at("beta", t, x_t).log()
            min_log = process.at("log_beta_tilde_clipped", t, x_t)
            return frac * max_log + (1 - frac) * min_log
        key = (id(process), x_t.device, x_t.dtype)
        if key not in self._log_var_tables or self._log_var_tables[key][0] is not process:
            table = reverse_variance_table(process, self.Sigma).log().to(x_t.device, x_t.dtype)
            self._log_var_tables[key] = (process, table)  # once per device: no per-step host copy
        table = self._log_var_tables[key][1]
        return append_dims(table[t.long()], x_t.ndim)  # [B, 1, ...]: broadcasts against x_t

    def reverse(self, x_t, t, pred=None):
        """(pred, mean, log_var) of p(x_{t-1} | x_t): the posterior mean at x0_hat."""
        pred = self(x_t, t) if pred is None else pred
        mean = self.process.posterior_mean(pred.x0, x_t, t)
        return pred, mean, self.reverse_log_variance(pred, t, x_t)
