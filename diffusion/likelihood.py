"""Negative log-likelihood in bits/dim from the variational bound (Ho et al. 2020, Table 1).

L = L_T + sum_{t>=1} L_{t-1} + L_0 summed over every step of the process (no Monte Carlo
over t), each term from losses.vlb_term; `levels` selects the discretized decoder for
discrete data (None: a continuous Gaussian decoder) and `cdf` its Gaussian CDF (`erf`, exact,
or `tanh`, the approximation of DDPM's code; losses.NORMAL_CDFS).
"""

import math

import torch

from .losses import vlb_term

__all__ = ["vlb_bits_per_dim"]


@torch.no_grad()
def vlb_bits_per_dim(denoiser, x0, generator=None, levels=None, callback=None, cdf="erf"):
    """Per-example total VLB in bits/dim and the per-t terms [T, B] (prior excluded)."""
    process = denoiser.process
    terms = x0.new_zeros(process.T, x0.shape[0])
    for i in range(process.T):
        t = torch.full(x0.shape[:1], i, device=x0.device, dtype=torch.long)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                          device=generator.device if generator is not None else "cpu").to(x0.device)
        x_t = process.q_sample(x0, t, eps)
        terms[i] = vlb_term(denoiser, x0, x_t, t, levels=levels, cdf=cdf)
        if callback is not None:
            callback(i + 1, process.T)
    prior = process.prior_kl(x0) / math.log(2.0)
    return terms.sum(0) + prior, terms
