"""Samplers in the k-diffusion / EDM style: each is a function of a denoiser (any
parameterization), the starting point x and the grid it visits, with an explicit noise sampler
for the stochastic ones, and reports progress through `callback(i, n)`:

    ancestral(denoiser, x_T, timesteps, noise=...)      DDPM Algorithm 2 (seed 001; Ho et al. 2020)
                                                        with the Denoiser's Sigma
    ddim(denoiser, x_T, timesteps, eta=0, noise=...)    Song et al. 2021a, eq. 12 (eta = 1: ancestral
                                                        with fixed_small)
    heun(denoiser, x, sigmas)                           probability-flow ODE, Karras et al. 2022
                                                        Algorithm 1 (2 NFE per step)
    euler_maruyama(denoiser, x, sigmas, noise=...)      reverse-time SDE (Song et al. 2021b, eq. 6;
                                                        seed 000's score)
    langevin(denoiser, x, sigmas, noise=..., ...)       annealed Langevin dynamics, Song & Ermon 2019
                                                        Algorithm 1 (seed 002)

`noise(like)` returns standard normal noise shaped like `like` (default: torch.randn_like; the
registry's draws from one torch.Generator). The discrete samplers visit integer steps of the
denoiser's process (`discrete_timesteps`: all T, or a respacing, Nichol & Dhariwal 2021, sec.
4) from x_T in x-space. The continuous ones work in EDM's variance-exploding coordinates,
x_ve = x / alpha with noise level s = sigma / alpha = exp(-log_snr / 2), where the VP and VE
processes share one ODE: dx_ve/ds = (x_ve - D(x_ve; s)) / s, D = x0_hat (Karras et al. 2022,
eq. 4 and sec. 3); the network is queried at the real-valued t whose log-SNR matches s, and x
starts at the first level, x_ve ~ N(0, sigmas[0]^2). `edm_sigmas` is eq. 5's rho = 7 ramp from
s_0 = min(sigma_max, the process's largest s), EDM's sigma_max = 80 (Table 1): the VP schedules
reach s ~ 157 (linear) and ~2e4 (cosine), where the ramp would spend its steps far above the
data's scale.

`SAMPLERS[name](denoiser, shape, steps, generator, ...)` calls one by name: the registry entry
makes its grid for `steps`, draws its start from the generator and its noise from the same
generator, and converts a budget of network evaluations into steps (`steps_for_nfe`; Heun
spends 2 per step but the last, Langevin `steps_per_level` per level plus the final denoising
step), so samplers compare at equal NFE. A new sampler is one function and one registry line.
"""

import dataclasses
import math
import typing

import torch

__all__ = ["SAMPLERS", "Sampler", "ancestral", "ddim", "heun", "euler_maruyama", "langevin", "discrete_timesteps",
           "edm_sigmas", "langevin_sigmas", "karras_sigmas", "score_ve", "steps_for_nfe", "nfe_of_steps"]


def discrete_timesteps(process, steps=None):
    """The integer steps of `process` a discrete sampler visits, increasing: all of them, or
    `steps` evenly spaced keeping the last (Nichol & Dhariwal 2021, sec. 4)."""
    if steps is None or steps == process.T:
        return list(range(process.T))
    return [int(i) for i in process.respace(steps).parent_index.tolist()]


def _grid(process, timesteps):
    """(the process on `timesteps`, their indices): the network is still queried at its own
    integer t (exact table lookups), the posterior steps come from the respaced process."""
    return (process if len(timesteps) == process.T else process.respace(timesteps)), timesteps


@torch.no_grad()
def ancestral(denoiser, x, timesteps, noise=torch.randn_like, callback=None):
    """x_{t-1} = mu_theta(x_t, t) + s_t z (DDPM Algorithm 2) from x = x_T, over `timesteps`
    (discrete_timesteps): the posterior step and the fixed variances come from the process
    respaced to them."""
    process, index = _grid(denoiser.process, timesteps)
    n = x.shape[0]
    for i in reversed(range(process.T)):
        t = torch.full((n,), i, device=x.device, dtype=torch.long)
        pred = denoiser(x, torch.full((n,), index[i], device=x.device, dtype=torch.long))
        mean = process.posterior_mean(pred.x0, x, t)
        log_var = denoiser.reverse_log_variance(pred, t, x, process)
        x = torch.addcmul(mean, torch.exp(0.5 * log_var), noise(x)) if i > 0 else mean
        if callback is not None:
            callback(process.T - i, process.T)
    return x


@torch.no_grad()
def ddim(denoiser, x, timesteps, eta=0.0, noise=torch.randn_like, callback=None):
    """DDIM (Song et al. 2021a, eq. 12) from x = x_T over `timesteps`; eta = 0 is deterministic."""
    process, index = _grid(denoiser.process, timesteps)
    alpha, sigma = process.alpha.tolist(), process.sigma.tolist()
    n = x.shape[0]
    for k, i in enumerate(reversed(range(process.T))):
        pred = denoiser(x, torch.full((n,), index[i], device=x.device, dtype=torch.long))
        a_prev = alpha[i - 1] if i > 0 else 1.0
        s_prev = sigma[i - 1] if i > 0 else 0.0
        # eta scales the std of q(x_{t-1} | x_t, x0) between the two kept steps.
        c = eta * _ddim_noise(alpha[i], sigma[i], a_prev, s_prev)
        x = torch.add(a_prev * pred.x0, pred.eps, alpha=math.sqrt(max(0.0, s_prev**2 - c**2)))
        if c > 0 and i > 0:
            x = x + c * noise(x)
        if callback is not None:
            callback(k + 1, process.T)
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


def edm_sigmas(process, steps, sigma_max=80.0, rho=7.0):
    """Karras et al. 2022, eq. 5 from s_0 = min(sigma_max, the process's largest s) down to its
    smallest, `steps` levels; the network is still queried at the t whose log-SNR matches each."""
    s = process.sigma / process.alpha
    return karras_sigmas(float(s[0]), min(sigma_max, float(s[-1])), steps, rho)


def langevin_sigmas(process, steps):
    """`steps` geometric noise levels from the process's largest s to its smallest (Song & Ermon 2019)."""
    return torch.logspace(math.log10(float(process.sigma[-1] / process.alpha[-1])),
                          math.log10(float(process.sigma[0] / process.alpha[0])), steps, dtype=torch.float64)


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


@torch.no_grad()
def heun(denoiser, x, sigmas, callback=None):
    """Probability-flow ODE, Heun's 2nd order (Karras et al. 2022, Algorithm 1) from x at
    sigmas[0] through every level to 0: deterministic given x; 2 len(sigmas) - 1 network
    evaluations."""
    levels = torch.as_tensor(sigmas, dtype=torch.float64).tolist() + [0.0]
    steps = len(levels) - 1
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
def euler_maruyama(denoiser, x, sigmas, noise=torch.randn_like, callback=None):
    """Reverse-time SDE dx = -g^2 score dt + g dw (Song et al. 2021b, eq. 6) in VE coordinates,
    g^2 dt = d(s^2), score = (D - x) / s^2 (Tweedie; seed 000), from x at sigmas[0] down the
    levels, then a final denoising step at the last."""
    levels = torch.as_tensor(sigmas, dtype=torch.float64).tolist()
    steps = len(levels)
    for i in range(steps):
        s = levels[i]
        score = (_denoise_ve(denoiser, x, s) - x) / s**2
        if i + 1 < steps:
            ds2 = s**2 - levels[i + 1] ** 2
            x = x + ds2 * score + math.sqrt(ds2) * noise(x)
        else:
            x = x + s**2 * score  # Tweedie's denoised mean at the smallest level
        if callback is not None:
            callback(i + 1, steps)
    return x


@torch.no_grad()
def langevin(denoiser, x, sigmas, noise=torch.randn_like, callback=None, steps_per_level=5, step_size=2e-5,
             denoise=True):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) down `sigmas` (decreasing):
    `steps_per_level` updates x += a/2 score + sqrt(a) z per level with a = step_size s^2 /
    s_min^2, then (optionally) one Tweedie denoising step (Jolicoeur-Martineau et al. 2021)."""
    levels = torch.as_tensor(sigmas, dtype=torch.float64).tolist()
    s_min = levels[-1]
    for i, s in enumerate(levels):
        a = step_size * (s / s_min) ** 2
        for _ in range(steps_per_level):
            score = (_denoise_ve(denoiser, x, s) - x) / s**2
            x = x + a / 2 * score + math.sqrt(a) * noise(x)
        if callback is not None:
            callback(i + 1, len(levels))
    if denoise:
        x = _denoise_ve(denoiser, x, s_min)
    return x


# ----- the registry: calling a sampler by name ----------------------------------------------------
def _x_prior(process, grid, z):
    """x_T ~ N(0, prior_std^2) in x-space (the discrete samplers' start)."""
    return z * process.prior_std


def _ve_prior(process, grid, z):
    """The same prior draw, expressed in VE coordinates (annealed Langevin's start)."""
    return z * process.prior_std / float(process.alpha[-1])


def _edm_start(process, grid, z):
    """x_ve ~ N(0, s_0^2) at the first level (Karras et al. 2022, Algorithm 1: x_0 ~ N(0, t_0^2 I))."""
    return z * float(grid[0])


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A sampler function with how to call it by name: its grid for a number of steps (and
    which options shape the grid rather than the steps), its start from a standard normal
    draw, whether it draws noise, its default steps and its network evaluations per run."""
    fn: typing.Callable
    grid: typing.Callable                 # (process, steps, **grid_options) -> the grid fn visits
    start: typing.Callable                # (process, grid, z ~ N(0, I)) -> x
    default_steps: typing.Optional[int]
    stochastic: bool = True
    grid_options: typing.Tuple[str, ...] = ()
    evaluations_per_step: int = 1         # network calls per step (Heun: 2, but the last step 1)

    def __call__(self, denoiser, shape, steps=None, generator=None, device="cpu", dtype=torch.float32,
                 callback=None, **options):
        """Samples of `shape` with `steps` (the sampler's default when None): start, then noise,
        both drawn from `generator` in that order."""
        grid_options = {k: options.pop(k) for k in self.grid_options if k in options}
        grid = self.grid(denoiser.process, self.default_steps if steps is None else steps, **grid_options)
        x = self.start(denoiser.process, grid, torch.randn(shape, generator=generator, device=device, dtype=dtype))
        if self.stochastic:
            options["noise"] = lambda like: torch.randn(like.shape, generator=generator, device=like.device,
                                                        dtype=like.dtype)
        return self.fn(denoiser, x, grid, callback=callback, **options)


SAMPLERS = {
    "ancestral": Sampler(ancestral, discrete_timesteps, _x_prior, default_steps=None),
    "ddim": Sampler(ddim, discrete_timesteps, _x_prior, default_steps=50),
    "heun": Sampler(heun, edm_sigmas, _edm_start, default_steps=18, stochastic=False,
                    grid_options=("sigma_max", "rho"), evaluations_per_step=2),
    "euler_maruyama": Sampler(euler_maruyama, edm_sigmas, _edm_start, default_steps=100,
                              grid_options=("sigma_max", "rho")),
    "langevin": Sampler(langevin, langevin_sigmas, _ve_prior, default_steps=100),
}


def nfe_of_steps(sampler, steps, steps_per_level=5, denoise=True):
    """Network evaluations a sampler spends for a given `steps`."""
    if sampler == "langevin":
        return steps * steps_per_level + int(denoise)
    per_step = SAMPLERS[sampler].evaluations_per_step
    return per_step * steps - (per_step - 1)


def steps_for_nfe(sampler, nfe, steps_per_level=5, denoise=True):
    """The largest `steps` whose NFE does not exceed `nfe` (at least 1 step)."""
    if sampler == "langevin":
        return max(1, (nfe - int(denoise)) // steps_per_level)
    per_step = SAMPLERS[sampler].evaluations_per_step
    return max(1, (nfe + per_step - 1) // per_step)
