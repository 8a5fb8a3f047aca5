r"""Mean flows: the average velocity over a time interval, for sampling in one or a few steps.

A mean flow learns, besides the instantaneous velocity v of flow matching, the *average*
velocity of the flow from the point y at time t to time r,

.. math:: u(y, r, t) = \frac{1}{r - t} \int_t^r v(y_\tau, \tau)\, d\tau, \qquad y_t = y,

so that one step y_r = y + (r - t) u(y, r, t) is exact however long it is, and
u(y, t, t) = v(y, t). Differentiating (r - t) u = \int_t^r v along the flow gives the
MeanFlow identity, which needs no integral to train on:

.. math:: u(y_t, r, t) = v(y_t, t) - (t - r)\, \frac{d}{dt} u(y_t, r, t), \qquad
    \frac{d}{dt} u = v\, \partial_y u + \partial_t u.

Direction of time. Geng et al. run time from the data (t = 0) to the noise (t = 1) and
jump from t down to r < t. flowscope runs it the other way (t = 0 the source x0, t = 1 the
data x1, as in the study): the point is at the earlier time t and jumps forward to r >= t.
With u(y, r, t) read as "the average velocity from y at time t to time r" the identity
and the step y_r = y - (t - r) u read the same in both directions; only r >= t here where
the paper has r <= t, and the path's velocity is x1 - x0 where the paper's is x0 - x1.

References:
    Geng, Deng, Bai, Kolter, He. Mean Flows for One-step Generative Modeling. 2025,
    arXiv:2505.13447 (Eqs. 6-8 the identity, Algorithm 1 the loss, Eq. 9 the adaptive
    weight, Eq. 10 the one-step sampler).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..defaults import MEANFLOW_DEFAULTS
from .couplings import Coupling
from .field import AverageVelocityField, _time_column
from .model import FlowMatching, TrainingBatch
from .paths import AffinePath
from .solvers import DEFAULT_DT, time_grid
from .sources import Source
from .times import TimeSampler

__all__ = ["ADAPTIVE_EPSILON", "MeanFlow", "MeanFlowBatch"]

#: The constant c of the adaptive weight 1 / (||error||^2 + c)^p (the paper's 1e-3).
ADAPTIVE_EPSILON = 1e-3


@dataclass(frozen=True)
class MeanFlowBatch(TrainingBatch):
    """One batch of the MeanFlow loss: a :class:`~.model.TrainingBatch` (x_t at the
    earlier time t, dx_t the path's velocity there) and the time r >= t it jumps to.

    Attributes:
        r: (N, 1) the end times, r = t for the share of the batch that trains the
            instantaneous velocity.
    """

    r: torch.Tensor


def _share(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _power(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"adaptive_power must be a number >= 0, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"adaptive_power must be a finite number >= 0, got {value!r}")
    return float(value)


class MeanFlow(FlowMatching):
    r"""A mean flow: flow matching's parts with a network of the average velocity
    u(y, r, t), trained by the MeanFlow identity and sampled in one or a few steps.

    Training draws x0 from the source paired with the data x1 by the coupling, two times
    from the time sampler, t the smaller and r the larger (r = t for a share
    ``1 - jump_share`` of the batch), and regresses u on the identity's right-hand side
    with its gradient stopped (Algorithm 1 of Geng et al.),

    .. math:: \mathcal{L} = E\, w \,\| u(x_t, r, t) - \mathrm{sg}(\dot x_t
        - (t - r)\, (\dot x_t \partial_y u + \partial_t u)) \|^2,

    the total derivative by one Jacobian-vector product, :func:`torch.func.jvp` with
    tangents (dx_t, 0, 1) in (y, r, t) (:meth:`average_velocity_and_derivative`), and w
    the adaptive weight sg(1 / (||error||^2 + c)^p) (c = :data:`ADAPTIVE_EPSILON`; p = 0 is
    the plain squared error). For r = t the target is the path's velocity: the
    flow-matching loss.

    Sampling with ``solver="euler"`` takes K = 1 / dt steps y <- y + (r - t) u(y, r, t)
    along the grid 0 = t_0 < ... < t_K = 1 (Eq. 10 for K = 1, the default): the Euler step
    with the average velocity over the step in place of the velocity at its start, exact
    for an exact mean flow. The other solvers, and every solver from the data back to the
    noise (:meth:`encode`, ``trajectory(inverse=True)``), integrate the instantaneous
    velocity u(y, t, t), :meth:`velocity`: the average velocity is trained for steps
    forward in time only.

    Likelihood: :meth:`log_prob` is the exact density of the ODE dy/dt = u(y, t, t) (the
    instantaneous change of variables, as :class:`~.model.FlowMatching`), the flow the
    few-step sampler follows when u is the exact mean flow; samples of a few steps of a
    trained model differ from it by the model's error (``benchmarks/README.md``).

    The Gaussian skip: u is the network plus the path's
    :meth:`~.paths.AffinePath.gaussian_average_velocity`, the exact average velocity of
    N(0, I) data (0 from t = 0 to r = 1 on the linear path, which carries N(0, I) to
    itself), so that the network learns only the rest.

    Arguments:
        features, num_classes, hidden, layers, embedding_dim, path, coupling, source,
            standardize, gaussian_skip: as :class:`~.model.FlowMatching`.
        times: the sampler of both times, of :data:`~.times.TIME_SAMPLERS` (default
            ``"uniform"``: a one-step sampler needs pairs from t near 0 to r near 1).
        jump_share: the share of the batch with r != t, in [0, 1] (0 is flow matching).
        adaptive_power: p of the adaptive weight, >= 0.

    The defaults, jump_share 0.75 and p = 0.5, measured best of four settings for the
    one-step W2 on the moons; the paper's ImageNet choice (0.25, p = 1) was worse there
    (``benchmarks/README.md``, "Few-step sampling").

    Raises:
        ValueError: as :class:`~.model.FlowMatching`, and for a ``jump_share`` outside
            [0, 1] or a negative ``adaptive_power``.

    Example:
        >>> mf = MeanFlow(features=2, hidden=16, layers=3)
        >>> mf.sample(4, generator=torch.Generator().manual_seed(0)).shape  # one step
        torch.Size([4, 2])
    """

    kind = "meanflow"
    field_class = AverageVelocityField

    def __init__(
        self,
        features: int = 2,
        num_classes: int | None = None,
        hidden: int = 64,
        layers: int = 5,
        embedding_dim: int = 16,
        path: str | dict | AffinePath = "linear",
        coupling: str | dict | Coupling = "independent",
        times: str | dict | TimeSampler | None = "uniform",
        standardize: str | None = None,
        gaussian_skip: bool = True,
        source: str | dict | Source = "normal",
        jump_share: float = MEANFLOW_DEFAULTS["jump_share"],
        adaptive_power: float = MEANFLOW_DEFAULTS["adaptive_power"],
    ):
        super().__init__(
            features,
            num_classes,
            hidden,
            layers,
            embedding_dim,
            path,
            coupling,
            "uniform" if times is None else times,
            standardize,
            gaussian_skip,
            source,
        )
        self.jump_share = _share(jump_share, "jump_share")
        self.adaptive_power = _power(adaptive_power)
        self._args.update(jump_share=self.jump_share, adaptive_power=self.adaptive_power)
        self._args.pop("label_dropout")  # no null class: a mean flow is not guided
        self._args.pop("activation")  # not one of a mean flow's arguments: LeakyReLU always

    def describe_loss(self) -> str:
        weight = f"adaptive weight p = {self.adaptive_power:g}" if self.adaptive_power else ""
        return (
            f"the MeanFlow loss with t, r ~ {self.times.describe()}, r != t for "
            f"{self.jump_share:.0%} of the points" + (f", {weight}" if weight else "")
        )

    @classmethod
    def likelihood_method(cls, **options: Any) -> str:
        return super().likelihood_method(**options) + ", of the velocity u(y, t, t)"

    # -- the velocities ------------------------------------------------------------------
    def average_velocity(
        self,
        y: torch.Tensor,
        r: torch.Tensor | float,
        t: torch.Tensor | float,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """u(y, r, t) in standardized units: the average velocity from y (N, D) at time
        t to time r (numbers, 0-dim, (N,) or (N, 1) in [0, 1]); labels (N,) or ``None``
        -> (N, D). Differentiable in y, r, t and the weights."""
        u = self.field(y, r, t, labels)
        if not self.gaussian_skip:
            return u
        return u + self.path.gaussian_average_velocity(y, _time_column(r, y), _time_column(t, y))

    def velocity(
        self, y: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The instantaneous velocity u(y, t, t) (N, D): what the ODE solvers, the
        likelihood and the path metrics integrate."""
        return self.average_velocity(y, t, t, labels)

    def average_velocity_and_derivative(
        self,
        y: torch.Tensor,
        r: torch.Tensor,
        t: torch.Tensor,
        v: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        fast: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""u(y, r, t) and its total derivative in t along the velocity v,

        .. math:: \frac{d}{dt} u(y_t, r, t) = v\, \partial_y u + \partial_t u,

        by one forward-mode product, tangents (v, 0, 1) in (y, r, t): for the built-in
        network (:class:`~.field.AverageVelocityField`) its
        :meth:`~.field.AverageVelocityField.tangent`, forward mode written out (about a
        third of the time of the general product on this machine) and the skip's by
        autograd; otherwise, or with ``fast=False``, :func:`torch.func.jvp` of
        :meth:`average_velocity`. Both give the same numbers to rounding (a test checks
        it in float64).

        Arguments:
            y: (N, D) points at times t, standardized units.
            r, t: (N, 1) times.
            v: (N, D) the velocity dy/dt along which to differentiate.
            labels: (N,) class ids or ``None``.
            fast: use the written-out forward mode where it applies.

        Returns:
            (u, du/dt), (N, D) each; u is differentiable in the weights, du/dt is
            detached (the loss stops its gradient).
        """
        if not fast or type(self.field) is not AverageVelocityField:

            def u(y_: torch.Tensor, r_: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
                return self.average_velocity(y_, r_, t_, labels)

            tangents = (v, torch.zeros_like(r), torch.ones_like(t))
            out, du_dt = torch.func.jvp(u, (y, r, t), tangents)
            return out, du_dt.detach()
        out = self.average_velocity(y, r, t, labels)
        du_dt = self.field.tangent(y, r, t, v, torch.zeros_like(r), torch.ones_like(t), labels)
        if self.gaussian_skip:  # c(r, t) y: c v + (dc/dt) y
            with torch.enable_grad():
                tt = t.detach().requires_grad_(True)
                c = self.path.gaussian_average_velocity(torch.ones_like(tt), r.detach(), tt)
                (dc_dt,) = torch.autograd.grad(c.sum(), tt)
            du_dt = du_dt + c.detach() * v.detach() + dc_dt * y.detach()
        return out, du_dt

    # -- training -----------------------------------------------------------------------
    def training_batch(
        self,
        x1: torch.Tensor,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MeanFlowBatch:
        """Draw the noise, two times and which points jump (r != t) for standardized data
        x1 (N, D), in that order from ``generator``, and place the pairs on the path at
        the earlier time t."""
        n = x1.shape[0]
        x0 = self.base_sample(n, generator)
        a = self.times.sample(n, generator, x1.dtype).to(x1.device)
        b = self.times.sample(n, generator, x1.dtype).to(x1.device)
        jump = torch.rand(n, 1, generator=generator, dtype=x1.dtype).to(x1.device)
        t = torch.minimum(a, b)
        r = torch.where(jump < self.jump_share, torch.maximum(a, b), t)
        x0 = self.coupling.pair(x0, x1, labels)
        on_path = self.path.sample(x0, x1, t)
        return MeanFlowBatch(x0, x1, t, on_path.x_t, on_path.dx_t, labels, r)

    def _loss(self, y, labels, generator):
        """The MeanFlow loss (Algorithm 1 with the adaptive weight), mean over the batch
        of the weighted squared error summed over the coordinates."""
        b = self.training_batch(y, labels, generator)
        u, du_dt = self.average_velocity_and_derivative(b.x_t, b.r, b.t, b.dx_t, labels)
        target = (b.dx_t - (b.t - b.r) * du_dt).detach()  # du_dt: already without a graph
        err = ((u - target) ** 2).sum(dim=1)  # (N,)
        if self.adaptive_power == 0:
            return err.mean()
        weight = (err.detach() + ADAPTIVE_EPSILON) ** -self.adaptive_power
        return (weight * err).mean()

    # -- sampling ---------------------------------------------------------------------------
    def _integrate(
        self,
        y,
        labels,
        grid: list[float],
        solver: str,
        record: list[int] | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Forward Euler: steps of the average velocity; otherwise the ODE of u(y, t, t).
        A mean flow has no null class: ``guidance`` is ``None`` (FlowMatching's check)."""
        if solver != "euler" or grid[-1] < grid[0] or guidance is not None:
            return super()._integrate(y, labels, grid, solver, record, guidance)
        record = list(range(len(grid))) if record is None else record
        states = [y]
        with torch.no_grad():
            for t, r in zip(grid[:-1], grid[1:], strict=True):
                y = y + (r - t) * self.average_velocity(y, r, t, labels)
                states.append(y)
        return torch.stack(states)[record]  # (len(record), N, D)

    def decode(self, z, labels=None, *, dt: float = 1.0, solver: str = "euler"):
        """Push noise z (N, D) from t = 0 to t = 1: ``round(1 / dt)`` steps of the average
        velocity with ``solver="euler"`` (default one step), or ``solver``'s integration
        of u(y, t, t). Returns x (N, D) in data units.

        Raises:
            ValueError: for dt outside (0, 1], an unknown solver or bad labels.
        """
        return super().decode(z, labels, dt=dt, solver=solver)

    def encode(self, x, labels=None, *, dt: float = DEFAULT_DT, solver: str = "euler"):
        """Points x (N, D) in data units -> latents (N, D) at t = 0: the ODE of the
        instantaneous velocity u(y, t, t) from t = 1 down to 0, with steps of ``dt``
        (default the study's 1e-3; the average velocity is not trained backwards)."""
        return super().encode(x, labels, dt=dt, solver=solver)

    def sample(
        self,
        n: int,
        *,
        labels: Any = None,
        generator: torch.Generator | None = None,
        dt: float = 1.0,
        solver: str = "euler",
    ) -> torch.Tensor:
        """Draw n points (n, D) in data units: source points from ``generator`` pushed
        by :meth:`decode` (default one step, Eq. 10 of Geng et al.).

        Raises:
            ValueError: for n < 1, dt outside (0, 1], an unknown solver, or bad labels.
        """
        return super().sample(n, labels=labels, generator=generator, dt=dt, solver=solver)

    def trajectory(
        self,
        points,
        *,
        labels: Any = None,
        inverse: bool = False,
        units: str = "data",
        dt: float | None = None,
        times: Sequence[float] | None = None,
        solver: str = "euler",
    ) -> torch.Tensor:
        """States along the map at the requested times: as
        :meth:`FlowMatching.trajectory <.model.FlowMatching.trajectory>`, the steps those of
        :meth:`decode` (default dt 1, one step) or, with ``inverse``, of :meth:`encode`
        (default dt 1e-3).

        Returns:
            (len(times), N, D), in the order the times were given (every grid time by
            default, the start included).
        """
        if dt is None:
            dt = DEFAULT_DT if inverse else 1.0
        time_grid(dt)
        return super().trajectory(
            points, labels=labels, inverse=inverse, units=units, dt=dt, times=times, solver=solver
        )

    def log_prob(self, x, labels=None, *, standardized: bool = False, **options: Any):
        r"""Exact log-density of the ODE dy/dt = u(y, t, t), in nats: the instantaneous
        change of variables of :meth:`FlowMatching.log_prob <.model.FlowMatching.log_prob>`
        (options ``solver``, ``steps``, ``divergence``, ``generator``), with the mean
        flow's instantaneous velocity. Few-step samples follow this flow only as far as
        the network is the exact mean flow.

        Returns:
            (N,) log p(x); ``-inf`` where the value leaves the floating-point range.
        """
        return super().log_prob(x, labels, standardized=standardized, **options)
