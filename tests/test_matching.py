"""Tests of flowscope.matching: ODE integration against closed-form flows, the model, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from flowscope.base import standard_normal_log_prob
from flowscope.matching import (
    COUPLINGS,
    DEFAULT_CONDITIONAL_TIME_ALPHA,
    DEFAULT_TIME_ALPHA,
    SOLVERS,
    BetaTimes,
    FlowMatching,
    divergence_of,
    gaussian_velocity,
    integrate,
    sample_times,
    time_grid,
)
from flowscope.matching.couplings import drawn_couplings

F64 = torch.float64


class ConstantField(nn.Module):
    """v(y, t) = c; counts its calls and records the times it is called at."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c
        self.times: list[float] = []

    def forward(self, y, t, labels=None):
        self.times.append(float(torch.as_tensor(t).reshape(-1)[0]))
        return self.c.to(y.dtype).expand_as(y) + 0 * y  # 0 * y keeps y in the graph


class LinearField(nn.Module):
    """v(y, t) = a y, whose flow is y_t = y_0 e^{a t}."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, y, t, labels=None):
        return self.a * y


class TimeLinearField(nn.Module):
    """v(y, t) = t y."""

    def forward(self, y, t, labels=None):
        t = torch.as_tensor(t, dtype=y.dtype).reshape(-1, 1)
        return t * y


def perturb(module: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def model_with(
    field: nn.Module, d: int = 2, monkeypatch=None, alpha: float = DEFAULT_TIME_ALPHA
) -> FlowMatching:
    """A model whose velocity is exactly ``field``: without the Gaussian skip, which
    :meth:`FlowMatching.velocity` would add on top of it."""
    fm = FlowMatching(
        features=d, hidden=4, layers=2, times=BetaTimes(alpha), gaussian_skip=False
    ).double()
    if monkeypatch is not None:
        monkeypatch.setattr(fm, "field", field)
    else:
        fm.field = field
    return fm


def small_model(
    d: int = 2, num_classes=None, scale: float = 0.3, seed: int = 0, gaussian_skip: bool = True
) -> FlowMatching:
    torch.manual_seed(seed)
    fm = FlowMatching(
        features=d, num_classes=num_classes, hidden=16, layers=3, gaussian_skip=gaussian_skip
    ).double()
    return perturb(fm, scale, seed)


def set_standardization(fm: FlowMatching, loc, scale) -> None:
    with torch.no_grad():
        fm.standardization.loc.copy_(torch.as_tensor(loc, dtype=F64))
        fm.standardization.scale.copy_(torch.as_tensor(scale, dtype=F64))


def rand(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# Per solver: step for sample/encode, steps for log_prob, relative tolerance of the states
# and absolute tolerance of log_prob (nats). Euler is first order, midpoint second, rk4
# fourth; dopri5 is adaptive with rtol = atol = 1e-5.
SETTINGS = {
    "euler": dict(dt=1e-3, steps=1000, rtol=1e-3, lp_atol=1e-2),
    "midpoint": dict(dt=1e-2, steps=100, rtol=1e-4, lp_atol=1e-3),
    "rk4": dict(dt=0.05, steps=20, rtol=1e-6, lp_atol=1e-5),
    "dopri5": dict(dt=0.1, steps=10, rtol=1e-4, lp_atol=1e-3),
}


def test_every_solver_has_settings():
    assert set(SOLVERS) == set(SETTINGS)


# --- closed-form flows ----------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_constant_field_is_exact(solver, monkeypatch):
    # dy/dt = c: y_1 = y_0 + c; log p_1(x) = log N(x - c) (divergence 0).
    d = 3
    c = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    fm = model_with(ConstantField(c), d, monkeypatch)
    s = SETTINGS[solver]
    z = rand(50, d)
    x = fm(z, dt=s["dt"], solver=solver)
    assert torch.allclose(x, z + c, atol=1e-8)
    assert torch.allclose(fm.encode(x, dt=s["dt"], solver=solver), z, atol=1e-8)
    lp = fm.log_prob(x, solver=solver, steps=s["steps"])
    assert torch.allclose(lp, standard_normal_log_prob(z), atol=1e-8)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_field_matches_closed_form(solver, d, monkeypatch):
    # dy/dt = a y: y_1 = y_0 e^a, div v = D a, so log p_1(y) = log N(y e^{-a}) - D a in
    # standardized units; in data units minus sum(log scale) as well.
    a = 0.7
    fm = model_with(LinearField(a), d, monkeypatch)
    loc, scale = torch.linspace(-1, 2, d, dtype=F64), torch.linspace(0.5, 1.5, d, dtype=F64)
    set_standardization(fm, loc, scale)
    s = SETTINGS[solver]
    z = rand(50, d)
    x = fm(z, dt=s["dt"], solver=solver)
    x_exact = loc + scale * z * math.exp(a)
    assert torch.allclose(x, x_exact, rtol=s["rtol"], atol=s["rtol"])
    z_back = fm.encode(x_exact, dt=s["dt"], solver=solver)
    assert torch.allclose(z_back, z, rtol=s["rtol"], atol=s["rtol"])
    y = (x_exact - loc) / scale
    lp_std_exact = standard_normal_log_prob(y * math.exp(-a)) - d * a
    lp_std = fm.log_prob(x_exact, standardized=True, solver=solver, steps=s["steps"])
    lp = fm.log_prob(x_exact, solver=solver, steps=s["steps"])
    assert lp.shape == (50,)
    assert torch.allclose(lp_std, lp_std_exact, atol=s["lp_atol"], rtol=0)
    assert torch.allclose(lp, lp_std_exact - scale.log().sum(), atol=s["lp_atol"], rtol=0)


def test_euler_error_is_first_order(monkeypatch):
    # The tolerances above are not loose enough to hide a wrong solver: Euler's error on
    # y' = a y is ~ a^2 dt / 2 relative, and it halves when dt halves.
    a = 0.7
    fm = model_with(LinearField(a), 1, monkeypatch)
    z = torch.ones(1, 1, dtype=F64)
    errs = [(fm(z, dt=dt) / math.exp(a) - 1).abs().item() for dt in (0.02, 0.01)]
    assert errs[0] == pytest.approx(a * a * 0.02 / 2, rel=0.05)
    assert errs[0] / errs[1] == pytest.approx(2.0, rel=0.05)


# --- time grids and step counts ------------------------------------------------------------


def test_euler_with_dt_01_calls_the_field_exactly_10_times(monkeypatch):
    field = ConstantField(torch.tensor([1.0, 0.0], dtype=F64))
    fm = model_with(field, 2, monkeypatch)
    fm.sample(7, dt=0.1, generator=torch.Generator().manual_seed(0))
    assert len(field.times) == 10
    assert field.times == pytest.approx([k / 10 for k in range(10)])
    field.times.clear()
    fm.encode(torch.zeros(3, 2, dtype=F64), dt=0.1)
    assert len(field.times) == 10
    assert field.times == pytest.approx([1 - k / 10 for k in range(10)])


@pytest.mark.parametrize(("dt", "calls"), [(1e-3, 1000), (0.25, 4), (0.3, 4), (0.7, 2), (1.0, 1)])
def test_number_of_euler_steps(dt, calls, monkeypatch):
    c = torch.tensor([1.0, -2.0], dtype=F64)
    field = ConstantField(c)
    fm = model_with(field, 2, monkeypatch)
    z = rand(4, 2)
    x = fm(z, dt=dt)
    assert len(field.times) == calls
    assert torch.allclose(x, z + c, atol=1e-12)  # the steps add up to exactly 1


def test_time_grid():
    assert time_grid(0.25) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    g = time_grid(0.3)
    assert g == pytest.approx([0, 0.3, 0.6, 0.9, 1.0])
    assert g[-1] - g[-2] == pytest.approx(0.1)  # a shorter last step
    # Backwards, the grid is the forward one mirrored, so encode visits the same times.
    assert time_grid(0.3, 1.0, 0.0) == pytest.approx([1.0, 0.9, 0.6, 0.3, 0.0])
    g = time_grid(1e-3)
    assert len(g) == 1001 and g[0] == 0.0 and g[-1] == 1.0
    assert len(time_grid(1 / 3)) == 4
    assert time_grid(0.5, times=[0.3]) == pytest.approx([0, 0.3, 0.5, 1.0])


@pytest.mark.parametrize("dt", [0.0, -0.1, 1.5, math.nan, math.inf])
def test_bad_dt_raises(dt):
    with pytest.raises(ValueError, match="dt"):
        time_grid(dt)
    fm = small_model()
    with pytest.raises(ValueError, match="dt"):
        fm.sample(3, dt=dt)
    with pytest.raises(ValueError, match="dt"):
        fm.encode(torch.zeros(3, 2, dtype=F64), dt=dt)


def test_unknown_solver_and_bad_times_raise():
    fm = small_model()
    with pytest.raises(ValueError, match="solver"):
        fm.sample(3, dt=0.5, solver="heun")
    with pytest.raises(ValueError, match="outside"):
        time_grid(0.1, times=[1.5])
    with pytest.raises(ValueError, match="solver"):
        integrate(lambda y, t: y, torch.zeros(1, 1), [0.0, 1.0], solver="nope")


# --- a small random model --------------------------------------------------------------------


@pytest.mark.parametrize("skip", [False, True])
def test_encode_of_decode_returns_the_input_and_error_shrinks_with_dt(skip):
    fm = small_model(scale=0.5, gaussian_skip=skip)
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    z = rand(200, 2)
    errs = []
    for dt in (0.1, 0.01, 0.001):
        back = fm.encode(fm(z, dt=dt), dt=dt)
        errs.append((back - z).abs().max().item())
    assert errs[2] < (2e-2 if skip else 1e-2)
    assert errs[0] > 5 * errs[1] > 25 * errs[2]  # first order: ~10x per 10x smaller dt
    back = fm.encode(fm(z, dt=0.02, solver="rk4"), dt=0.02, solver="rk4")
    assert torch.allclose(back, z, atol=1e-5)


def test_sample_is_forward_of_seeded_noise():
    fm = small_model()
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    a = fm.sample(30, dt=0.1, generator=torch.Generator().manual_seed(0))
    b = fm.sample(30, dt=0.1, generator=torch.Generator().manual_seed(0))
    c = fm.sample(30, dt=0.1, generator=torch.Generator().manual_seed(1))
    assert a.shape == (30, 2) and torch.equal(a, b) and not torch.equal(a, c)
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(a, fm(z, dt=0.1))


def test_density_integrates_to_one_on_a_grid():
    fm = small_model(scale=0.5)
    s = fm.sample(5000, dt=0.05, solver="rk4", generator=torch.Generator().manual_seed(0))
    lo, hi = s.min(0).values - 1.5, s.max(0).values + 1.5
    k = 160
    gx = torch.linspace(lo[0].item(), hi[0].item(), k, dtype=F64)
    gy = torch.linspace(lo[1].item(), hi[1].item(), k, dtype=F64)
    grid = torch.cartesian_prod(gx, gy)
    lp = fm.log_prob(grid, solver="rk4", steps=10)
    mass = lp.exp().sum().item() * (gx[1] - gx[0]).item() * (gy[1] - gy[0]).item()
    assert mass == pytest.approx(1.0, abs=0.02)
    # The model is not a plain Gaussian (else the divergence term would not be exercised).
    assert (lp - standard_normal_log_prob(grid)).abs().max() > 0.2


def test_divergence_exact_and_hutchinson_on_a_linear_map():
    # v = y A^T has divergence trace(A) everywhere; Rademacher probes eps give
    # eps^T A eps, unbiased with variance 2 * sum_{i != j} A_ij^2 (symmetrised).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=g, dtype=F64)
    y = torch.randn(20_000, 3, generator=g, dtype=F64).requires_grad_(True)
    exact = divergence_of(y @ a.T, y)
    assert torch.allclose(exact, torch.trace(a).expand(len(y)), atol=1e-12)
    eps = torch.randint(0, 2, y.shape, generator=g).to(F64) * 2 - 1
    est = divergence_of(y @ a.T, y, eps)
    sym = (a + a.T) / 2
    var = 2 * (sym**2).sum() - 2 * (sym.diagonal() ** 2).sum()
    assert est.var().item() == pytest.approx(var.item(), rel=0.1)
    assert abs(est.mean().item() - torch.trace(a).item()) < 5 * math.sqrt(var / len(y))


def test_hutchinson_log_prob_agrees_with_exact_in_expectation():
    fm = small_model(scale=0.5)
    x = rand(3, 2, seed=7)
    reps = 2000
    exact = fm.log_prob(x, solver="rk4", steps=8)
    est = fm.log_prob(
        x.repeat(reps, 1),  # every row gets its own probe
        solver="rk4",
        steps=8,
        divergence="hutchinson",
        generator=torch.Generator().manual_seed(0),
    ).reshape(reps, 3)
    se = est.std(0) / math.sqrt(reps)
    assert (se > 0).all()  # really an estimate, not the exact value
    assert ((est.mean(0) - exact).abs() < 5 * se + 1e-9).all()
    with pytest.raises(ValueError, match="divergence"):
        fm.log_prob(x, divergence="trace")


def test_averaging_hutchinson_probes_shrinks_the_error_as_one_over_sqrt_k():
    fm = small_model(scale=0.5)
    x = rand(1, 2, seed=7).repeat(400, 1)  # one point, 400 independent estimates
    exact = fm.log_prob(x[:1], solver="rk4", steps=8)
    err = {}
    for k in (1, 16):
        est = fm.log_prob(
            x,
            solver="rk4",
            steps=8,
            divergence="hutchinson",
            probes=k,
            generator=torch.Generator().manual_seed(k),
        )
        err[k] = (est - exact).pow(2).mean().sqrt().item()
    assert err[1] > 0 and err[16] == pytest.approx(err[1] / 4, rel=0.3)
    with pytest.raises(ValueError, match="probes applies to divergence='hutchinson'"):
        fm.log_prob(x[:1], probes=4)


@pytest.mark.parametrize("alpha", [1.0, DEFAULT_TIME_ALPHA])
def test_loss_is_eq16_with_t0_noise_and_t1_data(alpha, monkeypatch):
    # With v = t y, and y = t x1 + (1 - t) x0, the residual v - (x1 - x0) is
    # (t^2 - 1) x1 + (1 + t - t^2) x0. Over x0 ~ N(0, I) and t ~ Beta(a, 1), whose moments
    # are E t^k = a / (a + k), its mean square is c1 |x1|^2 + c0 D with the constants
    # below (8/15 and 41/30 for the study's U[0, 1], a = 1). Swapping the time convention
    # gives other numbers.
    def m(k):
        return alpha / (alpha + k)

    c1 = m(4) - 2 * m(2) + 1
    c0 = 1 + 2 * m(1) - m(2) - 2 * m(3) + m(4)
    d = 2
    fm = model_with(TimeLinearField(), d, monkeypatch, alpha=alpha)
    x1 = 0.5 + rand(100_000, d, seed=3)
    loss = fm.loss(x1, generator=torch.Generator().manual_seed(0)).item()
    m2 = (x1**2).sum(1).mean().item()
    assert loss == pytest.approx(c1 * m2 + c0 * d, abs=0.05)
    # The per-epoch validation loss is the same objective, with the same times.
    val = fm.validation_terms(x1, None, torch.Generator().manual_seed(2))["loss"]
    assert val == pytest.approx(c1 * m2 + c0 * d, abs=0.05)
    # The generator seeds the noise and times: same generator, same loss.
    again = fm.loss(x1[:100], generator=torch.Generator().manual_seed(1))
    assert again == fm.loss(x1[:100], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("alpha", [1.0, 2.5, DEFAULT_TIME_ALPHA])
def test_training_times_follow_beta_alpha_1(alpha):
    t = sample_times(20_000, alpha, torch.Generator().manual_seed(0), F64)
    assert t.shape == (20_000, 1)
    assert 0 <= t.min() and t.max() <= 1
    # Beta(a, 1) has the CDF t^a.
    p = stats.kstest(t.squeeze(1).numpy(), lambda v: v.clip(0, 1) ** alpha).pvalue
    assert p > 1e-3
    # The study's U[0, 1] draws are returned untouched.
    if alpha == 1.0:
        u = torch.rand(20_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
        assert torch.equal(t, u)


def test_gaussian_velocity_is_the_exact_field_of_gaussian_data():
    # For x0, x1 ~ N(0, I), E[x1 - x0 | y] (Eq. 13) is linear in y: its coefficient is the
    # least-squares slope of x1 - x0 on y.
    gen = torch.Generator().manual_seed(0)
    for t in (0.1, 0.5, 0.8):
        x0, x1 = (torch.randn(400_000, 2, generator=gen, dtype=F64) for _ in range(2))
        y = t * x1 + (1 - t) * x0
        slope = float(((x1 - x0) * y).sum() / (y * y).sum())
        one = torch.ones(1, 1, dtype=F64)
        assert float(gaussian_velocity(one, t)) == pytest.approx(slope, abs=0.01)
        assert float(gaussian_velocity(one, torch.full((1, 1), t, dtype=F64))) == float(
            gaussian_velocity(one, t)
        )


@pytest.mark.parametrize("solver", ["midpoint", "rk4"])
def test_a_zero_network_with_the_gaussian_skip_carries_the_noise_to_itself(solver):
    # v = (2t - 1) / s(t) y with s(t) = t^2 + (1 - t)^2 = d/dt log sqrt(s): y_t = y_0 sqrt(s(t)).
    fm = FlowMatching(hidden=8, layers=2).double()
    assert fm.gaussian_skip and fm.config()["gaussian_skip"] is True
    with torch.no_grad():
        fm.field.theta.zero_()
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    z = rand(50, 2)
    times = [0.0, 0.25, 0.5, 1.0]
    path = fm.trajectory(z, dt=0.01, times=times, solver=solver, units="standardized")
    tol = dict(rtol=1e-5, atol=1e-6) if solver == "midpoint" else dict(rtol=1e-9, atol=1e-10)
    for k, t in enumerate(times):
        torch.testing.assert_close(path[k], z * math.sqrt(t * t + (1 - t) ** 2), **tol)
    x = fm(z, dt=0.01, solver=solver)
    torch.testing.assert_close(
        x, torch.tensor([2.0, -0.4], dtype=F64) + torch.tensor([1.6, 0.85], dtype=F64) * z, **tol
    )
    # The divergence 2 (2t - 1) / s(t) integrates to 2 log sqrt(s) |_0^1 = 0.
    lp = fm.log_prob(x, standardized=True, solver=solver, steps=100)
    torch.testing.assert_close(lp, standard_normal_log_prob(z), **tol)


@pytest.mark.parametrize("solver", SOLVERS)
def test_constant_network_with_the_gaussian_skip_matches_closed_form(solver):
    # v = c + g(t) y with g = (2t - 1) / s(t), s(t) = t^2 + (1 - t)^2, g = d/dt log sqrt(s):
    # y_t = sqrt(s(t)) (y_0 + c J(t)), J(t) = int_0^t du / sqrt(s(u))
    # = (asinh(2t - 1) + asinh(1)) / sqrt(2). The divergence D g(t) integrates to 0 over
    # [0, 1], so log p_1(x) = log N(x - c J(1)) in standardized units.
    fm = FlowMatching(hidden=8, layers=2).double()
    c = torch.tensor([0.3, -0.7], dtype=F64)
    w, b = fm.field.pairs()[-1]
    with torch.no_grad():
        w.zero_()
        b.copy_(c)
    loc, scale = torch.tensor([2.0, -0.4], dtype=F64), torch.tensor([1.6, 0.85], dtype=F64)
    set_standardization(fm, loc, scale)

    def exact(z, t):
        j = (math.asinh(2 * t - 1) + math.asinh(1)) / math.sqrt(2)
        return math.sqrt(t * t + (1 - t) ** 2) * (z + c * j)

    st = SETTINGS[solver]
    # Euler's error here is ~ dt |y''| / 2 ~ 2e-3 (g changes sign along the path).
    r, lp_tol = (5e-3, 5e-2) if solver == "euler" else (st["rtol"], st["lp_atol"])
    tol = dict(rtol=r, atol=r)
    z = rand(50, 2)
    path = fm.trajectory(z, dt=st["dt"], times=[0.5, 1.0], solver=solver, units="standardized")
    torch.testing.assert_close(path[0], exact(z, 0.5), **tol)
    torch.testing.assert_close(path[1], exact(z, 1.0), **tol)
    x = loc + scale * exact(z, 1.0)
    torch.testing.assert_close(
        (fm(z, dt=st["dt"], solver=solver) - loc) / scale, exact(z, 1), **tol
    )
    torch.testing.assert_close(fm.encode(x, dt=st["dt"], solver=solver), z, **tol)
    lp = fm.log_prob(x, standardized=True, solver=solver, steps=st["steps"])
    torch.testing.assert_close(lp, standard_normal_log_prob(z), rtol=0, atol=lp_tol)
    # Without the skip the same network is the constant field: x = z + c.
    plain = FlowMatching(hidden=8, layers=2, gaussian_skip=False).double()
    plain.load_state_dict(fm.state_dict())
    assert (plain.encode(x, dt=st["dt"], solver=solver) - z).abs().max() > 0.05


def test_divergence_of_the_gaussian_skip_is_d_times_g():
    fm = FlowMatching(features=3, hidden=8, layers=2).double()
    with torch.no_grad():
        fm.field.theta.zero_()
    y = rand(20, 3).requires_grad_(True)
    for t in (0.0, 0.3, 0.5, 0.9, 1.0):
        div = divergence_of(fm.velocity(y, t), y)
        g = (2 * t - 1) / (t * t + (1 - t) ** 2)
        torch.testing.assert_close(div, torch.full((20,), 3 * g, dtype=F64))


def test_gaussian_velocity_rejects_a_t_that_would_broadcast_across_coordinates():
    y = rand(2, 2)
    with pytest.raises(ValueError, match=r"t must be a number or \(N, 1\)"):
        gaussian_velocity(y, torch.full((2,), 0.3, dtype=F64))
    a = gaussian_velocity(y, torch.full((2, 1), 0.3, dtype=F64))
    torch.testing.assert_close(a, gaussian_velocity(y, 0.3))


def test_gaussian_skip_is_recorded_and_checked():
    fm = FlowMatching(gaussian_skip=False)
    assert fm.config()["gaussian_skip"] is False
    assert not fm.gaussian_skip
    with pytest.raises(AttributeError):
        fm.gaussian_skip = True  # part of the recorded configuration: set it when building
    # The skip belongs to the model, not to the network: fm.field is the plain MLP in both
    # models, and the velocity (and what the samplers integrate) adds the skip on top of it.
    torch.manual_seed(0)
    skip = FlowMatching(hidden=8, layers=2).double()
    plain = FlowMatching(hidden=8, layers=2, gaussian_skip=False).double()
    plain.load_state_dict(skip.state_dict())
    y = rand(20, 2)
    for t in (0.1, 0.5, 0.9):
        net = skip.field(y, t)
        torch.testing.assert_close(plain.field(y, t), net, rtol=0, atol=0)
        torch.testing.assert_close(plain.velocity(y, t), net, rtol=0, atol=0)
        torch.testing.assert_close(skip.velocity(y, t), net + gaussian_velocity(y, t))
        t0 = torch.tensor(t, dtype=F64)
        torch.testing.assert_close(plain.ode_velocity()(y, t0), net)
        torch.testing.assert_close(skip.ode_velocity()(y, t0), net + gaussian_velocity(y, t))
    for bad in (1, "yes", 0.0):
        with pytest.raises(ValueError, match="gaussian_skip must be True, False or None"):
            FlowMatching(gaussian_skip=bad)


@pytest.mark.parametrize("name", drawn_couplings())
@pytest.mark.parametrize("classes", [None, 3])
def test_the_skip_and_the_times_default_to_the_couplings_own(name, classes):
    coupling = COUPLINGS.get(name)
    if coupling.needs_labels and classes is None:
        return
    fm = FlowMatching(num_classes=classes, coupling=name, hidden=8, layers=2)
    assert fm.gaussian_skip is coupling.gaussian_skip_exact
    assert fm.config()["times"] == coupling().default_times(classes is not None)
    # Given explicitly, the skip and the times are the caller's, whatever the coupling.
    fm = FlowMatching(num_classes=classes, coupling=name, gaussian_skip=True, times="uniform")
    assert fm.gaussian_skip is True and fm.config()["times"] == {"name": "uniform"}


def test_the_gaussian_skip_is_exact_only_for_independent_pairs():
    # For N(0, I) data the skip alone is the marginal field of independent pairs: the
    # regression target's mean given x_t. Under OT the pairs are (nearly) x1 = x0, the
    # target is ~0, and the skip would be wrong by -g(t) x_t.
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(512, 2, generator=g, dtype=F64)
    for name in ("independent", "ot"):
        fm = FlowMatching(coupling=name, hidden=8, layers=2).double()
        b = fm.training_batch(x1, generator=g)
        rate = torch.tensor([fm.path.gaussian_rate(float(t)) for t in b.t[:, 0]], dtype=F64)
        # The least-squares slope of what the skip leaves on x_t, over t > 0.6 (where
        # g(t) > 0.5: the skip's rate is odd about t = 1/2).
        mid = (b.t > 0.6)[:, 0]
        slope = ((b.dx_t - rate[:, None] * b.x_t)[mid] * b.x_t[mid]).sum() / (b.x_t[mid] ** 2).sum()
        skip_fits = abs(float(slope)) < 0.15
        assert skip_fits is COUPLINGS.get(name).gaussian_skip_exact


def test_default_times_are_recorded_and_bad_alphas_raise():
    fm = FlowMatching()
    assert fm.times.alpha == DEFAULT_TIME_ALPHA and fm.times.describe() == "Beta(5, 1)"
    assert fm.config()["times"] == {"name": "beta", "alpha": DEFAULT_TIME_ALPHA}
    cfm = FlowMatching(num_classes=3)
    assert (
        cfm.times.alpha == DEFAULT_CONDITIONAL_TIME_ALPHA and cfm.times.describe() == "Beta(7, 1)"
    )
    assert cfm.config()["times"] == {"name": "beta", "alpha": DEFAULT_CONDITIONAL_TIME_ALPHA}
    assert DEFAULT_CONDITIONAL_TIME_ALPHA != DEFAULT_TIME_ALPHA
    assert FlowMatching(num_classes=3, times=None).times == cfm.times
    # The recorded configuration is a copy: changing it does not change the model.
    fm.config()["times"]["alpha"] = 1.0
    assert fm.config()["times"]["alpha"] == DEFAULT_TIME_ALPHA
    assert FlowMatching(times="uniform").config()["times"] == {"name": "uniform"}
    for good in (1, 2.5, np.float32(3), np.int64(4), torch.tensor(5.0)):
        for times in ({"name": "beta", "alpha": good}, BetaTimes(good)):
            built = FlowMatching(times=times)
            assert built.config()["times"] == {"name": "beta", "alpha": float(good)}
            assert type(built.times.alpha) is float
            assert type(built.config()["times"]["alpha"]) is float  # JSON-safe
    for bad in (0, -1.0, math.nan, math.inf, True, "5", torch.ones(2)):
        with pytest.raises(ValueError, match="alpha must be"):
            FlowMatching(times={"name": "beta", "alpha": bad})
        with pytest.raises(ValueError, match="alpha must be"):
            BetaTimes(bad)
        if not isinstance(bad, torch.Tensor):
            with pytest.raises(ValueError, match="alpha must be"):
                sample_times(4, bad)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            BetaTimes(bad)
    with pytest.raises(ValueError, match="n must be"):
        sample_times(0, 5.0)


@pytest.mark.parametrize("num_classes", [None, 5])
def test_every_parameter_gets_a_gradient(num_classes):
    fm = small_model(num_classes=num_classes)
    labels = None if num_classes is None else torch.arange(64) % 5
    fm.loss(rand(64, 2), labels).backward()
    for name, p in fm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_save_load_round_trip():
    fm = small_model(num_classes=5)
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    again = FlowMatching(**fm.config()).double()
    again.load_state_dict(fm.state_dict())
    x = rand(10, 2)
    assert torch.equal(again.log_prob(x, 1, steps=4), fm.log_prob(x, 1, steps=4))


def test_standardize_defaults_to_class_for_a_conditional_model_and_bad_values_raise():
    assert FlowMatching().config()["standardize"] == "global"
    cfm = FlowMatching(num_classes=5)
    assert cfm.config()["standardize"] == "class" and cfm.standardization.loc.shape == (5, 2)
    assert FlowMatching(num_classes=5, standardize="global").standardization.loc.shape == (2,)
    with pytest.raises(ValueError, match="needs classes"):
        FlowMatching(standardize="class")
    with pytest.raises(ValueError, match="standardize must be one of"):
        FlowMatching(num_classes=5, standardize="per-class")


def test_class_standardization_is_a_gaussian_prior_per_class(monkeypatch):
    # With v = 0 the flow is the identity in standardized units: class k's model is
    # N(loc_k, diag(scale_k^2)) in data units, its samples z * scale_k + loc_k.
    fm = FlowMatching(num_classes=3, hidden=4, layers=2, gaussian_skip=False).double()
    monkeypatch.setattr(fm, "field", ConstantField(torch.zeros(2, dtype=F64)))
    loc = torch.tensor([[0.0, 0.0], [3.0, -1.0], [-2.0, 5.0]], dtype=F64)
    scale = torch.tensor([[1.0, 1.0], [0.5, 2.0], [3.0, 0.25]], dtype=F64)
    set_standardization(fm, loc, scale)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    z = rand(6, 2)
    x = fm(z, dt=0.5, labels=labels)
    assert torch.allclose(x, z * scale[labels] + loc[labels], atol=1e-12)
    assert torch.allclose(fm.encode(x, dt=0.5, labels=labels), z, atol=1e-12)
    prior = torch.distributions.Normal(loc[labels], scale[labels])
    lp = fm.log_prob(x, labels, steps=2)
    assert torch.allclose(lp, prior.log_prob(x).sum(dim=1), atol=1e-12)
    lp_std = fm.log_prob(x, labels, steps=2, standardized=True)
    assert torch.allclose(lp_std, standard_normal_log_prob(z), atol=1e-12)
    path = fm.trajectory(x, dt=0.5, labels=labels, inverse=True)
    assert torch.allclose(path[0], x, atol=1e-12) and torch.allclose(path[-1], x, atol=1e-12)
    # The same point under another class is another density: the labels are used.
    assert not torch.allclose(fm.log_prob(x, 0, steps=2), lp)
    with pytest.raises(ValueError, match="per class: pass the labels"):
        fm.standardization(x)


def test_class_standardized_density_integrates_to_one_per_class():
    fm = small_model(num_classes=2, scale=0.5)
    set_standardization(fm, [[2.0, -0.4], [-1.0, 1.0]], [[1.6, 0.85], [0.5, 0.7]])
    for k in range(2):
        s = fm.sample(4000, dt=0.05, labels=k, generator=torch.Generator().manual_seed(0))
        lo, hi = s.min(0).values - 1.0, s.max(0).values + 1.0
        gx = torch.linspace(lo[0].item(), hi[0].item(), 140, dtype=F64)
        gy = torch.linspace(lo[1].item(), hi[1].item(), 140, dtype=F64)
        lp = fm.log_prob(torch.cartesian_prod(gx, gy), k, solver="rk4", steps=10)
        mass = lp.exp().sum().item() * (gx[1] - gx[0]).item() * (gy[1] - gy[0]).item()
        assert mass == pytest.approx(1.0, abs=0.02), k


# --- trajectories ----------------------------------------------------------------------------


def test_trajectory_at_given_times_follows_the_closed_form(monkeypatch):
    c = torch.tensor([1.0, -2.0], dtype=F64)
    fm = model_with(ConstantField(c), 2, monkeypatch)
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    z = rand(5, 2)
    times = [0.5, 0.0, 0.25, 1.0, 0.33]  # any order, on or off the dt grid
    path = fm.trajectory(z, dt=0.1, times=times, units="standardized")
    assert path.shape == (len(times), 5, 2)
    for k, t in enumerate(times):
        assert torch.allclose(path[k], z + t * c, atol=1e-12), t
    path = fm.trajectory(z, dt=0.1, times=times, units="data")
    assert torch.allclose(path[1], fm.standardization.inverse(z), atol=1e-12)


@pytest.mark.parametrize("units", ["standardized", "data"])
def test_trajectory_ends_in_both_directions(units):
    fm = small_model()
    std = fm.standardization
    set_standardization(fm, [2.0, -0.4], [1.6, 0.85])
    show = (lambda s: s) if units == "standardized" else std.inverse
    z = rand(8, 2)
    x = fm(z, dt=0.1)
    fwd = fm.trajectory(z, dt=0.1, times=[0.0, 0.5, 1.0], units=units)
    assert fwd.shape == (3, 8, 2)
    assert torch.equal(fwd[0], show(z))
    assert torch.allclose(fwd[-1], show(std(x)), atol=1e-12)
    inv = fm.trajectory(x, dt=0.1, times=[1.0, 0.5, 0.0], inverse=True, units=units)
    assert torch.allclose(inv[0], show(std(x)), atol=1e-12)
    assert torch.allclose(inv[-1], show(fm.encode(x, dt=0.1)), atol=1e-12)
    full = fm.trajectory(z, dt=0.1, units=units)  # default: every grid time
    assert full.shape == (11, 8, 2)
    assert torch.allclose(full[-1], fwd[-1], atol=1e-12)


# --- labels ----------------------------------------------------------------------------------


def test_conditional_labels_change_the_output():
    fm = small_model(num_classes=5, scale=0.5)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    s0 = fm.sample(20, dt=0.1, labels=0, generator=gen())
    s1 = fm.sample(20, dt=0.1, labels=1, generator=gen())
    assert not torch.allclose(s0, s1, atol=1e-3)
    per_row = fm.sample(20, dt=0.1, labels=torch.full((20,), 1), generator=gen())
    assert torch.equal(per_row, s1)  # one label for all == that label per sample
    mixed = torch.tensor([0, 1] * 10)
    s_mixed = fm.sample(20, dt=0.1, labels=mixed, generator=gen())
    assert torch.allclose(s_mixed[0::2], s0[0::2]) and torch.allclose(s_mixed[1::2], s1[1::2])
    x = rand(10, 2)
    assert not torch.allclose(fm.log_prob(x, 0, steps=4), fm.log_prob(x, 3, steps=4))
    assert not torch.allclose(fm.encode(x, dt=0.1, labels=0), fm.encode(x, dt=0.1, labels=2))


@pytest.mark.parametrize(
    "labels",
    [
        torch.zeros(19, dtype=torch.long),  # wrong length
        torch.zeros(20, 1, dtype=torch.long),  # wrong shape
        torch.zeros(20),  # floats
        5,  # unknown
        -1,  # unknown
        torch.tensor([0] * 19 + [7]),  # one unknown among known
        None,  # a conditional model needs labels
    ],
    ids=["len19", "shape20x1", "float", "5", "-1", "one7", "none"],
)
def test_bad_labels_raise(labels):
    fm = small_model(num_classes=5)
    x = rand(20, 2)
    with pytest.raises(ValueError, match="label"):
        fm.sample(20, dt=0.5, labels=labels)
    with pytest.raises(ValueError, match="label"):
        fm.log_prob(x, labels, steps=2)
    with pytest.raises(ValueError, match="label"):
        fm.encode(x, dt=0.5, labels=labels)
    with pytest.raises(ValueError, match="label"):
        fm.loss(x, labels)
    with pytest.raises(ValueError, match="label"):
        fm.check(x, labels)


def test_unconditional_model_given_labels_raises():
    fm = small_model()
    x = rand(4, 2)
    with pytest.raises(ValueError, match="unconditional"):
        fm.sample(4, dt=0.5, labels=0)
    with pytest.raises(ValueError, match="unconditional"):
        fm.log_prob(x, torch.zeros(4, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="unconditional"):
        fm.trajectory(x, dt=0.5, labels=0)


def test_wrong_point_shapes_raise():
    fm = small_model()
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        fm.log_prob(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        fm.encode(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"target must have shape \(N, 2\)"):
        fm.check(torch.zeros(3, 3, dtype=F64), name="target")
    with pytest.raises(ValueError, match="n must be"):
        fm.sample(0)


# -- a smooth field: the gradient of log p is the score ----------------------------------


def test_a_silu_field_gives_log_prob_a_gradient_that_is_the_score():
    """With LeakyReLU layers the field's divergence is constant between the network's kinks
    and jumps across them, so that autograd's gradient of the solve misses them (on a
    trained run it can have the wrong sign: benchmarks/fm_score.py); with SiLU it matches
    the differences over a wide step."""
    from flowscope.matching import AverageVelocityField

    torch.manual_seed(0)
    model = FlowMatching(hidden=16, layers=3, activation="silu").double()
    for p in model.parameters():
        p.data.add_(0.5 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    model.fit_standardization(torch.randn(200, 2, generator=g, dtype=F64) * 3)
    assert model.config()["activation"] == "silu"
    x = torch.randn(6, 2, generator=g, dtype=F64) * 3
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_prob(xg).sum(), xg)
    for h in (1e-3, 1e-2):
        fd = torch.stack(
            [
                (model.log_prob(x + h * e) - model.log_prob(x - h * e)) / (2 * h)
                for e in torch.eye(2, dtype=F64)
            ],
            dim=1,
        )
        torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-4)
    # The mean flow's forward mode, written out, is torch.func.jvp with SiLU layers too.
    field = AverageVelocityField(2, 16, 3, activation="silu").double()
    y, dy = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    r, t = torch.full((5, 1), 0.7, dtype=F64), torch.full((5, 1), 0.2, dtype=F64)
    dr, dt = torch.ones(5, 1, dtype=F64), torch.full((5, 1), 0.5, dtype=F64)
    _, expected = torch.func.jvp(lambda a, b, c: field(a, b, c), (y, r, t), (dy, dr, dt))
    torch.testing.assert_close(field.tangent(y, r, t, dy, dr, dt), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(
        ValueError, match="unknown activation 'relu'; choose one of leaky_relu, silu"
    ):
        FlowMatching(activation="relu")


def test_the_fused_kernels_leave_a_silu_field_to_pytorch():
    from flowscope import kernels
    from flowscope.kernels import sampler

    model = FlowMatching(hidden=16, layers=3, activation="silu")
    y = torch.randn(64, 2)
    choice = kernels.select(model, y, None, 32)
    assert choice.step is None and "LeakyReLU layers, not silu" in choice.reason
    assert "LeakyReLU layers, not silu" in sampler.supports(model, y, None)
