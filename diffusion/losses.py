"""Training objectives: one weighted denoising loss for every (parameterization, weighting, Sigma).

Loss scale (design.md "Conventions"): per-example losses are means over dimensions; the
VLB terms are in bits/dim; weights are the papers' own (no normalization) unless
`normalize=True`, which divides an MSE weight by its mean over t so E_t[w] = 1.

An MSE weighting is applied in the parameterization's own output space with factor
w(t) / k(t)^2 (weighting_space="eps"), which has exactly the gradient of w |eps - eps_hat|^2
without dividing by a vanishing sigma or alpha; with weighting_space="target" the factor is
w(t) itself (seed 003's code), and `native` is always the plain MSE of the target (divided
by the constant E_t[k^2] when normalized).

`vlb` trains on the true per-t term L_{t-1} = KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for
t >= 1 and the decoder L_0 = -log p(x0 | x_1) at t = 0 (Ho et al. 2020, eq. 5; seed 003),
in bits/dim, the per-t term itself as DDPM's code does (vlb_scale="ddpm") or times T
(improved-diffusion's rescaled KL, vlb_scale="rescaled"). A learned Sigma under any other
weighting adds the hybrid term lambda * T * L_t with the mean detached (Nichol & Dhariwal
2021, sec. 3.1, lambda = 0.001; their code's vb * T/1000), so it is never left untrained.
Under a fixed Sigma the KL for t >= 1 is computed as the weighted MSE of the target plus
the KL's model-independent constant, which is exact and avoids dividing by alpha.

`uncertainty` is seed 004's Gaussian NLL of x0 under q(x0 | x_t) = N(mu_theta, sigma_phi^2),
per pixel, with the known noise variance s^2 = sigma^2/alpha^2 added as the seed derives it:
    L = 1/2 [log sigma_phi^2 + (s^2 + (mu_theta - x0)^2) / sigma_phi^2 + log 2 pi]   (nats/dim)
whose optimum is sigma_phi^2 = s^2 + (mu_theta - x0)^2 (in expectation s^2 + Var[x0 | x_t]).
The network outputs r = log(sigma_phi^2 / s^2) and (mu_theta - x0)^2 = s^2 |eps - eps_hat|^2,
so L = 1/2 [log s^2 + r + (1 + |eps - eps_hat|^2) e^-r + log 2 pi]: an eps-space weight of
e^-r, finite at every t.
"""

import math

import torch
from torch import nn

from .denoiser import LEARNED_SIGMAS, SIGMAS, Denoiser
from .process import append_dims
from .parameterizations import SIGMA_DATA, get_parameterization
from .weightings import (ADAPTIVE_WEIGHTINGS, MSE_WEIGHTINGS, WEIGHTINGS, reverse_variance_table,
                         vlb_weight, weight_table)

__all__ = [
    "normal_kl", "standard_normal_cdf", "tanh_normal_cdf", "NORMAL_CDFS",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood", "vlb_term", "AdaptiveHead", "Objective", "WeightedMSE", "VLB", "Uncertainty",
    "mean_flat",
]

LN2 = math.log(2.0)


def mean_flat(x):
    return x.flatten(1).mean(1)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def standard_normal_cdf(x):
    """Phi(x), exactly (through erf)."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def tanh_normal_cdf(x):
    """Phi(x) by the tanh approximation DDPM's and improved-diffusion's code use
    (`approx_standard_normal_cdf`; Page 1977): off by up to ~2e-4."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


# The discretized decoder's Gaussian CDF: `erf` (exact, our default) or `tanh` (the papers'
# code, so that bits/dim compare term by term with theirs).
NORMAL_CDFS = {"erf": standard_normal_cdf, "tanh": tanh_normal_cdf}


def discretized_gaussian_log_likelihood(x0, mean, log_var, levels, cdf="erf"):
    """log p(x0) for data on `levels` evenly spaced values in [-1, 1] (Ho et al. 2020, eq. 13),
    the outermost bins extended to +-infinity; `cdf` names the Gaussian CDF (NORMAL_CDFS)."""
    phi = NORMAL_CDFS[cdf]
    half_bin = 1.0 / (levels - 1)
    inv_std = torch.exp(-0.5 * log_var)
    cdf_plus = phi((x0 - mean + half_bin) * inv_std)
    cdf_minus = phi((x0 - mean - half_bin) * inv_std)
    tiny = 1e-12
    log_cdf_plus = cdf_plus.clamp(min=tiny).log()
    log_one_minus_cdf_minus = (1 - cdf_minus).clamp(min=tiny).log()
    log_delta = (cdf_plus - cdf_minus).clamp(min=tiny).log()
    edge = 1 - half_bin  # only the outermost levels (-1 and 1) get the infinite tails
    return torch.where(x0 < -edge, log_cdf_plus,
                       torch.where(x0 > edge, log_one_minus_cdf_minus, log_delta))


def gaussian_log_likelihood(x0, mean, log_var):
    """Continuous Gaussian decoder log N(x0; mean, e^log_var), for real-valued data."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))


def vlb_term(denoiser: Denoiser, x0, x_t, t, pred=None, levels=None, detach_mean=False, cdf="erf"):
    """L_t per example in bits/dim: the KL for t >= 1, the decoder NLL at t = 0 (discretized
    with `levels` and the Gaussian CDF `cdf`, or a continuous Gaussian when levels is None)."""
    pred, mean, log_var = denoiser.reverse(x_t, t, pred)
    if detach_mean:
        mean = mean.detach()
    true_mean, _, true_log_var = denoiser.process.posterior_mean_variance(x0, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / LN2
    if levels is None:
        nll = -mean_flat(gaussian_log_likelihood(x0, mean, log_var)) / LN2
    else:
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, log_var, levels, cdf)) / LN2
    return torch.where(t == 0, nll, kl)


class AdaptiveHead(nn.Module):
    """EDM2's learned log-variance u(t): a linear map of Fourier features of log-SNR
    (Karras et al. 2024, sec. 4 / App. B.2)."""

    def __init__(self, process, channels=128):
        super().__init__()
        self.register_buffer("log_snr", process.log_snr.float(), persistent=False)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", torch.randn(channels, generator=generator), persistent=False)
        self.register_buffer("phases", torch.rand(channels, generator=generator), persistent=False)
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t):
        c_noise = self.log_snr[t.long()] / 4  # EDM's c_noise = ln(sigma)/4 = -log_snr/8 up to sign
        features = torch.cos(2 * math.pi * (c_noise[:, None] * self.freqs + self.phases)) * math.sqrt(2)
        return self.linear(features).squeeze(1)


class Objective(nn.Module):
    """Per-example training loss for one grid cell; `forward(net, x0, t, eps)` returns a dict
    with `loss` [B] (what is minimized) and `mse_eps` [B] (|eps - eps_hat|^2, for logging).

    `Objective(process, parameterization, weighting, Sigma, ...)` builds the class of the
    weighting's kind, one small class each: `WeightedMSE` (an MSE weighting, the adaptive
    ones, and the hybrid term of a learned Sigma), `VLB` (the bound's per-t terms) and
    `Uncertainty` (seed 004's Gaussian NLL). Each holds parameters only for the `adaptive` /
    `lambda_learned` head: optimize them with the network.
    """

    def __new__(cls, process, parameterization, weighting, *args, **kwargs):
        if cls is Objective:
            if weighting not in WEIGHTINGS:
                raise ValueError(f"unknown weighting {weighting!r}; choose from {sorted(WEIGHTINGS)}")
            cls = Uncertainty if weighting == "uncertainty" else VLB if weighting == "vlb" else WeightedMSE
        return super().__new__(cls)

    def __init__(self, process, parameterization, weighting, Sigma="fixed_large",
                 weighting_space="eps", gamma=5.0, levels=None, vlb_scale="ddpm",
                 hybrid_lambda=1e-3, normalize=False, sigma_data=SIGMA_DATA, decoder_cdf="erf"):
        super().__init__()
        if weighting_space not in ("eps", "target"):
            raise ValueError("weighting_space must be 'eps' or 'target'")
        if vlb_scale not in ("ddpm", "rescaled"):
            raise ValueError("vlb_scale must be 'ddpm' or 'rescaled'")
        if decoder_cdf not in NORMAL_CDFS:
            raise ValueError(f"decoder_cdf must be one of {sorted(NORMAL_CDFS)}")
        if Sigma not in SIGMAS:
            raise ValueError(f"unknown Sigma {Sigma!r}; choose from {sorted(SIGMAS)}")
        if weighting == "uncertainty" and Sigma in LEARNED_SIGMAS:
            raise ValueError("the uncertainty model needs a fixed Sigma (both use extra channels)")
        self.process = process
        self.parameterization, self.weighting, self.Sigma = parameterization, weighting, Sigma
        self.levels, self.hybrid_lambda, self.decoder_cdf = levels, hybrid_lambda, decoder_cdf
        self.vlb_factor = 1.0 if vlb_scale == "ddpm" else float(process.T)
        self.uncertainty, self.sigma_data = weighting == "uncertainty", sigma_data
        self.param = get_parameterization(parameterization, process, sigma_data)
        self.register_buffer("k2", self.param.scale(process) ** 2, persistent=False)

    def denoiser(self, net, **kwargs):
        return Denoiser(net, self.parameterization, self.process, self.Sigma,
                        uncertainty=self.uncertainty, sigma_data=self.sigma_data, **kwargs)

    def _vlb_term(self, denoiser, x0, x_t, t, pred, detach_mean=False):
        return vlb_term(denoiser, x0, x_t, t, pred, self.levels, detach_mean=detach_mean, cdf=self.decoder_cdf)

    def forward(self, net, x0, t, eps):
        denoiser = self.denoiser(net)
        x_t = self.process.q_sample(x0, t, eps)
        pred = denoiser(x_t, t)
        c = self.param.coefs(self.process, t, x_t)
        target = self.param.target(x0, eps, x_t, c)
        err = mean_flat((pred.out - target) ** 2)  # the parameterization's own MSE
        mse_eps = err / self.k2[t].to(err.dtype)
        return {**self.loss(denoiser, x0, x_t, t, eps, pred, err), "mse_eps": mse_eps.detach()}

    def loss(self, denoiser, x0, x_t, t, eps, pred, err):
        """{"loss": [B], ...} from the prediction and its own MSE `err`."""
        raise NotImplementedError


class WeightedMSE(Objective):
    """w(t) on the eps MSE, applied in the parameterization's output space (module docstring);
    the adaptive weightings learn u(t) on top (err w / e^u + u); a learned Sigma adds the
    hybrid term lambda T L_t with the mean detached."""

    def __init__(self, process, parameterization, weighting, Sigma="fixed_large", weighting_space="eps",
                 gamma=5.0, normalize=False, sigma_data=SIGMA_DATA, **kwargs):
        super().__init__(process, parameterization, weighting, Sigma, weighting_space=weighting_space,
                         gamma=gamma, normalize=normalize, sigma_data=sigma_data, **kwargs)
        w = weight_table(weighting, process, self.param, gamma, sigma_data=sigma_data)
        if normalize:
            w = w / w.mean()
        # native: the target's plain MSE (over E_t[k^2] if normalized); target space: w itself
        factor = w if weighting_space == "target" and weighting != "native" else w / self.k2
        self.register_buffer("factor", factor, persistent=False)
        self.adaptive = AdaptiveHead(process) if weighting in ADAPTIVE_WEIGHTINGS else None

    def loss(self, denoiser, x0, x_t, t, eps, pred, err):
        loss = self.factor[t].to(err.dtype) * err
        if self.adaptive is not None:
            u = self.adaptive(t)
            loss = loss / torch.exp(u) + u
        if denoiser.learned_sigma:
            loss = loss + self.hybrid_lambda * self.process.T * self._vlb_term(denoiser, x0, x_t, t, pred,
                                                                               detach_mean=True)
        return {"loss": loss}


class VLB(Objective):
    """The bound's per-t term L_{t-1} (bits/dim, times T when rescaled), the decoder at t = 0.
    Under a fixed Sigma the KL for t >= 1 is its quadratic coefficient times the MSE plus the
    KL's model-independent constant (exact, no division by alpha); a learned Sigma takes the
    full KL."""

    def __init__(self, process, parameterization, weighting, Sigma="fixed_large", **kwargs):
        super().__init__(process, parameterization, weighting, Sigma, **kwargs)
        if Sigma not in LEARNED_SIGMAS:
            s2 = reverse_variance_table(process, Sigma)
            log_q = process.log_beta_tilde_clipped
            self.register_buffer("factor", vlb_weight(process, Sigma) / self.k2, persistent=False)
            self.register_buffer("kl_const", 0.5 * (s2.log() - log_q + log_q.exp() / s2 - 1) / LN2,
                                 persistent=False)

    def loss(self, denoiser, x0, x_t, t, eps, pred, err):
        term = self._vlb_term(denoiser, x0, x_t, t, pred)
        if not denoiser.learned_sigma:
            kl = self.factor[t].to(err.dtype) * err + self.kl_const[t].to(err.dtype)
            term = torch.where(t == 0, term, kl)
        return {"loss": self.vlb_factor * term}


class Uncertainty(Objective):
    """Seed 004's Gaussian NLL of x0 (module docstring), with the learned variance
    `sigma_phi2` and the seed's predicted optimum `seed_sigma_phi2` = s^2 + (mu_theta - x0)^2,
    per-example means over pixels."""

    def __init__(self, process, parameterization, weighting, Sigma="fixed_large", **kwargs):
        super().__init__(process, parameterization, weighting, Sigma, **kwargs)
        self.register_buffer("s2", torch.exp(-process.log_snr), persistent=False)

    def loss(self, denoiser, x0, x_t, t, eps, pred, err):
        s2 = append_dims(self.s2[t].to(err.dtype), x0.ndim)
        r, e2 = pred.log_ratio, (pred.eps - eps) ** 2
        nll = 0.5 * (s2.log() + r + (1 + e2) * torch.exp(-r) + math.log(2 * math.pi))
        return {"loss": mean_flat(nll), "sigma_phi2": mean_flat(s2 * torch.exp(r)).detach(),
                "seed_sigma_phi2": mean_flat(s2 * (1 + e2)).detach()}


def output_channels(data_channels, Sigma, weighting=None):
    """Channels the network must output for a Sigma choice (and seed 004's uncertainty model)."""
    extra = Sigma in LEARNED_SIGMAS or weighting == "uncertainty"
    return 2 * data_channels if extra else data_channels


__all__.append("output_channels")
