"""Flow matching with linear (conditional optimal-transport) paths (seed section 4, Eqs. 10-18).

Time runs from t = 0 (noise x0 ~ N(0, I)) to t = 1 (data x1), as in the seed.

References:
    Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. 2022,
    arXiv:2210.02747.
    Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations. 2018,
    arXiv:1806.07366 (instantaneous change of variables).
    Grathwohl et al. FFJORD. 2019, arXiv:1810.01367 (Hutchinson's trace estimator).
    Esser et al. Scaling Rectified Flow Transformers for High-Resolution Image Synthesis.
    2024, arXiv:2403.03206 (non-uniform sampling of t in the training loss; they use
    logit-normal densities, and the opposite time convention).
    Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based
    Generative Models. 2022, arXiv:2206.00364 (a skip term that handles the part of the
    answer known in closed form, so that the network learns the rest).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._kernel import fm_kernel
from .base import FlowModel, grad_buffer, standard_normal_log_prob
from .data import check_int

__all__ = [
    "VelocityField",
    "FlowMatching",
    "SOLVERS",
    "DEFAULT_TIME_ALPHA",
    "DEFAULT_CONDITIONAL_TIME_ALPHA",
    "gaussian_velocity",
    "sample_times",
    "time_grid",
    "integrate",
]

SOLVERS = ("euler", "midpoint", "rk4", "dopri5")

#: The default ``time_alpha`` of an unconditional :class:`FlowMatching`: t ~ Beta(5, 1).
DEFAULT_TIME_ALPHA = 5.0
#: The default ``time_alpha`` of a class-conditional :class:`FlowMatching`: t ~ Beta(7, 1).
DEFAULT_CONDITIONAL_TIME_ALPHA = 7.0


def _check_time_alpha(alpha: Any) -> float:
    """``alpha`` as a float, if it is a finite real number > 0 (not a bool).

    Raises:
        ValueError: naming the value otherwise.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real | torch.Tensor):
        raise ValueError(f"time_alpha must be a number > 0, got {alpha!r}")
    if isinstance(alpha, torch.Tensor) and alpha.numel() != 1:
        raise ValueError(f"time_alpha must be one number, got a tensor of shape {alpha.shape}")
    value = float(alpha)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"time_alpha must be a finite number > 0, got {alpha!r}")
    return value


def sample_times(
    n: int, alpha: float, generator: torch.Generator | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Training times t ~ Beta(alpha, 1), shape (n, 1), in [0, 1].

    Drawn by inverting the CDF t^alpha: t = u^(1/alpha) with u ~ U[0, 1], so the density
    is alpha t^(alpha - 1); ``alpha=1`` returns the uniform draws themselves (the seed's
    Algorithm 1), bit for bit.

    Raises:
        ValueError: if n is not a positive integer or alpha not a finite number > 0.
    """
    return _beta_times(check_int(n, "n"), _check_time_alpha(alpha), generator, dtype)


def _beta_times(n: int, alpha: float, generator, dtype) -> torch.Tensor:
    """:func:`sample_times` without the checks, for the training loop."""
    u = torch.rand(n, 1, generator=generator, dtype=dtype)
    return u if alpha == 1.0 else u.pow(1.0 / alpha)


Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gaussian_velocity(y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    r"""The marginal velocity field (Eq. 13) of linear paths when the data are N(0, I).

    .. math:: v(y, t) = E[x_1 - x_0 \mid y_t = y] = \frac{2t - 1}{t^2 + (1 - t)^2}\, y

    For independent x0, x1 ~ N(0, I) and y = t x1 + (1 - t) x0 (Eq. 14), (x1 - x0, y) is
    jointly Gaussian with Cov(x1 - x0, y) = (2t - 1) I and Var(y) = (t^2 + (1 - t)^2) I.
    Its flow carries N(0, I) at t = 0 through N(0, (t^2 + (1 - t)^2) I) to N(0, I) at
    t = 1. Standardized data have zero mean and unit variance per coordinate, so this is
    the part of the field that their first two moments alone determine; with
    ``gaussian_skip`` the :class:`VelocityField`'s network learns only the rest.

    Arguments:
        y: (N, D) points, standardized units.
        t: a number, a 0-dimensional tensor or (N, 1) times in [0, 1] (the denominator is
            >= 1/2).

    Returns:
        (N, D).

    Raises:
        ValueError: if t is a tensor of another shape (an (N,) t would broadcast across
            the coordinates instead of the points).
    """
    if isinstance(t, torch.Tensor) and t.ndim and (t.ndim != 2 or t.shape[1] != 1):
        raise ValueError(f"t must be a number or (N, 1), got a tensor of shape {tuple(t.shape)}")
    return _gaussian_rate(t) * y


def _gaussian_rate(t):
    """g(t) = (2t - 1) / (t^2 + (1 - t)^2), of a number or a tensor: the Gaussian field is
    g(t) y (the fused kernel computes the same g)."""
    return (2 * t - 1) / (t * t + (1 - t) ** 2)


class VelocityField(nn.Module):
    """An MLP v(y, t) -> (N, D): ``layers`` Linear layers of width ``hidden``, LeakyReLU between.

    The input of the first layer is the point, the time and, for a conditional field, the
    class vector from an ``nn.Embedding``: that first fully connected layer mixes the three.
    The Linear layers' weights live in one flat parameter ``theta`` (for each layer its
    weight (out, in), as in ``nn.Linear``, then its bias), so that the optimizer and the
    fused training kernel handle one tensor; :meth:`pairs` gives the per-layer views.
    Each layer is initialised as ``nn.Linear`` is. With ``gaussian_skip`` the field is
    the MLP plus :func:`gaussian_velocity`, the exact field for N(0, I) data (off here, the
    plain MLP; :class:`FlowMatching` turns it on by default). It is fixed at construction.

    Arguments:
        features: the dimension D.
        hidden: width of the hidden layers (seed: >= 64).
        layers: number of Linear layers, >= 2 (seed: 4-5).
        num_classes: number of classes of a conditional field, or ``None``.
        embedding_dim: size of the class vector.
        gaussian_skip: add :func:`gaussian_velocity` to the MLP's output.
    """

    def __init__(
        self,
        features: int = 2,
        hidden: int = 64,
        layers: int = 5,
        num_classes: int | None = None,
        embedding_dim: int = 16,
        gaussian_skip: bool = False,
    ):
        super().__init__()
        self._gaussian_skip = bool(gaussian_skip)
        if layers < 2:
            raise ValueError(f"layers must be >= 2, got {layers}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.embedding = None if num_classes is None else nn.Embedding(num_classes, embedding_dim)
        d_in = features + 1 + (0 if num_classes is None else embedding_dim)
        self.dims = [d_in] + [hidden] * (layers - 1) + [features]
        flat = []
        for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
            lin = nn.Linear(a, b)
            flat += [lin.weight.detach().reshape(-1), lin.bias.detach()]
        self.theta = nn.Parameter(torch.cat(flat))

    @property
    def gaussian_skip(self) -> bool:
        """Whether :func:`gaussian_velocity` is added to the MLP's output (read-only)."""
        return self._gaussian_skip

    def kernel_params(self) -> list[nn.Parameter]:
        """The weights in the fused kernel's order: ``theta``, then the class embedding."""
        return [self.theta] if self.embedding is None else [self.theta, self.embedding.weight]

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight (out, in), bias (out,)) of every Linear layer: views of ``theta``."""
        out, o = [], 0
        for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
            w = self.theta[o : o + a * b].view(b, a)
            o += a * b
            out.append((w, self.theta[o : o + b]))
            o += b
        return out

    def forward(
        self, y: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v(y, t): y (N, D), t a scalar or (N,), labels (N,) or ``None`` -> (N, D)."""
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        t = t.expand(y.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)
        a = self._inputs(y, t, labels)
        pairs = self.pairs()
        for i, (w, b) in enumerate(pairs):
            a = F.linear(a, w, b)
            if i < len(pairs) - 1:
                a = F.leaky_relu(a)
        return a + gaussian_velocity(y, t) if self.gaussian_skip else a

    def _inputs(
        self, y: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The first layer's input (N, dims[0]): the point, t (N, 1) and the class vector."""
        parts = [y, t]
        if self.embedding is not None:
            parts.append(self.embedding(labels))
        return torch.cat(parts, dim=1)

    def frozen(self, labels: torch.Tensor | None = None) -> Velocity:
        """v(y, t) for an ODE solver: the same function as :meth:`forward`, with the weights
        detached and the parts of the first layer that do not depend on y computed once.

        Arguments:
            labels: the class ids (N,) of the points to be integrated, or ``None``.

        Returns:
            a callable (y (N, D), t scalar tensor) -> (N, D); differentiable in y only.
        """
        pairs = [(w.detach(), b.detach()) for w, b in self.pairs()]
        w0, b0 = pairs[0]
        d = self.dims[-1]
        w_y, w_t = w0[:, :d].T.contiguous(), w0[:, d]
        const = b0
        if self.embedding is not None:
            const = b0 + self.embedding(labels).detach() @ w0[:, d + 1 :].T  # (N, hidden)
        rest = [(w.T.contiguous(), b) for w, b in pairs[1:]]
        skip = self.gaussian_skip

        def velocity(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = torch.addmm(const + t * w_t, y, w_y)
            for w, b in rest:
                a = torch.addmm(b, F.leaky_relu(a), w)
            if not skip:
                return a
            # gaussian_velocity with t as a Python number: one tensor operation per step
            return a.add_(y, alpha=_gaussian_rate(float(t)))

        return velocity


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
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
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


class FlowMatching(FlowModel):
    r"""Flow matching with linear paths, unconditional or class-conditional.

    Training minimises Eq. 16,

    .. math:: E_{t, x_0, x_1} \| v(t x_1 + (1 - t) x_0, t) - (x_1 - x_0) \|^2,

    with x0 ~ N(0, I) and, per sample, t ~ Beta(``time_alpha``, 1); sampling integrates
    dy/dt = v(y, t) from t = 0 to 1 (Algorithm 2, Eq. 17).

    The velocity: by default (``gaussian_skip=True``) v(y, t) is the network's output plus
    :func:`gaussian_velocity`, the exact field (Eq. 13) of N(0, I) data. Standardized data
    have zero mean and unit variance per coordinate, so the network starts from the field
    of the data's first two moments and learns only the rest, as the skip term of Karras
    et al. 2022 lets a denoiser learn only what the input does not already give. Early on
    the path, where the marginal is close to Gaussian, little is left to learn; that is
    what lets the training times concentrate near the data. ``gaussian_skip=False`` is the
    seed's network alone.

    The time distribution: the seed's Algorithm 1 draws t ~ U[0, 1], which is
    ``time_alpha=1``. Any time density that is positive on (0, 1) has the same minimiser,
    the marginal velocity field (Eq. 13), at every t, so the choice does not change what
    is learned in the limit; it changes where a small network spends its capacity and how
    noisy the gradient is. The defaults, Beta(5, 1) (density 5 t^4, t = u^(1/5)) for an
    unconditional model and Beta(7, 1) for a conditional one, train mostly near the data
    end, where the field is sharpest. The validation loss of :func:`~flowscope.train.fit`
    draws its times from the same distribution: it is the objective being minimised, so
    its values depend on ``time_alpha``.

    Measured with the seed's recipe otherwise (Olympic rings, 20 epochs, width 64, training
    seeds 0-4; the conditional model standardized per class; ``benchmarks/README.md``):

    - unconditional held-out NLL (nats per standardized point; the data's entropy is
      1.562): 1.95-1.98 with U[0, 1] and no skip (the seed's recipe), 1.84-1.89 with
      Beta(5, 1), 1.82-1.83 with Beta(5, 1) and the skip (the default);
    - conditional share of samples in their own ring's band: 96.7-97.4% with Beta(5, 1),
      97.4-97.8% with the skip added, 98.3-98.9% with Beta(7, 1) and the skip (the
      default), at a class-conditional NLL of 0.23-0.26, 0.22-0.24 and 0.26-0.28 nats
      (in the coordinates of the unconditional NLL: all points standardized together).
      Without the skip, later times cost density instead: Beta(12, 1) put 99% of one
      run's samples in their band (global standardization, seed 0) with a
      class-conditional NLL of 1.14 and rings of uneven density.

    The velocity field works in standardized coordinates; inputs and outputs of the public
    methods are in data units, except the latent (noise) side, which is N(0, I) in
    standardized units as for :class:`~flowscope.flows.NormalizingFlow`.

    Standardization of a conditional model: by default each class is standardized by its
    own mean and standard deviation (``standardize="class"``), so that in data units the
    noise of class k is N(mean_k, diag(std_k^2)), a Gaussian around the class's average
    point (a class-conditional prior, as in Issachar et al. 2025, arXiv:2502.09611), and
    the network only has to shape each class, not also carry it across the plane. The
    seed standardizes all points together (``"global"``). With the library's recipe on
    the Olympic rings (the seed's 20 epochs, Beta(5, 1) times, no skip, seeds 0-4) this
    raised the class accuracy from 93.9-95.1% to 96.7-97.4% and lowered the
    class-conditional NLL from 0.31-0.34 to 0.23-0.26 nats, at the same cost
    (``benchmarks/README.md``). ``log_prob`` stays exact: the class's log|det| of the
    standardization is added. Each class needs at least 2 training points.

    Arguments:
        features: the dimension D.
        num_classes: classes of a conditional model, or ``None``.
        hidden: width of the velocity MLP (seed: 64).
        layers: Linear layers of the velocity MLP (seed: 5).
        embedding_dim: size of the class embedding of a conditional model.
        time_alpha: t ~ Beta(time_alpha, 1) in the loss; 1 is the seed's U[0, 1];
            ``None`` is :data:`DEFAULT_TIME_ALPHA` (5), or
            :data:`DEFAULT_CONDITIONAL_TIME_ALPHA` (7) for a conditional model.
        standardize: ``"class"`` (per class) or ``"global"``; ``None`` is ``"class"`` for
            a conditional model and ``"global"`` otherwise.
        gaussian_skip: add :func:`gaussian_velocity` to the network's output.

    Raises:
        ValueError: if ``time_alpha`` is not a finite number > 0, ``standardize`` is not
            one of :data:`~flowscope.base.STANDARDIZE` (``"class"`` needs classes), or
            ``gaussian_skip`` is not a bool.

    Example:
        >>> fm = FlowMatching(features=2, hidden=16, layers=3)
        >>> fm.sample(4, dt=0.1, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    kind = "fm"

    def __init__(
        self,
        features: int = 2,
        num_classes: int | None = None,
        hidden: int = 64,
        layers: int = 5,
        embedding_dim: int = 16,
        time_alpha: float | None = None,
        standardize: str | None = None,
        gaussian_skip: bool = True,
    ):
        conditional = num_classes is not None
        if standardize is None:
            standardize = "class" if conditional else "global"
        super().__init__(features, num_classes, standardize)
        if time_alpha is None:
            time_alpha = DEFAULT_CONDITIONAL_TIME_ALPHA if conditional else DEFAULT_TIME_ALPHA
        time_alpha = _check_time_alpha(time_alpha)
        if not isinstance(gaussian_skip, bool):
            raise ValueError(f"gaussian_skip must be True or False, got {gaussian_skip!r}")
        self._args = dict(
            features=features,
            num_classes=num_classes,
            hidden=hidden,
            layers=layers,
            embedding_dim=embedding_dim,
            time_alpha=time_alpha,
            standardize=standardize,
            gaussian_skip=gaussian_skip,
        )
        self.field = VelocityField(
            features, hidden, layers, num_classes, embedding_dim, gaussian_skip
        )

    def config(self) -> dict[str, Any]:
        return dict(self._args)

    @property
    def gaussian_skip(self) -> bool:
        """Whether the velocity is the network plus :func:`gaussian_velocity` (read-only: it
        is part of the model's recorded configuration)."""
        return self._args["gaussian_skip"]

    @property
    def time_alpha(self) -> float:
        """The training times' distribution, t ~ Beta(time_alpha, 1) (read-only: it is part
        of the model's recorded configuration)."""
        return self._args["time_alpha"]

    def velocity(
        self, y: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v(y, t) in standardized units: y (N, D), t scalar or (N,) in [0, 1] -> (N, D)."""
        return self.field(y, t, labels)

    # -- training -------------------------------------------------------------------------
    def _use_kernel(self, x1: torch.Tensor) -> bool:
        f = self.field
        return (
            type(f) is VelocityField
            and x1.device.type == "cpu"
            and not x1.requires_grad
            and x1.dtype == f.theta.dtype
            and len(x1) >= 1
            and len(f.dims) - 1 <= 32  # the kernel's limit on layers
            and fm_kernel(x1.dtype) is not None
        )

    def _draw(self, x1, generator):
        """Noise x0 ~ N(0, I) shaped like x1 and times t ~ Beta(time_alpha, 1), (N, 1)."""
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
        return x0, _beta_times(x1.shape[0], self.time_alpha, generator, x1.dtype)

    def _loss_std(self, x1, labels, generator):
        """Eq. 16 on standardized data x1 (N, D): x0 ~ N(0, I), t ~ Beta(time_alpha, 1)."""
        return self._eq16(x1, *self._draw(x1, generator), labels)

    def _loss_and_grad_std(self, x1, labels, generator):
        """Eq. 16 with every weight's gradient in its ``.grad``, by the kernel alone (see
        base)."""
        f = self.field
        params = f.kernel_params()
        methods = ("_loss_std", "_draw", "_eq16")  # the loss the kernel reproduces
        if not (self._fusable(params, FlowMatching, methods) and self._use_kernel(x1)):
            return None
        x0, t = self._draw(x1, generator)
        return _fm_kernel_loss(x1, x0, t, labels, f, [grad_buffer(p) for p in params])

    def _eq16(self, x1, x0, t, labels):
        """Eq. 16 for given data x1 (N, D), noise x0 (N, D) and times t (N, 1); the fused
        kernel computes it (and its gradient) when it can."""
        if self._use_kernel(x1):
            params = self.field.kernel_params()
            if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
                return _fm_kernel_loss(x1, x0, t, labels, self.field, None)
            return _FusedFMLoss.apply(x1, x0, t, labels, self.field, *params)
        y = t * x1 + (1 - t) * x0  # Eq. 14
        v = self.field(y, t, labels)
        return ((v - (x1 - x0)) ** 2).sum(dim=1).mean()  # Eq. 16

    @torch.no_grad()
    def validation_terms(self, y, labels, generator) -> dict[str, float]:
        """Eq. 16 on standardized points y (N, D), with noise and times from ``generator``.

        Raises:
            ValueError: for labels that do not fit the model (see :meth:`loss`).
        """
        y = self._check_points(y, "y")
        labels = self._check_labels(labels, len(y))
        return {"loss": float(self._loss_std(y, labels, generator))}

    # -- integration ----------------------------------------------------------------------
    def _path(
        self,
        y: torch.Tensor,
        labels: torch.Tensor | None,
        grid: list[float],
        solver: str,
    ) -> torch.Tensor:
        with torch.no_grad():
            return integrate(self.ode_velocity(labels), y, grid, solver)

    def ode_velocity(self, labels: torch.Tensor | None = None) -> Velocity:
        """The velocity (y (N, D), t) -> (N, D), standardized units, that :meth:`sample`,
        :meth:`reverse` and :meth:`trajectory` integrate: :meth:`VelocityField.frozen`
        for the built-in field, the field itself for a user-supplied one."""
        if type(self.field) is VelocityField:
            return self.field.frozen(labels)
        return lambda s, t: self.field(s, t, labels)

    def forward(
        self,
        z: torch.Tensor,
        *,
        dt: float = 1e-3,
        labels: Any = None,
        solver: str = "euler",
    ) -> torch.Tensor:
        """Push noise z (N, D) from t = 0 to t = 1 (Algorithm 2); returns x (N, D) in data units."""
        z = self._check_points(z, "z")
        labels = self._check_labels(labels, len(z))
        y1 = self._path(z, labels, time_grid(dt), solver)[-1]
        return self.standardization.inverse(y1, labels)

    def sample(
        self,
        n: int,
        *,
        dt: float = 1e-3,
        labels: Any = None,
        solver: str = "euler",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw n points (n, D) in data units (Algorithm 2).

        With ``solver="euler"`` this makes exactly ``round(1 / dt)`` velocity evaluations
        when dt divides 1; otherwise the last step is shorter.

        Arguments:
            n: number of points.
            dt: step size in (0, 1] (seed: 1e-3).
            labels: for a conditional model, one class id for all or (n,) ids.
            solver: one of :data:`SOLVERS`.
            generator: for the noise.

        Raises:
            ValueError: for n < 1, dt outside (0, 1], an unknown solver, or bad labels.
        """
        n = self._check_n(n)
        time_grid(dt)  # check dt before drawing
        z = torch.randn(n, self.features, generator=generator, dtype=self.dtype)
        return self(z, dt=dt, labels=labels, solver=solver)

    def reverse(
        self, x: torch.Tensor, *, dt: float = 1e-3, labels: Any = None, solver: str = "euler"
    ) -> torch.Tensor:
        """Run the flow backwards from t = 1 to t = 0 (Eq. 18).

        Arguments:
            x: (N, D) points in data units.

        Returns:
            the latents (N, D) at t = 0 (noise space, standardized units).
        """
        x = self._check_points(x)
        labels = self._check_labels(labels, len(x))
        y = self.standardization(x, labels)
        return self._path(y, labels, time_grid(dt, 1.0, 0.0), solver)[-1]

    def trajectory(
        self,
        points: torch.Tensor,
        *,
        dt: float = 1e-3,
        times: Sequence[float] | None = None,
        labels: Any = None,
        solver: str = "euler",
        inverse: bool = False,
        units: str = "data",
    ) -> torch.Tensor:
        """States along the flow at the requested times.

        Arguments:
            points: noise z (N, D) at t = 0, or with ``inverse=True`` data x (N, D) in data
                units at t = 1.
            dt: step size in (0, 1].
            times: times in [0, 1] to record (default: every grid time, start included);
                they are added to the integration grid.
            labels: class ids of a conditional model.
            solver: one of :data:`SOLVERS`.
            inverse: integrate from t = 1 down to t = 0.
            units: ``"data"`` (all states through the destandardization) or
                ``"standardized"``.

        Returns:
            (len(times), N, D), in the order the times were given.
        """
        y = self._check_points(points, "x" if inverse else "z")
        labels = self._check_labels(labels, len(y))
        if inverse:
            y = self.standardization(y, labels)
            grid = time_grid(dt, 1.0, 0.0, times or ())
        else:
            grid = time_grid(dt, 0.0, 1.0, times or ())
        path = self._path(y, labels, grid, solver)
        if times is not None:
            idx = [min(range(len(grid)), key=lambda i, t=t: abs(grid[i] - t)) for t in times]
            path = path[idx]
        return self._display(path, units, labels)

    # -- likelihood -----------------------------------------------------------------------
    def _log_prob_std(
        self,
        y: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        solver: str = "rk4",
        steps: int = 100,
        divergence: str = "exact",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        steps = check_int(steps, "steps")
        eps = None
        if divergence == "hutchinson":
            # Rademacher probes, fixed over the solve (FFJORD).
            eps = torch.randint(0, 2, y.shape, generator=generator).to(y.dtype) * 2 - 1
        d = self.features

        def augmented(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                yy = s[:, :d].detach().requires_grad_(True)
                v = self.field(yy, t, labels)
                div = divergence_of(v, yy, eps)
            return torch.cat([v.detach(), div.detach()[:, None]], dim=1)

        state = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=1)
        end = integrate(augmented, state, time_grid(1.0 / steps, 1.0, 0.0), solver)[-1]
        # d(l)/dt = div v from t = 1 down to 0 gives l(0) = -int_0^1 div v dt.
        return standard_normal_log_prob(end[:, :d]) + end[:, d]

    def log_prob(self, x: torch.Tensor, labels: Any = None, **kwargs: Any) -> torch.Tensor:
        r"""Exact log-density by the instantaneous change of variables, in nats.

        .. math:: \log p_1(x) = \log p_0(y_0) - \int_0^1 \nabla \cdot v(y_t, t)\, dt

        integrated backwards from y_1 = x. The divergence is exact (D backward passes) or
        Hutchinson's unbiased estimate (one pass).

        Arguments:
            x: (N, D) points in data units.
            labels: class ids of a conditional model (density of x given the class).
            standardized: return the density of the standardized point.
            solver: ODE solver, default ``"rk4"``.
            steps: number of solver steps over [0, 1], default 100.
            divergence: ``"exact"`` or ``"hutchinson"``.
            generator: for Hutchinson's probes.

        Returns:
            (N,) log p(x); ``-inf`` where the value leaves the floating-point range.
        """
        return super().log_prob(x, labels, **kwargs)


def divergence_of(
    v: torch.Tensor, y: torch.Tensor, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """The divergence of v (N, D) with respect to y (N, D), per row (N,).

    Exact (one backward pass per coordinate) when ``eps`` is ``None``; otherwise Hutchinson's
    estimate eps^T (dv/dy) eps with the given probes eps (N, D).
    """
    if eps is not None:
        (g,) = torch.autograd.grad(v, y, eps, create_graph=False)
        return (g * eps).sum(dim=1)
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(v.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), y, retain_graph=i < v.shape[1] - 1)
        div = div + g[:, i]
    return div


def _fm_kernel_loss(x1, x0, t, labels, field: VelocityField, grads: list[torch.Tensor] | None):
    """Eq. 16 by the fused kernel; fills ``grads`` (theta, embedding) unless ``None``."""
    emb = field.embedding
    # Contiguous copies are bound to names so that they outlive the call.
    x1, x0, t = x1.contiguous(), x0.contiguous(), t.contiguous()
    labels = None if labels is None else labels.contiguous()
    theta = field.theta.detach()
    emb_w = None if emb is None else emb.weight.detach()
    loss = torch.empty((), dtype=x1.dtype)
    rc = fm_kernel(x1.dtype)(
        x1.shape[0],
        x1.shape[1],
        0 if emb is None else emb.embedding_dim,
        0 if emb is None else emb.num_embeddings,
        field.dims[1],
        len(field.dims) - 1,
        int(field.gaussian_skip),
        0.01,  # F.leaky_relu's default slope
        theta.data_ptr(),
        None if emb_w is None else emb_w.data_ptr(),
        x1.data_ptr(),
        x0.data_ptr(),
        t.data_ptr(),
        None if labels is None else labels.data_ptr(),
        loss.data_ptr(),
        None if grads is None else grads[0].data_ptr(),
        None if grads is None or emb is None else grads[1].data_ptr(),
    )
    if rc == 3:
        raise ValueError(f"a label is outside 0..{emb.num_embeddings - 1}")
    if rc != 0:
        raise RuntimeError(f"the flow matching kernel failed (code {rc})")
    return loss


class _FusedFMLoss(torch.autograd.Function):
    """Eq. 16 and its gradient with respect to every weight, in one kernel call."""

    @staticmethod
    def forward(ctx, x1, x0, t, labels, field: VelocityField, *params):
        grads = [torch.empty_like(p) for p in params]
        ctx.grads = grads
        return _fm_kernel_loss(x1, x0, t, labels, field, grads)

    @staticmethod
    def backward(ctx, g):
        return (None, None, None, None, None, *(gr * g for gr in ctx.grads))
