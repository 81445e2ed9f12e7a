"""Parameterizations (diffusion/parameterizations.py): targets, conversions, scales, in float64.

Every conversion must invert its target exactly; all five views of one prediction must
agree; scale() is |d target / d eps| at fixed x_t, whose square is the `native` weight of
design.md ("The math contract").
"""

import pytest
import torch
from torch import nn

torch.set_num_threads(1)

from diffusion import Denoiser, Objective  # noqa: E402
from diffusion.parameterizations import PARAMETERIZATIONS, get_parameterization  # noqa: E402
from diffusion.process import ve_process, vp_process  # noqa: E402
from diffusion.weightings import weight_table  # noqa: E402

F64 = torch.float64
NAMES = sorted(PARAMETERIZATIONS)
PROCESSES = {
    "vp_linear": vp_process("linear", 1000),
    "vp_cosine": vp_process("cosine", 1000),
    "ve": ve_process(1000),
}
CASES = [(p, n) for p in sorted(PROCESSES) for n in NAMES if not (p == "ve" and n == "v")]


def batch(process, seed=0, n_random=40, D=3, fractional=False):
    """Steps including both ends; fractional ones are multiples of 1/64, exact in float32, because
    the network receives `process.model_time(t)` as float32 and the test nets below invert it."""
    g = torch.Generator().manual_seed(seed)
    t = torch.cat([torch.tensor([0, 1, 2, process.T // 2, process.T - 2, process.T - 1]),
                   torch.randint(0, process.T, (n_random,), generator=g)]).double()
    if fractional:
        frac = torch.randint(1, 64 * (process.T - 1), (n_random,), generator=g).double() / 64
        t = torch.cat([t, torch.tensor([1 / 64, 0.5, process.T - 1.5], dtype=F64), frac])
    x0 = torch.randn(len(t), D, generator=g, dtype=F64)
    eps = torch.randn(len(t), D, generator=g, dtype=F64)
    return t, x0, eps


def test_registry():
    assert set(NAMES) == {"eps", "x0", "v", "mu", "score", "edm"}
    for name in NAMES:
        assert PARAMETERIZATIONS[name].name == name
        assert get_parameterization(name) is PARAMETERIZATIONS[name]


@pytest.mark.parametrize("proc_name, name", CASES)
@pytest.mark.parametrize("fractional", [False, True])
def test_round_trip(proc_name, name, fractional):
    """target(x0, eps) -> to_x0_eps gives back the true (x0, eps), including t = 0 and T - 1."""
    process = PROCESSES[proc_name]
    param = PARAMETERIZATIONS[name]
    t, x0, eps = batch(process, fractional=fractional)
    c = param.coefs(process, t, x0)
    x_t = c["alpha"] * x0 + c["sigma"] * eps
    if not fractional:
        torch.testing.assert_close(x_t, process.q_sample(x0, t.long(), eps), rtol=1e-12, atol=1e-12)
    out = param.target(x0, eps, x_t, c)
    x0_hat, eps_hat = param.to_x0_eps(out, x_t, c)
    # Recovering x0 from eps divides by alpha (4.9e-5 at cosine's end): absolute error ~1e-16/alpha.
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("proc_name", sorted(PROCESSES))
def test_all_views_agree(proc_name):
    """One prediction (x0_hat, eps_hat consistent with x_t) expressed in every parameterization
    converts back to the same pair, and each target has design.md's closed form."""
    process = PROCESSES[proc_name]
    t, x0_true, eps_true = batch(process, seed=1)
    x = torch.zeros_like(x0_true)
    alpha, sigma = process.at("alpha", t, x), process.at("sigma", t, x)
    x_t = alpha * x0_true + sigma * eps_true
    # an arbitrary (wrong) eps prediction and the x0 it implies at this x_t
    eps_hat = 0.5 * eps_true + 0.3
    x0_hat = (x_t - sigma * eps_hat) / alpha
    expected = {
        "eps": eps_hat,
        "x0": x0_hat,
        "v": alpha * eps_hat - sigma * x0_hat,
        "score": -eps_hat / sigma,
        "mu": process.posterior_mean(x0_hat, x_t, t.long()),
        # Karras et al. 2022, eq. 7-8: F = (x0 - c_skip x_ve)/c_out, x_ve = x_t/alpha, s = sigma/alpha
        "edm": edm_target(x0_hat, x_t / alpha, sigma / alpha),
    }
    for name in NAMES:
        if proc_name == "ve" and name == "v":
            continue
        param = PARAMETERIZATIONS[name]
        c = param.coefs(process, t, x_t)
        out = param.target(x0_hat, eps_hat, x_t, c)
        torch.testing.assert_close(out, expected[name], rtol=1e-9, atol=1e-9, msg=name)
        back_x0, back_eps = param.to_x0_eps(out, x_t, c)
        torch.testing.assert_close(back_x0, x0_hat, rtol=1e-9, atol=1e-9, msg=name)
        torch.testing.assert_close(back_eps, eps_hat, rtol=1e-9, atol=1e-9, msg=name)
    if proc_name.startswith("vp"):
        # Salimans & Ho's VP forms: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v.
        v = expected["v"]
        torch.testing.assert_close(alpha * x_t - sigma * v, x0_hat, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(sigma * x_t + alpha * v, eps_hat, rtol=1e-9, atol=1e-9)


def edm_target(x0, x_ve, s, sd=0.5):
    """Karras et al. 2022, Table 1, written out: c_skip = sd^2/(s^2 + sd^2), c_out = s sd/sqrt(s^2 + sd^2)."""
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / (s**2 + sd**2).sqrt()
    return (x0 - c_skip * x_ve) / c_out


def edm_network_view(process, x_in, c_noise, sd=0.5):
    """Undo EDM's c_in and c_noise: (x_t, t) from (c_in x_ve, ln(s)/4)."""
    s = torch.exp(4 * c_noise.double())
    t = process.t_from_log_snr(-2 * s.log())
    alpha, _ = process.alpha_sigma_at(t, x_in)
    return alpha * x_in * (s[:, None] ** 2 + sd**2).sqrt(), t


class EpsNet(nn.Module):
    """A fixed nonlinear eps predictor; `as_param` re-expresses it in another parameterization."""

    def __init__(self, process, as_param="eps"):
        super().__init__()
        self.process, self.param = process, PARAMETERIZATIONS[as_param]

    def forward(self, x_t, t_model):
        t = t_model.double()
        if self.param.name == "edm":  # the network sees c_in x_ve and c_noise
            x_t, t = edm_network_view(self.process, x_t, t_model)
        eps_hat = torch.tanh(x_t) * (1 + t[:, None] / 1000) - 0.2
        c = self.param.coefs(self.process, t, x_t)
        x0_hat = (x_t - c["sigma"] * eps_hat) / c["alpha"]
        return self.param.target(x0_hat, eps_hat, x_t, c)


@pytest.mark.parametrize("proc_name", sorted(PROCESSES))
def test_denoiser_same_prediction_every_parameterization(proc_name):
    process = PROCESSES[proc_name]
    t, x0, eps = batch(process, seed=2, fractional=True)
    x_t = x0 + eps
    ref = Denoiser(EpsNet(process), "eps", process, "fixed_small")
    ref_pred, ref_mean, ref_log_var = ref.reverse(x_t, t)
    for name in NAMES:
        if proc_name == "ve" and name == "v":
            continue
        d = Denoiser(EpsNet(process, name), name, process, "fixed_small")
        pred, mean, log_var = d.reverse(x_t, t)
        torch.testing.assert_close(pred.eps, ref_pred.eps, rtol=1e-9, atol=1e-9, msg=name)
        torch.testing.assert_close(pred.x0, ref_pred.x0, rtol=1e-9, atol=1e-7, msg=name)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-9, msg=name)
        torch.testing.assert_close(log_var, ref_log_var, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("proc_name, name", CASES)
def test_clipped_prediction_and_integer_t(proc_name, name):
    """clip_x0: x0_hat is clamped to [-1, 1] and eps_hat (derived on first read) keeps
    x_t = alpha x0_hat + sigma eps_hat. Integer t as a long tensor (the samplers' and losses'
    lookup path) gives the prediction of the same t as floats (the interpolating path)."""
    process = PROCESSES[proc_name]
    t, x0, eps = batch(process, seed=5)
    x_t = 3 * x0 + eps  # far outside [-1, 1] at small t, so the clamp is active
    d = Denoiser(EpsNet(process, name), name, process, "fixed_small", clip_x0=True)
    raw = Denoiser(EpsNet(process, name), name, process, "fixed_small")(x_t, t)
    pred = d(x_t, t)
    torch.testing.assert_close(pred.x0, raw.x0.clamp(-1, 1), rtol=0, atol=0)
    assert bool((raw.x0.abs() > 1).any())
    alpha, sigma = process.alpha_sigma_at(t, x_t)
    torch.testing.assert_close(alpha * pred.x0 + sigma * pred.eps, x_t, rtol=1e-12, atol=1e-12)
    by_index = d(x_t, t.long())
    torch.testing.assert_close(by_index.x0, pred.x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(by_index.eps, pred.eps, rtol=1e-9, atol=1e-9)
    _, _, log_var = d.reverse(x_t, t.long())
    assert log_var.shape == (len(t), 1)  # a fixed Sigma broadcasts per example


@pytest.mark.parametrize("proc_name, name", CASES)
def test_scale_is_derivative_of_target_wrt_eps(proc_name, name):
    """k(t) = |d target / d eps| at fixed x_t (x0 = (x_t - sigma eps)/alpha moves with eps)."""
    process = PROCESSES[proc_name]
    param = PARAMETERIZATIONS[name]
    T = process.T
    t = torch.arange(T, dtype=F64)
    x_t = torch.full((T, 1), 0.37, dtype=F64)
    c = param.coefs(process, t, x_t)
    eps0, h = 0.3, 1e-3

    def target(e):
        eps = torch.full_like(x_t, e)
        x0 = (x_t - c["sigma"] * eps) / c["alpha"]
        return param.target(x0, eps, x_t, c)[:, 0]

    deriv = (target(eps0 + h) - target(eps0 - h)) / (2 * h)
    scale = param.scale(process)
    assert scale.shape == (T,) and scale.dtype == F64
    # target is affine in eps, so the central difference is exact up to rounding of
    # values of size |x0| ~ |x_t| / alpha (1e4 at cosine's end) divided by 2h.
    x0_size = (0.37 + process.sigma * 1.3) / process.alpha
    tol = 1e-6 * (1 + scale) + 1e-13 * x0_size * scale.clamp(min=1) / h
    assert bool(((deriv.abs() - scale).abs() <= tol).all()), (deriv.abs() - scale).abs().max()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_native_weights_are_design_vp_forms(schedule):
    process = PROCESSES[f"vp_{schedule}"]
    snr, beta, ab = process.snr, process.beta, process.alpha_bar
    expected = {
        "eps": torch.ones_like(snr),
        "x0": 1 / snr,
        "v": 1 + 1 / snr,
        "score": 1 + snr,
        "mu": beta**2 / ((1 - beta) * (1 - ab)),
        "edm": (1 / snr + 0.25) / 0.25,  # EDM's lambda(s) s^2, s^2 = 1/snr, sigma_data = 0.5
    }
    for name in NAMES:
        w = weight_table("native", process, PARAMETERIZATIONS[name])
        assert bool(torch.isfinite(w).all()), name
        torch.testing.assert_close(w, expected[name], rtol=1e-8, atol=0, msg=name)


def test_native_weights_general_forms_on_ve():
    process = PROCESSES["ve"]
    a, s, c0 = process.alpha, process.sigma, process.posterior_coef_x0
    expected = {"eps": torch.ones_like(s), "x0": s**2 / a**2, "score": 1 / s**2, "mu": c0**2 * s**2 / a**2}
    for name, exp in expected.items():
        torch.testing.assert_close(weight_table("native", process, PARAMETERIZATIONS[name]), exp,
                                   rtol=1e-10, atol=0, msg=name)


def test_v_refused_on_ve():
    ve = PROCESSES["ve"]
    with pytest.raises(ValueError, match=r"'v'.*ve"):
        get_parameterization("v", ve)
    with pytest.raises(ValueError, match="not defined"):
        Denoiser(nn.Identity(), "v", ve)
    with pytest.raises(ValueError, match="not defined"):
        Objective(ve, "v", "eps")
    # every other parameterization is accepted on VE, and v on VP
    for name in ("eps", "x0", "mu", "score"):
        assert get_parameterization(name, ve).name == name
    assert get_parameterization("v", PROCESSES["vp_linear"]).name == "v"


def test_unknown_parameterization_refused():
    with pytest.raises(ValueError, match="unknown parameterization 'epsilon'"):
        get_parameterization("epsilon")
    with pytest.raises(ValueError, match="unknown parameterization"):
        Denoiser(nn.Identity(), "x_0", PROCESSES["vp_linear"])
    with pytest.raises(ValueError, match="unknown parameterization"):
        Objective(PROCESSES["vp_linear"], "velocity", "eps")
