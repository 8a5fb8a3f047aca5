r"""The monotonic rational-quadratic spline of neural spline flows, as pure functions.

A spline of K bins maps the interval [-B, B] onto itself, monotonically; outside it is
the identity (linear tails). It is given by K + 1 knots (x_k, y_k), from x_0 = y_0 = -B
to x_K = y_K = B, and the derivatives d_k at the knots. In bin k, with
w_k = x_{k+1} - x_k, h_k = y_{k+1} - y_k, the bin's slope s_k = h_k / w_k and
:math:`\xi = (x - x_k) / w_k \in [0, 1]`, the spline is the rational quadratic of
Gregory and Delbourgo (Durkan et al. 2019, section 3.1, Eq. 4):

.. math::

    g(x) = y_k + \frac{h_k \,[s_k \xi^2 + d_k \xi (1 - \xi)]}
                      {s_k + (d_{k+1} + d_k - 2 s_k)\, \xi (1 - \xi)}

and its derivative (their Appendix A), positive wherever every d_k and s_k is:

.. math::

    g'(x) = \frac{s_k^2 \,[d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2]}
                 {[s_k + (d_{k+1} + d_k - 2 s_k)\, \xi (1 - \xi)]^2}

The inverse solves :math:`a \xi^2 + b \xi + c = 0` for the point y in bin k (their
Appendix A), with :math:`\Delta = y - y_k`, :math:`c_2 = d_{k+1} + d_k - 2 s_k`,
:math:`a = h_k (s_k - d_k) + \Delta c_2`, :math:`b = h_k d_k - \Delta c_2`,
:math:`c = -s_k \Delta`, by the root that avoids the cancellation of the textbook
formula, :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`. At y = y_k it gives 0 and at
y = y_{k+1} exactly 1 (the denominator is then -2 h_k d_k and -2 s_k h_k); the
discriminant is clamped at 0 and ξ to [0, 1], so that rounding at a knot or at the tail
bound never gives a NaN. One Newton step on the spline itself then takes off the root
formula's rounding (in float32 it halves a trained flow's round-trip error).

Both directions share the knots and the bin lookup (:func:`_table`, :func:`_bin`); a
point is inside when -B <= x <= B, and its spline is evaluated at the point clamped to
[-B, B], so that far points (1e30) never reach the rational function and its gradient
is finite. :func:`spline_parameters` turns a network's unconstrained outputs into
widths, heights and derivatives with floors and boundary derivatives 1, so that the
tails join the spline with the same value and slope. :func:`spline_transform` is
:func:`rational_quadratic` of such outputs with its backward pass written out, the
training path of :class:`~flowscope.flows.SplineCoupling`.

Shapes: points x (...,) with parameters widths (..., K), heights (..., K) and
derivatives (..., K + 1), where ``...`` is any batch shape (e.g. (N, D)).

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. 2019, arXiv:1906.04032.
    Gregory, Delbourgo. Piecewise rational quadratic interpolation to monotonic data.
    IMA Journal of Numerical Analysis, 1982.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "Spline",
    "raw_size",
    "rational_quadratic",
    "rational_quadratic_inverse",
    "spline_parameters",
    "spline_transform",
]

# Numbers as 0-dim float64 tensors: an operation with a Python number wraps it in a tensor
# each time, which costs as much as the arithmetic on these small batches. A 0-dim tensor
# takes the other operand's dtype and device, as a Python number does.
_ONE = torch.tensor(1.0, dtype=torch.float64)


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The tensor of ``values`` (nested tuples), made once per dtype and device (read only:
    every call gets the same tensor)."""
    return torch.tensor(values, dtype=dtype, device=device)


class Spline(NamedTuple):
    """The parameters of rational-quadratic splines on [-B, B].

    Attributes:
        widths: (..., K) positive bin widths, summing to 2B.
        heights: (..., K) positive bin heights, summing to 2B.
        derivatives: (..., K + 1) positive derivatives at the knots, the first and last
            1 for splines from :func:`spline_parameters`.
    """

    widths: torch.Tensor
    heights: torch.Tensor
    derivatives: torch.Tensor


def raw_size(bins: int) -> int:
    """Unconstrained numbers per spline: K widths, K heights and K - 1 interior derivatives."""
    return 3 * bins - 1


def _bins(raw: torch.Tensor, min_width: float, min_height: float, min_derivative: float) -> int:
    """K, from raw (..., 3K - 1), with the floors checked."""
    size = raw.shape[-1]
    if size < 2 or (size + 1) % 3:
        raise ValueError(f"raw must have 3K - 1 numbers (K bins) in its last dimension, got {size}")
    k = (size + 1) // 3
    for name, m in (("min_width", min_width), ("min_height", min_height)):
        if not 0 <= m * k < 1:
            raise ValueError(f"{name} {m} leaves no room for {k} bins: need 0 <= {k} * {name} < 1")
    if not 0 <= min_derivative < 1:
        raise ValueError(f"min_derivative must be in [0, 1), got {min_derivative}")
    return k


def _parameters(
    raw: torch.Tensor, bound: float, min_width: float, min_height: float, min_derivative: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`spline_parameters` as the fast path needs them: the widths and heights
    stacked (..., 2, K), the derivatives (..., K + 1), and the softmax (..., 2, K) and the
    softplus's argument (..., K - 1) that their gradients need."""
    k = _bins(raw, min_width, min_height, min_derivative)
    probabilities = torch.softmax(raw[..., : 2 * k].unflatten(-1, (2, k)), dim=-1)  # (..., 2, K)
    b = 2 * bound
    least = _constant(((b * min_width,), (b * min_height,)), raw.dtype, raw.device)  # (2, 1)
    room = _constant(((b - k * b * min_width,), (b - k * b * min_height,)), raw.dtype, raw.device)
    sizes = torch.addcmul(least, room, probabilities)
    shifted = raw[..., 2 * k :] + math.log(math.expm1(1 - min_derivative))
    derivatives = F.pad(F.softplus(shifted) + min_derivative, (1, 1), value=1.0)
    return sizes, derivatives, probabilities, shifted


def spline_parameters(
    raw: torch.Tensor,
    bound: float,
    *,
    min_width: float = 1e-3,
    min_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Spline:
    r"""Widths, heights and derivatives from unconstrained numbers (a network's output).

    With u the first K numbers, v the next K and r the last K - 1:

    .. math::

        w = 2B\,[m_w + (1 - K m_w)\, \mathrm{softmax}(u)], \quad
        h = 2B\,[m_h + (1 - K m_h)\, \mathrm{softmax}(v)], \quad
        d = m_d + \mathrm{softplus}(r + \log(e^{1 - m_d} - 1))

    and derivative 1 at -B and B, so that the linear tails join the spline with slope 1.
    The shift inside the softplus makes r = 0 give derivative 1: all-zero numbers are
    the identity (equal bins, slope 1 everywhere).

    Arguments:
        raw: (..., 3K - 1) numbers (:func:`raw_size`).
        bound: B > 0, the half-width of the interval the spline acts on.
        min_width: the least bin width, as a share of the interval 2B; K min_width < 1.
        min_height: the same for the heights.
        min_derivative: the least derivative at an interior knot, in [0, 1).

    Returns:
        :class:`Spline` with widths (..., K), heights (..., K), derivatives (..., K + 1).

    Raises:
        ValueError: for a last dimension that is not 3K - 1 with K >= 1, or floors that
            leave no room (K min_width >= 1, K min_height >= 1, min_derivative outside
            [0, 1)).
    """
    sizes, derivatives, _, _ = _parameters(raw, bound, min_width, min_height, min_derivative)
    return Spline(sizes[..., 0, :], sizes[..., 1, :], derivatives)


def _table(sizes: torch.Tensor, derivatives: torch.Tensor, bound: float) -> torch.Tensor:
    """The knots and derivatives (..., 3, K + 1) of splines with widths and heights
    ``sizes`` (..., 2, K): row 0 the x_k, from -B to exactly B (so that rounding never
    leaves a gap at the tail bound), row 1 the y_k, row 2 the d_k."""
    k = sizes.shape[-1]
    ends = _constant((-bound,) * k + (bound,), sizes.dtype, sizes.device)  # (K + 1,)
    knots = F.pad(sizes[..., :-1].cumsum(dim=-1), (1, 1)) + ends  # (..., 2, K + 1)
    return torch.cat([knots, derivatives.unsqueeze(-2)], dim=-2)


def _bin(
    v: torch.Tensor, table: torch.Tensor, row: int
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The bin of each point v (...,) in [-B, B] among the knots ``table[..., row, :]``:
    the k with knots_k <= v < knots_{k+1} (the last bin also holds B).

    Returns:
        the table's three rows at both ends of the bin, (x_k, x_{k+1}, y_k, y_{k+1}, d_k,
        d_{k+1}), each (...,); and the index (..., 3, 2) they were gathered with.
    """
    bins = table.shape[-1] - 1
    knots = table[..., row, :].contiguous()
    k = torch.searchsorted(knots, v.unsqueeze(-1), right=True).sub_(1).clamp_(0, bins - 1)
    ends = torch.cat([k, k + 1], dim=-1).unsqueeze(-2).expand(*k.shape[:-1], 3, 2)
    return tuple(table.gather(-1, ends).flatten(-2).unbind(-1)), ends


def _bin_shape(xi, s, c2, d0, d1) -> tuple[torch.Tensor, ...]:
    """Within a bin of slope s, end derivatives d0, d1 and c2 = d0 + d1 - 2s, at the
    position xi: 1 - ξ, t = ξ(1 - ξ), ξ², the denominator Q of Eq. 4, R = (y - y_k) / h
    and N, the numerator of g' over s² (so that g' = s² N / Q²)."""
    one = _ONE - xi
    t, xi2 = xi * one, xi * xi
    q = torch.addcmul(s, c2, t)  # the denominator of Eq. 4
    r = torch.addcmul(s * xi2, d0, t) / q
    n = torch.addcmul(torch.addcmul(d1 * xi2, s, t, value=2), d0, one * one)
    return one, t, xi2, q, r, n


def _segment(xc, x0, w, y0, h, d0, d1) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Eq. 4 and log g' of points xc in their bins (left knot x0, width w, y0, height h,
    end derivatives d0, d1; each (...,)), and what :func:`_segment_grads` needs."""
    s = h / w
    xi = ((xc - x0) / w).clamp(0, 1)
    c2 = torch.add(d0 + d1, s, alpha=-2)
    one, t, xi2, q, r, n = _bin_shape(xi, s, c2, d0, d1)
    y = torch.addcmul(y0, h, r)  # Eq. 4
    log_det = (s * s * n / (q * q)).log()
    return y, log_det, (xi, one, t, xi2, s, c2, q, r, n, w, h, d0, d1)


def _segment_grads(saved: tuple, gy: torch.Tensor, gl: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""The gradients of :func:`_segment`'s (y, log g') with respect to its inputs (xc, x0,
    w, y0, h, d0, d1), given those of the outputs, gy and gl (each (...,)).

    With ξ = (xc - x_k) / w, s = h / w, t = ξ(1 - ξ), P = s ξ² + d_k t, Q the denominator
    of Eq. 4, R = P / Q (so y = y_k + h R) and N the numerator of g' over s²:

    .. math::

        \partial_\xi y = h (P_\xi - R Q_\xi) / Q, \quad
        \partial_s y = h (\xi^2 - R (1 - 2t)) / Q, \quad
        \partial_{d_k} y = h t (1 - R) / Q, \quad
        \partial_{d_{k+1}} y = -h t R / Q,

        \partial_\xi \log g' = N_\xi / N - 2 Q_\xi / Q, \quad
        \partial_s \log g' = 2 / s + 2t / N - 2 (1 - 2t) / Q,

        \partial_{d_k} \log g' = (1 - \xi)^2 / N - 2t / Q, \quad
        \partial_{d_{k+1}} \log g' = \xi^2 / N - 2t / Q,

    then through ξ and s to xc, x_k, w and h. (The clamp of ξ to [0, 1], which only
    rounding at a knot activates, passes the gradient through.)
    """
    xi, one, t, xi2, s, c2, q, r, n, w, h, d0, d1 = saved
    slope = one - xi  # dt/dξ = 1 - 2ξ
    gyq, glq, gln = gy * (h / q), gl / q, gl / n
    q_xi, q_s = c2 * slope, torch.add(_ONE, t, alpha=-2)
    p_xi = torch.addcmul(d0 * slope, s, xi, value=2)
    n_xi = torch.addcmul(torch.addcmul(d1 * xi, s, slope), d0, one, value=-1)  # N_ξ / 2
    g_xi = gyq * torch.addcmul(p_xi, r, q_xi, value=-1)
    g_xi = torch.addcmul(torch.addcmul(g_xi, gln, n_xi, value=2), glq, q_xi, value=-2)
    g_s = gyq * torch.addcmul(xi2, r, q_s, value=-1)
    g_s = torch.addcmul(g_s, gl, s.reciprocal(), value=2)
    g_s = torch.addcmul(torch.addcmul(g_s, gln, t, value=2), glq, q_s, value=-2)
    u = gyq * t
    g_d0 = torch.addcmul(torch.addcmul(u, u, r, value=-1), gln, one * one)
    g_d1 = torch.addcmul(gln * xi2, u, r, value=-1)
    glq_t = glq * t
    g_d0, g_d1 = torch.add(g_d0, glq_t, alpha=-2), torch.add(g_d1, glq_t, alpha=-2)
    g_xc, g_sw = g_xi / w, g_s / w
    g_w = torch.addcmul(g_xc * xi, g_sw, s).neg_()
    return g_xc, g_xc.neg(), g_w, gy, torch.addcmul(g_sw, gy, r), g_d0, g_d1


def rational_quadratic(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    bound: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline y = g(x) and log g'(x), elementwise (see the module's docstring).

    Arguments:
        x: (...,) points; outside [-B, B] the map is the identity.
        widths: (..., K) bin widths summing to 2B.
        heights: (..., K) bin heights summing to 2B.
        derivatives: (..., K + 1) positive derivatives at the knots.
        bound: B.

    Returns:
        y (...,) and log|dy/dx| (...,); 0 outside [-B, B]. Differentiable by autograd in
        every input (:func:`spline_transform` is the same map with its backward pass
        written out).
    """
    inside = x.abs() <= bound
    xc = x.clamp(-bound, bound)
    table = _table(torch.stack([widths, heights], dim=-2), derivatives, bound)
    (x0, x1, y0, y1, d0, d1), _ = _bin(xc, table, 0)
    y, log_det, _ = _segment(xc, x0, x1 - x0, y0, y1 - y0, d0, d1)
    return torch.where(inside, y, x), torch.where(inside, log_det, 0.0)


def rational_quadratic_inverse(
    y: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    bound: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse x = g^{-1}(y) and log|dx/dy| = -log g'(x), elementwise.

    Arguments:
        y: (...,) points; outside [-B, B] the map is the identity.
        widths, heights, derivatives, bound: as :func:`rational_quadratic`.

    Returns:
        x (...,) and log|dx/dy| (...,); 0 outside [-B, B].
    """
    inside = y.abs() <= bound
    yc = y.clamp(-bound, bound)
    table = _table(torch.stack([widths, heights], dim=-2), derivatives, bound)
    (x0, x1, y0, y1, d0, d1), _ = _bin(yc, table, 1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    delta, c2 = yc - y0, torch.add(d0 + d1, s, alpha=-2)
    a = torch.addcmul(h * (s - d0), delta, c2)
    b = torch.addcmul(h * d0, delta, c2, value=-1)
    c = -s * delta
    root = torch.addcmul(b * b, a, c, value=-4).clamp(min=0).sqrt()
    xi = (2 * c / (-b - root)).clamp(0, 1)  # the stable root: no cancellation
    # One Newton step on Eq. 4, h R(ξ) = y - y_k (dR/dξ = s N / Q²): it takes off the
    # rounding of the root's formula, which a stack of couplings amplifies.
    _, _, _, q, r, n = _bin_shape(xi, s, c2, d0, d1)
    xi = (xi - (h * r - delta) * q * q / (h * s * n)).clamp(0, 1)
    _, _, _, q, _, n = _bin_shape(xi, s, c2, d0, d1)
    log_det = (q * q / (s * s * n)).log()
    return torch.where(inside, torch.addcmul(x0, xi, w), y), torch.where(inside, log_det, 0.0)


class _SplineTransform(torch.autograd.Function):
    """:func:`spline_transform`: the forward pass is the plain computation, the backward
    pass is written out (see there)."""

    @staticmethod
    def forward(ctx, x, raw, bound, min_width, min_height, min_derivative):
        sizes, derivatives, probabilities, shifted = _parameters(
            raw, bound, min_width, min_height, min_derivative
        )
        k = sizes.shape[-1]
        inside = x.abs() <= bound
        xc = x.clamp(-bound, bound)
        table = _table(sizes, derivatives, bound)
        (x0, x1, y0, y1, d0, d1), ends = _bin(xc, table, 0)
        y, log_det, saved = _segment(xc, x0, x1 - x0, y0, y1 - y0, d0, d1)
        y, log_det = torch.where(inside, y, x), torch.where(inside, log_det, 0.0)
        ctx.save_for_backward(inside, probabilities, shifted, ends, *saved)
        b = 2 * bound
        ctx.shape, ctx.room = table.shape, ((b - k * b * min_width,), (b - k * b * min_height,))
        return y, log_det

    @staticmethod
    def backward(ctx, gy, gl):
        inside, probabilities, shifted, ends, *saved = ctx.saved_tensors
        k = ctx.shape[-1] - 1
        gy_in, gl_in = torch.where(inside, gy, 0.0), torch.where(inside, gl, 0.0)
        g_xc, g_x0, g_w, g_y0, g_h, g_d0, g_d1 = _segment_grads(saved, gy_in, gl_in)
        g_x = torch.where(inside, g_xc, gy)  # the identity outside [-B, B]
        # The bins' ends, x_{k+1} = x_k + w and y_{k+1} = y_k + h, back into the table.
        at_ends = torch.stack([g_x0 - g_w, g_w, g_y0 - g_h, g_h, g_d0, g_d1], dim=-1)
        g_table = gy.new_zeros(ctx.shape)  # (..., 3, K + 1)
        g_table.scatter_add_(-1, ends, at_ends.unflatten(-1, (3, 2)))
        # Knot j (1 <= j < K) is the running sum of sizes 0..j-1: size i's gradient is the
        # sum over the knots after it, the total less the running sum before it.
        g_knots = g_table[..., :2, 1:k]  # (..., 2, K - 1)
        before = g_knots.cumsum(-1) - g_knots
        g_sizes = F.pad(g_knots.sum(-1, keepdim=True) - before, (0, 1))  # the last sets none
        g_p = g_sizes * _constant(ctx.room, gy.dtype, gy.device)  # (..., 2, K)
        g_uv = probabilities * (g_p - (g_p * probabilities).sum(-1, keepdim=True))  # softmax
        g_r = g_table[..., 2, 1:k] * torch.sigmoid(shifted)  # the interior derivatives
        return g_x, torch.cat([g_uv.flatten(-2), g_r], dim=-1), None, None, None, None


def spline_transform(
    x: torch.Tensor,
    raw: torch.Tensor,
    bound: float,
    *,
    min_width: float = 1e-3,
    min_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline of unconstrained numbers, ``rational_quadratic(x, *spline_parameters(raw,
    ...), bound)``, with its backward pass written out: what a spline coupling trains
    with.

    The forward pass runs the same functions; the backward pass differentiates them by
    hand (:func:`_segment_grads` within the bins, then the gather, the running sums, the
    softmax and the softplus) in a few dozen elementwise operations, where autograd would
    record about a hundred, whose overhead dominates a small flow's training step. The
    tests check it against autograd of the plain functions in float64.

    Arguments:
        x: (...,) points.
        raw: (..., 3K - 1) unconstrained numbers (see :func:`spline_parameters`).
        bound: B.
        min_width, min_height, min_derivative: the floors of :func:`spline_parameters`.

    Returns:
        y (...,) and log|dy/dx| (...,), as :func:`rational_quadratic`.
    """
    return _SplineTransform.apply(x, raw, bound, min_width, min_height, min_derivative)
