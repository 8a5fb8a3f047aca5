"""Mean flows: the loss against its plain computation, the JVP against finite differences,
the Gaussian skip against the closed-form flow, and the few-step sampler's steps."""

from __future__ import annotations

import pytest
import torch

from flowscope.matching import PATHS, AffinePath, MeanFlow

F64 = torch.float64


def mean_flow(seed: int = 0, **args) -> MeanFlow:
    torch.manual_seed(seed)
    model = MeanFlow(features=2, hidden=16, layers=3, **args).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the initialisation, so that every weight matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return model


def points(n: int = 48, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def plain_loss(model: MeanFlow, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Algorithm 1 of Geng et al. written out, in the project's direction of time: the
    draws in the model's order, the total derivative by reverse-mode gradients of each
    output coordinate (the rows are independent), the weight of Eq. 9."""
    g = torch.Generator().manual_seed(seed)
    n = len(y)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    a, b = torch.rand(n, 1, generator=g, dtype=F64), torch.rand(n, 1, generator=g, dtype=F64)
    jump = torch.rand(n, 1, generator=g, dtype=F64) < model.jump_share
    t = torch.minimum(a, b)
    r = torch.where(jump, torch.maximum(a, b), t)
    z = ((1 - t) * x0 + t * y).requires_grad_(True)  # the linear path, Eq. 14
    v = y - x0
    tt = t.clone().requires_grad_(True)
    u = model.field(z, r, tt)
    if model.gaussian_skip:  # s(t)^2 = t^2 + (1 - t)^2: the flow scales by s(r) / s(t)
        s_t = (tt**2 + (1 - tt) ** 2).sqrt()
        s_r = (r**2 + (1 - r) ** 2).sqrt()
        scaled = z * (s_r / s_t)
        u = u + torch.where(r > tt, (scaled - z) / torch.where(r > tt, r - tt, 1.0), 0.0)
        u = u + torch.where(r > tt, 0.0, (2 * tt - 1) / s_t**2 * z)
    du_dt = torch.zeros_like(u)
    for i in range(2):
        gz, gt = torch.autograd.grad(u[:, i].sum(), (z, tt), retain_graph=True)
        du_dt[:, i] = (gz * v).sum(dim=1) + gt[:, 0]
    target = (v - (t - r) * du_dt).detach()
    err = ((u - target) ** 2).sum(dim=1)
    if model.adaptive_power == 0:
        return err.mean()
    return ((err.detach() + 1e-3) ** -model.adaptive_power * err).mean()


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("power", [1.0, 0.0])
def test_loss_is_the_plain_computation_in_float64(skip, power):
    model = mean_flow(gaussian_skip=skip, adaptive_power=power, jump_share=0.6)
    y = points()
    loss = model.loss(y, generator=torch.Generator().manual_seed(5), standardized=True)
    expected = plain_loss(model, y, seed=5)
    assert float(loss.detach()) > 1e-3  # some points jump, so the derivative term matters
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_jvp_is_the_finite_difference_of_u_along_the_flow():
    model = mean_flow()
    g = torch.Generator().manual_seed(1)
    y, v = points(), torch.randn(48, 2, generator=g, dtype=F64)
    t = 0.8 * torch.rand(48, 1, generator=g, dtype=F64) + 0.1
    r = torch.clamp(t + 0.5 * torch.rand(48, 1, generator=g, dtype=F64), max=1.0)
    u, du_dt = model.average_velocity_and_derivative(y, r, t, v, fast=False)  # torch.func.jvp
    torch.testing.assert_close(u, model.average_velocity(y, r, t))
    h = 1e-6
    ahead = model.average_velocity(y + h * v, r, t + h)
    behind = model.average_velocity(y - h * v, r, t - h)
    assert du_dt.abs().max() > 0.1
    torch.testing.assert_close(du_dt, (ahead - behind) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("path", PATHS.names())
def test_the_written_out_forward_mode_is_torch_func_jvp_in_float64(path, skip):
    model = mean_flow(path=path, gaussian_skip=skip)
    g = torch.Generator().manual_seed(2)
    y, v = points(), torch.randn(48, 2, generator=g, dtype=F64)
    t = torch.rand(48, 1, generator=g, dtype=F64)
    r = t + (1 - t) * torch.rand(48, 1, generator=g, dtype=F64)
    u_fast, d_fast = model.average_velocity_and_derivative(y, r, t, v)
    u_plain, d_plain = model.average_velocity_and_derivative(y, r, t, v, fast=False)
    assert d_plain.abs().max() > 0.1 and not d_fast.requires_grad
    torch.testing.assert_close(u_fast, u_plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_fast, d_plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS.names())
def test_the_gaussian_average_velocity_is_the_gaussian_flow_in_one_step(path):
    # For N(0, I) noise and data every point is scaled by s(r) / s(t) on the way.
    p = PATHS.build(path)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 2, generator=g, dtype=F64)
    t = torch.rand(50, 1, generator=g, dtype=F64)
    r = t + (1 - t) * torch.rand(50, 1, generator=g, dtype=F64)
    u = p.gaussian_average_velocity(y, r, t)
    torch.testing.assert_close(y + (r - t) * u, y * p._scale(r) / p._scale(t))
    torch.testing.assert_close(p.gaussian_average_velocity(y, t, t), p.gaussian_velocity(y, t))
    # The generic quotient of AffinePath gives the closed forms, near r = t included.
    for rr in (r, t + 1e-4, t):
        torch.testing.assert_close(
            AffinePath._scale_squared_slope(p, rr, t), p._scale_squared_slope(rr, t)
        )


def test_the_exact_mean_flow_of_gaussian_data_is_exact_in_one_step():
    # With the network at zero, u is the Gaussian skip: the exact mean flow of N(0, I)
    # data, so one or two steps give what the ODE of its velocity gives.
    model = MeanFlow(features=2, hidden=8, layers=2, path="linear", gaussian_skip=True).double()
    with torch.no_grad():
        model.field.theta.zero_()
    z = points(20)
    ode = model.decode(z, dt=0.01, solver="rk4")
    for dt in (1.0, 0.5):
        torch.testing.assert_close(model.decode(z, dt=dt), ode, rtol=0, atol=1e-9)
    middle = model.trajectory(z, dt=0.5, units="standardized")[1]
    torch.testing.assert_close(middle, z * 0.5**0.5)  # s(1/2) / s(0) on the linear path


def test_one_step_is_one_evaluation_of_the_average_velocity_from_0_to_1():
    model = mean_flow()
    calls = []
    field = model.field.forward
    model.field.forward = lambda y, r, t, labels=None: calls.append((r, t)) or field(y, r, t)
    z = points(10)
    one = model.decode(z)
    assert calls == [(1.0, 0.0)]
    expected = z + model.average_velocity(z, 1.0, 0.0)
    torch.testing.assert_close(one, model.standardization.inverse(expected))
    calls.clear()
    model.sample(5, dt=0.25)
    assert calls == [(0.25, 0.0), (0.5, 0.25), (0.75, 0.5), (1.0, 0.75)]


def test_the_instantaneous_velocity_is_u_at_r_equal_t():
    model = mean_flow()
    y, t = points(), torch.full((48, 1), 0.3, dtype=F64)
    torch.testing.assert_close(model.velocity(y, t), model.average_velocity(y, t, t))
    torch.testing.assert_close(
        model.ode_velocity()(y, torch.tensor(0.3, dtype=F64)), model.velocity(y, t)
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ({"jump_share": 1.5}, r"jump_share must be in \[0, 1\]"),
        ({"jump_share": True}, "jump_share must be a number"),
        ({"adaptive_power": -1}, "adaptive_power must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        MeanFlow(**args)


def test_config_rebuilds_the_model():
    model = MeanFlow(jump_share=0.5, adaptive_power=0.5, times={"name": "beta", "alpha": 2.0})
    again = MeanFlow(**model.config())
    assert again.config() == model.config() and again.jump_share == 0.5
    assert "r != t for 50%" in model.describe_loss()


def test_a_mean_flow_through_every_command(tmp_path, capsys):
    import json

    from flowscope.cli import main

    out = tmp_path / "mf"
    tiny = ["--data", "moons", "--n-points", "300", "--epochs", "2", "--batch-size", "64"]
    tiny += ["--holdout-points", "200"]  # the NLL of 10,000 test points by the ODE: 10 s
    assert main(["train", "meanflow", *tiny, "--out", str(out)]) == 0
    assert "MeanFlow loss" in capsys.readouterr().out
    assert main(["train", "meanflow", *tiny, "--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().out.startswith("nothing to resume: ")
    assert main(["sample", str(out), "-n", "50", "--plot", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", str(out), "-n", "5", "--dt", "0.5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 6  # header and 5 points
    assert main(["eval", str(out), "-n", "200", "--floor-pairs", "1", "--nfe", "1,2"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["model"] == "meanflow" and [p["nfe"] for p in result["nfe_curve"]][:2] == [1, 2]
    assert result["nll_data"] is not None and result["straightness"] is not None
    assert result["nll_points"] == 200  # --holdout-points: the test part's size
    assert main(["invert", str(out), "--point", "0.5,0.2"]) == 0
