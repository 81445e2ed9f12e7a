"""Samplers. Each takes a Denoiser (so any parameterization), a shape, a step count and a
torch.Generator, and reports progress through `callback(i, n)`.

    ancestral   DDPM Algorithm 2 (seed 001; Ho et al. 2020) with the Denoiser's Sigma
    ddim        Song et al. 2021a, eq. 12, with eta (eta = 1: ancestral with fixed_small)
    heun        probability-flow ODE, Karras et al. 2022 Algorithm 1 (2 NFE per step)
    euler_maruyama  reverse-time SDE (Song et al. 2021b, eq. 6; seed 000's score)
    langevin    annealed Langevin dynamics, Song & Ermon 2019 Algorithm 1 (seed 002)

The continuous samplers work in EDM's variance-exploding coordinates, x_ve = x / alpha
with noise level s = sigma / alpha = exp(-log_snr / 2), where the VP and VE processes share
one ODE: dx_ve/ds = (x_ve - D(x_ve; s)) / s, D = x0_hat (Karras et al. 2022, eq. 4 and
sec. 3). The network is queried at the real-valued t whose log-SNR matches s. Heun and
Euler-Maruyama start at s_0 = min(sigma_max, the process's largest s), EDM's sigma_max = 80
(Karras et al. 2022, Table 1), from x_ve ~ N(0, s_0^2): the VP schedules reach s ~ 157 (linear)
and ~2e4 (cosine), where the rho = 7 ramp of eq. 5 spends its steps far above the data's scale.

`steps_for_nfe` converts a budget of network evaluations (NFE) into each sampler's `steps`
(Heun spends 2 per step but the last; Langevin `steps_per_level` per level, plus the final
denoising step), so samplers can be compared at equal NFE.
"""

import math

import torch

__all__ = ["SAMPLERS", "ancestral", "ddim", "heun", "euler_maruyama", "langevin", "karras_sigmas",
           "score_ve", "steps_for_nfe", "nfe_of_steps"]


def _randn(shape, generator, like):
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _prior(denoiser, shape, generator, device, dtype):
    return torch.randn(shape, generator=generator, device=device, dtype=dtype) * denoiser.process.prior_std


def _steps(process, steps):
    """(grid, index): the sampling grid and each of its steps' integer index in `process`
    (the denoiser is queried at integer t: exact table lookups, no interpolation)."""
    if steps is None or steps == process.T:
        return process, list(range(process.T))
    grid = process.respace(steps)
    return grid, [int(i) for i in grid.parent_index.tolist()]


@torch.no_grad()
def ancestral(denoiser, shape, steps=None, generator=None, device="cpu", dtype=torch.float32,
              callback=None):
    """x_{t-1} = mu_theta(x_t, t) + s_t z (DDPM Algorithm 2). With `steps` < T the process is
    respaced (Nichol & Dhariwal 2021, sec. 4): the network is still queried at its own t and
    the posterior step and fixed variances come from the respaced process."""
    process, index = _steps(denoiser.process, steps)
    x = _prior(denoiser, shape, generator, device, dtype)
    for i in reversed(range(process.T)):
        t = torch.full(shape[:1], i, device=device, dtype=torch.long)
        pred = denoiser(x, torch.full(shape[:1], index[i], device=device, dtype=torch.long))
        mean = process.posterior_mean(pred.x0, x, t)
        log_var = denoiser.reverse_log_variance(pred, t, x, process)
        x = torch.addcmul(mean, torch.exp(0.5 * log_var), _randn(shape, generator, x)) if i > 0 else mean
        if callback is not None:
            callback(process.T - i, process.T)
    return x


@torch.no_grad()
def ddim(denoiser, shape, steps=50, eta=0.0, generator=None, device="cpu", dtype=torch.float32,
         callback=None):
    """DDIM (Song et al. 2021a, eq. 12) on an evenly respaced grid; eta = 0 is deterministic."""
    process, index = _steps(denoiser.process, steps)
    alpha, sigma = process.alpha.tolist(), process.sigma.tolist()
    x = _prior(denoiser, shape, generator, device, dtype)
    for n, i in enumerate(reversed(range(process.T))):
        pred = denoiser(x, torch.full(shape[:1], index[i], device=device, dtype=torch.long))
        a_prev = alpha[i - 1] if i > 0 else 1.0
        s_prev = sigma[i - 1] if i > 0 else 0.0
        # eta scales the std of q(x_{t-1} | x_t, x0) between the two kept steps.
        c = eta * _ddim_noise(alpha[i], sigma[i], a_prev, s_prev)
        x = torch.add(a_prev * pred.x0, pred.eps, alpha=math.sqrt(max(0.0, s_prev**2 - c**2)))
        if c > 0 and i > 0:
            x = x + c * _randn(shape, generator, x)
        if callback is not None:
            callback(n + 1, process.T)
    return x


def _ddim_noise(alpha, sigma, alpha_prev, sigma_prev):
    """Std of q(x_s | x_t, x0) between two kept steps (Song et al. 2021a, eq. 16 with eta = 1)."""
    if sigma_prev == 0.0:
        return 0.0
    alpha_ts = alpha / alpha_prev
    var_ts = sigma**2 - alpha_ts**2 * sigma_prev**2
    return math.sqrt(max(0.0, var_ts * sigma_prev**2 / sigma**2))


def karras_sigmas(s_min, s_max, n, rho=7.0):
    """Karras et al. 2022, eq. 5: n noise levels from s_max down to s_min."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv = s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))
    return inv**rho


def _ve_levels(process, n, sigma_max, rho):
    """Karras et al. 2022, eq. 5 from s_0 = min(sigma_max, the process's largest s) down to its
    smallest; the network is still queried at the t whose log-SNR matches each level."""
    s = process.sigma / process.alpha
    return karras_sigmas(float(s[0]), min(sigma_max, float(s[-1])), n, rho)


def _denoise_ve(denoiser, x_ve, s):
    """D(x_ve; s) = x0_hat, querying the network at the t with sigma/alpha = s."""
    log_snr = torch.full(x_ve.shape[:1], -2 * math.log(s), dtype=torch.float64, device=x_ve.device)
    t = denoiser.process.t_from_log_snr(log_snr)
    alpha, _ = denoiser.process.alpha_sigma_at(t, x_ve)
    return denoiser(alpha * x_ve, t).x0


def score_ve(denoiser, x_ve, s):
    """The denoiser's score of p(x_ve; s) in VE coordinates, (D(x_ve; s) - x_ve)/s^2 (Tweedie;
    seed 002), at one noise level s (a float) -- what every continuous sampler follows."""
    return (_denoise_ve(denoiser, x_ve, s) - x_ve) / s**2


def _start_edm(shape, s_0, generator, device, dtype):
    """x_ve ~ N(0, s_0^2) at the top noise level (Karras et al. 2022, Algorithm 1: x_0 ~ N(0, t_0^2 I))."""
    return torch.randn(shape, generator=generator, device=device, dtype=dtype) * s_0


def _start_ve(denoiser, shape, generator, device, dtype):
    """x_T ~ N(0, prior_std^2) in x-space, expressed in VE coordinates."""
    x = _prior(denoiser, shape, generator, device, dtype)
    return x / float(denoiser.process.alpha[-1])


@torch.no_grad()
def heun(denoiser, shape, steps=18, generator=None, device="cpu", dtype=torch.float32,
         callback=None, rho=7.0, sigma_max=80.0):
    """Probability-flow ODE, Heun's 2nd order (Karras et al. 2022, Algorithm 1) from noise
    level min(sigma_max, the process's largest): deterministic given the initial noise;
    2 * steps - 1 network evaluations."""
    levels = _ve_levels(denoiser.process, steps, sigma_max, rho).tolist() + [0.0]
    x = _start_edm(shape, levels[0], generator, device, dtype)
    for i in range(steps):
        s, s_next = levels[i], levels[i + 1]
        d = (x - _denoise_ve(denoiser, x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d_next = (x_next - _denoise_ve(denoiser, x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
        if callback is not None:
            callback(i + 1, steps)
    return x


@torch.no_grad()
def euler_maruyama(denoiser, shape, steps=100, generator=None, device="cpu", dtype=torch.float32,
                   callback=None, rho=7.0, sigma_max=80.0):
    """Reverse-time SDE dx = -g^2 score dt + g dw (Song et al. 2021b, eq. 6) in VE coordinates,
    g^2 dt = d(s^2), score = (D - x) / s^2 (Tweedie; seed 000), then a final denoising step;
    on Heun's noise levels, from min(sigma_max, the process's largest)."""
    levels = _ve_levels(denoiser.process, steps, sigma_max, rho).tolist()
    x = _start_edm(shape, levels[0], generator, device, dtype)
    for i in range(steps):
        s = levels[i]
        score = (_denoise_ve(denoiser, x, s) - x) / s**2
        if i + 1 < steps:
            ds2 = s**2 - levels[i + 1] ** 2
            x = x + ds2 * score + math.sqrt(ds2) * _randn(shape, generator, x)
        else:
            x = x + s**2 * score  # Tweedie's denoised mean at the smallest level
        if callback is not None:
            callback(i + 1, steps)
    return x


@torch.no_grad()
def langevin(denoiser, shape, steps=100, generator=None, device="cpu", dtype=torch.float32,
             callback=None, steps_per_level=5, step_size=2e-5, denoise=True):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): `steps` noise levels,
    `steps_per_level` updates x += a/2 score + sqrt(a) z with a = step_size * s^2 / s_min^2,
    then (optionally) one Tweedie denoising step (Jolicoeur-Martineau et al. 2021)."""
    levels = torch.logspace(
        math.log10(float(denoiser.process.sigma[-1] / denoiser.process.alpha[-1])),
        math.log10(float(denoiser.process.sigma[0] / denoiser.process.alpha[0])), steps,
        dtype=torch.float64).tolist()
    x = _start_ve(denoiser, shape, generator, device, dtype)
    s_min = levels[-1]
    for i, s in enumerate(levels):
        a = step_size * (s / s_min) ** 2
        for _ in range(steps_per_level):
            score = (_denoise_ve(denoiser, x, s) - x) / s**2
            x = x + a / 2 * score + math.sqrt(a) * _randn(shape, generator, x)
        if callback is not None:
            callback(i + 1, steps)
    if denoise:
        x = _denoise_ve(denoiser, x, s_min)
    return x


def nfe_of_steps(sampler, steps, steps_per_level=5, denoise=True):
    """Network evaluations a sampler spends for a given `steps`."""
    if sampler == "heun":
        return 2 * steps - 1
    if sampler == "langevin":
        return steps * steps_per_level + int(denoise)
    return steps


def steps_for_nfe(sampler, nfe, steps_per_level=5, denoise=True):
    """The largest `steps` whose NFE does not exceed `nfe` (at least 1 step)."""
    if sampler == "heun":
        return max(1, (nfe + 1) // 2)
    if sampler == "langevin":
        return max(1, (nfe - int(denoise)) // steps_per_level)
    return max(1, nfe)


SAMPLERS = {
    "ancestral": ancestral,
    "ddim": ddim,
    "heun": heun,
    "euler_maruyama": euler_maruyama,
    "langevin": langevin,
}
