"""Forward processes (diffusion/process.py) against the papers' closed forms, in float64.

Checks every table against DDPM's own formulas (Ho et al. 2020), the posterior
q(x_{t-1} | x_t, x0) against Bayes' rule computed directly from the two Gaussians it
combines, respacing (Nichol & Dhariwal 2021, sec. 4) and the continuous view.
"""

import math

import pytest
import torch

torch.set_num_threads(1)

from diffusion.process import (DiscreteProcess, cosine_beta, linear_beta,  # noqa: E402
                               ve_process, vp_process)

F64 = torch.float64
TABLES = ("alpha", "sigma", "alpha_bar", "snr", "log_snr", "beta", "beta_tilde",
          "log_beta_tilde_clipped", "posterior_coef_x0", "posterior_coef_xt", "alpha_step",
          "alpha_bar_prev")

PROCESS_MAKERS = {
    "vp_linear": lambda: vp_process("linear", 1000),
    "vp_cosine": lambda: vp_process("cosine", 1000),
    "ve": lambda: ve_process(1000, 0.01, 10.0),
}


@pytest.fixture(scope="module", params=sorted(PROCESS_MAKERS))
def any_process(request):
    return request.param, PROCESS_MAKERS[request.param]()


def transition(name, T=1000):
    """The per-step Gaussian q(x_t | x_{t-1}) = N(a_t x_{t-1}, v_t) and the marginal
    q(x_t | x0) = N(alpha_t x0, sigma_t^2), built straight from the paper's definitions
    (not from DiscreteProcess)."""
    if name.startswith("vp"):
        beta = (linear_beta if name == "vp_linear" else cosine_beta)(T)
        alpha_bar = torch.cumprod(1 - beta, 0)
        return (1 - beta).sqrt(), beta, alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    sigma = torch.logspace(math.log10(0.01), math.log10(10.0), T, dtype=F64)
    var_step = torch.cat([sigma[:1] ** 2, sigma[1:] ** 2 - sigma[:-1] ** 2])
    return torch.ones(T, dtype=F64), var_step, torch.ones(T, dtype=F64), sigma


# ----- schedules and tables ----------------------------------------------------------------
def test_linear_betas_are_ddpm_schedule():
    p = vp_process("linear", 1000)
    expected = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    assert p.beta.dtype == F64
    assert p.beta[0].item() == pytest.approx(1e-4, rel=1e-9)
    assert p.beta[-1].item() == pytest.approx(0.02, rel=1e-9)
    torch.testing.assert_close(p.beta, expected, rtol=1e-8, atol=0)
    torch.testing.assert_close(p.alpha_bar, torch.cumprod(1 - expected, 0), rtol=1e-12, atol=0)
    torch.testing.assert_close(p.alpha_step, 1 - expected, rtol=1e-12, atol=0)


def test_linear_betas_rescale_with_T():
    """Other T keep DDPM's total noise: beta scaled by 1000/T (Ho et al. sec. 4)."""
    p = vp_process("linear", 50)
    torch.testing.assert_close(p.beta, torch.linspace(20e-4, 0.4, 50, dtype=F64), rtol=1e-8, atol=0)


def test_cosine_betas_clipped_at_0999():
    p = vp_process("cosine", 1000)
    raw = cosine_beta(1000, max_beta=1.0)
    assert raw[-1] > 0.999  # the clip is active
    assert p.beta.max().item() == pytest.approx(0.999, rel=1e-9)
    assert p.beta[-1].item() == pytest.approx(0.999, rel=1e-9)
    assert bool((p.beta <= 0.999 + 1e-12).all())
    torch.testing.assert_close(p.beta, cosine_beta(1000), rtol=1e-8, atol=1e-14)
    # Nichol & Dhariwal eq. 17 where unclipped.
    s = 0.008
    f = lambda t: math.cos((t / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 500, 998):
        assert p.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_every_table_finite_at_both_ends(any_process):
    name, p = any_process
    for table in TABLES:
        v = getattr(p, table)
        assert v.dtype == F64, table
        assert v.shape == (p.T,), table
        assert bool(torch.isfinite(v).all()), f"{name}.{table} not finite"
    assert bool((p.beta > 0).all())
    assert p.beta_tilde[0].item() == 0.0
    assert bool((p.beta_tilde[1:] > 0).all())
    assert bool((p.log_snr[1:] < p.log_snr[:-1]).all())
    # log of beta_tilde clipped at t = 0 to beta_tilde[1] (improved-diffusion).
    assert p.log_beta_tilde_clipped[0].item() == pytest.approx(math.log(p.beta_tilde[1].item()), rel=1e-12)
    torch.testing.assert_close(p.log_beta_tilde_clipped[1:], p.beta_tilde[1:].log(), rtol=1e-12, atol=1e-12)


def test_tables_consistent(any_process):
    name, p = any_process
    torch.testing.assert_close(p.alpha_bar, p.alpha**2, rtol=1e-14, atol=0)
    torch.testing.assert_close(p.snr, p.alpha**2 / p.sigma**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(p.log_snr, p.snr.log(), rtol=1e-10, atol=1e-10)
    if name.startswith("vp"):
        torch.testing.assert_close(p.alpha**2 + p.sigma**2, torch.ones(p.T, dtype=F64), rtol=0, atol=1e-14)
    else:
        assert bool((p.alpha == 1).all())
        assert p.prior_std == 10.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_beta_tilde_matches_ddpm(schedule):
    p = vp_process(schedule, 1000)
    beta = SCHEDULE_BETA[schedule]
    ab = torch.cumprod(1 - beta, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    expected = beta * (1 - ab_prev) / (1 - ab)
    torch.testing.assert_close(p.beta_tilde, expected, rtol=1e-9, atol=1e-18)
    # DDPM eq. 7 coefficients.
    torch.testing.assert_close(p.posterior_coef_x0, ab_prev.sqrt() * beta / (1 - ab), rtol=1e-9, atol=0)
    torch.testing.assert_close(p.posterior_coef_xt, (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab),
                               rtol=1e-9, atol=1e-18)


SCHEDULE_BETA = {"linear": linear_beta(1000), "cosine": cosine_beta(1000)}


# ----- posterior q(x_{t-1} | x_t, x0) ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROCESS_MAKERS))
def test_posterior_is_bayes_rule(name):
    """q(x_{t-1}|x_t,x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): a product of two Gaussians in x_{t-1}."""
    p = PROCESS_MAKERS[name]()
    a_step, v_step, alpha, sigma = transition(name)
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.tensor([1, 2, 500, p.T - 2, p.T - 1]), torch.randint(1, p.T, (27,), generator=g)])
    x0 = torch.randn(len(t), 3, generator=g, dtype=F64)
    x_t = 3 * torch.randn(len(t), 3, generator=g, dtype=F64)
    mean, var, log_var = p.posterior_mean_variance(x0, x_t, t)
    # Prior on x_{t-1} from x0 and likelihood of x_t given x_{t-1}.
    m_prior, v_prior = alpha[t - 1, None] * x0, sigma[t - 1, None] ** 2
    a, v = a_step[t, None], v_step[t, None]
    precision = 1 / v_prior + a**2 / v
    exp_var = 1 / precision
    exp_mean = exp_var * (m_prior / v_prior + a * x_t / v)
    torch.testing.assert_close(mean, exp_mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(var.expand_as(mean), exp_var.expand_as(mean), rtol=1e-8, atol=1e-16)
    torch.testing.assert_close(log_var.expand_as(mean), exp_var.log().expand_as(mean), rtol=1e-8, atol=1e-9)
    # The per-step beta is the variance of q(x_t | x_{t-1}).
    torch.testing.assert_close(p.beta[1:], v_step[1:], rtol=1e-8, atol=1e-16)


@pytest.mark.parametrize("name", sorted(PROCESS_MAKERS))
def test_posterior_at_t0_is_the_data(name):
    p = PROCESS_MAKERS[name]()
    x0 = torch.tensor([[0.3, -0.7]], dtype=F64)
    x_t = torch.tensor([[1.3, 2.0]], dtype=F64)
    mean, var, _ = p.posterior_mean_variance(x0, x_t, torch.tensor([0]))
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-14)
    assert float(var.max()) == 0.0


def test_posterior_monte_carlo_vp():
    """Joint sampling x_{t-1} ~ q(.|x0), x_t ~ q(x_t|x_{t-1}); the residual of x_{t-1} about the
    posterior mean is uncorrelated with x_t and has variance beta_tilde."""
    p = vp_process("linear", 1000)
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 10
    x0 = torch.full((n, 1), 0.7, dtype=F64)
    x_prev = p.alpha[t - 1] * x0 + p.sigma[t - 1] * torch.randn(n, 1, generator=g, dtype=F64)
    x_t = (1 - p.beta[t]).sqrt() * x_prev + p.beta[t].sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
    mean, var, _ = p.posterior_mean_variance(x0, x_t, torch.full((n,), t))
    r = (x_prev - mean).squeeze(1)
    se = math.sqrt(var[0, 0].item() / n)
    assert abs(r.mean().item()) < 5 * se
    assert r.var().item() / var[0, 0].item() == pytest.approx(1, abs=5 * math.sqrt(2 / n))
    corr = torch.corrcoef(torch.stack([r, x_t.squeeze(1)]))[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(n)


# ----- forward sampling ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROCESS_MAKERS))
def test_q_sample_moments(name):
    p = PROCESS_MAKERS[name]()
    g = torch.Generator().manual_seed(2)
    n = 20_000
    for t_int in (0, 300, p.T - 1):
        x0 = torch.tensor([0.8, -0.4], dtype=F64).expand(n, 2)
        t = torch.full((n,), t_int)
        eps = torch.randn(n, 2, generator=g, dtype=F64)
        x_t = p.q_sample(x0, t, eps)
        torch.testing.assert_close(x_t, p.alpha[t_int] * x0 + p.sigma[t_int] * eps, rtol=1e-14, atol=1e-14)
        s = p.sigma[t_int].item()
        exp_mean = p.alpha[t_int].item() * x0[0]
        assert torch.all((x_t.mean(0) - exp_mean).abs() < 5 * s / math.sqrt(n))
        assert torch.all((x_t.var(0) / s**2 - 1).abs() < 5 * math.sqrt(2 / n))


def test_q_sample_casts_to_input_dtype():
    p = vp_process("linear", 1000)
    x0 = torch.zeros(3, 2)
    out = p.q_sample(x0, torch.tensor([0, 5, 999]), torch.ones(3, 2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], p.sigma[[0, 5, 999]].float())


# ----- respacing -------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respace_keeps_alpha_bar_and_recomputes_beta(schedule):
    p = vp_process(schedule, 1000)
    r = p.respace(50)
    idx = r.timesteps.long()
    assert r.T == 50 and idx[0].item() == 0 and idx[-1].item() == p.T - 1
    assert bool((idx[1:] > idx[:-1]).all())
    torch.testing.assert_close(r.alpha_bar, p.alpha_bar[idx], rtol=1e-14, atol=0)
    ab_prev = torch.cat([torch.ones(1, dtype=F64), p.alpha_bar[idx[:-1]]])
    torch.testing.assert_close(r.beta, 1 - p.alpha_bar[idx] / ab_prev, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(r.alpha_step, 1 - r.beta, rtol=1e-12, atol=1e-15)
    # The respaced posterior is DDPM's formula on the respaced betas.
    exp_bt = r.beta * (1 - ab_prev) / (1 - r.alpha_bar)
    torch.testing.assert_close(r.beta_tilde, exp_bt, rtol=1e-9, atol=1e-18)
    # The network is queried at the original step indices.
    torch.testing.assert_close(r.model_time(torch.arange(50)), idx.float())


def test_respace_explicit_list_and_nesting():
    p = vp_process("linear", 1000)
    r = p.respace([0, 10, 400, 999])
    assert r.timesteps.tolist() == [0, 10, 400, 999]
    torch.testing.assert_close(r.alpha, p.alpha[[0, 10, 400, 999]], rtol=0, atol=0)
    rr = r.respace([1, 3])  # respacing a respaced process keeps the original indices
    assert rr.timesteps.tolist() == [10, 999]
    torch.testing.assert_close(rr.sigma, p.sigma[[10, 999]], rtol=0, atol=0)
    assert p.respace(1000).timesteps.tolist() == list(range(1000))
    with pytest.raises(ValueError):
        p.respace([5, 5, 10])
    with pytest.raises(ValueError):
        p.respace(0)
    with pytest.raises(ValueError):
        p.respace(1001)


# ----- continuous view ------------------------------------------------------------------------
def test_alpha_sigma_at_integer_t_equals_tables(any_process):
    """Integer-valued t gives the tables, whether it comes as an integer tensor (a plain
    lookup, the discrete samplers' and the losses' path) or as floats (interpolated)."""
    name, p = any_process
    t = torch.arange(p.T)
    x = torch.zeros(p.T, 2, dtype=F64)
    for t_in in (t, t.double()):
        a, s = p.alpha_sigma_at(t_in, x)
        assert a.shape == (p.T, 1)
        torch.testing.assert_close(a[:, 0], p.alpha, rtol=1e-12, atol=0)
        torch.testing.assert_close(s[:, 0], p.sigma, rtol=1e-12, atol=0)
        for table in ("alpha", "sigma", "beta", "posterior_coef_x0"):
            torch.testing.assert_close(p.coef_at(table, t_in, x)[:, 0], getattr(p, table), rtol=0, atol=0)
        assert p.model_time(t_in).dtype == torch.float32
        torch.testing.assert_close(p.model_time(t_in), t.float(), rtol=0, atol=0)
    for table in ("alpha", "sigma", "beta", "posterior_coef_x0"):
        torch.testing.assert_close(p.at(table, t, x)[:, 0], getattr(p, table), rtol=0, atol=0)


def test_alpha_sigma_at_fractional_t_stays_on_process(any_process):
    name, p = any_process
    g = torch.Generator().manual_seed(3)
    t = torch.rand(200, generator=g, dtype=F64) * (p.T - 1)
    x = torch.zeros(200, 1, dtype=F64)
    a, s = p.alpha_sigma_at(t, x)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=p.T - 1)
    ls = torch.lerp(p.log_snr[lo], p.log_snr[hi], t - lo)
    torch.testing.assert_close((2 * (a.log() - s.log()))[:, 0], ls, rtol=1e-10, atol=1e-10)
    if name.startswith("vp"):
        torch.testing.assert_close((a**2 + s**2)[:, 0], torch.ones(200, dtype=F64), rtol=0, atol=1e-14)
    else:
        assert bool((a == 1).all())
    # between the neighbouring grid values
    assert bool(((s[:, 0] >= p.sigma[lo] - 1e-15) & (s[:, 0] <= p.sigma[hi] + 1e-15)).all())


def test_t_from_log_snr_inverts_interpolated_log_snr(any_process):
    name, p = any_process
    g = torch.Generator().manual_seed(4)
    t = torch.cat([torch.rand(300, generator=g, dtype=F64) * (p.T - 1),
                   torch.tensor([0.0, 0.5, 1.0, p.T - 2.0, p.T - 1.5, p.T - 1.0], dtype=F64)])
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=p.T - 1)
    ls = torch.lerp(p.log_snr[lo], p.log_snr[hi], t - lo)
    back = p.t_from_log_snr(ls)
    torch.testing.assert_close(back, t, rtol=0, atol=1e-8)
    # and on the grid
    torch.testing.assert_close(p.t_from_log_snr(p.log_snr), torch.arange(p.T, dtype=F64), rtol=0, atol=1e-9)
    # round trip through the continuous coefficients
    a, s = p.alpha_sigma_at(back, torch.zeros(len(t), 1, dtype=F64))
    torch.testing.assert_close(2 * (a.log() - s.log())[:, 0], ls, rtol=1e-9, atol=1e-9)


# ----- prior -------------------------------------------------------------------------------
def test_prior_kl_vp_near_zero_for_small_data():
    p = vp_process("linear", 1000)
    x0 = torch.zeros(4, 3, dtype=F64)
    kl = p.prior_kl(x0)
    assert kl.shape == (4,)
    assert bool((kl >= 0).all()) and float(kl.max()) < 1e-8
    x0 = torch.full((2, 3), 0.01, dtype=F64)
    assert float(p.prior_kl(x0).max()) < 1e-8
    # closed form for larger data: 0.5 (-log s^2 + s^2 + a^2 x0^2 - 1)
    x0 = torch.tensor([[1.0, -1.0, 0.5]], dtype=F64)
    a2, s2 = p.alpha_bar[-1].item(), p.sigma[-1].item() ** 2
    exp = (0.5 * (-math.log(s2) + s2 + a2 * x0**2 - 1)).mean()
    assert p.prior_kl(x0).item() == pytest.approx(exp.item(), rel=1e-9)
    # cosine's final alpha_bar is ~2e-9: the prior matches better still
    assert float(vp_process("cosine").prior_kl(torch.ones(1, 2, dtype=F64))) < 1e-7


def test_prior_kl_ve():
    p = ve_process(1000, 0.01, 10.0)
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    assert p.prior_kl(x0).item() == pytest.approx((x0**2 / (2 * 100)).mean().item(), rel=1e-9)


# ----- validation ------------------------------------------------------------------------------
def test_invalid_processes_refused():
    with pytest.raises(ValueError, match="schedule"):
        vp_process("quadratic")
    with pytest.raises(ValueError):
        ve_process(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="signal-to-noise"):
        DiscreteProcess([1.0, 1.0], [0.5, 0.4], "ve")
    with pytest.raises(ValueError):
        DiscreteProcess([1.0, 1.0], [0.5], "ve")
