"""Forward processes x_t = alpha_t * x0 + sigma_t * eps on a discrete grid t = 0..T-1.

One class covers DDPM's variance-preserving process (Ho et al. 2020; seeds 000, 001, 003)
and NCSN's variance-exploding one (Song & Ermon 2019; seed 002). Convention (design.md):
t = 0 is the first noising step, and the clean data sits at a virtual t = -1 with
alpha = 1, sigma = 0. Every per-step quantity is derived from (alpha, sigma) alone, as in
Kingma et al. 2021 (VDM), eq. 33-34:

    alpha_{t|s} = alpha_t / alpha_s,   sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2

so that for VP `beta[t] = sigma_{t|t-1}^2` is DDPM's beta_t and `1 - beta[t]` its per-step
alpha_t (called `alpha_step` here, never `alpha`). Tables are float64; `at` casts to the
input's dtype. A continuous view (`coef_at` with fractional t, `t_from_log_snr`) serves
the ODE/SDE samplers: tables are interpolated linearly in t, log-SNR monotonically.
"""

import math

import torch

__all__ = [
    "append_dims",
    "linear_beta",
    "cosine_beta",
    "SCHEDULES",
    "DiscreteProcess",
    "vp_process",
    "ve_process",
    "PROCESSES",
]


def append_dims(x, ndim):
    """Broadcast a per-example tensor [B] over trailing dims (k-diffusion's append_dims)."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def linear_beta(T=1000, beta_start=1e-4, beta_end=0.02):
    """DDPM's linear schedule, scaled so other T keep the same total noise (Ho et al. 2020, sec. 4)."""
    scale = 1000 / T
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def cosine_beta(T=1000, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2), beta <= 0.999."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


SCHEDULES = {"linear": linear_beta, "cosine": cosine_beta}


class DiscreteProcess:
    """Gaussian forward process tabulated at t = 0..T-1 (see module docstring).

    `timesteps[i]` is the network's time input for grid index i: the identity for a fresh
    process, the original indices after `respace`, so a respaced process queries the same
    network; `parent_index[i]` is step i's index in the process it was respaced from. `kind` is "vp" or "ve"; `prior_std` is the std of p(x_T) (1 for VP, sigma_max
    for VE as in NCSN).
    """

    def __init__(self, alpha, sigma, kind, timesteps=None, prior_std=1.0):
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if alpha.shape != sigma.shape or alpha.ndim != 1:
            raise ValueError("alpha and sigma must be 1-D tables of equal length")
        if not bool(torch.all(alpha[1:] / sigma[1:] < alpha[:-1] / sigma[:-1])):
            raise ValueError("the signal-to-noise ratio must decrease strictly with t")
        self.kind, self.prior_std = kind, float(prior_std)
        self.alpha, self.sigma = alpha, sigma
        self.alpha_bar = alpha**2
        self.snr = alpha**2 / sigma**2
        self.log_snr = 2 * (alpha.log() - sigma.log())
        # Previous step, with the clean data at t = -1.
        alpha_prev = torch.cat([alpha.new_ones(1), alpha[:-1]])
        sigma_prev = torch.cat([sigma.new_zeros(1), sigma[:-1]])
        self.alpha_bar_prev = alpha_prev**2
        self.alpha_step = (alpha / alpha_prev) ** 2  # DDPM's per-step alpha_t = 1 - beta_t
        self.beta = sigma**2 - self.alpha_step * sigma_prev**2  # VDM eq. 33
        # Posterior q(x_{t-1} | x_t, x0): Ho et al. 2020 eq. 6-7, in VDM's general form.
        self.beta_tilde = self.beta * sigma_prev**2 / sigma**2
        self.log_beta_tilde_clipped = torch.cat([self.beta_tilde[1:2], self.beta_tilde[1:]]).log()
        self.posterior_coef_x0 = alpha_prev * self.beta / sigma**2
        self.posterior_coef_xt = self.alpha_step.sqrt() * sigma_prev**2 / sigma**2
        if timesteps is None:
            timesteps = torch.arange(len(alpha), dtype=torch.float64)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.float64)
        # Index of each step in the process this one was respaced from (identity if none).
        self.parent_index = torch.arange(len(alpha), dtype=torch.float64)

    @property
    def T(self):
        return len(self.alpha)

    def __repr__(self):
        return f"DiscreteProcess(kind={self.kind!r}, T={self.T})"

    # ----- lookups -------------------------------------------------------------
    def table(self, name, device, dtype=torch.float64):
        """Table `name` cast to (device, dtype), copied there once and reused: copying it
        from the host at every lookup would synchronize a CUDA stream on every call."""
        value = getattr(self, name)
        cache = self.__dict__.setdefault("_device_tables", {})
        key = (name, torch.device(device), dtype)
        if key not in cache or cache[key][0] is not value:  # reassigned tables invalidate
            cache[key] = (value, value.to(device=device, dtype=dtype))
        return cache[key][1]

    def at(self, name, t, x):
        """Table `name` at integer steps t [B], shaped to broadcast against x."""
        table = self.table(name, x.device, x.dtype)
        return append_dims(table[t.long()], x.ndim)

    def coef_at(self, name, t, x):
        """Table `name` at real-valued t [B] (linear in t; exact at integers). An integer
        tensor t is a plain lookup (`at`), the discrete samplers' fast path."""
        if not t.is_floating_point():
            return self.at(name, t, x)
        t = t.to(torch.float64).clamp(0, self.T - 1)
        table = self.table(name, t.device)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.T - 1)
        frac = t - lo
        value = torch.lerp(table[lo], table[hi], frac)
        return append_dims(value.to(x.dtype), x.ndim)

    def alpha_sigma_at(self, t, x):
        """(alpha, sigma) at real-valued t, interpolating log-SNR so fractional t stays on the
        process; an integer tensor t reads the tables (the discrete samplers' fast path)."""
        if not t.is_floating_point():
            return self.at("alpha", t, x), self.at("sigma", t, x)
        t64 = t.to(torch.float64).clamp(0, self.T - 1)
        lo = t64.floor().long()
        hi = (lo + 1).clamp(max=self.T - 1)
        log_snr_tab = self.table("log_snr", t.device)
        log_snr = torch.lerp(log_snr_tab[lo], log_snr_tab[hi], t64 - lo)
        return self._alpha_sigma_from_log_snr(log_snr, x)

    def _alpha_sigma_from_log_snr(self, log_snr, x):
        if self.kind == "ve":
            alpha = torch.ones_like(log_snr)
            sigma = torch.exp(-log_snr / 2)
        else:  # VP: alpha^2 = sigmoid(log_snr), sigma^2 = sigmoid(-log_snr)
            alpha = torch.sigmoid(log_snr).sqrt()
            sigma = torch.sigmoid(-log_snr).sqrt()
        return append_dims(alpha.to(x.dtype), x.ndim), append_dims(sigma.to(x.dtype), x.ndim)

    def t_from_log_snr(self, log_snr):
        """Real-valued t at which the (interpolated) log-SNR equals `log_snr` [B]."""
        table = self.table("log_snr", log_snr.device)
        neg = -log_snr.to(torch.float64)
        idx = torch.searchsorted(-table, neg).clamp(1, self.T - 1)
        lo, hi = table[idx - 1], table[idx]
        frac = ((lo - log_snr.to(torch.float64)) / (lo - hi)).clamp(0, 1)
        return idx - 1 + frac

    def model_time(self, t):
        """Network time input (float32 [B]) for (possibly fractional) grid index t."""
        if not t.is_floating_point():
            return self.table("timesteps", t.device, torch.float32)[t]
        t = t.to(torch.float64).clamp(0, self.T - 1)
        table = self.table("timesteps", t.device)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.T - 1)
        return torch.lerp(table[lo], table[hi], t - lo).float()

    # ----- forward process and posterior ---------------------------------------
    def q_sample(self, x0, t, eps):
        """x_t = alpha_t x0 + sigma_t eps (Ho et al. 2020, eq. 4; seed 000 step 1)."""
        return self.at("alpha", t, x0) * x0 + self.at("sigma", t, x0) * eps

    def posterior_mean(self, x0, x_t, t):
        """mu_tilde_t(x_t, x0), Ho et al. 2020 eq. 7 (seed 001 eq. 1)."""
        return self.at("posterior_coef_x0", t, x_t) * x0 + self.at("posterior_coef_xt", t, x_t) * x_t

    def posterior_mean_variance(self, x0, x_t, t):
        """(mean, variance, clipped log-variance) of q(x_{t-1} | x_t, x0)."""
        mean = self.posterior_mean(x0, x_t, t)
        return mean, self.at("beta_tilde", t, x_t), self.at("log_beta_tilde_clipped", t, x_t)

    def prior_kl(self, x0):
        """KL(q(x_T | x0) || p(x_T)) per example, mean over dims, in nats (L_T, constant in theta)."""
        t = torch.full(x0.shape[:1], self.T - 1, device=x0.device, dtype=torch.long)
        mean = self.at("alpha", t, x0) * x0
        var = self.at("sigma", t, x0) ** 2
        prior_var = self.prior_std**2
        kl = 0.5 * (math.log(prior_var) - var.log() + (var + mean**2) / prior_var - 1)
        return kl.flatten(1).mean(1)

    # ----- respacing -------------------------------------------------------------
    def respace(self, steps):
        """A process on a subset of steps (Nichol & Dhariwal 2021, sec. 4): `steps` is a count
        (evenly spaced, always keeping the last step) or an explicit increasing list."""
        if isinstance(steps, int):
            if not 1 <= steps <= self.T:
                raise ValueError(f"cannot respace {self.T} steps to {steps}")
            idx = torch.linspace(0, self.T - 1, steps, dtype=torch.float64).round().long()
        else:
            idx = torch.as_tensor(steps, dtype=torch.long)
        if not bool(torch.all(idx[1:] > idx[:-1])):
            raise ValueError("respaced steps must be strictly increasing")
        respaced = DiscreteProcess(
            self.alpha[idx], self.sigma[idx], self.kind,
            timesteps=self.timesteps[idx], prior_std=self.prior_std,
        )
        respaced.parent_index = idx.to(torch.float64)
        return respaced


def vp_process(schedule="linear", T=1000, **schedule_kwargs):
    """DDPM's variance-preserving process: alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
    beta = SCHEDULES[schedule](T, **schedule_kwargs)
    alpha_bar = torch.cumprod(1 - beta, 0)
    return DiscreteProcess(alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), "vp")


def ve_process(T=1000, sigma_min=0.01, sigma_max=10.0):
    """NCSN's variance-exploding process x = x0 + sigma eps, geometric sigma levels (seed 002)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError("need 0 < sigma_min < sigma_max")
    sigma = torch.logspace(math.log10(sigma_min), math.log10(sigma_max), T, dtype=torch.float64)
    return DiscreteProcess(torch.ones(T, dtype=torch.float64), sigma, "ve", prior_std=sigma_max)


PROCESSES = {"vp": vp_process, "ve": ve_process}
