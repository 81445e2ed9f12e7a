"""What the network predicts: each parameterization is a training target and a conversion.

For x_t = alpha x0 + sigma eps (design.md table):
    eps    network predicts eps                      x0 = (x_t - sigma eps) / alpha
    x0     predicts x0                               eps = (x_t - alpha x0) / sigma
    v      v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4; VP form)
    mu     posterior mean mu_tilde(x_t, x0) (Ho et al. 2020 eq. 7; seed 001 eq. 1)
    score  grad log q(x_t | x0) = -eps / sigma (seed 000, "Step 3")

`scale(process)` is d(target)/d(eps) at fixed x_t, a per-step table k(t): an error in the
target is k(t) times the error in eps, so the parameterization's own unweighted MSE is the
eps-space weighting w = k(t)^2 (its `native` weighting). For VP that gives 1/snr for x0,
1 + 1/snr for v, 1 + snr for score and beta^2/((1 - beta)(1 - alpha_bar)) for mu; the
general forms are sigma^2/alpha^2, (alpha^2 + sigma^2)^2/alpha^2, 1/sigma^2 and
c_x0^2 sigma^2/alpha^2 with c_x0 the posterior's x0 coefficient.

Each function takes per-example coefficient tensors already broadcast to x (see
`DiscreteProcess.at`), so the same code serves integer and fractional t.
"""

__all__ = [
    "x0_from_eps", "eps_from_x0", "v_from_x0_eps", "x0_from_v", "eps_from_v",
    "score_from_eps", "eps_from_score", "mu_from_x0", "x0_from_mu",
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


class Parameterization:
    """A target and its inverse. Subclasses define `target`, `to_x0_eps` and `scale`."""

    name = None
    processes = ("vp", "ve")

    def coefs(self, process, t, x):
        """Coefficients at (possibly fractional) t; alpha/sigma follow the continuous view."""
        alpha, sigma = process.alpha_sigma_at(t, x)
        return {"alpha": alpha, "sigma": sigma}

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


PARAMETERIZATIONS = {p.name: p() for p in (Eps, X0, V, Mu, Score)}


def get_parameterization(name, process=None):
    """Look up a parameterization by slug, refusing one the process does not define."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; choose from {sorted(PARAMETERIZATIONS)}")
    param = PARAMETERIZATIONS[name]
    if process is not None and process.kind not in param.processes:
        raise ValueError(f"parameterization {name!r} is not defined for a {process.kind} process")
    return param
