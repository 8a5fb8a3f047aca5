"""Flow matching: a velocity field regressed on a probability path, sampled by an ODE.

Time runs from t = 0 (the source, noise x0 ~ N(0, I)) to t = 1 (the data x1), as in the
study. A model is built from parts: a probability path (:mod:`.paths`), a coupling of
noise and data (:mod:`.couplings`), a time sampler (:mod:`.times`) and a velocity network
(:mod:`.field`); the loss, the sampler and the likelihood are written once, here, for
every combination of them.

References:
    Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. 2022,
    arXiv:2210.02747.
    Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations. 2018,
    arXiv:1806.07366 (instantaneous change of variables).
    Grathwohl et al. FFJORD. 2019, arXiv:1810.01367 (Hutchinson's trace estimator).
    Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based
    Generative Models. 2022, arXiv:2206.00364 (a skip term that handles the part of the
    answer known in closed form, so that the network learns the rest).
    Ho, Salimans. Classifier-Free Diffusion Guidance. 2022, arXiv:2207.12598 (label
    dropout and the guidance scale, :mod:`.guidance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..base import FlowModel
from ..data import check_int
from ..defaults import LIKELIHOOD, likelihood_text
from .couplings import COUPLINGS, Coupling
from .field import AverageVelocityField, VelocityField
from .guidance import check_guidance, check_label_dropout, drop_labels, guided
from .paths import PATHS, AffinePath
from .solvers import DEFAULT_DT, Velocity, check_solver, divergence_of, integrate, time_grid
from .sources import SOURCES, Source
from .times import (
    DEFAULT_CONDITIONAL_TIME_ALPHA,
    DEFAULT_TIME_ALPHA,
    TIME_SAMPLERS,
    TimeSampler,
)

__all__ = [
    "DEFAULT_CONDITIONAL_TIME_ALPHA",
    "DEFAULT_TIME_ALPHA",
    "DIVERGENCES",
    "EULER_ACCELERATORS",
    "FlowMatching",
    "TrainingBatch",
]

DIVERGENCES = ("exact", "hutchinson")

#: Fast Euler samplers, tried in order before :func:`~.solvers.integrate` when a
#: :class:`FlowMatching` integrates with ``solver="euler"`` (a guided field one step at a
#: time, for both of its fields: :meth:`FlowMatching._guided_euler`): each is called as
#: ``(model, y (N, D), labels (N,) or None, grid, record)`` and returns the states at
#: ``grid[i]`` for i in ``record`` (len(record), N, D), those ``integrate`` gives to
#: rounding, or ``None`` to step aside. :mod:`flowscope.kernels.sampler` registers one.
EULER_ACCELERATORS: list[
    Callable[[Any, torch.Tensor, torch.Tensor | None, list[float], list[int]], torch.Tensor | None]
] = []


@dataclass(frozen=True)
class TrainingBatch:
    """One batch of the flow-matching loss, in standardized units.

    Attributes:
        x0: (N, D) the noise, paired with the data by the coupling.
        x1: (N, D) the data.
        t: (N, 1) the times.
        x_t: (N, D) the points on the path at those times.
        dx_t: (N, D) the path's velocity there, the regression target.
        labels: (N,) the class ids the velocity is conditioned on (the data's, with the
            null class ``num_classes`` where label dropout replaced one), or ``None``.
    """

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    dx_t: torch.Tensor
    labels: torch.Tensor | None


class FlowMatching(FlowModel):
    r"""Flow matching on a probability path, unconditional or class-conditional.

    Training minimises the regression of the velocity on the path's velocity (the study's
    Eq. 16 for the linear path),

    .. math:: E_{t, (x_0, x_1)} \| v(x_t, t) - \dot x_t \|^2,

    with x0 ~ N(0, I) paired with the data x1 by the coupling and t from the time
    sampler; sampling integrates dy/dt = v(y, t) from t = 0 to 1 (the study's Algorithm 2,
    Eq. 17), and :meth:`encode` integrates back (Eq. 18).

    The velocity: with ``gaussian_skip`` v(y, t) is the network's output plus the path's
    :meth:`~.paths.AffinePath.gaussian_velocity`, the exact field when the data are
    N(0, I) and paired independently with the noise. Standardized data have zero mean and
    unit variance per coordinate, so the network starts from the field of the data's
    first two moments and learns only the rest, as a skip term lets a denoiser learn only
    what its input does not already give (Karras et al. 2022). ``gaussian_skip=False`` is
    the network alone, as in the study. The default is the coupling's: on for the
    independent coupling, off for an OT coupling or reflow's fixed pairs, under which
    that field is not the Gaussian one (:attr:`~.couplings.Coupling.gaussian_skip_exact`).

    The time sampler: any density positive on (0, 1) has the same minimiser, so it
    changes where a small network spends its capacity, not what it learns in the limit.
    The default is the coupling's (:meth:`~.couplings.Coupling.default_times`): with the
    independent coupling Beta(5, 1) for an unconditional model and Beta(7, 1) for a
    conditional one, mostly near the data, where its field is sharpest. The validation loss of
    :func:`~flowscope.train.fit` draws its times from the same sampler, so its values
    depend on it. ``benchmarks/README.md`` has the measurements behind these defaults.

    The velocity works in standardized coordinates; the public methods take and return
    data units, except the latent (noise) side, which is N(0, I) in standardized units.
    A conditional model standardizes each class by its own mean and standard deviation
    by default (``standardize="class"``): in data units the noise of class k is then
    N(mean_k, diag(std_k^2)), a class-conditional prior (Issachar et al. 2025,
    arXiv:2502.09611); the study standardizes all points together (``"global"``).
    ``log_prob`` stays exact: the class's log|det| of the standardization is added.

    Classifier-free guidance (:mod:`.guidance`, Ho and Salimans 2022): with
    ``label_dropout`` p > 0 a conditional model also learns the unconditional velocity,
    on a null class (one more row of the class embedding, id ``num_classes``) that
    replaces each training example's class with probability p; ``sample(...,
    guidance=w)`` then integrates v_null + w (v_class - v_null). p = 0 (the default) is
    the study's conditional model, which has no null class and refuses a guidance
    w != 1. The null class sees all classes in one coordinate system, so label dropout
    standardizes all points together (``standardize="global"``; ``"class"`` is refused).
    Times nearer the data than the default (``times={"name": "beta", "alpha": 12}``)
    sharpen the guided samples but cost the unguided density (``benchmarks/README.md``,
    "Classifier-free guidance").

    Arguments:
        features: the dimension D.
        num_classes: classes of a conditional model, or ``None``.
        hidden: width of the velocity MLP (the study: 64).
        layers: Linear layers of the velocity MLP (the study: 5).
        embedding_dim: size of the class embedding of a conditional model.
        path: a probability path of :data:`~.paths.PATHS`: a name, a config dict or an
            instance (default ``"linear"``, the study's Eq. 14).
        coupling: a coupling of :data:`~.couplings.COUPLINGS` (default
            ``"independent"``, the study's).
        times: a time sampler of :data:`~.times.TIME_SAMPLERS`; ``None`` is the
            coupling's :meth:`~.couplings.Coupling.default_times`: for the independent
            coupling Beta(:data:`DEFAULT_TIME_ALPHA`, 1), or
            Beta(:data:`DEFAULT_CONDITIONAL_TIME_ALPHA`, 1) for a conditional model
            (``"uniform"`` is the study's U[0, 1]).
        standardize: ``"class"`` (per class) or ``"global"``; ``None`` is ``"class"`` for
            a conditional model from the normal source and ``"global"`` otherwise.
        gaussian_skip: add the path's Gaussian velocity to the network's output;
            ``None`` is the coupling's
            :attr:`~.couplings.Coupling.gaussian_skip_exact` (on for the independent
            coupling, off for OT and reflow's pairs, which the skip does not describe).
        source: the distribution at t = 0, of :data:`~.sources.SOURCES` (default
            ``"normal"``, N(0, I) in standardized units; another source is in data units,
            mapped by the data's standardization, see :mod:`.sources`).
        label_dropout: the probability p in [0, 1) that a training example's class is
            replaced by the null class (a conditional model; Ho and Salimans use 0.1 to
            0.2); 0: no null class. It changes the default ``standardize`` (above).
        activation: between the network's layers, ``"leaky_relu"`` (the study's; the
            fused kernels compute it) or ``"silu"`` (smooth: the gradient of
            :meth:`log_prob` in x is then the score, which a LeakyReLU field's is not;
            :data:`~.field.ACTIVATIONS`).

    Raises:
        ValueError: for an unknown or badly configured part, a ``standardize`` outside
            :data:`~flowscope.base.STANDARDIZE` (``"class"`` needs classes), a
            ``gaussian_skip`` that is not a bool, a coupling that needs classes on an
            unconditional model, a source of another dimension than ``features``, a
            source in data units with per-class standardization, or a ``label_dropout``
            outside [0, 1), on an unconditional model or with per-class standardization.

    Example:
        >>> fm = FlowMatching(features=2, hidden=16, layers=3)
        >>> fm.sample(4, dt=0.1, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    kind = "fm"
    exact_inverse = False  # encode and decode integrate the ODE with steps of their own

    @property
    def exact_batches(self) -> bool:
        """True on fixed pairs (reflow's), which are looked up by the data points."""
        return self.coupling.fixed

    #: The network's class: (features, hidden, layers, num_classes, embedding_dim) ->
    #: the module the velocity is computed from.
    field_class: type[VelocityField] = VelocityField

    def __init__(
        self,
        features: int = 2,
        num_classes: int | None = None,
        hidden: int = 64,
        layers: int = 5,
        embedding_dim: int = 16,
        path: str | dict | AffinePath = "linear",
        coupling: str | dict | Coupling = "independent",
        times: str | dict | TimeSampler | None = None,
        standardize: str | None = None,
        gaussian_skip: bool | None = None,
        source: str | dict | Source = "normal",
        label_dropout: float = 0.0,
        activation: str = "leaky_relu",
    ):
        conditional = num_classes is not None
        built_source: Source = SOURCES.build(source)
        label_dropout = check_label_dropout(label_dropout)
        if label_dropout > 0 and not conditional:
            raise ValueError(
                "label_dropout trains the null class of a conditional model: it needs "
                "num_classes (classes to drop)"
            )
        if standardize is None:
            per_class = conditional and not built_source.in_data_units and label_dropout == 0
            standardize = "class" if per_class else "global"
        if label_dropout > 0 and standardize == "class":
            raise ValueError(
                "label_dropout learns one unconditional velocity for all classes, which "
                "needs all points in one coordinate system: use standardize='global' with it"
            )
        super().__init__(features, num_classes, standardize)
        self._path: AffinePath = PATHS.build(path)
        self._coupling: Coupling = COUPLINGS.build(coupling)
        # The defaults that depend on how the coupling pairs are the coupling's own.
        if gaussian_skip is None:
            gaussian_skip = self._coupling.gaussian_skip_exact
        if not isinstance(gaussian_skip, bool):
            raise ValueError(f"gaussian_skip must be True, False or None, got {gaussian_skip!r}")
        if times is None:
            times = self._coupling.default_times(conditional)
        self._times: TimeSampler = TIME_SAMPLERS.build(times)
        self._source = built_source
        self._source.check_features(self.features)
        if self._coupling.needs_labels and not conditional:
            raise ValueError(
                f"the {self._coupling.name} coupling pairs within classes: it needs a "
                "conditional model (num_classes; on the command line `flowscope train cfm`); "
                "use 'ot' for an unconditional one"
            )
        if self._source.in_data_units and standardize == "class":
            raise ValueError(
                f"the {self._source.describe()} source is in data units and is mapped by the "
                "data's one standardization: use standardize='global' with it"
            )
        self._gaussian_skip = gaussian_skip
        self._label_dropout = label_dropout
        self._keep_coordinates()
        self._args = dict(
            features=features,
            num_classes=num_classes,
            hidden=hidden,
            layers=layers,
            embedding_dim=embedding_dim,
            path=self._path.config(),
            coupling=self._coupling.config(),
            times=self._times.config(),
            standardize=standardize,
            gaussian_skip=gaussian_skip,
            source=self._source.config(),
            label_dropout=label_dropout,
            activation=activation,
        )
        embeddings = None if num_classes is None else num_classes + (label_dropout > 0)
        self.field = self.field_class(
            features, hidden, layers, embeddings, embedding_dim, activation=activation
        )

    def config(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self._args.items()}

    # The parts are read-only: they are the model's recorded configuration.
    @property
    def path(self) -> AffinePath:
        """The probability path (read-only)."""
        return self._path

    @property
    def coupling(self) -> Coupling:
        """The coupling of noise and data (read-only)."""
        return self._coupling

    @property
    def times(self) -> TimeSampler:
        """The sampler of the training times (read-only)."""
        return self._times

    @property
    def source(self) -> Source:
        """The distribution at t = 0 (read-only)."""
        return self._source

    @property
    def gaussian_skip(self) -> bool:
        """Whether the velocity is the network plus the path's Gaussian velocity
        (read-only: it is part of the model's recorded configuration)."""
        return self._gaussian_skip

    @property
    def label_dropout(self) -> float:
        """The probability that training replaces a class by the null class (read-only)."""
        return self._label_dropout

    @property
    def null_label(self) -> int | None:
        """The id of the learned null class (``num_classes``), or ``None`` for a model
        trained without label dropout."""
        return self.num_classes if self.label_dropout > 0 else None

    def describe_loss(self) -> str:
        """The regression loss: its values depend on where the times are drawn."""
        dropout = f", labels dropped with p = {self.label_dropout:g}" if self.label_dropout else ""
        return f"Eq. 16 with t ~ {self.times.describe()}{dropout}"

    @classmethod
    def likelihood_method(
        cls,
        *,
        solver: str = LIKELIHOOD["solver"],
        steps: int = LIKELIHOOD["steps"],
        divergence: str = LIKELIHOOD["divergence"],
        **_: Any,
    ) -> str:
        return likelihood_text(solver, steps, divergence)

    # -- the velocity -----------------------------------------------------------------------
    def velocity(
        self, y: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v(y, t) in standardized units: y (N, D), t a number, 0-dim, (N,) or (N, 1) in
        [0, 1], labels (N,) or ``None`` -> (N, D). Differentiable in y and the weights."""
        v = self.field(y, t, labels)
        if not self.gaussian_skip:
            return v
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        t = t.expand(y.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)
        return v + self.path.gaussian_velocity(y, t)

    def ode_velocity(
        self, labels: torch.Tensor | None = None, guidance: float | None = None
    ) -> Velocity:
        """The velocity (y (N, D), t) -> (N, D), standardized units, that the samplers
        integrate: :meth:`velocity` with the weights frozen
        (:meth:`~.field.VelocityField.frozen` for the built-in network, which precomputes
        what does not depend on y); with a guidance scale w, the guided velocity
        v_null + w (v_class - v_null) of :mod:`.guidance` (see :meth:`guidance_scale`).

        Raises:
            ValueError: for a guidance the model does not take (:meth:`guidance_scale`).
        """
        labels, w = self._guided(labels, guidance)
        if w is None:
            return self._frozen_velocity(labels)
        null = torch.full_like(labels, self.null_label)
        return guided(self._frozen_velocity(labels), self._frozen_velocity(null), w)

    def _frozen_velocity(self, labels: torch.Tensor | None) -> Velocity:
        # The built-in networks' frozen() is their velocity at r = t (mean flows: u(y, t, t)).
        builtin = type(self.field) in (VelocityField, AverageVelocityField)
        net = self.field.frozen(labels) if builtin else (lambda s, t: self.field(s, t, labels))
        if not self.gaussian_skip:
            return net
        rate = self.path.gaussian_rate
        if builtin:  # the frozen network returns a new tensor: one in-place add per step
            return lambda y, t: net(y, t).add_(y, alpha=rate(float(t)))
        return lambda y, t: net(y, t) + rate(float(t)) * y

    def guidance_scale(self, guidance: Any) -> float | None:
        """The guidance scale w as a float, checked for this model (``None``: none).

        Raises:
            ValueError: for w that is not a finite number >= 0, any w on an unconditional
                model, or w != 1 on a model trained without label dropout (it has no null
                class, so no unconditional velocity).
        """
        w = check_guidance(guidance)
        if w is None:
            return None
        if self.num_classes is None:
            raise ValueError(
                "guidance steers a class-conditional model towards a class; this model is "
                "unconditional: drop the guidance"
            )
        if w != 1 and self.null_label is None:
            raise ValueError(
                f"guidance w = {w:g} needs the unconditional velocity, which a model learns "
                "only with label dropout; this one was trained without (label_dropout=0): "
                "train it with label_dropout=0.1 (flowscope train cfm --label-dropout 0.1)"
            )
        return w

    def _guided(self, labels, guidance) -> tuple[torch.Tensor | None, float | None]:
        """The labels and the scale of the field to integrate: ``(labels, None)`` where it
        is one field, the class's (no guidance, w = 1) or the null class's (w = 0, labels
        replaced), else ``(labels, w)``."""
        w = self.guidance_scale(guidance)
        if w is None or w == 1:
            return labels, None
        if w == 0:
            return torch.full_like(labels, self.null_label), None
        return labels, w

    # -- the source -----------------------------------------------------------------------
    def base_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points (n, D) of the source in standardized units, drawn on the CPU with
        ``generator`` and moved to the model's device."""
        n = check_int(n, "n")
        if self.source.name == "normal":  # the study's noise, drawn as FlowModel draws it
            return super().base_sample(n, generator)
        return self.source.sample(n, self.features, self.standardization, generator, self.dtype).to(
            self.device
        )

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log-density (N,) of the source at standardized points z (N, D), nats.

        Raises:
            NoDensity: for a source known only by samples (a file, most toy sets).
        """
        return self.source.log_prob(z, self.standardization)

    def check_batch_size(self, batch_size: int) -> None:
        self.coupling.check_batch_size(batch_size)

    def fit_standardization(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Fit the standardization on x (N, D), unless the coupling fixes it (reflow's
        pairs are in the parent model's coordinates, which its source lives in)."""
        if not self._keep_coordinates():
            super().fit_standardization(x, labels)

    def _keep_coordinates(self) -> bool:
        """Set the standardization to the coupling's coordinates, if it has any.

        Raises:
            ValueError: if they are per class and the model's are not, or the reverse.
        """
        fixed = self.coupling.coordinates()
        if fixed is None:
            return False
        st = self.standardization
        if fixed[0].shape != st.loc.shape:
            raise ValueError(
                f"the {self.coupling.name} coupling's points are standardized with loc of "
                f"shape {tuple(fixed[0].shape)}, the model's is {tuple(st.loc.shape)}: give the "
                "model the parent's standardize and num_classes"
            )
        with torch.no_grad():
            st.loc.copy_(fixed[0])
            st.scale.copy_(fixed[1])
        return True

    # -- training -----------------------------------------------------------------------------
    def training_batch(
        self,
        x1: torch.Tensor,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TrainingBatch:
        """Draw the noise and the times of a batch of standardized data x1 (N, D) and
        place the pairs on the path: what both the loss and the trainer's fused kernel
        regress on. Draws the noise first, then the times, then (with label dropout) which
        labels become the null class, from ``generator``."""
        n = x1.shape[0]
        x0 = self.base_sample(n, generator)
        t = self.times.sample(n, generator, x1.dtype).to(x1.device)
        x0 = self.coupling.pair(x0, x1, labels)  # by the data's classes
        on_path = self.path.sample(x0, x1, t)
        if labels is not None and self.null_label is not None:
            labels = drop_labels(labels, self.label_dropout, self.null_label, generator)
        return TrainingBatch(x0, x1, t, on_path.x_t, on_path.dx_t, labels)

    def _loss(self, y, labels, generator):
        """The regression of the velocity on the path's velocity (Eq. 16), mean over the
        batch of the squared error summed over the coordinates."""
        b = self.training_batch(y, labels, generator)
        v = self.velocity(b.x_t, b.t, b.labels)
        return ((v - b.dx_t) ** 2).sum(dim=1).mean()

    # -- integration ----------------------------------------------------------------------
    def _check_options(
        self, *, dt: float = DEFAULT_DT, solver: str = "euler", guidance: float | None = None
    ) -> None:
        time_grid(dt)
        check_solver(solver)
        self.guidance_scale(guidance)

    def _integrate(
        self,
        y,
        labels,
        grid: list[float],
        solver: str,
        record: list[int] | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """The states (len(record), N, D) at grid[i] for i in ``record`` (default: every
        grid time) of the flow from y (N, D) at grid[0]; with ``solver="euler"`` by the
        first of :data:`EULER_ACCELERATORS` that runs (for a guided field, one step at a
        time: :meth:`_guided_euler`), else by :func:`~.solvers.integrate`."""
        record = list(range(len(grid))) if record is None else record
        labels, w = self._guided(labels, guidance)
        with torch.no_grad():
            if solver == "euler":
                states = (
                    self._accelerated(y, labels, grid, record)
                    if w is None
                    else self._guided_euler(y, labels, w, grid, record)
                )
                if states is not None:
                    return states
            field = self.ode_velocity(labels) if w is None else self.ode_velocity(labels, w)
            return integrate(field, y, grid, solver)[record]

    def _accelerated(self, y, labels, grid, record) -> torch.Tensor | None:
        """The Euler states of :meth:`_integrate` by the first accelerator that runs, or
        ``None``."""
        for fast in EULER_ACCELERATORS:
            states = fast(self, y, labels, grid, record)
            if states is not None:
                return states
        return None

    def _guided_euler(self, y, labels, w: float, grid, record) -> torch.Tensor | None:
        """The Euler states of the guided field by the accelerators, or ``None``.

        An Euler step of v_null + w (v_class - v_null) from y is the same combination of
        one Euler step of each field, y_null + w (y_class - y_null): both are computed
        for the 2N points [y; y] with labels [class; null] in one accelerated step.
        """
        n, null = len(y), torch.full_like(labels, self.null_label)
        both = torch.cat([labels, null])  # (2N,)
        kept = {0: y} if 0 in record else {}
        for k in range(len(grid) - 1):
            step = self._accelerated(torch.cat([y, y]), both, grid[k : k + 2], [1])
            if step is None:
                return None
            y_class, y_null = step[0, :n], step[0, n:]  # (N, D) each
            y = y_null + w * (y_class - y_null)
            if k + 1 in record:
                kept[k + 1] = y
        return torch.stack([kept[i] for i in record])

    def _decode(self, z, labels, *, dt: float = DEFAULT_DT, solver: str = "euler", guidance=None):
        """Algorithm 2: Euler (or ``solver``) steps of ``dt`` from t = 0 to 1."""
        grid = time_grid(dt)
        return self._integrate(z, labels, grid, solver, [len(grid) - 1], guidance)[0]

    def _encode(self, y, labels, *, dt: float = DEFAULT_DT, solver: str = "euler", guidance=None):
        """Eq. 18: the flow run backwards from t = 1 to 0."""
        grid = time_grid(dt, 1.0, 0.0)
        return self._integrate(y, labels, grid, solver, [len(grid) - 1], guidance)[0]

    def _trajectory(
        self,
        y,
        labels,
        inverse: bool,
        *,
        dt: float = DEFAULT_DT,
        times: Sequence[float] | None = None,
        solver: str = "euler",
        guidance: float | None = None,
    ) -> torch.Tensor:
        if times is not None and len(times) == 0:
            raise ValueError(
                "times is empty; pass None for every grid time, or the times to record"
            )
        start, end = (1.0, 0.0) if inverse else (0.0, 1.0)
        grid = time_grid(dt, start, end, times or ())
        idx = None
        if times is not None:
            idx = [min(range(len(grid)), key=lambda i, t=t: abs(grid[i] - t)) for t in times]
        return self._integrate(y, labels, grid, solver, idx, guidance)

    def decode(
        self,
        z,
        labels=None,
        *,
        dt: float = DEFAULT_DT,
        solver: str = "euler",
        guidance: float | None = None,
    ):
        """Push noise z (N, D) from t = 0 to t = 1 (Algorithm 2); returns x (N, D) in data
        units. With ``solver="euler"`` this makes ``round(1 / dt)`` velocity evaluations
        when dt divides 1 (twice as many with a guidance w other than 0 and 1);
        otherwise the last step is shorter.

        Raises:
            ValueError: for dt outside (0, 1], an unknown solver, bad labels or a
                guidance the model does not take (:meth:`guidance_scale`).
        """
        return super().decode(z, labels, dt=dt, solver=solver, guidance=guidance)

    def encode(
        self,
        x,
        labels=None,
        *,
        dt: float = DEFAULT_DT,
        solver: str = "euler",
        guidance: float | None = None,
    ):
        """Run the flow backwards from t = 1 to t = 0 (Eq. 18): points x (N, D) in data
        units -> latents (N, D) at t = 0 (noise space, standardized units)."""
        return super().encode(x, labels, dt=dt, solver=solver, guidance=guidance)

    def sample(
        self,
        n: int,
        *,
        labels: Any = None,
        generator: torch.Generator | None = None,
        dt: float = DEFAULT_DT,
        solver: str = "euler",
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Draw n points (n, D) in data units (Algorithm 2): noise from ``generator``,
        integrated with steps of ``dt`` (the study: 1e-3) by ``solver``.

        Arguments:
            n: the number of points, >= 1.
            labels: for a conditional model, one class id for all or (n,) ids.
            generator: for the noise.
            dt: step size in (0, 1]; K Euler steps are ``dt=1 / K``.
            solver: one of :data:`~.solvers.SOLVERS`.
            guidance: the classifier-free guidance scale w >= 0 of a conditional model:
                the velocity is v_null + w (v_class - v_null) (:mod:`.guidance`); ``None``
                or 1: the conditional model, 0: the unconditional one (w != 1 needs a
                model trained with ``label_dropout``).

        Raises:
            ValueError: for n < 1, dt outside (0, 1], an unknown solver, bad labels, or a
                guidance the model does not take (:meth:`guidance_scale`).

        Example:
            >>> cfm = FlowMatching(num_classes=2, hidden=16, layers=3, label_dropout=0.1)
            >>> cfm.sample(4, labels=1, guidance=2.0, dt=0.25).shape
            torch.Size([4, 2])
        """
        guided = {} if guidance is None else {"guidance": guidance}  # a subclass may take none
        return super().sample(n, labels=labels, generator=generator, dt=dt, solver=solver, **guided)

    def trajectory(
        self,
        points,
        *,
        labels: Any = None,
        inverse: bool = False,
        units: str = "data",
        dt: float = DEFAULT_DT,
        times: Sequence[float] | None = None,
        solver: str = "euler",
        guidance: float | None = None,
    ) -> torch.Tensor:
        """States along the flow at the requested times.

        Arguments:
            points: noise z (N, D) at t = 0, or with ``inverse=True`` data x (N, D) in data
                units at t = 1.
            labels: class ids of a conditional model.
            inverse: integrate from t = 1 down to t = 0.
            units: ``"data"`` (all states through the destandardization) or
                ``"standardized"``.
            dt: step size in (0, 1].
            times: times in [0, 1] to record (default: every grid time, start included);
                they are added to the integration grid.
            solver: one of :data:`~.solvers.SOLVERS`.
            guidance: the guidance scale w, as in :meth:`sample`.

        Returns:
            (len(times), N, D), in the order the times were given.
        """
        return super().trajectory(
            points,
            labels=labels,
            inverse=inverse,
            units=units,
            dt=dt,
            times=times,
            solver=solver,
            guidance=guidance,
        )

    # -- likelihood -----------------------------------------------------------------------
    def _inverse(
        self,
        y,
        labels,
        *,
        solver: str = LIKELIHOOD["solver"],
        steps: int = LIKELIHOOD["steps"],
        divergence: str = LIKELIHOOD["divergence"],
        probes: int = 1,
        generator: torch.Generator | None = None,
        guidance: float | None = None,
    ):
        r"""The latent and -\int_0^1 div v dt, by integrating the state and the divergence
        together from t = 1 down to 0."""
        w = self.guidance_scale(guidance)
        if w is not None and w != 1:
            raise ValueError(
                f"no log-density with guidance w = {w:g}: the guided velocity v_null + w "
                "(v_class - v_null) is not the velocity of a probability path the model "
                "learned, so its flow's density is neither p(x | class) nor "
                "p(x | class)^w p(x)^(1 - w); w = 1 (or no guidance) gives p(x | class)"
            )
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        steps = check_int(steps, "steps")
        probes = check_int(probes, "probes")
        if probes > 1 and divergence != "hutchinson":
            raise ValueError("probes applies to divergence='hutchinson'; the exact one has none")
        eps = None
        if divergence == "hutchinson":
            # Rademacher probes (K, N, D), fixed over the solve (FFJORD).
            shape = (probes, *y.shape)
            eps = torch.randint(0, 2, shape, generator=generator).to(y) * 2 - 1
        d = self.features

        # Under grad mode with y in a graph (log_prob of an x that requires grad), the
        # solve keeps its graph: the divergence's own gradient is taken with create_graph.
        graph = torch.is_grad_enabled() and y.requires_grad

        def augmented(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                yy = s[:, :d] if graph else s[:, :d].detach().requires_grad_(True)
                v = self.velocity(yy, t, labels)
                div = divergence_of(v, yy, eps, create_graph=graph)
            if graph:
                return torch.cat([v, div[:, None]], dim=1)
            return torch.cat([v.detach(), div.detach()[:, None]], dim=1)

        state = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=1)
        end = integrate(augmented, state, time_grid(1.0 / steps, 1.0, 0.0), solver)[-1]
        # d(l)/dt = div v from t = 1 down to 0 gives l(0) = -int_0^1 div v dt.
        return end[:, :d], end[:, d]

    def inverse(self, x, labels=None, *, standardized: bool = False, **options: Any):
        r"""Points x (N, D) in data units -> :class:`~flowscope.base.Latent`: the latent at
        t = 0 and log|det dz/dx| = -\int_0^1 div v dt, integrated together from t = 1
        down to 0 (options as :meth:`log_prob`: ``solver``, ``steps``, ``divergence``,
        ``generator``)."""
        return super().inverse(x, labels, standardized=standardized, **options)

    def log_prob(self, x, labels=None, *, standardized: bool = False, **options: Any):
        r"""Exact log-density by the instantaneous change of variables, in nats.

        .. math:: \log p_1(x) = \log p_0(y_0) - \int_0^1 \nabla \cdot v(y_t, t)\, dt

        integrated backwards from y_1 = x. The divergence is exact (D backward passes) or
        Hutchinson's unbiased estimate (one backward pass per probe): in 2D the exact one
        costs only twice as much, and the estimate's error per point is large (see
        ``benchmarks/README.md``) and changes from call to call unless ``generator`` is
        given; ``probes`` averages several estimates (the error falls as 1/sqrt(probes)).

        Arguments:
            x: (N, D) points in data units.
            labels: class ids of a conditional model (density of x given the class).
            standardized: return the density of the standardized point.
            solver: ODE solver, default ``"rk4"``.
            steps: number of solver steps over [0, 1], default 100.
            divergence: ``"exact"`` or ``"hutchinson"``.
            probes: Rademacher probes averaged per point by ``"hutchinson"`` (default 1).
            generator: for Hutchinson's probes.
            guidance: ``None`` or 1 (the conditional model's density); any other w is
                refused (:mod:`.guidance`).

        Returns:
            (N,) log p(x); ``-inf`` where the value leaves the floating-point range.

        Raises:
            ValueError: for a guidance w != 1, whose field has no density of the model's.
        """
        return super().log_prob(x, labels, standardized=standardized, **options)


# The fused Euler sampler registers itself in EULER_ACCELERATORS when imported; whoever
# imports flow matching gets it.
from ..kernels import sampler as _sampler  # noqa: E402,F401
