"""Tests of :mod:`flowscope.steer`: the ways to make flow matching output a chosen point."""

from __future__ import annotations

import pytest
import torch

from flowscope import FlowMatching, NormalizingFlow, steer


def _constant_field_model(shift: tuple[float, float]) -> FlowMatching:
    """A flow-matching model whose velocity is the constant ``shift`` (standardized units):
    every solver integrates it exactly, x = z + shift."""
    fm = FlowMatching(hidden=8, layers=2, gaussian_skip=False).double()
    weight, bias = fm.field.pairs()[-1]
    with torch.no_grad():
        weight.zero_()
        bias.copy_(torch.tensor(shift, dtype=torch.float64))
    return fm


def test_reverse_start_is_exact_for_a_constant_field():
    fm = _constant_field_model((0.3, -0.7))
    target = torch.tensor([[4.0, 5.0]], dtype=torch.float64)
    res = steer.reverse_start(fm, target, dt=0.1)
    assert res.error < 1e-12
    torch.testing.assert_close(res.z, target - torch.tensor([[0.3, -0.7]], dtype=torch.float64))
    assert res.path.shape == (11, 1, 2)
    torch.testing.assert_close(res.path[0], res.z)
    assert res.evaluations == 20


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri5"])
def test_reverse_start_counts_the_solver_calls(monkeypatch, solver):
    torch.manual_seed(0)
    fm = FlowMatching(hidden=8, layers=2).double()
    target = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    calls = []
    real = steer.integrate

    def counting_integrate(velocity, y, grid, solver):
        def counted(s, t):
            calls.append(1)
            return velocity(s, t)

        return real(counted, y, grid, solver)

    monkeypatch.setattr(steer, "integrate", counting_integrate)
    res = steer.reverse_start(fm, target, dt=0.1, solver=solver)
    assert res.evaluations == len(calls) > 0  # dopri5 used to report 0
    if solver == "euler":
        assert res.evaluations == 20
    # The latent is the model's own encoding (the flow run backwards): the same velocity
    # and grid, which the model integrates in C where its Euler fast path runs, so equal
    # to rounding.
    torch.testing.assert_close(
        res.z, fm.encode(target, dt=0.1, solver=solver), rtol=1e-12, atol=1e-12
    )


def test_optimize_start_reaches_the_target_and_stops_at_tol():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=16, layers=3).double()
    target = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    res = steer.optimize_start(fm, target, z_init=z0, dt=0.1, steps=400, lr=0.2, tol=1e-4)
    assert res.error < 1e-4
    assert res.details["steps_taken"] < 400  # stopped early, at tol
    assert res.details["errors"][0] > 1.0  # it did move
    # the reported landing point is what the ordinary sampler makes of the found z
    torch.testing.assert_close(fm(res.z, dt=0.1), res.x)
    assert all(p.requires_grad for p in fm.parameters())  # the model is left as it was


def test_nearest_sample_returns_the_closest_of_its_draws():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=8, layers=2)
    target = torch.tensor([[0.5, 0.5]])
    res = steer.nearest_sample(
        fm, target, n=300, dt=0.25, generator=torch.Generator().manual_seed(1)
    )
    z_all = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    best = (fm(z_all, dt=0.25) - target).norm(dim=1).min()
    assert res.error == pytest.approx(float(best), abs=1e-6)


def test_guided_sample_weights():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=8, layers=2)
    target = torch.tensor([[4.0, 5.0]])
    z = torch.zeros(1, 2)
    free = steer.guided_sample(fm, target, weight=0.0, z=z, dt=0.05)
    torch.testing.assert_close(free.x, fm(z, dt=0.05))  # w = 0 is the plain sampler
    full = steer.guided_sample(fm, target, weight=1.0, z=z, dt=0.05)
    assert full.error < 1e-4
    half = steer.guided_sample(fm, target, weight=0.5, z=z, dt=0.05)
    assert full.error < half.error < free.error


def test_steering_a_class_standardized_model_uses_the_class_coordinates():
    # Per class, x = (z + shift) * scale_k + loc_k: each method must use class k's numbers.
    fm = FlowMatching(num_classes=2, hidden=8, layers=2, gaussian_skip=False).double()
    weight, bias = fm.field.pairs()[-1]
    loc = torch.tensor([[0.0, 0.0], [3.0, -1.0]], dtype=torch.float64)
    scale = torch.tensor([[1.0, 1.0], [0.5, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        weight.zero_()
        bias.copy_(torch.tensor([0.3, -0.7], dtype=torch.float64))
        fm.standardization.loc.copy_(loc)
        fm.standardization.scale.copy_(scale)
    target = torch.tensor([[4.0, 5.0]], dtype=torch.float64)
    z = (target - loc[1]) / scale[1] - torch.tensor([0.3, -0.7], dtype=torch.float64)
    res = steer.reverse_start(fm, target, labels=1, dt=0.1)
    assert res.error < 1e-12
    torch.testing.assert_close(res.z, z)
    torch.testing.assert_close(res.path[0], z * scale[1] + loc[1])  # data units, class 1
    opt = steer.optimize_start(fm, target, labels=1, dt=0.1, steps=300, lr=0.2, tol=1e-4)
    assert opt.error < 1e-4
    torch.testing.assert_close(opt.z, z, atol=1e-4, rtol=0)
    guided = steer.guided_sample(fm, target, labels=1, weight=1.0, dt=0.05)
    assert guided.error < 1e-9
    near = steer.nearest_sample(
        fm, target, n=50, labels=1, dt=0.5, generator=torch.Generator().manual_seed(1)
    )
    z_all = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    best = (fm(z_all, dt=0.5, labels=1) - target).norm(dim=1).min()
    assert near.error == pytest.approx(float(best), abs=1e-12)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda fm: steer.guided_sample(fm, [[4.0, 5.0]], weight=1.5), ValueError),
        (lambda fm: steer.reverse_start(fm, [[4.0, 5.0], [1.0, 1.0]]), ValueError),
        (lambda fm: steer.optimize_start(fm, [[4.0, 5.0]], steps=0), ValueError),
        (lambda fm: steer.optimize_start(fm, [[4.0, 5.0]], steps=2.0), ValueError),
        (lambda fm: steer.optimize_start(fm, [[4.0, 5.0]], lr=-1.0), ValueError),
        (lambda fm: steer.reverse_start(NormalizingFlow(couplings=1), [[4.0, 5.0]]), TypeError),
    ],
)
def test_steering_rejects_bad_input(call, error):
    with pytest.raises(error):
        call(FlowMatching(hidden=8, layers=2))
