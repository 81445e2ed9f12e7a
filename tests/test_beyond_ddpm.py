"""Issue 11's library pieces: seed 002's DSM weightings, EDM preconditioning (`edm`) and seed
004's learned-uncertainty model, in float64 where they are identities and by training a
tiny MLP on a 2-D Gaussian where they are claims about what is learned.

For data N(M, diag(C^2)) noised as x = x0 + s eps (VE), everything is closed form:
    score of p_s          -(x - M) / (C^2 + s^2)
    E[x0 | x]             M + C^2 / (C^2 + s^2) (x - M)
    Var[x0 | x]           C^2 s^2 / (C^2 + s^2)
so seed 004's optimum sigma_phi^2 = s^2 + Var[x0 | x] is known too.
"""

import functools
import math

import pytest
import torch
from torch import nn

torch.set_num_threads(1)

from diffusion import Denoiser, Objective  # noqa: E402
from diffusion.losses import mean_flat  # noqa: E402
from diffusion.nets import MLP  # noqa: E402
from diffusion.parameterizations import (PARAMETERIZATIONS, edm_from_x0,  # noqa: E402
                                         edm_preconditioning, eps_from_edm, get_parameterization,
                                         x0_from_edm)
from diffusion.process import ve_process, vp_process  # noqa: E402
from diffusion.samplers import nfe_of_steps, score_ve, steps_for_nfe  # noqa: E402
from diffusion.timesteps import UniformSampler  # noqa: E402
from diffusion.training import training_step  # noqa: E402
from diffusion.weightings import weight_table  # noqa: E402

F64 = torch.float64
M = torch.tensor([0.5, -0.3])
C = torch.tensor([0.4, 0.8])
PROCESSES = {"vp_linear": vp_process("linear", 1000), "vp_cosine": vp_process("cosine", 1000),
             "ve": ve_process(1000)}


# ----- seed 002: lambda(sigma) on the score loss --------------------------------------------------
@pytest.mark.parametrize("proc_name", sorted(PROCESSES))
def test_dsm_weightings_are_lambda_over_sigma_squared(proc_name):
    """lambda |s_hat - s|^2 = lambda / sigma^2 |eps_hat - eps|^2: w = 1, 1/sigma^2, 1/sigma^4."""
    p = PROCESSES[proc_name]
    param = PARAMETERIZATIONS["score"]
    s2 = p.sigma**2
    for name, lam in (("lambda_sigma2", s2), ("lambda_one", torch.ones_like(s2)), ("lambda_inv_sigma2", 1 / s2)):
        w = weight_table(name, p, param)
        assert bool(torch.isfinite(w).all() and (w > 0).all()), name
        torch.testing.assert_close(w, lam / s2, rtol=1e-10, atol=0, msg=name)
    # lambda = 1 is the score's own MSE, and it up-weights SMALL noise (seed 002's table errs)
    torch.testing.assert_close(weight_table("lambda_one", p, param), weight_table("native", p, param))
    w_one = weight_table("lambda_one", p, param)
    assert float(w_one[0]) > float(w_one[-1])


def test_dsm_loss_in_score_space_is_seed_formula():
    """On the score parameterization the loss is lambda(sigma) |s_hat + eps/sigma|^2 itself."""
    p = ve_process(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 2, generator=g, dtype=F64)
    eps = torch.randn(64, 2, generator=g, dtype=F64)
    t = torch.randint(0, p.T, (64,), generator=g)
    net = _LinearNet()
    x_t = p.q_sample(x0, t, eps)
    sigma = p.sigma[t][:, None]
    score_hat = net(x_t, t.double())
    err = mean_flat((score_hat + eps / sigma) ** 2)
    for name, lam in (("lambda_sigma2", sigma**2), ("lambda_one", 1.0), ("lambda_inv_sigma2", 1 / sigma**2)):
        with torch.no_grad():
            loss = Objective(p, "score", name)(net, x0, t, eps)["loss"]
        lam = torch.as_tensor(lam, dtype=F64).expand(64, 1)[:, 0]
        torch.testing.assert_close(loss, lam * err, rtol=1e-9, atol=0, msg=name)


def test_lambda_learned_is_adaptive_on_the_score_mse():
    """score_err / exp(u) + u with u = 0 at initialisation: the plain score MSE (lambda = 1)."""
    p = ve_process(100)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 32, 2, generator=g, dtype=F64)
    t = torch.randint(0, p.T, (32,), generator=g)
    net = _LinearNet()
    objective = Objective(p, "score", "lambda_learned").double()
    with torch.no_grad():
        loss = objective(net, x0, t, eps)["loss"]
        plain = Objective(p, "score", "lambda_one")(net, x0, t, eps)["loss"]
        torch.testing.assert_close(loss, plain, rtol=1e-12, atol=0)
        objective.adaptive.linear.bias.fill_(0.7)
        torch.testing.assert_close(objective(net, x0, t, eps)["loss"], plain * math.exp(-0.7) + 0.7,
                                   rtol=1e-12, atol=0)
    assert sum(q.numel() for q in objective.parameters()) > 0  # u is trained with the network


class _LinearNet(nn.Module):
    def __init__(self, D=2, out=None, seed=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.4 * torch.randn(out or D, D, generator=g, dtype=F64))
        self.b = nn.Parameter(0.2 * torch.randn(out or D, generator=g, dtype=F64))
        self.c = nn.Parameter(0.2 * torch.randn(out or D, generator=g, dtype=F64))

    def forward(self, x, t_model):
        return x @ self.W.T + self.b + self.c * torch.tanh(t_model.double()[:, None] / 100)


# ----- EDM preconditioning ------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_data", [0.5, 0.8])
@pytest.mark.parametrize("proc_name", sorted(PROCESSES))
def test_edm_conversions_round_trip(proc_name, sigma_data):
    p = PROCESSES[proc_name]
    param = get_parameterization("edm", p, sigma_data)
    g = torch.Generator().manual_seed(4)
    t = torch.cat([torch.tensor([0.0, 1.0, p.T - 1.0]), torch.rand(40, generator=g, dtype=F64) * (p.T - 1)])
    x0 = torch.randn(len(t), 3, generator=g, dtype=F64)
    eps = torch.randn(len(t), 3, generator=g, dtype=F64)
    c = param.coefs(p, t, x0)
    a, s = c["alpha"], c["sigma"]
    x_t = a * x0 + s * eps
    F = param.target(x0, eps, x_t, c)
    torch.testing.assert_close(F, edm_from_x0(x_t, x0, a, s, sigma_data))
    x0_back, eps_back = param.to_x0_eps(F, x_t, c)
    torch.testing.assert_close(x0_back, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps_back, eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0_from_edm(x_t, F, a, s, sigma_data), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps_from_edm(x_t, F, a, s, sigma_data), eps, rtol=1e-10, atol=1e-10)
    # Karras et al. 2022, Table 1, at s = sigma/alpha
    sn = s / a
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sn, sigma_data)
    torch.testing.assert_close(c_skip, sigma_data**2 / (sn**2 + sigma_data**2))
    torch.testing.assert_close(c_out, sn * sigma_data / (sn**2 + sigma_data**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma_data**2 + sn**2).sqrt())
    torch.testing.assert_close(c_noise, sn.log() / 4)
    # c_in x_ve has unit variance when the data has std sigma_data (EDM's motivation)
    torch.testing.assert_close(c_in**2 * (sigma_data**2 + sn**2), torch.ones_like(sn))


def test_edm_denoiser_feeds_c_in_x_and_c_noise():
    p = PROCESSES["vp_cosine"]
    seen = {}

    class Spy(nn.Module):
        def forward(self, x, t_model):
            seen["x"], seen["t"] = x, t_model
            return torch.zeros_like(x)

    g = torch.Generator().manual_seed(5)
    t = torch.tensor([3.0, 500.5, 998.0], dtype=F64)
    x_t = torch.randn(3, 2, generator=g, dtype=F64)
    pred = Denoiser(Spy(), "edm", p, sigma_data=0.7)(x_t, t)
    a, s = p.alpha_sigma_at(t, x_t)
    sn = s / a
    torch.testing.assert_close(seen["x"], x_t / a / (sn**2 + 0.49).sqrt())
    torch.testing.assert_close(seen["t"], sn[:, 0].log() / 4)
    # F = 0: D(x) = c_skip x_ve
    torch.testing.assert_close(pred.x0, 0.49 / (sn**2 + 0.49) * x_t / a)


@pytest.mark.parametrize("sigma_data", [0.5, 0.8])
@pytest.mark.parametrize("proc_name", sorted(PROCESSES))
def test_edm_loss_is_weighted_eps_mse(proc_name, sigma_data):
    """The `edm` objective is EDM's lambda(s) |D - x0|^2 and w |eps - eps_hat|^2 with
    w = (s^2 + sd^2)/sd^2, for the edm parameterization and for eps."""
    p = PROCESSES[proc_name]
    g = torch.Generator().manual_seed(6)
    t = torch.cat([torch.tensor([0, 1, p.T - 1]), torch.randint(0, p.T, (45,), generator=g)])
    x0, eps = torch.randn(2, 48, 3, generator=g, dtype=F64)
    s2 = torch.exp(-p.log_snr)[t]
    w = (s2 + sigma_data**2) / sigma_data**2
    torch.testing.assert_close(weight_table("edm", p, PARAMETERIZATIONS["eps"], sigma_data=sigma_data), (
        torch.exp(-p.log_snr) + sigma_data**2) / sigma_data**2)
    for name in ("edm", "eps", "x0"):
        net = _LinearNet(D=3)
        objective = Objective(p, name, "edm", sigma_data=sigma_data)
        with torch.no_grad():
            loss = objective(net, x0, t, eps)["loss"]
            pred = objective.denoiser(net)(p.q_sample(x0, t, eps), t)
        mse = mean_flat((pred.eps - eps) ** 2)
        torch.testing.assert_close(loss, w * mse, rtol=1e-8, atol=1e-12, msg=name)
        lam = (s2 + sigma_data**2) / (s2 * sigma_data**2)  # Karras et al. 2022, Table 1
        torch.testing.assert_close(loss, lam * mean_flat((pred.x0 - x0) ** 2), rtol=1e-6, atol=1e-12, msg=name)
    # on its own parameterization `edm` is the plain F-MSE (EDM's effective weight 1)
    torch.testing.assert_close(weight_table("native", p, get_parameterization("edm", sigma_data=sigma_data)),
                               weight_table("edm", p, PARAMETERIZATIONS["eps"], sigma_data=sigma_data))


# ----- seed 004: learned uncertainty ------------------------------------------------------------------
def test_uncertainty_loss_is_seed_nll_and_score_is_shrunk_tweedie():
    p = ve_process(100)
    g = torch.Generator().manual_seed(7)
    x0, eps = torch.randn(2, 40, 2, generator=g, dtype=F64)
    t = torch.randint(0, p.T, (40,), generator=g)
    net = _LinearNet(D=2, out=4)
    objective = Objective(p, "x0", "uncertainty")
    with torch.no_grad():
        terms = objective(net, x0, t, eps)
        x_t = p.q_sample(x0, t, eps)
        raw = net(x_t, p.model_time(t.double()))
    mu, r = raw.chunk(2, dim=1)
    s2 = p.sigma[t][:, None] ** 2
    sigma_phi2 = s2 * r.exp()
    # seed 004: L = 1/2 [log sigma_phi^2 + (sigma^2 + (mu - x0)^2)/sigma_phi^2 + log 2 pi]
    seed = 0.5 * (sigma_phi2.log() + (s2 + (mu - x0) ** 2) / sigma_phi2 + math.log(2 * math.pi))
    torch.testing.assert_close(terms["loss"], mean_flat(seed), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms["sigma_phi2"], mean_flat(sigma_phi2))
    torch.testing.assert_close(terms["seed_sigma_phi2"], mean_flat(s2 + (mu - x0) ** 2))
    # the optimum over sigma_phi of the per-sample loss is s^2 + (mu - x0)^2 (seed 004)
    # the two scores from one network: Tweedie (mu - x)/s^2 and the seed's (mu - x)/sigma_phi^2
    tweedie = Denoiser(net, "x0", p, uncertainty=True)(x_t, t)
    seed_d = Denoiser(net, "x0", p, uncertainty=True, score="uncertainty")(x_t, t)
    torch.testing.assert_close(tweedie.x0, mu)
    torch.testing.assert_close((tweedie.x0 - x_t) / s2, (mu - x_t) / s2)
    torch.testing.assert_close((seed_d.x0 - x_t) / s2, (mu - x_t) / sigma_phi2)
    with pytest.raises(ValueError, match="fixed Sigma"):
        Denoiser(net, "x0", p, "learned", uncertainty=True)
    with pytest.raises(ValueError, match="sigma_phi"):
        Denoiser(net, "x0", p, score="uncertainty")


# ----- recovering the score of a Gaussian with a tiny MLP -------------------------------------------------
SIGMAS = (0.2, 0.5, 1.5)


@functools.lru_cache(maxsize=None)
def train_gaussian(weighting, param, steps=600, lr=3e-3, seed=0):
    """A tiny MLP trained on N(M, diag(C^2)) with VE noise levels 0.1..3 (50 geometric levels);
    cached, so each weighting trains once per session (about 3 s on one thread)."""
    torch.manual_seed(seed)
    process = ve_process(50, 0.1, 3.0)
    out = 4 if weighting == "uncertainty" else 2
    net = MLP((2,), out_channels=out, hidden=64, num_blocks=2)
    objective = Objective(process, param, weighting)
    optimizer = torch.optim.Adam(list(net.parameters()) + list(objective.parameters()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    sampler = UniformSampler(process.T)
    for step in range(steps):
        x0 = M + C * torch.randn(256, 2, generator=g)
        training_step(net, objective, optimizer, x0, sampler, generator=g, grad_clip=1.0,
                      lr=lr * min(1.0, 2 * (1 - step / steps)))
    return objective.denoiser(net), process


def score_errors(denoiser, seed=10):
    """Relative RMS error of the learned score (Tweedie, from x0_hat) against the analytic one."""
    g = torch.Generator().manual_seed(seed)
    errors = {}
    for s in SIGMAS:
        x = M + (C**2 + s**2).sqrt() * torch.randn(400, 2, generator=g)
        with torch.no_grad():
            learned = score_ve(denoiser, x, s)
        true = -(x - M) / (C**2 + s**2)
        errors[s] = float(((learned - true) ** 2).mean().sqrt() / (true**2).mean().sqrt())
    return errors


@pytest.fixture(scope="module")
def baseline_errors():
    den, _ = train_gaussian("lambda_sigma2", "score")
    return score_errors(den)


@pytest.mark.parametrize("weighting, param", [("lambda_one", "score"), ("lambda_learned", "score"),
                                              ("edm", "edm"), ("uncertainty", "x0")])
def test_each_weighting_recovers_gaussian_score(weighting, param, baseline_errors):
    assert max(baseline_errors.values()) < 0.3, baseline_errors  # NCSN's lambda = sigma^2
    den, _ = train_gaussian(weighting, param)
    errors = score_errors(den)
    assert max(errors.values()) < 0.3, errors


def test_lambda_inv_sigma2_learns_small_noise_and_starves_large(baseline_errors):
    """w = 1/sigma^4 spans (3/0.1)^4 ~ 8e5 over the levels: the smallest noise levels are
    learned, the largest barely (what the ablation should show under annealed Langevin)."""
    den, _ = train_gaussian("lambda_inv_sigma2", "score")
    errors = score_errors(den)
    assert errors[0.2] < 0.3, errors
    assert errors[1.5] > 2 * baseline_errors[1.5], (errors, baseline_errors)


def test_uncertainty_learns_seed_optimum_and_its_score_is_shrunk():
    """sigma_phi^2 -> s^2 + Var[x0 | x] (seed 004's optimum, in expectation), so the seed's
    score is the true score times s^2/sigma_phi^2 = (C^2 + s^2)/(2 C^2 + s^2) < 1."""
    den, _ = train_gaussian("uncertainty", "x0")
    g = torch.Generator().manual_seed(11)
    seed_den = Denoiser(den.net, "x0", den.process, uncertainty=True, score="uncertainty")
    for s in SIGMAS:
        x = M + (C**2 + s**2).sqrt() * torch.randn(400, 2, generator=g)
        t = den.process.t_from_log_snr(torch.full((400,), -2 * math.log(s), dtype=F64))
        with torch.no_grad():
            pred = den(x, t)
            seed_score = score_ve(seed_den, x, s)
        learned = (s**2 * pred.log_ratio.exp()).mean(0)
        expected = s**2 + C**2 * s**2 / (C**2 + s**2)
        torch.testing.assert_close(learned, expected, rtol=0.3, atol=0, msg=f"s = {s}")
        true = -(x - M) / (C**2 + s**2)
        shrink = (seed_score * true).sum() / (true * true).sum()
        expected_shrink = float(((C**2 + s**2) / (2 * C**2 + s**2)).mean())
        assert shrink.item() == pytest.approx(expected_shrink, abs=0.15), s


# ----- NFE bookkeeping --------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "heun", "euler_maruyama", "langevin"])
def test_steps_for_nfe_never_exceeds_budget(sampler):
    for nfe in (1, 2, 9, 10, 11, 50, 1000):
        steps = steps_for_nfe(sampler, nfe)
        assert steps >= 1
        if nfe >= 11:
            assert nfe_of_steps(sampler, steps) <= nfe
            assert nfe_of_steps(sampler, steps + 1) > nfe
