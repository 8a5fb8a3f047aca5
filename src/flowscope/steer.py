"""Steering a trained flow-matching model so that its sampler outputs a chosen point.

A flow-matching sampler is a deterministic map from the starting noise z (t = 0) to the
output x (t = 1), given the velocity field, the solver and the step. To make it output a
target x*, one can change the input (find the right z) or change the dynamics (add a
guidance term to the velocity). Each function here is one method; all return a
:class:`Steered` with the landing point, its distance to the target and the path, so
that methods can be compared on the same footing.

Coordinates: ``target``, landing points and paths are in data units; latents z are in
the model's standardized noise space (N(0, I) at t = 0), as for
:meth:`~flowscope.matching.FlowMatching.encode`.

Example:
    >>> import torch
    >>> from flowscope import FlowMatching
    >>> fm = FlowMatching(hidden=8, layers=2)
    >>> res = guided_sample(fm, torch.tensor([[4.0, 5.0]]), weight=1.0, dt=0.1)
    >>> res.error < 1e-4
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import standard_normal_log_prob
from .data import check_int
from .matching import FlowMatching, Velocity, integrate, time_grid

__all__ = [
    "Steered",
    "guided_sample",
    "nearest_sample",
    "optimize_start",
    "reverse_start",
]


@dataclass
class Steered:
    """The outcome of one steering method for one target point.

    Attributes:
        method: a short name of the method.
        x: (1, D) the point the sampler output, data units.
        error: Euclidean distance from ``x`` to the target, data units.
        z: (1, D) the starting noise used, standardized units.
        log_pz: log N(z; 0, I) of that noise, in nats (how typical a start it is).
        path: (T, 1, D) the states from t = 0 to t = 1, data units.
        times: (T,) the times of ``path``.
        evaluations: velocity-field evaluations spent, the cost of the method (forward
            passes; each gradient step of :func:`optimize_start` counts its forward pass;
            :func:`reverse_start` counts the solver's actual calls, which an adaptive
            solver such as ``dopri5`` chooses itself).
        details: method-specific numbers (JSON-safe).
    """

    method: str
    x: torch.Tensor
    error: float
    z: torch.Tensor
    log_pz: float
    path: torch.Tensor
    times: torch.Tensor
    evaluations: int
    details: dict[str, Any] = field(default_factory=dict)


class _Counted:
    """A velocity (y, t) -> (N, D) that counts its calls (``calls``)."""

    def __init__(self, velocity: Velocity):
        self.velocity, self.calls = velocity, 0

    def __call__(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.velocity(y, t)


def _check_target(model: FlowMatching, target: Any) -> torch.Tensor:
    if not isinstance(model, FlowMatching):
        raise TypeError(f"model must be a FlowMatching model, got {type(model).__name__}")
    target = model.check_points(torch.as_tensor(target), "target")
    if len(target) != 1:
        raise ValueError(f"target must be one point of shape (1, D), got {tuple(target.shape)}")
    return target


def _record(
    model: FlowMatching,
    method: str,
    target: torch.Tensor,
    z: torch.Tensor,
    states: torch.Tensor,
    grid: Sequence[float],
    evaluations: int,
    n_times: int,
    details: dict[str, Any],
    labels: torch.Tensor | None,
) -> Steered:
    """Build a :class:`Steered` from standardized states (len(grid), 1, D) of a point with
    class ``labels`` (1,) or ``None``."""
    idx = torch.linspace(0, len(grid) - 1, min(n_times, len(grid))).round().long()
    with torch.no_grad():
        path = model.standardization.inverse(states[idx].detach(), labels)
        x = path[-1]
        error = float((x - target).norm(dim=1)[0])
    return Steered(
        method=method,
        x=x,
        error=error,
        z=z.detach(),
        log_pz=float(standard_normal_log_prob(z.detach())[0]),
        path=path,
        times=torch.tensor(grid, dtype=path.dtype)[idx],
        evaluations=int(evaluations),
        details=details,
    )


def reverse_start(
    model: FlowMatching,
    target: Any,
    *,
    dt: float = 1e-3,
    solver: str = "euler",
    labels: Any = None,
    n_times: int = 101,
) -> Steered:
    """Integrate the flow backwards from the target to find its noise, then sample from it.

    Runs Eq. 18 from x* at t = 1 down to t = 0 with step ``dt`` to get z, then the
    ordinary sampler (Eq. 17) forward from z. With an exact solver the two maps are
    inverses and the sample is x*; with Euler each direction evaluates the velocity at
    the other end of every step, so the landing error measures the solver's
    discretization along this path (large where the field bends, as it does far from the
    data it was trained on).

    Arguments:
        model: a trained :class:`~flowscope.matching.FlowMatching`.
        target: (1, D) the wanted output, data units.
        dt: step of both integrations, in (0, 1].
        solver: one of :data:`~flowscope.matching.SOLVERS`.
        labels: the class of a conditional model (one int), else ``None``.
        n_times: states kept in the returned path.

    Returns:
        a :class:`Steered`; ``details`` holds ``dt`` and ``solver``; ``evaluations`` counts
        the velocity calls of both integrations as the solver made them (Euler: one per
        step; ``dopri5``: as many as its step-size control needed).

    Raises:
        TypeError: if ``model`` is not a flow-matching model.
        ValueError: for a target that is not one point, a bad dt, solver or label.
    """
    target = _check_target(model, target)
    lab = model.check_labels(labels, 1)
    grid = time_grid(dt)
    # Backwards with the velocity FlowMatching.encode integrates, so that z is exactly
    # model.encode(target); counted.
    back = _Counted(model.ode_velocity(lab))
    forward = _Counted(lambda s, t: model.velocity(s, t, lab))
    with torch.no_grad():
        z = integrate(back, model.standardization(target, lab), time_grid(dt, 1.0, 0.0), solver)[-1]
        states = integrate(forward, z, grid, solver)
    evals = back.calls + forward.calls
    return _record(
        model,
        "reverse then forward",
        target,
        z,
        states,
        grid,
        evals,
        n_times,
        {"dt": dt, "solver": solver},
        lab,
    )


def nearest_sample(
    model: FlowMatching,
    target: Any,
    *,
    n: int = 100_000,
    dt: float = 1e-2,
    labels: Any = None,
    generator: torch.Generator | None = None,
    n_times: int = 101,
) -> Steered:
    """Draw n ordinary samples and keep the one closest to the target (a baseline).

    This is rejection sampling with a budget: it only finds x* if the model puts
    measurable mass near it, which a model trained on the Olympic rings does not do at
    (4, 5). The error it reports is how far the model's own samples stay from x*.

    Arguments:
        model: a trained :class:`~flowscope.matching.FlowMatching`.
        target: (1, D) data units.
        n: number of samples drawn.
        dt: Euler step of the sampler.
        labels: the class of a conditional model (one int), else ``None``.
        generator: for the noise.
        n_times: states kept in the returned path.

    Returns:
        a :class:`Steered` for the closest sample; ``details`` holds ``n`` and ``dt``.
    """
    target = _check_target(model, target)
    n = check_int(n, "n")
    lab = model.check_labels(labels, 1)
    z_all = torch.randn(n, model.features, generator=generator, dtype=model.dtype)
    lab_all = None if lab is None else lab.expand(n)
    x_all = model.forward(z_all, dt=dt, labels=lab_all)
    best = int((x_all - target).norm(dim=1).argmin())
    z = z_all[best : best + 1]
    grid = time_grid(dt)
    with torch.no_grad():
        states = integrate(lambda s, t: model.velocity(s, t, lab), z, grid, "euler")
    return _record(
        model,
        f"best of {n:,} samples",
        target,
        z,
        states,
        grid,
        n * (len(grid) - 1),
        n_times,
        {"n": n, "dt": dt},
        lab,
    )


def optimize_start(
    model: FlowMatching,
    target: Any,
    *,
    z_init: torch.Tensor | None = None,
    dt: float = 1e-2,
    steps: int = 300,
    lr: float = 0.5,
    tol: float = 1e-3,
    prior_weight: float = 0.0,
    labels: Any = None,
    generator: torch.Generator | None = None,
    n_times: int = 101,
) -> Steered:
    r"""Find the starting noise by gradient descent through a differentiable Euler sampler.

    Minimises, over z,

    .. math:: \| S_{dt}(z) - x^* \|^2 + \lambda \|z\|^2 / 2

    with Adam, where S_dt is the Euler sampler of Algorithm 2 (Eq. 17) with step dt,
    unrolled so that autograd differentiates through every step, and the loss is in data
    units. The model itself is unchanged: the result is an ordinary start for the
    ordinary sampler at this dt. ``prior_weight`` (lambda) trades landing error for a
    more typical z (a MAP-like start); 0 asks only for the target.

    Arguments:
        model: a trained :class:`~flowscope.matching.FlowMatching`.
        target: (1, D) data units.
        z_init: (1, D) the first guess, standardized units (default: a draw of N(0, I)).
        dt: Euler step of the sampler being inverted.
        steps: at most this many Adam steps.
        lr: Adam's learning rate, standardized units.
        tol: stop once the landing error is below this, data units.
        prior_weight: lambda above, >= 0.
        labels: the class of a conditional model (one int), else ``None``.
        generator: draws the default ``z_init``.
        n_times: states kept in the returned path.

    Returns:
        a :class:`Steered`; ``details`` holds ``steps_taken``, ``dt``, ``lr`` and the
        error after each step (``errors``, data units).

    Raises:
        ValueError: for steps < 1, lr <= 0, prior_weight < 0, or bad inputs as above.
    """
    target = _check_target(model, target)
    steps = check_int(steps, "steps")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (math.isfinite(prior_weight) and prior_weight >= 0):
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
    lab = model.check_labels(labels, 1)
    if z_init is None:
        z_init = torch.randn(1, model.features, generator=generator, dtype=model.dtype)
    z = model.check_points(z_init, "z_init").clone().requires_grad_(True)
    grid = time_grid(dt)
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    errors: list[float] = []
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # only z is optimised
    try:
        for _ in range(steps):
            y1 = integrate(lambda s, t: model.velocity(s, t, lab), z, grid, "euler")[-1]
            x = model.standardization.inverse(y1, lab)
            dist2 = ((x - target) ** 2).sum()
            errors.append(float(dist2.detach().sqrt()))
            if errors[-1] < tol:
                break
            loss = dist2 + prior_weight * 0.5 * (z * z).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
    z = z.detach()
    with torch.no_grad():
        states = integrate(lambda s, t: model.velocity(s, t, lab), z, grid, "euler")
    return _record(
        model,
        "gradient descent on z",
        target,
        z,
        states,
        grid,
        (len(errors) + 1) * (len(grid) - 1),
        n_times,
        {"steps_taken": len(errors), "dt": dt, "lr": lr, "errors": errors},
        lab,
    )


def guided_sample(
    model: FlowMatching,
    target: Any,
    *,
    weight: float,
    z: torch.Tensor | None = None,
    dt: float = 1e-3,
    labels: Any = None,
    generator: torch.Generator | None = None,
    n_times: int = 101,
) -> Steered:
    r"""Sample with a velocity blended towards the straight path to the target.

    The conditional velocity of the linear path that ends at x* (the study's Eqs. 14-15, with
    x1 = x*) is u(y, t) = (y* - y) / (1 - t). The guided sampler integrates

    .. math:: \tilde v(y, t) = (1 - w)\, v(y, t) + w\, \frac{y^* - y}{1 - t}

    with Euler from t = 0 to 1 (y* is the target in standardized units). w = 1 discards
    the network and reaches x* exactly whatever the start (the trivial solution);
    0 < w < 1 keeps part of the model's flow and lands in between.

    Arguments:
        model: a trained :class:`~flowscope.matching.FlowMatching`.
        target: (1, D) data units.
        weight: w in [0, 1].
        z: (1, D) the start, standardized units (default: a draw of N(0, I)).
        dt: Euler step.
        labels: the class of a conditional model (one int), else ``None``.
        generator: draws the default ``z``.
        n_times: states kept in the returned path.

    Returns:
        a :class:`Steered`; ``details`` holds ``weight`` and ``dt``.

    Raises:
        ValueError: if weight is not in [0, 1], or bad inputs as above.
    """
    target = _check_target(model, target)
    if not (isinstance(weight, int | float) and 0 <= weight <= 1):
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    lab = model.check_labels(labels, 1)
    if z is None:
        z = torch.randn(1, model.features, generator=generator, dtype=model.dtype)
    z = model.check_points(z, "z")
    y_star = model.standardization(target, lab)
    grid = time_grid(dt)

    def velocity(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Euler never evaluates at t = 1, so 1 - t >= the last step.
        v = model.velocity(y, t, lab)
        return (1 - weight) * v + weight * (y_star - y) / (1 - t)

    with torch.no_grad():
        states = integrate(velocity, z, grid, "euler")
    return _record(
        model,
        f"guided, w = {weight:g}",
        target,
        z,
        states,
        grid,
        len(grid) - 1,
        n_times,
        {"weight": float(weight), "dt": dt},
        lab,
    )
