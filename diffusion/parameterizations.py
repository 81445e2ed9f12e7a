"""What the network predicts: each parameterization is a training target and a conversion.

For x_t = alpha x0 + sigma eps (design.md table):
    eps    network predicts eps                      x0 = (x_t - sigma eps) / alpha
    x0     predicts x0                               eps = (x_t - alpha x0) / sigma
    v      v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4; VP form)
    mu     posterior mean mu_tilde(x_t, x0) (Ho et al. 2020 eq. 7; seed 001 eq. 1)
    score  grad log q(x_t | x0) = -eps / sigma (seed 000, "Step 3")
    edm    EDM's preconditioned F (Karras et al. 2022, Table 1 / eq. 7; seed 004's TODO):
           x0 = c_skip x_ve + c_out F(c_in x_ve; c_noise), x_ve = x_t / alpha

`scale(process)` is d(target)/d(eps) at fixed x_t, a per-step table k(t): an error in the
target is k(t) times the error in eps, so the parameterization's own unweighted MSE is the
eps-space weighting w = k(t)^2 (its `native` weighting). For VP that gives 1/snr for x0,
1 + 1/snr for v, 1 + snr for score and beta^2/((1 - beta)(1 - alpha_bar)) for mu; the
general forms are sigma^2/alpha^2, (alpha^2 + sigma^2)^2/alpha^2, 1/sigma^2,
c_x0^2 sigma^2/alpha^2 with c_x0 the posterior's x0 coefficient, and for edm
(s^2 + sigma_data^2)/sigma_data^2 with s = sigma/alpha.

A parameterization may also transform what the network sees: `net_input` (EDM's c_in) and
`net_time` (EDM's c_noise); the others pass x_t and the process's own time index.

Each function takes per-example coefficient tensors already broadcast to x (see
`DiscreteProcess.at`), so the same code serves integer and fractional t.
"""

import torch

__all__ = [
    "x0_from_eps", "eps_from_x0", "v_from_x0_eps", "x0_from_v", "eps_from_v",
    "score_from_eps", "eps_from_score", "mu_from_x0", "x0_from_mu",
    "edm_preconditioning", "x0_from_edm", "eps_from_edm", "edm_from_x0", "SIGMA_DATA",
    "Parameterization", "PARAMETERIZATIONS", "get_parameterization",
]


def x0_from_eps(x_t, eps, alpha, sigma):
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0, eps, alpha, sigma):
    return alpha * eps - sigma * x0


def x0_from_v(x_t, v, alpha, sigma):
    # General form of Salimans & Ho's x0 = alpha x_t - sigma v (which assumes alpha^2 + sigma^2 = 1).
    return (alpha * x_t - sigma * v) / (alpha**2 + sigma**2)


def eps_from_v(x_t, v, alpha, sigma):
    return (sigma * x_t + alpha * v) / (alpha**2 + sigma**2)


def score_from_eps(eps, sigma):
    return -eps / sigma


def eps_from_score(score, sigma):
    return -sigma * score


def mu_from_x0(x_t, x0, coef_x0, coef_xt):
    return coef_x0 * x0 + coef_xt * x_t


def x0_from_mu(x_t, mu, coef_x0, coef_xt):
    return (mu - coef_xt * x_t) / coef_x0


SIGMA_DATA = 0.5  # EDM's default data std for images in [-1, 1] (Karras et al. 2022, sec. 5)


def edm_preconditioning(s, sigma_data=SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) at noise level s = sigma/alpha (Karras et al. 2022, Table 1)."""
    total = s**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = s * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = s.log() / 4
    return c_skip, c_out, c_in, c_noise


def x0_from_edm(x_t, F, alpha, sigma, sigma_data=SIGMA_DATA):
    """D(x; s) = c_skip x_ve + c_out F with x_ve = x_t / alpha (Karras et al. 2022, eq. 7)."""
    c_skip, c_out, _, _ = edm_preconditioning(sigma / alpha, sigma_data)
    return c_skip * (x_t / alpha) + c_out * F


def eps_from_edm(x_t, F, alpha, sigma, sigma_data=SIGMA_DATA):
    """eps = (x_ve - x0)/s written without the cancellation in 1 - c_skip at small s:
    (1 - c_skip)/s = s/(s^2 + sd^2) and c_out/s = sd/sqrt(s^2 + sd^2)."""
    s = sigma / alpha
    total = s**2 + sigma_data**2
    return s / total * (x_t / alpha) - sigma_data / total.sqrt() * F


def edm_from_x0(x_t, x0, alpha, sigma, sigma_data=SIGMA_DATA):
    """EDM's effective training target F = (x0 - c_skip x_ve) / c_out (Karras et al. 2022, eq. 8)."""
    c_skip, c_out, _, _ = edm_preconditioning(sigma / alpha, sigma_data)
    return (x0 - c_skip * (x_t / alpha)) / c_out


class Parameterization:
    """A target and its inverse. Subclasses define `target`, `to_x0_eps` and `scale`."""

    name = None
    processes = ("vp", "ve")

    def coefs(self, process, t, x):
        """Coefficients at (possibly fractional) t; alpha/sigma follow the continuous view."""
        alpha, sigma = process.alpha_sigma_at(t, x)
        return {"alpha": alpha, "sigma": sigma}

    def net_input(self, x_t, c):
        """What the network sees as x (EDM scales it by c_in)."""
        return x_t

    def net_time(self, process, t, c):
        """What the network sees as time: the process's own time index (EDM: c_noise)."""
        return process.model_time(t)

    def target(self, x0, eps, x_t, c):
        raise NotImplementedError

    def to_x0_eps(self, out, x_t, c):
        raise NotImplementedError

    def scale(self, process):
        raise NotImplementedError

    def __repr__(self):
        return f"<parameterization {self.name}>"


class Eps(Parameterization):
    name = "eps"

    def target(self, x0, eps, x_t, c):
        return eps

    def to_x0_eps(self, out, x_t, c):
        return x0_from_eps(x_t, out, c["alpha"], c["sigma"]), out

    def scale(self, process):
        return process.alpha.new_ones(process.T)


class X0(Parameterization):
    name = "x0"

    def target(self, x0, eps, x_t, c):
        return x0

    def to_x0_eps(self, out, x_t, c):
        return out, eps_from_x0(x_t, out, c["alpha"], c["sigma"])

    def scale(self, process):
        return process.sigma / process.alpha


class V(Parameterization):
    name = "v"
    processes = ("vp",)  # Salimans & Ho define v for variance-preserving processes

    def target(self, x0, eps, x_t, c):
        return v_from_x0_eps(x0, eps, c["alpha"], c["sigma"])

    def to_x0_eps(self, out, x_t, c):
        a, s = c["alpha"], c["sigma"]
        return x0_from_v(x_t, out, a, s), eps_from_v(x_t, out, a, s)

    def scale(self, process):
        return (process.alpha**2 + process.sigma**2) / process.alpha


class Score(Parameterization):
    name = "score"

    def target(self, x0, eps, x_t, c):
        return score_from_eps(eps, c["sigma"])

    def to_x0_eps(self, out, x_t, c):
        eps = eps_from_score(out, c["sigma"])
        return x0_from_eps(x_t, eps, c["alpha"], c["sigma"]), eps

    def scale(self, process):
        return 1 / process.sigma


class Mu(Parameterization):
    """Posterior-mean prediction. Its coefficients are per-step quantities, so at fractional
    t they are interpolated linearly between grid points (used only by ODE/SDE samplers)."""

    name = "mu"

    def coefs(self, process, t, x):
        c = super().coefs(process, t, x)
        c["coef_x0"] = process.coef_at("posterior_coef_x0", t, x)
        c["coef_xt"] = process.coef_at("posterior_coef_xt", t, x)
        return c

    def target(self, x0, eps, x_t, c):
        return mu_from_x0(x_t, x0, c["coef_x0"], c["coef_xt"])

    def to_x0_eps(self, out, x_t, c):
        x0 = x0_from_mu(x_t, out, c["coef_x0"], c["coef_xt"])
        return x0, eps_from_x0(x_t, x0, c["alpha"], c["sigma"])

    def scale(self, process):
        return process.posterior_coef_x0 * process.sigma / process.alpha


class EDM(Parameterization):
    """EDM's preconditioning (Karras et al. 2022, sec. 5 and Table 1) as a thin wrapper around
    a plain network, in VE coordinates x_ve = x_t / alpha with noise level s = sigma / alpha
    (so it serves VP and VE processes alike): the network sees c_in x_ve and c_noise = ln(s)/4
    (fed to its sinusoidal embedding, whose highest frequency is 1, like EDM's positional
    embedding), and predicts F with x0 = c_skip x_ve + c_out F. Its plain F-MSE is EDM's
    lambda(s) |x0 - x0_hat|^2 with lambda = (s^2 + sd^2)/(s sd)^2, i.e. eps-space
    w = (s^2 + sd^2)/sd^2 (the `edm` weighting); with sd = 1 on VP that is v's native weight."""

    name = "edm"

    def __init__(self, sigma_data=SIGMA_DATA):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
        self.sigma_data = float(sigma_data)

    def coefs(self, process, t, x):
        c = super().coefs(process, t, x)
        c_skip, c_out, c_in, c_noise = edm_preconditioning(c["sigma"] / c["alpha"], self.sigma_data)
        c.update(c_skip=c_skip, c_out=c_out, c_in=c_in, c_noise=c_noise)
        return c

    def net_input(self, x_t, c):
        return c["c_in"] * (x_t / c["alpha"])

    def net_time(self, process, t, c):
        # the per-example c_noise (a [B, 1, ...] tensor after coefs) as a [B] time input
        return c["c_noise"].reshape(c["c_noise"].shape[0], -1)[:, 0]

    def target(self, x0, eps, x_t, c):
        return edm_from_x0(x_t, x0, c["alpha"], c["sigma"], self.sigma_data)

    def to_x0_eps(self, out, x_t, c):
        a, s = c["alpha"], c["sigma"]
        return (x0_from_edm(x_t, out, a, s, self.sigma_data),
                eps_from_edm(x_t, out, a, s, self.sigma_data))

    def scale(self, process):
        # d F / d eps = -s / c_out = -sqrt(s^2 + sd^2)/sd, with s^2 = 1/snr from log-SNR (finite)
        return (torch.exp(-process.log_snr) + self.sigma_data**2).sqrt() / self.sigma_data

    def __repr__(self):
        return f"<parameterization edm sigma_data={self.sigma_data}>"


PARAMETERIZATIONS = {p.name: p() for p in (Eps, X0, V, Mu, Score, EDM)}


def get_parameterization(name, process=None, sigma_data=None):
    """Look up a parameterization by slug, refusing one the process does not define;
    `sigma_data` configures edm (None: the registry's instance, sigma_data = 0.5)."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; choose from {sorted(PARAMETERIZATIONS)}")
    param = PARAMETERIZATIONS[name]
    if name == "edm" and sigma_data is not None and float(sigma_data) != param.sigma_data:
        param = EDM(sigma_data)
    if process is not None and process.kind not in param.processes:
        raise ValueError(f"parameterization {name!r} is not defined for a {process.kind} process")
    return param
