"""Loss weightings w(t) on the eps-space MSE: every objective is E[w(t) |eps - eps_hat|^2].

    native     the parameterization's own unweighted MSE, w = k(t)^2 (parameterizations.py)
    eps        L_simple, w = 1 (Ho et al. 2020, eq. 14)
    vlb        the true bound's per-t KL (Ho et al. 2020 eq. 5/12; seed 003 "KL Between
               Gaussians"): for a fixed reverse variance s_t^2,
               w = c_x0^2 sigma^2 / (2 s^2 alpha^2 ln 2), which is DDPM's
               beta^2 / (2 s^2 (1 - beta)(1 - alpha_bar)) in bits; at t = 0 the decoder L_0
               replaces it (losses.py). Against this weight L_simple (w = 1) DOWN-weights
               small t (Ho et al. 2020, sec. 3.4) -- seed 003's remark that it up-weights
               them has the direction reversed.
    snr        w = snr = alpha^2 / sigma^2 (seed 003 "weighting schemes")
    min_snr    w = min(1, gamma / snr), Hang et al. 2023 in eps-space, finite as snr -> 0
    trunc_snr  w = max(1, 1 / snr): Salimans & Ho 2022's max(snr, 1) on the x0-MSE
    adaptive   EDM2 (Karras et al. 2024, eq. 8): err * w / exp(u(t)) + u(t) with w = 1 and
               a learned per-noise-level log-variance u (losses.AdaptiveHead)

Every table is computed from log-SNR so both ends of the cosine schedule stay finite.
"""

import math

import torch

from .parameterizations import Parameterization

__all__ = ["WEIGHTINGS", "MSE_WEIGHTINGS", "weight_table", "reverse_variance_table"]


def _native(process, param, gamma):
    return param.scale(process) ** 2


def _eps(process, param, gamma):
    return process.alpha.new_ones(process.T)


def _snr(process, param, gamma):
    return process.log_snr.exp()


def _min_snr(process, param, gamma):
    return torch.exp(-process.log_snr).mul(gamma).clamp(max=1.0)


def _trunc_snr(process, param, gamma):
    return torch.exp(-process.log_snr).clamp(min=1.0)


MSE_WEIGHTINGS = {
    "native": _native,
    "eps": _eps,
    "snr": _snr,
    "min_snr": _min_snr,
    "trunc_snr": _trunc_snr,
}
# `vlb` and `adaptive` are not plain MSE weights: losses.py handles them by name.
WEIGHTINGS = tuple(MSE_WEIGHTINGS) + ("vlb", "adaptive")


def reverse_variance_table(process, sigma):
    """s_t^2 of a fixed reverse variance: `fixed_large` = beta, `fixed_small` = beta_tilde.
    At t = 0 both use beta_tilde[1], as improved-diffusion does (beta_tilde[0] = 0)."""
    if sigma == "fixed_large":
        return torch.cat([process.beta_tilde[1:2], process.beta[1:]])
    if sigma == "fixed_small":
        return process.log_beta_tilde_clipped.exp()
    raise ValueError(f"{sigma!r} is not a fixed reverse variance")


def vlb_weight(process, sigma):
    """Eps-space weight of the per-t KL (bits/dim) under a fixed reverse variance."""
    s2 = reverse_variance_table(process, sigma)
    coef = process.posterior_coef_x0 * process.sigma / process.alpha
    return coef**2 / (2 * s2 * math.log(2))


def weight_table(name, process, param: Parameterization, gamma=5.0, sigma="fixed_large"):
    """w(t) for t = 0..T-1 in eps-space (float64). For `vlb` the t = 0 entry is the quadratic
    coefficient of a Gaussian decoder; `adaptive` reports its base weight w = 1."""
    if name in MSE_WEIGHTINGS:
        return MSE_WEIGHTINGS[name](process, param, gamma)
    if name == "vlb":
        return vlb_weight(process, sigma if sigma.startswith("fixed") else "fixed_small")
    if name == "adaptive":
        return _eps(process, param, gamma)
    raise ValueError(f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)}")
