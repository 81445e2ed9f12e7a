"""Training objectives (diffusion/losses.py, weightings.py) against design.md's contract, in float64.

Every MSE weighting must equal w(t) * mean |eps - eps_hat|^2 on the same prediction, whatever
the parameterization; `vlb` must equal the full Gaussian KL (vlb_term) and differ from its
eps-space weight only by a constant; a learned Sigma's hybrid term must not train the mean.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

torch.set_num_threads(1)

from diffusion import Denoiser, Objective  # noqa: E402
from diffusion.denoiser import Prediction  # noqa: E402
from diffusion.losses import (NORMAL_CDFS, discretized_gaussian_log_likelihood,  # noqa: E402
                              gaussian_log_likelihood, mean_flat, normal_kl, vlb_term)
from diffusion.parameterizations import PARAMETERIZATIONS  # noqa: E402
from diffusion.process import ve_process, vp_process  # noqa: E402
from diffusion.weightings import (MSE_WEIGHTINGS, WEIGHTINGS, reverse_variance_table,  # noqa: E402
                                  vlb_weight, weight_table)

F64 = torch.float64
LN2 = math.log(2)
D = 3
NAMES = sorted(PARAMETERIZATIONS)
PROCESSES = {
    "vp_linear": vp_process("linear", 1000),
    "vp_cosine": vp_process("cosine", 1000),
    "ve": ve_process(1000),
}
PARAM_CASES = [(p, n) for p in sorted(PROCESSES) for n in NAMES if not (p == "ve" and n == "v")]


class LinearNet(nn.Module):
    """A fixed random affine map of (x_t, t) in float64: predictions are nonzero and differ per t."""

    def __init__(self, seed=0, out_channels=D):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.5 * torch.randn(out_channels, D, generator=g, dtype=F64))
        self.b = nn.Parameter(0.3 * torch.randn(out_channels, generator=g, dtype=F64))
        self.c = nn.Parameter(0.3 * torch.randn(out_channels, generator=g, dtype=F64))
        self.last_out = None

    def forward(self, x_t, t_model):
        out = x_t @ self.W.T + self.b + self.c * (t_model.double()[:, None] / 1000)
        self.last_out = out
        return out


def draw(process, seed=0, include_zero=True, n=48):
    g = torch.Generator().manual_seed(100 + seed)
    ends = [0, 1, 2, process.T - 1] if include_zero else [1, 2, process.T - 1]
    t = torch.cat([torch.tensor(ends), torch.randint(1, process.T, (n - len(ends),), generator=g)])
    x0 = torch.randn(n, D, generator=g, dtype=F64).clamp(-2, 2)
    eps = torch.randn(n, D, generator=g, dtype=F64)
    return t, x0, eps


def eps_mse_of(net, param, process, x0, t, eps, Sigma="fixed_large"):
    denoiser = Denoiser(net, param, process, Sigma)
    x_t = process.q_sample(x0, t, eps)
    pred = denoiser(x_t, t)
    return mean_flat((eps - pred.eps) ** 2), pred, x_t, denoiser


# ----- weight tables -------------------------------------------------------------------------------
def test_weight_tables_closed_forms():
    p = PROCESSES["vp_linear"]
    param = PARAMETERIZATIONS["eps"]
    snr = p.alpha_bar / (1 - p.alpha_bar)
    torch.testing.assert_close(weight_table("eps", p, param), torch.ones(p.T, dtype=F64))
    torch.testing.assert_close(weight_table("snr", p, param), snr, rtol=1e-9, atol=0)
    # Hang et al. 2023: min(snr, gamma)/snr; Salimans & Ho 2022: max(snr, 1)/snr.
    torch.testing.assert_close(weight_table("min_snr", p, param), snr.clamp(max=5.0) / snr, rtol=1e-9, atol=0)
    torch.testing.assert_close(weight_table("min_snr", p, param, gamma=1.0), snr.clamp(max=1.0) / snr,
                               rtol=1e-9, atol=0)
    torch.testing.assert_close(weight_table("trunc_snr", p, param), snr.clamp(min=1.0) / snr, rtol=1e-9, atol=0)
    torch.testing.assert_close(weight_table("adaptive", p, param), torch.ones(p.T, dtype=F64))
    with pytest.raises(ValueError, match="unknown weighting"):
        weight_table("lsimple", p, param)
    assert set(WEIGHTINGS) == {"native", "eps", "snr", "min_snr", "trunc_snr", "vlb", "adaptive",
                               "lambda_sigma2", "lambda_one", "lambda_inv_sigma2", "lambda_learned",
                               "edm", "uncertainty"}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("Sigma", ["fixed_large", "fixed_small"])
def test_vlb_weight_is_ddpm_formula(schedule, Sigma):
    """w = beta^2 / (2 s^2 (1 - beta)(1 - alpha_bar)) in bits, t >= 1 (Ho et al. 2020, eq. 12)."""
    p = PROCESSES[f"vp_{schedule}"]
    s2 = p.beta if Sigma == "fixed_large" else p.beta_tilde
    expected = p.beta**2 / (2 * s2 * (1 - p.beta) * (1 - p.alpha_bar) * LN2)
    w = vlb_weight(p, Sigma)
    torch.testing.assert_close(w[1:], expected[1:], rtol=1e-8, atol=0)
    torch.testing.assert_close(weight_table("vlb", p, PARAMETERIZATIONS["x0"], Sigma=Sigma), w)
    assert bool(torch.isfinite(w).all())
    # at t = 0 both use beta_tilde[1] (improved-diffusion's clipping)
    assert reverse_variance_table(p, Sigma)[0].item() == pytest.approx(p.beta_tilde[1].item(), rel=1e-12)


def test_weight_tables_finite_on_cosine():
    p = PROCESSES["vp_cosine"]
    for name in NAMES:
        for weighting in WEIGHTINGS:
            w = weight_table(weighting, p, PARAMETERIZATIONS[name])
            assert bool(torch.isfinite(w).all() and (w > 0).all()), (name, weighting)
    param = PARAMETERIZATIONS["eps"]
    min_snr, trunc = weight_table("min_snr", p, param), weight_table("trunc_snr", p, param)
    assert float(min_snr.max()) == 1.0 and min_snr[-1].item() == 1.0
    assert min_snr[0].item() == pytest.approx(5.0 / p.snr[0].item(), rel=1e-9)
    assert trunc[0].item() == 1.0
    assert trunc[-1].item() == pytest.approx(1 / p.snr[-1].item(), rel=1e-9)


# ----- MSE weightings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", sorted(MSE_WEIGHTINGS))
@pytest.mark.parametrize("proc_name, name", PARAM_CASES)
def test_mse_weighting_is_weighted_eps_mse(proc_name, name, weighting):
    process = PROCESSES[proc_name]
    param = PARAMETERIZATIONS[name]
    net = LinearNet()
    t, x0, eps = draw(process)
    for Sigma in ("fixed_large", "fixed_small"):
        objective = Objective(process, name, weighting, Sigma=Sigma)
        with torch.no_grad():
            terms = objective(net, x0, t, eps)
            mse, pred, x_t, _ = eps_mse_of(net, name, process, x0, t, eps, Sigma)
        w = weight_table(weighting, process, param)[t]
        assert bool((mse > 0).all())
        torch.testing.assert_close(terms["loss"], w * mse, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(terms["mse_eps"], mse, rtol=1e-7, atol=1e-12)
        if weighting == "native":  # the parameterization's plain MSE
            target = param.target(x0, eps, x_t, param.coefs(process, t, x_t))
            torch.testing.assert_close(terms["loss"], mean_flat((pred.out - target) ** 2), rtol=1e-9, atol=0)


@pytest.mark.parametrize("weighting", sorted(MSE_WEIGHTINGS))
@pytest.mark.parametrize("name", NAMES)
def test_weighting_space_target(name, weighting):
    """weighting_space='target': w(t) times the parameterization's own MSE; native stays plain."""
    process = PROCESSES["vp_linear"]
    param = PARAMETERIZATIONS[name]
    net = LinearNet(1)
    t, x0, eps = draw(process, 1)
    objective = Objective(process, name, weighting, weighting_space="target")
    with torch.no_grad():
        loss = objective(net, x0, t, eps)["loss"]
        _, pred, x_t, _ = eps_mse_of(net, name, process, x0, t, eps)
    target_mse = mean_flat((pred.out - param.target(x0, eps, x_t, param.coefs(process, t, x_t))) ** 2)
    w = torch.ones_like(target_mse) if weighting == "native" else weight_table(weighting, process, param)[t]
    torch.testing.assert_close(loss, w * target_mse, rtol=1e-9, atol=0)


@pytest.mark.parametrize("weighting", ["eps", "snr", "min_snr", "trunc_snr"])
def test_normalize_gives_unit_mean_weight(weighting):
    process = PROCESSES["vp_cosine"]
    param = PARAMETERIZATIONS["v"]
    net = LinearNet(2)
    t, x0, eps = draw(process, 2)
    with torch.no_grad():
        loss = Objective(process, "v", weighting, normalize=True)(net, x0, t, eps)["loss"]
        mse, *_ = eps_mse_of(net, "v", process, x0, t, eps)
    w = weight_table(weighting, process, param)
    torch.testing.assert_close(loss, (w / w.mean())[t] * mse, rtol=1e-7, atol=0)


@pytest.mark.parametrize("name", ["x0", "v", "score", "mu"])
def test_normalize_applies_to_native(name):
    """losses.py's docstring: normalize=True divides an MSE weight by its mean over t so
    E_t[w] = 1 -- `native` is an MSE weighting (weightings.MSE_WEIGHTINGS) too."""
    process = PROCESSES["vp_linear"]
    param = PARAMETERIZATIONS[name]
    net = LinearNet(3)
    t, x0, eps = draw(process, 3)
    with torch.no_grad():
        loss = Objective(process, name, "native", normalize=True)(net, x0, t, eps)["loss"]
        mse, *_ = eps_mse_of(net, name, process, x0, t, eps)
    w = weight_table("native", process, param)
    torch.testing.assert_close(loss, (w / w.mean())[t] * mse, rtol=1e-7, atol=0)


# ----- the VLB ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Sigma", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("proc_name, name", PARAM_CASES)
def test_vlb_fixed_sigma_equals_full_kl(proc_name, name, Sigma):
    process = PROCESSES[proc_name]
    param = PARAMETERIZATIONS[name]
    t, x0, eps = draw(process, 4)
    residuals, sizes = [], []
    for seed in (0, 1):  # two different predictions
        net = LinearNet(10 + seed)
        with torch.no_grad():
            loss = Objective(process, name, "vlb", Sigma=Sigma)(net, x0, t, eps)["loss"]
            mse, pred, x_t, denoiser = eps_mse_of(net, name, process, x0, t, eps, Sigma)
            full = vlb_term(denoiser, x0, x_t, t, pred)
        # the Objective's t >= 1 path (weighted MSE + constant) is the full Gaussian KL; t = 0 is L_0
        torch.testing.assert_close(loss, full, rtol=1e-7, atol=1e-9)
        w = weight_table("vlb", process, param, Sigma=Sigma)[t]
        residuals.append((loss - w * mse)[t > 0])
        sizes.append(loss[t > 0].abs())
    # Rounding: the residual is a difference of terms as large as the loss (1e7 for mu on VE,
    # whose x0 = (mu - c_xt x_t) / c_x0 amplifies a prediction error 70x).
    atol = 1e-12 + 1e-14 * (sizes[0] + sizes[1])
    # prediction-independent constant: the KL between the two variances
    assert bool(((residuals[0] - residuals[1]).abs() <= atol).all())
    s2 = reverse_variance_table(process, Sigma)[t[t > 0]]
    q = process.beta_tilde[t[t > 0]]
    const = 0.5 * (s2.log() - q.log() + q / s2 - 1) / LN2
    assert bool(((residuals[0] - const).abs() <= 1e-7 * const + atol).all())
    if Sigma == "fixed_small":  # the VLB is exactly sum_t w |eps - eps_hat|^2 for t >= 1
        assert bool((residuals[0].abs() <= atol).all())
    else:
        assert bool((const >= 0).all()) and float(const.max()) > 1e-5  # s^2 = beta > beta_tilde


def test_vlb_term_closed_form_and_rescaled():
    """L_{t-1} = |mu_tilde - mu_theta|^2 / (2 s^2) + const, in bits/dim; rescaled = T times it."""
    process = PROCESSES["vp_linear"]
    t, x0, eps = draw(process, 5, include_zero=False)
    net = LinearNet(5)
    with torch.no_grad():
        _, pred, x_t, denoiser = eps_mse_of(net, "eps", process, x0, t, eps, "fixed_large")
        got = vlb_term(denoiser, x0, x_t, t, pred)
        mu_true = process.posterior_mean(x0, x_t, t)
        mu_model = process.posterior_mean(pred.x0, x_t, t)
        s2 = process.beta[t][:, None]
        q = process.beta_tilde[t][:, None]
        exp = mean_flat(0.5 * (s2.log() - q.log() + q / s2 - 1 + (mu_true - mu_model) ** 2 / s2)) / LN2
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)
        rescaled = Objective(process, "eps", "vlb", vlb_scale="rescaled")(net, x0, t, eps)["loss"]
        torch.testing.assert_close(rescaled, process.T * exp, rtol=1e-7, atol=1e-9)


def test_vlb_t0_is_decoder_nll():
    process = PROCESSES["vp_linear"]
    n = 8
    g = torch.Generator().manual_seed(6)
    t = torch.zeros(n, dtype=torch.long)
    x0 = (torch.randint(0, 17, (n, D), generator=g).double() / 16) * 2 - 1
    eps = torch.randn(n, D, generator=g, dtype=F64)
    net = LinearNet(6)
    for levels in (None, 17):
        with torch.no_grad():
            loss = Objective(process, "eps", "vlb", Sigma="fixed_small", levels=levels)(net, x0, t, eps)["loss"]
            _, pred, x_t, _ = eps_mse_of(net, "eps", process, x0, t, eps, "fixed_small")
        log_var = process.beta_tilde[1].log().expand_as(x0)  # the clipped log-variance at t = 0
        mean = pred.x0  # posterior mean at t = 0 is x0_hat itself
        if levels is None:
            ll = gaussian_log_likelihood(x0, mean, log_var)
        else:
            ll = discretized_gaussian_log_likelihood(x0, mean, log_var, levels)
        torch.testing.assert_close(loss, -mean_flat(ll) / LN2, rtol=1e-9, atol=0)
        if levels is not None:
            assert bool((loss >= 0).all())


def test_decoder_cdf_setting_reaches_only_the_t0_term():
    """decoder_cdf='tanh' (DDPM's and improved-diffusion's approximation of Phi) changes the
    VLB's decoder term at t = 0, by the approximation's error, and no KL term at t >= 1."""
    process = PROCESSES["vp_linear"]
    g = torch.Generator().manual_seed(7)
    x0 = (torch.randint(0, 17, (16, D), generator=g).double() / 16) * 2 - 1
    eps = torch.randn(16, D, generator=g, dtype=F64)
    t = torch.cat([torch.zeros(8, dtype=torch.long), torch.randint(1, process.T, (8,), generator=g)])
    net = LinearNet(6, out_channels=2 * D)
    with torch.no_grad():
        exact, tanh = (Objective(process, "eps", "vlb", Sigma="learned_range", levels=17, decoder_cdf=cdf)(
            net, x0, t, eps)["loss"] for cdf in ("erf", "tanh"))
    torch.testing.assert_close(tanh[8:], exact[8:], rtol=0, atol=0)
    assert bool((tanh[:8] != exact[:8]).any())
    # the CDFs differ by at most 1.8e-4 (at |x| ~ 2.59): the term moves by the log of bin masses
    x = torch.linspace(-8, 8, 100001, dtype=F64)
    gap = (NORMAL_CDFS["tanh"](x) - NORMAL_CDFS["erf"](x)).abs()
    assert 1.7e-4 < gap.max().item() < 1.8e-4
    torch.testing.assert_close(NORMAL_CDFS["erf"](x), Normal(0.0, 1.0).cdf(x), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="decoder_cdf"):
        Objective(process, "eps", "vlb", decoder_cdf="logistic")


@pytest.mark.parametrize("Sigma", ["learned_range", "learned"])
def test_vlb_with_learned_sigma_is_full_kl(Sigma):
    process = PROCESSES["vp_linear"]
    t, x0, eps = draw(process, 7)
    net = LinearNet(7, out_channels=2 * D)
    with torch.no_grad():
        loss = Objective(process, "eps", "vlb", Sigma=Sigma)(net, x0, t, eps)["loss"]
        denoiser = Denoiser(net, "eps", process, Sigma)
        x_t = process.q_sample(x0, t, eps)
        full = vlb_term(denoiser, x0, x_t, t)
    torch.testing.assert_close(loss, full, rtol=1e-9, atol=0)


# ----- adaptive -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eps", "x0", "v"])
def test_adaptive_at_init_is_eps_weighting(name):
    process = PROCESSES["vp_cosine"]
    t, x0, eps = draw(process, 8)
    net = LinearNet(8)
    objective = Objective(process, name, "adaptive").double()
    with torch.no_grad():
        loss = objective(net, x0, t, eps)["loss"]
        ref = Objective(process, name, "eps")(net, x0, t, eps)["loss"]
        mse, *_ = eps_mse_of(net, name, process, x0, t, eps)
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(loss, mse, rtol=1e-7, atol=0)
    # EDM2 eq. 8: err / exp(u) + u, and the head is trained by the loss
    with torch.no_grad():
        objective.adaptive.linear.bias.fill_(0.3)
    loss = objective(net, x0, t, eps)["loss"]
    torch.testing.assert_close(loss.detach(), mse * math.exp(-0.3) + 0.3, rtol=1e-7, atol=0)
    loss.mean().backward()
    assert objective.adaptive.linear.bias.grad is not None
    assert float(objective.adaptive.linear.weight.grad.abs().sum()) > 0


# ----- learned Sigma: hybrid objective ------------------------------------------------------------------
@pytest.mark.parametrize("Sigma", ["learned_range", "learned"])
@pytest.mark.parametrize("name, weighting", [("eps", "eps"), ("x0", "native"), ("v", "min_snr")])
def test_hybrid_term_value_and_gradient(name, weighting, Sigma):
    process = PROCESSES["vp_linear"]
    param = PARAMETERIZATIONS[name]
    t, x0, eps = draw(process, 9)
    net = LinearNet(9, out_channels=2 * D)
    objective = Objective(process, name, weighting, Sigma=Sigma)
    total = objective(net, x0, t, eps)["loss"]
    out = net.last_out
    # the same value from the pieces: w * eps-MSE + lambda * T * L_t (mean detached)
    denoiser = Denoiser(net, name, process, Sigma)
    x_t = process.q_sample(x0, t, eps)
    with torch.no_grad():
        pred = denoiser(x_t, t)
        mse = mean_flat((eps - pred.eps) ** 2)
        vb = vlb_term(denoiser, x0, x_t, t, pred)
    w = weight_table(weighting, process, param)[t]
    torch.testing.assert_close(total.detach(), w * mse + 1e-3 * process.T * vb, rtol=1e-7, atol=1e-12)

    # Gradient w.r.t. the network's output channels: mean channels get only the MSE's gradient.
    g_total = torch.autograd.grad(total.sum(), out)[0]
    out_ref = out.detach().clone().requires_grad_(True)
    mean_out = out_ref[:, :D]
    target = param.target(x0, eps, x_t, param.coefs(process, t, x_t))
    mse_part = (objective.factor[t] * mean_flat((mean_out - target) ** 2)).sum()
    g_mse = torch.autograd.grad(mse_part, out_ref)[0]
    torch.testing.assert_close(g_total[:, :D], g_mse[:, :D], rtol=1e-9, atol=1e-15)
    assert float(g_total[:, D:].abs().min()) > 0  # the variance channels are trained

    # and directly: the hybrid term (detach_mean=True) has zero gradient on the mean channels,
    # while the undetached KL would reach them.
    out_ref = out.detach().clone().requires_grad_(True)
    mean_out, var_out = out_ref.chunk(2, dim=1)
    x0_hat, eps_hat = param.to_x0_eps(mean_out, x_t, param.coefs(process, t, x_t))
    pred = Prediction(out=mean_out, x0=x0_hat, eps=eps_hat, var_out=var_out)
    hybrid = vlb_term(denoiser, x0, x_t, t, pred, detach_mean=True).sum()
    g_h = torch.autograd.grad(hybrid, out_ref, retain_graph=True)[0]
    assert float(g_h[:, :D].abs().max()) == 0.0
    assert float(g_h[:, D:].abs().min()) > 0
    g_full = torch.autograd.grad(vlb_term(denoiser, x0, x_t, t, pred).sum(), out_ref)[0]
    assert float(g_full[:, :D].abs().max()) > 0


def test_learned_range_interpolates_log_variance():
    """Nichol & Dhariwal eq. 15: v = 1 gives log beta, v = -1 gives the clipped log beta_tilde."""
    process = PROCESSES["vp_cosine"]
    t = torch.arange(process.T)
    x = torch.zeros(process.T, D, dtype=F64)
    d = Denoiser(nn.Identity(), "eps", process, "learned_range")
    for v, table in ((1.0, process.beta.log()), (-1.0, process.log_beta_tilde_clipped)):
        pred = Prediction(out=x, x0=x, eps=x, var_out=torch.full_like(x, v))
        log_var = d.reverse_log_variance(pred, t, x)
        torch.testing.assert_close(log_var[:, 0], table, rtol=1e-12, atol=1e-12)


# ----- Gaussian helpers -------------------------------------------------------------------------------
def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(11)
    m1, m2 = torch.randn(2, 50, generator=g, dtype=F64)
    lv1, lv2 = 2 * torch.randn(2, 50, generator=g, dtype=F64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-10, atol=1e-12)
    assert float(normal_kl(m1, lv1, m1, lv1).abs().max()) < 1e-14
    # broadcasting, as vlb_term uses it
    torch.testing.assert_close(normal_kl(m1[:, None], lv1[:, None], m2, lv2[:1]),
                               kl_divergence(Normal(m1[:, None], (0.5 * lv1[:, None]).exp()),
                                             Normal(m2, (0.5 * lv2[:1]).exp())), rtol=1e-10, atol=1e-12)


def test_gaussian_log_likelihood_matches_torch():
    g = torch.Generator().manual_seed(12)
    x, m = torch.randn(2, 30, generator=g, dtype=F64)
    lv = torch.randn(30, generator=g, dtype=F64)
    torch.testing.assert_close(gaussian_log_likelihood(x, m, lv), Normal(m, (0.5 * lv).exp()).log_prob(x),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_likelihood_sums_to_one(levels):
    x = torch.linspace(-1, 1, levels, dtype=F64)[:, None]
    for mean, log_var in ((0.0, 0.0), (0.3, -2.0), (-0.95, -9.0), (1.4, -4.0), (0.0, -12.0)):
        lp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_var), levels)
        assert bool((lp <= 1e-12).all())
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-6), (mean, log_var)
    # per-bin masses against the CDF of a Gaussian: interior bins are 2/(levels-1) wide
    if levels > 2:
        normal = Normal(torch.tensor(0.3, dtype=F64), torch.tensor(0.4, dtype=F64))
        half = 1 / (levels - 1)
        inner = x[1:-1, 0]
        lp = discretized_gaussian_log_likelihood(inner, torch.full_like(inner, 0.3),
                                                 torch.full_like(inner, 2 * math.log(0.4)), levels)
        torch.testing.assert_close(lp.exp(), normal.cdf(inner + half) - normal.cdf(inner - half),
                                   rtol=1e-9, atol=1e-14)


def test_discretized_likelihood_sums_to_one_fine_grid():
    levels = 4096  # 12-bit data
    x = torch.linspace(-1, 1, levels, dtype=F64)[:, None]
    lp = discretized_gaussian_log_likelihood(x, torch.full_like(x, 0.3), torch.full_like(x, -2.0), levels)
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_objective_rejects_bad_options():
    p = PROCESSES["vp_linear"]
    with pytest.raises(ValueError, match="unknown weighting"):
        Objective(p, "eps", "l_simple")
    with pytest.raises(ValueError, match="weighting_space"):
        Objective(p, "eps", "eps", weighting_space="x0")
    with pytest.raises(ValueError, match="vlb_scale"):
        Objective(p, "eps", "vlb", vlb_scale="nichol")
    with pytest.raises(ValueError, match="Sigma"):
        Objective(p, "eps", "eps", Sigma="fixed_medium")
