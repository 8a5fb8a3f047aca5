"""The rational-quadratic spline (flowscope.splines): a monotone bijection of [-B, B] with
linear tails, continuous with its derivative, exactly inverted, its log-det the
derivative's, and the hand-written backward pass of the training path equal to autograd's."""

from __future__ import annotations

import pytest
import torch

from flowscope.splines import (
    rational_quadratic,
    rational_quadratic_inverse,
    raw_size,
    spline_parameters,
    spline_transform,
)

F64 = torch.float64
B = 2.5  # the tail bound of these tests


def splines(n: int, bins: int = 6, scale: float = 1.5, seed: int = 0, dtype=F64, **floors):
    """n splines (n,) of ``bins`` bins from N(0, scale^2) numbers."""
    g = torch.Generator().manual_seed(seed)
    raw = scale * torch.randn(n, raw_size(bins), generator=g, dtype=dtype)
    return raw, spline_parameters(raw, B, **floors)


def knots(sizes: torch.Tensor) -> torch.Tensor:
    """The knots (..., K + 1) of bin sizes (..., K), from -B to B."""
    inner = sizes.cumsum(-1)[..., :-1] - B
    edge = torch.full_like(sizes[..., :1], B)
    return torch.cat([-edge, inner, edge], dim=-1)


def repeat(spline, k: int):
    """Each of n splines for k points: (n, K) parameters -> (n, k, K)."""
    return [p.unsqueeze(1).expand(-1, k, -1) for p in spline]


def test_all_zero_numbers_are_the_identity():
    raw = torch.zeros(3, raw_size(5), dtype=F64)
    x = torch.linspace(-4, 4, 3, dtype=F64)
    y, log_det = rational_quadratic(x, *spline_parameters(raw, B), B)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-14)
    torch.testing.assert_close(log_det, torch.zeros(3, dtype=F64), rtol=0, atol=1e-14)


def test_the_spline_is_strictly_increasing_and_maps_the_interval_onto_itself():
    _, sp = splines(20)
    x = torch.linspace(-B - 1, B + 1, 2001, dtype=F64).expand(20, -1)  # (20, 2001)
    y, log_det = rational_quadratic(x, *repeat(sp, 2001), B)
    assert (y.diff(dim=1) > 0).all()
    assert torch.isfinite(log_det).all()
    inside = x.abs() <= B
    assert (y[inside].abs() <= B + 1e-12).all()
    torch.testing.assert_close(y[~inside], x[~inside], rtol=0, atol=0)  # the linear tails


def test_the_knots_map_to_the_knots_and_back():
    _, sp = splines(10)
    kx, ky = knots(sp.widths), knots(sp.heights)  # (10, K + 1)
    y, _ = rational_quadratic(kx, *repeat(sp, kx.shape[1]), B)
    torch.testing.assert_close(y, ky, rtol=0, atol=1e-12)
    x, log_det = rational_quadratic_inverse(ky, *repeat(sp, ky.shape[1]), B)
    torch.testing.assert_close(x, kx, rtol=0, atol=1e-12)
    assert torch.isfinite(log_det).all()
    # At the knots the derivative is d_k: log|dx/dy| = -log d_k.
    torch.testing.assert_close(log_det, -sp.derivatives.log(), rtol=0, atol=1e-10)
    assert float(y[:, 0].min()) == -B and float(y[:, -1].max()) == B  # exactly the bound


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_knots_and_the_tail_bound_never_give_nan(dtype):
    _, sp = splines(50, bins=8, scale=3.0, dtype=dtype)
    kx, ky = knots(sp.widths), knots(sp.heights)
    just = torch.tensor([-B, B], dtype=dtype)
    for points, f in ((kx, rational_quadratic), (ky, rational_quadratic_inverse)):
        for v in (points, torch.nextafter(points, 2 * points - 1), just.expand(50, 2)):
            out, log_det = f(v, *repeat(sp, v.shape[1]), B)
            assert torch.isfinite(out).all() and torch.isfinite(log_det).all()


def test_value_and_derivative_are_continuous_at_the_knots_and_the_tail_bound():
    _, sp = splines(10)
    kx = knots(sp.widths)  # the interior knots and the two ends
    eps = 1e-9
    below, _ = rational_quadratic(kx - eps, *repeat(sp, kx.shape[1]), B)
    above, _ = rational_quadratic(kx + eps, *repeat(sp, kx.shape[1]), B)
    at, ld_at = rational_quadratic(kx, *repeat(sp, kx.shape[1]), B)
    slope = ld_at.exp()  # d_k at the knots, 1 at -B and B
    # One-sided difference quotients on both sides equal the derivative at the knot.
    # (To rounding and the second derivative's eps g'' / g', below 1e-4 here.)
    torch.testing.assert_close((above - at) / eps, slope, rtol=1e-4, atol=0)
    torch.testing.assert_close((at - below) / eps, slope, rtol=1e-4, atol=0)
    # The derivative's limits from both sides are d_k: the gap closes linearly in eps (a
    # jump would not close), down to rounding.
    gaps = []
    for e in (1e-5, 1e-7, 1e-9):
        sides = [
            rational_quadratic(kx + e * side, *repeat(sp, kx.shape[1]), B)[1] for side in (-1, 1)
        ]
        gaps.append(max(float((ld - ld_at).abs().max()) for ld in sides))
    assert gaps[1] <= max(0.02 * gaps[0], 1e-11) and gaps[2] <= max(0.02 * gaps[1], 1e-11), gaps
    torch.testing.assert_close(slope[:, [0, -1]], torch.ones(10, 2, dtype=F64))  # the tails' 1


def test_the_floors_hold_for_extreme_numbers():
    raw = torch.tensor([[-60.0] * 5 + [60.0] * 5 + [-60.0] * 4, [60.0] * 14], dtype=F64)
    floors = dict(min_width=0.01, min_height=0.02, min_derivative=0.05)
    sp = spline_parameters(raw, B, **floors)
    assert (sp.widths >= 2 * B * 0.01 * (1 - 1e-12)).all()
    assert (sp.heights >= 2 * B * 0.02 * (1 - 1e-12)).all()
    assert (sp.derivatives >= 0.05).all()
    torch.testing.assert_close(sp.widths.sum(-1), torch.full((2,), 2 * B, dtype=F64))
    torch.testing.assert_close(sp.heights.sum(-1), torch.full((2,), 2 * B, dtype=F64))
    assert (sp.derivatives[:, [0, -1]] == 1).all()
    x = torch.linspace(-B, B, 7, dtype=F64).expand(2, -1)
    y, log_det = rational_quadratic(x, *repeat(sp, 7), B)
    back, _ = rational_quadratic_inverse(y, *repeat(sp, 7), B)
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(back, x, rtol=0, atol=1e-9)


def test_bad_numbers_and_floors_are_refused():
    with pytest.raises(ValueError, match="3K - 1"):
        spline_parameters(torch.zeros(4, 10), B)
    with pytest.raises(ValueError, match="leaves no room"):
        spline_parameters(torch.zeros(4, raw_size(10)), B, min_width=0.1)
    with pytest.raises(ValueError, match="min_derivative"):
        spline_parameters(torch.zeros(4, raw_size(3)), B, min_derivative=1.0)


def test_log_det_is_the_autograd_derivative_in_both_directions():
    _, sp = splines(40)
    x = torch.linspace(-B - 0.5, B + 0.5, 40, dtype=F64).requires_grad_(True)
    y, log_det = rational_quadratic(x, *sp, B)
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise: the derivative of each point
    torch.testing.assert_close(log_det, dy.log(), rtol=0, atol=1e-8)
    yy = y.detach().requires_grad_(True)
    back, log_det_inv = rational_quadratic_inverse(yy, *sp, B)
    (dx,) = torch.autograd.grad(back.sum(), yy)
    torch.testing.assert_close(log_det_inv, dx.log(), rtol=0, atol=1e-8)
    torch.testing.assert_close(log_det_inv, -log_det.detach(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("bins", [1, 2, 5])
def test_gradcheck_of_both_directions(bins):
    raw, _ = splines(6, bins=bins)
    g = torch.Generator().manual_seed(1)
    x = 1.2 * B * (2 * torch.rand(6, generator=g, dtype=F64) - 1)  # some in the tails

    def forward(x, raw):
        return rational_quadratic(x, *spline_parameters(raw, B), B)

    def inverse(y, raw):
        return rational_quadratic_inverse(y, *spline_parameters(raw, B), B)

    args = (x.requires_grad_(True), raw.requires_grad_(True))
    assert torch.autograd.gradcheck(forward, args)
    assert torch.autograd.gradcheck(inverse, args)
    assert torch.autograd.gradcheck(lambda x, raw: spline_transform(x, raw, B), args)


@pytest.mark.parametrize("bins", [1, 3, 16])
def test_the_training_path_is_the_plain_spline_with_autograds_gradients(bins):
    raw, _ = splines(30 * 2, bins=bins, scale=2.0, seed=3)
    raw = raw.view(30, 2, -1).requires_grad_(True)  # (N, D_r, 3K - 1)
    g = torch.Generator().manual_seed(4)
    x = (1.3 * B * (2 * torch.rand(30, 2, generator=g, dtype=F64) - 1)).requires_grad_(True)
    x.data[0] = torch.tensor([B, -B], dtype=F64)  # the tail bound itself
    floors = dict(min_width=0.02, min_height=0.01, min_derivative=0.1)
    plain = rational_quadratic(x, *spline_parameters(raw, B, **floors), B)
    fast = spline_transform(x, raw, B, **floors)
    g_y, g_l = torch.randn(30, 2, dtype=F64), torch.randn(30, 2, dtype=F64)
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    want = torch.autograd.grad((plain[0] * g_y + plain[1] * g_l).sum(), (x, raw))
    got = torch.autograd.grad((fast[0] * g_y + fast[1] * g_l).sum(), (x, raw))
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_float32_round_trip_over_ten_thousand_points_with_knots_and_bounds():
    # The error is about ulp(y) / g'(x): these splines' slopes reach down to 0.01.
    raw, sp = splines(1000, bins=8, scale=0.7, seed=5, dtype=torch.float32)
    g = torch.Generator().manual_seed(6)
    x = 1.2 * B * (2 * torch.rand(1000, 10, generator=g) - 1)  # (1000 splines, 10 points)
    kx = knots(sp.widths)  # every knot of every spline, the ends -B and B among them
    x[:, : kx.shape[1]] = kx
    assert x.numel() == 10_000
    y, log_det = rational_quadratic(x, *repeat(sp, 10), B)
    back, log_det_inv = rational_quadratic_inverse(y, *repeat(sp, 10), B)
    assert float((back - x).abs().max()) <= 1e-5
    assert float((log_det + log_det_inv).abs().max()) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_far_points_pass_through_the_linear_tails(dtype):
    raw, sp = splines(4, dtype=dtype)
    x = torch.tensor([4.0, 1e3, -1e3, 1e30], dtype=dtype)
    y, log_det = rational_quadratic(x, *sp, B)
    assert torch.equal(y, x) and torch.equal(log_det, torch.zeros_like(x))
    back, log_det = rational_quadratic_inverse(x, *sp, B)
    assert torch.equal(back, x) and torch.equal(log_det, torch.zeros_like(x))
    x.requires_grad_(True)
    raw.requires_grad_(True)
    y, log_det = spline_transform(x, raw, B)
    g_x, g_raw = torch.autograd.grad((y + log_det).sum(), (x, raw))
    assert torch.equal(g_x, torch.ones_like(x)) and torch.equal(g_raw, torch.zeros_like(raw))
