"""Timestep samplers (diffusion/timesteps.py) and training helpers (diffusion/training.py)."""

import math

import pytest
import torch
from torch import nn

torch.set_num_threads(1)

from diffusion import Objective  # noqa: E402
from diffusion.nets import MLP  # noqa: E402
from diffusion.process import ve_process, vp_process  # noqa: E402
from diffusion.timesteps import (TIMESTEP_SAMPLERS, ImportanceSampler, LogNormalSampler, TimestepOptions,  # noqa: E402
                                 UniformSampler, timestep_sampler)
from diffusion.training import EMA, training_step, warmup_lr  # noqa: E402

F64 = torch.float64


def filled_sampler(T=20, history=10, uniform_prob=1e-3, seed=0):
    """An ImportanceSampler whose history holds a fixed loss table L_t (every slot = L_t)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.rand(T, generator=g, dtype=F64) * 3 + 0.05
    table[3] = 20.0  # one dominant step, so p is far from uniform
    sampler = ImportanceSampler(T, history, uniform_prob)
    for _ in range(history):
        sampler.update(torch.arange(T), table)
    return sampler, table


# ----- timestep samplers ---------------------------------------------------------------------------
def test_uniform_sampler():
    s = UniformSampler(7)
    torch.testing.assert_close(s.probabilities(), torch.full((7,), 1 / 7, dtype=F64))
    t, w = s.sample(500, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 6 and len(set(t.tolist())) == 7
    assert w.dtype == torch.float32 and bool((w == 1).all())
    assert set(TIMESTEP_SAMPLERS) == {"uniform", "importance", "lognormal"}


def test_timestep_sampler_builds_each_by_name_with_its_options():
    process = vp_process("linear", 50)
    options = TimestepOptions(lognormal_mean=-0.5, lognormal_std=0.3, history=4, uniform_prob=0.01)
    built = {name: timestep_sampler(name, process, options) for name in TIMESTEP_SAMPLERS}
    assert type(built["uniform"]) is UniformSampler and built["uniform"].T == 50
    assert (built["importance"].history, built["importance"].uniform_prob) == (4, 0.01)
    assert (built["lognormal"].mean, built["lognormal"].std) == (-0.5, 0.3)
    with pytest.raises(ValueError, match="unknown timestep sampler 'beta'"):
        timestep_sampler("beta", process)


def test_lognormal_maps_log_sigma_to_the_nearest_t():
    """EDM's ln(sigma/alpha) ~ N(P_mean, P_std^2) on a discrete process: a value on the grid maps
    to its own t, a value between two levels to the nearer (in t, by interpolation), values
    beyond the range to the first or last t; weights are 1 (no reweighting)."""
    process = vp_process("cosine", 200)
    s = LogNormalSampler(process)
    grid = -0.5 * process.log_snr.double()
    assert s.to_t(grid).tolist() == list(range(200))
    between = grid[:-1] + torch.tensor([0.3, 0.7]).double().repeat(100)[:199] * grid.diff()
    assert s.to_t(between).tolist() == [k + (f > 0.5) for k, f in zip(range(199), [0.3, 0.7] * 100)]
    assert s.to_t(torch.tensor([-50.0, 50.0], dtype=F64)).tolist() == [0, 199]
    t, w = s.sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and w.dtype == torch.float32 and bool((w == 1).all())


@pytest.mark.parametrize("process", [vp_process("linear", 1000), ve_process(1000, 0.002, 80.0)],
                         ids=["vp_linear", "ve_edm_range"])
def test_lognormal_draws_follow_its_probabilities(process):
    """The empirical distribution of t matches probabilities() (the normal mass between the
    midpoints that round to each t; mass beyond the range on the ends); where the process spans
    EDM's distribution (VE, sigma 0.002..80) the drawn ln(sigma/alpha) have its mean and std."""
    s = LogNormalSampler(process, mean=-1.2, std=1.2)
    p = s.probabilities()
    assert p.dtype == F64 and p.sum().item() == pytest.approx(1.0, abs=1e-12) and bool((p >= 0).all())
    n = 400_000
    t, _ = s.sample(n, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(t, minlength=process.T).double()
    assert (counts / n - p).abs().max().item() < 5 * math.sqrt(p.max().item() / n)
    if process.kind == "ve":
        log_s = (-0.5 * process.log_snr.double())[t]
        assert log_s.mean().item() == pytest.approx(-1.2, abs=0.01)
        assert log_s.std().item() == pytest.approx(1.2, abs=0.01)
    else:  # VP linear starts at ln(sigma/alpha) = -4.6: t = 0 takes the mass below its upper midpoint
        midpoint = (s.log_s[0] + s.log_s[1]).item() / 2
        assert p[0].item() == pytest.approx(0.5 * (1 + math.erf((midpoint + 1.2) / (1.2 * math.sqrt(2)))), rel=1e-9)


def test_importance_uniform_until_history_filled():
    T, history = 12, 10
    s = ImportanceSampler(T, history)
    uniform = torch.full((T,), 1 / T, dtype=F64)
    torch.testing.assert_close(s.probabilities(), uniform)
    losses = torch.linspace(0.1, 5, T, dtype=F64)
    for k in range(history):
        # every step but the last is full; the last one lags by one entry
        t = torch.arange(T) if k < history - 1 else torch.arange(T - 1)
        s.update(t, losses[t])
        torch.testing.assert_close(s.probabilities(), uniform)
    s.update(torch.tensor([T - 1]), losses[-1:])
    p = s.probabilities()
    assert not torch.allclose(p, uniform)
    # p ∝ sqrt(E[L^2]) (here = L) mixed with the uniform floor
    expected = losses / losses.sum() * (1 - 1e-3) + 1e-3 / T
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=0)


def test_importance_history_is_a_ring_buffer():
    s = ImportanceSampler(2, history=3)
    for v in (1.0, 2.0, 3.0, 4.0, 5.0):
        s.update(torch.tensor([0, 1]), torch.tensor([v, 10 * v]))
    assert sorted(s.losses[0].tolist()) == [3.0, 4.0, 5.0]
    assert s.counts.tolist() == [5, 5]
    rms = torch.tensor([math.sqrt((9 + 16 + 25) / 3), 10 * math.sqrt((9 + 16 + 25) / 3)], dtype=F64)
    torch.testing.assert_close(s.probabilities(), rms / rms.sum() * (1 - 1e-3) + 1e-3 / 2)
    # state round trip
    s2 = ImportanceSampler(2, history=3)
    s2.load_state_dict(s.state_dict())
    torch.testing.assert_close(s2.probabilities(), s.probabilities())


@pytest.mark.parametrize("uniform_prob", [1e-3, 0.2])
def test_importance_probabilities_valid(uniform_prob):
    s, table = filled_sampler(uniform_prob=uniform_prob)
    p = s.probabilities()
    assert p.dtype == F64
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert bool((p >= uniform_prob / s.T - 1e-15).all())
    assert int(p.argmax()) == 3
    # a zero-loss step still keeps the floor
    s.update(torch.full((10,), 5), torch.zeros(10))
    p = s.probabilities()
    assert p[5].item() == pytest.approx(uniform_prob / s.T, rel=1e-12)


def test_importance_weighted_loss_is_unbiased():
    """E_{t~p}[w_t L_t] with w = 1/(T p_t) is the uniform-t mean of L (Monte Carlo)."""
    s, table = filled_sampler(uniform_prob=0.05)
    n = 200_000
    t, w = s.sample(n, generator=torch.Generator().manual_seed(1))
    p = s.probabilities()
    torch.testing.assert_close(w.double(), 1 / (s.T * p[t]), rtol=1e-6, atol=0)
    est = w.double() * table[t]
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - table.mean().item()) <= 4 * se, (est.mean().item(), table.mean().item(), se)
    # and the importance sampling visits t in proportion to p
    freq = torch.bincount(t, minlength=s.T).double() / n
    assert bool(((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-4).all())


# ----- EMA -------------------------------------------------------------------------------------------
def small_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def test_ema_warmup_decay_sequence():
    model = small_model()
    ema = EMA(model, decay=0.9)
    decays = []
    for _ in range(100):
        decays.append(ema.current_decay())
        ema.update(model)
    expected = [min(0.9, (1 + n) / (10 + n)) for n in range(100)]
    assert decays == pytest.approx(expected, rel=0, abs=1e-15)
    assert decays[:3] == pytest.approx([0.1, 2 / 11, 3 / 12])
    assert decays[79] < 0.9 and decays[80:] == [0.9] * 20  # capped once (1 + n)/(10 + n) reaches it
    assert EMA(model, decay=0.9, warmup=False).current_decay() == 0.9


def test_ema_tracks_the_recursion():
    model = small_model()
    ema = EMA(model, decay=0.95)
    ref = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            model[1].running_mean.add_(1.0)
        d = min(0.95, (1 + n) / (10 + n))
        ema.update(model)
        ref = [d * r + (1 - d) * p.detach() for r, p in zip(ref, model.parameters())]
    for r, p in zip(ref, ema.model.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-12)
    # buffers are copied, not averaged
    torch.testing.assert_close(ema.model[1].running_mean, model[1].running_mean)
    assert ema.num_updates == 30
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_of_constant_model_stays_constant():
    model = small_model(1)
    ema = EMA(model, decay=0.9999)
    for _ in range(50):
        ema.update(model)
    for p_ema, p in zip(ema.model.parameters(), model.parameters()):
        assert torch.equal(p_ema, p.detach())


def test_ema_state_round_trip():
    model = small_model(2)
    ema = EMA(model, decay=0.99)
    for _ in range(7):
        ema.update(small_model(3))
    other = EMA(small_model(4), decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 7 and other.current_decay() == ema.current_decay()
    for a, b in zip(other.model.state_dict().values(), ema.model.state_dict().values()):
        assert torch.equal(a, b)


# ----- learning rate -----------------------------------------------------------------------------------
def test_warmup_lr():
    assert warmup_lr(0, 1e-3, 100) == pytest.approx(1e-5)
    assert warmup_lr(49, 1e-3, 100) == pytest.approx(5e-4)
    assert warmup_lr(99, 1e-3, 100) == pytest.approx(1e-3)
    assert warmup_lr(5000, 1e-3, 100) == 1e-3
    assert warmup_lr(0, 2e-4, 0) == 2e-4
    lrs = [warmup_lr(s, 1.0, 10) for s in range(15)]
    assert all(b >= a for a, b in zip(lrs, lrs[1:])) and max(lrs) == 1.0


# ----- training_step -------------------------------------------------------------------------------------
PROCESS = vp_process("linear", 1000)
DATA_MEAN = torch.tensor([1.0, -0.5])
DATA_STD = torch.tensor([0.3, 0.6])


def train(seed=0, steps=40, sampler_cls=UniformSampler, weighting="eps", parameterization="eps"):
    torch.manual_seed(seed)
    net = MLP((2,), hidden=32, num_blocks=1)
    objective = Objective(PROCESS, parameterization, weighting)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    ema = EMA(net, decay=0.99)
    sampler = sampler_cls(PROCESS.T)
    g = torch.Generator().manual_seed(seed + 100)
    data_g = torch.Generator().manual_seed(seed + 200)
    losses = []
    for step in range(steps):
        x0 = DATA_MEAN + DATA_STD * torch.randn(128, 2, generator=data_g)
        loss, t, terms = training_step(net, objective, opt, x0, sampler, generator=g, ema=ema,
                                       lr=warmup_lr(step, 3e-3, 5))
        assert not loss.requires_grad and t.shape == (128,) and terms["loss"].shape == (128,)
        losses.append(loss.item())
    return net, ema, losses, opt


def held_out_loss(net, parameterization="eps", weighting="eps"):
    g = torch.Generator().manual_seed(999)
    n = 4000
    x0 = DATA_MEAN + DATA_STD * torch.randn(n, 2, generator=g)
    t = torch.randint(0, PROCESS.T, (n,), generator=g)
    eps = torch.randn(n, 2, generator=g)
    with torch.no_grad():
        return Objective(PROCESS, parameterization, weighting)(net, x0, t, eps)["loss"].mean().item()


def test_training_step_decreases_loss():
    torch.manual_seed(0)
    before = held_out_loss(MLP((2,), hidden=32, num_blocks=1))
    net, ema, losses, opt = train(steps=40)
    after = held_out_loss(net)
    # The zero-initialized output layer predicts eps_hat = 0, so the eps-MSE starts at E|eps|^2 = 1.
    assert before == pytest.approx(1.0, abs=0.05)
    assert after < 0.8 * before, (before, after)
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3)
    assert ema.num_updates == 40
    # the EMA copy moved away from the initial weights too
    assert held_out_loss(ema.model) < before


def test_training_step_deterministic_given_seed():
    net_a, _, losses_a, _ = train(seed=1, steps=10, sampler_cls=ImportanceSampler)
    net_b, _, losses_b, _ = train(seed=1, steps=10, sampler_cls=ImportanceSampler)
    net_c, _, losses_c, _ = train(seed=2, steps=10, sampler_cls=ImportanceSampler)
    assert losses_a == losses_b
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)
    assert losses_a != losses_c


def test_training_step_uses_importance_weights_and_updates_history():
    torch.manual_seed(0)
    net = MLP((2,), hidden=32, num_blocks=1)
    objective = Objective(PROCESS, "eps", "vlb")
    sampler, _ = filled_sampler(T=PROCESS.T, uniform_prob=0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    x0 = torch.randn(64, 2)
    counts = sampler.counts.clone()
    g = torch.Generator().manual_seed(5)
    loss, t, terms = training_step(net, objective, opt, x0, sampler, generator=g, grad_clip=None)
    assert bool((sampler.counts[t] > counts[t]).all())  # the history was updated
    # the returned loss is mean(weight * L) with the weights of the sampler before the update
    g = torch.Generator().manual_seed(5)
    ref_sampler, _ = filled_sampler(T=PROCESS.T, uniform_prob=0.1)
    t_ref, w_ref = ref_sampler.sample(64, generator=g)
    assert torch.equal(t, t_ref)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        ref = objective(net, x0, t_ref, eps)["loss"]
    torch.testing.assert_close(loss, (ref * w_ref).mean())
