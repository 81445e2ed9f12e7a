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

Seed 002's lambda(sigma) on the denoising score-matching loss lambda |s_hat + eps/sigma|^2
(Song & Ermon 2019, eq. 2; Vincent 2011). The score error is |eps - eps_hat|/sigma, so
lambda becomes w = lambda / sigma^2 in eps-space, sigma the process's own noise std:
    lambda_sigma2      lambda = sigma^2: w = 1 (NCSN's choice; L_simple in eps-space)
    lambda_one         lambda = 1: w = 1/sigma^2 (the score's plain MSE, = score's `native`)
    lambda_inv_sigma2  lambda = 1/sigma^2: w = 1/sigma^4
    lambda_learned     lambda(sigma) = exp(-u(sigma)) learned, on the plain score MSE (base
                       w = 1/sigma^2) with the `adaptive` machinery: score_err/exp(u) + u.
                       At the optimum exp(u) = E[score_err | sigma], so every noise level's
                       loss is normalized to 1 -- the same fixed point as `adaptive`.
Seed 002's table says lambda = 1 "emphasizes large noise"; against NCSN's lambda = sigma^2
it multiplies the eps-space weight by 1/sigma^2, so it emphasizes SMALL noise (and
lambda = 1/sigma^2 even more). Song & Ermon 2019 (sec. 4.2) choose lambda = sigma^2 precisely
so that lambda |score error|^2 is of order 1 at every sigma.

    edm        EDM's lambda(s) = (s^2 + sd^2)/(s sd)^2 on the denoiser MSE |x0_hat - x0|^2
               (Karras et al. 2022, Table 1), s = sigma/alpha: w = (s^2 + sd^2)/sd^2,
               the native weight of the `edm` parameterization
    uncertainty  seed 004's Gaussian NLL with a learned per-pixel sigma_phi (losses.py);
               not a fixed weight: its effective eps-space weight is s^2/sigma_phi^2

Every table is computed from log-SNR or log(sigma) so both ends of the cosine schedule stay
finite (1/sigma^4 is large at t = 0, never infinite: sigma[0] > 0).
"""

import dataclasses
import math

import torch

from .parameterizations import SIGMA_DATA, Parameterization

__all__ = ["WEIGHTINGS", "MSE_WEIGHTINGS", "ADAPTIVE_WEIGHTINGS", "WeightingOptions", "weight_table",
           "reverse_variance_table"]


@dataclasses.dataclass(frozen=True)
class WeightingOptions:
    """The weightings' settings, bound once: every weight is fn(process, param, options)."""
    gamma: float = 5.0                # min_snr's clip (Hang et al. 2023)
    sigma_data: float = SIGMA_DATA    # edm's data std (Karras et al. 2022)


def _native(process, param, options):
    return param.scale(process) ** 2


def _eps(process, param, options):
    return process.alpha.new_ones(process.T)


def _snr(process, param, options):
    return process.log_snr.exp()


def _min_snr(process, param, options):
    return torch.exp(-process.log_snr).mul(options.gamma).clamp(max=1.0)


def _trunc_snr(process, param, options):
    return torch.exp(-process.log_snr).clamp(min=1.0)


def _lambda_sigma2(process, param, options):
    """Song & Ermon 2019's lambda = sigma^2 (seed 002): w = 1."""
    return process.alpha.new_ones(process.T)


def _lambda_one(process, param, options):
    """Seed 002's lambda = 1 on the score MSE: w = 1/sigma^2 (emphasizes small noise)."""
    return torch.exp(-2 * process.sigma.log())


def _lambda_inv_sigma2(process, param, options):
    """Seed 002's lambda = 1/sigma^2 on the score MSE: w = 1/sigma^4."""
    return torch.exp(-4 * process.sigma.log())


def _edm(process, param, options):
    """Karras et al. 2022, Table 1: lambda(s) s^2 = (s^2 + sd^2)/sd^2, s^2 = exp(-log_snr)."""
    return (torch.exp(-process.log_snr) + options.sigma_data**2) / options.sigma_data**2


MSE_WEIGHTINGS = {
    "native": _native,
    "eps": _eps,
    "snr": _snr,
    "min_snr": _min_snr,
    "trunc_snr": _trunc_snr,
    "lambda_sigma2": _lambda_sigma2,
    "lambda_one": _lambda_one,
    "lambda_inv_sigma2": _lambda_inv_sigma2,
    "edm": _edm,
}
# A learned per-noise-level log-variance u on top of a base weight (losses.AdaptiveHead).
ADAPTIVE_WEIGHTINGS = {"adaptive": _eps, "lambda_learned": _lambda_one}
# `vlb`, the adaptive ones and `uncertainty` are not plain MSE weights: losses.py handles them.
WEIGHTINGS = tuple(MSE_WEIGHTINGS) + ("vlb",) + tuple(ADAPTIVE_WEIGHTINGS) + ("uncertainty",)


def reverse_variance_table(process, Sigma):
    """s_t^2 of a fixed reverse variance: `fixed_large` = beta, `fixed_small` = beta_tilde.
    At t = 0 both use beta_tilde[1], as improved-diffusion does (beta_tilde[0] = 0)."""
    if Sigma == "fixed_large":
        return torch.cat([process.beta_tilde[1:2], process.beta[1:]])
    if Sigma == "fixed_small":
        return process.log_beta_tilde_clipped.exp()
    raise ValueError(f"{Sigma!r} is not a fixed reverse variance")


def vlb_weight(process, Sigma):
    """Eps-space weight of the per-t KL (bits/dim) under a fixed reverse variance."""
    s2 = reverse_variance_table(process, Sigma)
    coef = process.posterior_coef_x0 * process.sigma / process.alpha
    return coef**2 / (2 * s2 * math.log(2))


def weight_table(name, process, param: Parameterization, gamma=5.0, Sigma="fixed_large",
                 sigma_data=SIGMA_DATA):
    """w(t) for t = 0..T-1 in eps-space (float64). For `vlb` the t = 0 entry is the quadratic
    coefficient of a Gaussian decoder; `adaptive` and `lambda_learned` report their base
    weight (1 and 1/sigma^2) and `uncertainty` its weight when sigma_phi^2 = s^2 (w = 1)."""
    options = WeightingOptions(gamma, sigma_data)
    if name in MSE_WEIGHTINGS:
        return MSE_WEIGHTINGS[name](process, param, options)
    if name == "vlb":
        return vlb_weight(process, Sigma if Sigma.startswith("fixed") else "fixed_small")
    if name in ADAPTIVE_WEIGHTINGS:
        return ADAPTIVE_WEIGHTINGS[name](process, param, options)
    if name == "uncertainty":
        return _eps(process, param, options)
    raise ValueError(f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)}")
