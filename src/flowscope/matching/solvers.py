"""ODE integration of a velocity field along a grid of times (the study's Eqs. 17-18)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The solvers' names and the default step are plain Python, which the command line's help
# quotes; PyTorch is imported where an ODE is integrated.

__all__ = [
    "DEFAULT_DT",
    "SOLVERS",
    "Velocity",
    "check_solver",
    "divergence_of",
    "integrate",
    "time_grid",
]

SOLVERS = ("euler", "midpoint", "rk4", "dopri5")
#: The study's Euler step, 1/1000.
DEFAULT_DT = 1e-3

#: A velocity field for a solver: (y (N, D), t a 0-dim tensor) -> (N, D).
Velocity = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def time_grid(
    dt: float, start: float = 0.0, end: float = 1.0, times: Sequence[float] = ()
) -> list[float]:
    """Times of a fixed-step integration from ``start`` to ``end`` with step ``dt``.

    ``round(1 / dt)`` steps when dt divides the interval (to 1e-9); otherwise the last
    step is shorter. ``times`` (within the interval) are added as extra grid points so that
    states can be recorded there.

    Raises:
        ValueError: if dt is not in (0, 1], or a time lies outside the interval.
    """
    if not (isinstance(dt, int | float) and math.isfinite(dt) and 0 < dt <= 1):
        raise ValueError(f"dt must be in (0, 1], got {dt!r}")
    lo, hi = min(start, end), max(start, end)
    n = int(math.floor((hi - lo) / dt + 1e-9))
    pts = [lo + k * dt for k in range(n + 1)]
    if hi - pts[-1] > 1e-9:
        pts.append(hi)
    pts[-1] = hi
    for t in times:
        if not lo - 1e-12 <= t <= hi + 1e-12:
            raise ValueError(f"time {t} is outside [{lo}, {hi}]")
        if min(abs(t - p) for p in pts) > 1e-9:
            pts.append(float(t))
    pts.sort()
    return pts if end >= start else pts[::-1]


def check_solver(solver: str) -> str:
    """``solver`` if it is one of :data:`SOLVERS`.

    Raises:
        ValueError: naming the choices.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    return solver


def integrate(
    velocity: Velocity, y: torch.Tensor, grid: Sequence[float], solver: str = "euler"
) -> torch.Tensor:
    """Integrate dy/dt = velocity(y, t) along ``grid``; return the state at every grid time.

    ``euler`` is Eq. 17 (and, on a decreasing grid, Eq. 18): the velocity is evaluated at
    the current time, once per step. The others come from torchdiffeq: ``midpoint`` and
    ``rk4`` step along the grid, ``dopri5`` is adaptive (rtol = atol = 1e-5) and reports
    the state at the grid times.

    Arguments:
        velocity: callable (y (N, D), t scalar tensor) -> (N, D).
        y: the initial state (N, D) at ``grid[0]``.
        grid: increasing or decreasing times.
        solver: one of :data:`SOLVERS`.

    Returns:
        (len(grid), N, D).

    Raises:
        ValueError: for an unknown solver.
    """
    import torch

    check_solver(solver)
    ts = torch.tensor(grid, dtype=y.dtype, device=y.device)
    if solver == "euler":
        out = [y]
        for k in range(len(grid) - 1):
            y = torch.add(y, velocity(y, ts[k]), alpha=grid[k + 1] - grid[k])
            out.append(y)
        return torch.stack(out)
    from torchdiffeq import odeint

    if solver == "dopri5":
        return odeint(lambda t, s: velocity(s, t), y, ts, method=solver, rtol=1e-5, atol=1e-5)
    return odeint(lambda t, s: velocity(s, t), y, ts, method=solver)


def divergence_of(
    v: torch.Tensor, y: torch.Tensor, eps: torch.Tensor | None = None, *, create_graph: bool = False
) -> torch.Tensor:
    """The divergence of v (N, D) with respect to y (N, D), per row (N,).

    Exact (one backward pass per coordinate) when ``eps`` is ``None``; otherwise
    Hutchinson's estimate eps^T (dv/dy) eps with the given probes eps (N, D), or the mean
    of K such estimates for probes (K, N, D): unbiased, with an error that changes with
    the probes.

    References:
        Grathwohl et al. FFJORD. 2019, arXiv:1810.01367 (Hutchinson's trace estimator).
    """
    import torch

    if eps is not None:
        probes = eps if eps.ndim == 3 else eps[None]
        est = v.new_zeros(v.shape[0])
        for k, e in enumerate(probes):
            retain = create_graph or k < len(probes) - 1
            (g,) = torch.autograd.grad(v, y, e, retain_graph=retain, create_graph=create_graph)
            est = est + (g * e).sum(dim=1)
        return est / len(probes)
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(v.shape[1]):
        (g,) = torch.autograd.grad(
            v[:, i].sum(),
            y,
            retain_graph=create_graph or i < v.shape[1] - 1,
            create_graph=create_graph,
        )
        div = div + g[:, i]
    return div
