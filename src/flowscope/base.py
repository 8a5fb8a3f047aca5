"""The interface every flowscope model implements, whatever its family.

A model maps between data x (data units) and latents z through an invertible map: a
normalizing flow in one pass through its layers, flow matching by integrating an ODE
from t = 0 (noise) to t = 1 (data). :class:`FlowModel` defines the public methods once,
with their checks and units, and a model type implements a few hooks in standardized
coordinates:

=====================  ==============================================================
hook                   what it computes (standardized points y, latents z)
=====================  ==============================================================
``_decode``            z (N, D) -> y (N, D), the generative direction
``_encode``            y (N, D) -> z (N, D)
``_inverse``           y (N, D) -> (z, log|det dz/dy| (N,))
``_trajectory``        the states (T, N, D) along the map, either direction
``_loss``              the training loss of a batch, a scalar
``validation_terms``   the numbers the trainer records per epoch
=====================  ==============================================================

Options of a family (``dt`` and ``solver`` of flow matching, for instance) pass through
the public methods to the hooks as keyword arguments; a type that takes none refuses them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from . import defaults
from .data import check_int, check_labels
from .standardize import Standardization

__all__ = [
    "STANDARDIZE",
    "FlowModel",
    "Latent",
    "one_thread",
    "resolve_device",
    "standard_normal_log_prob",
]

#: How a model standardizes its data: all points with one mean and scale, or each class
#: with its own (see :class:`~flowscope.standardize.Standardization`); declared in
#: :mod:`flowscope.defaults`, which the command line's help reads.
STANDARDIZE = defaults.STANDARDIZE


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine.

    Raises:
        ValueError: for a name PyTorch does not know, or a device this machine lacks
            (e.g. ``"cuda"`` without a GPU), saying what is available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(
                f"device {device!r} is not available: this machine has {have}; use cpu"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available here; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use cpu, cuda or mps")
    return dev


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one PyTorch thread, restoring the caller's count after.

    These models are too small for a second thread to help, and on shared cores several
    OpenMP threads can be slower by an order of magnitude (measured: 8 s against 120 s
    for the study's flow matching on 2 loaded cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) of each row of z (N, D), in nats, shape (N,)."""
    return -0.5 * (z * z).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class Latent(NamedTuple):
    """A point's latent and the log-determinant of the map to it.

    Attributes:
        z: (N, D) latents, in the units of the base distribution N(0, I).
        log_det: (N,) log|det dz/dx|, with x in data units (or standardized units, when
            asked for), so that ``log p(x) = log N(z; 0, I) + log_det``.
    """

    z: torch.Tensor
    log_det: torch.Tensor


class FlowModel(nn.Module):
    """Base of every model type: the public interface, its checks and its units.

    A model works in standardized coordinates internally and carries the
    :class:`~flowscope.standardize.Standardization` fitted on its training data (buffers
    saved with the weights), so its public methods take and return data units; latents
    are in the units of the base distribution N(0, I). A conditional model takes class
    ids, one int for all points or (N,), and may standardize each class by its own mean
    and scale (``standardize="class"``).

    Public methods and their grad mode: :meth:`sample`, :meth:`encode`, :meth:`decode`,
    :meth:`inverse` and :meth:`trajectory` run under ``torch.no_grad()``; :meth:`log_prob`
    too, unless its input requires grad (then it is differentiable); :meth:`loss` is
    differentiable in the parameters.

    Arguments:
        features: the dimension D.
        num_classes: classes of a conditional model, or ``None``.
        standardize: ``"global"`` or ``"class"`` (per class; needs ``num_classes``).

    Raises:
        ValueError: for a bad ``features``, ``num_classes`` or ``standardize``.
    """

    #: A short name of the model's family, for messages (``"nf"``, ``"fm"``, ...).
    kind: ClassVar[str] = ""
    #: Whether :meth:`decode` inverts :meth:`encode` in closed form, so that
    #: decode(encode(x)) = x up to rounding (a flow); ``False`` where both are solves of an
    #: ODE whose steps leave an error of their own (flow matching).
    exact_inverse: ClassVar[bool] = True

    @property
    def exact_batches(self) -> bool:
        """Whether its training batches must hold the training points exactly, so that
        training cannot add noise to them (:attr:`~flowscope.train.TrainConfig.noise`):
        true for a model that looks its points up (flow matching on reflow's fixed pairs)."""
        return False

    def __init__(self, features: int, num_classes: int | None = None, standardize: str = "global"):
        super().__init__()
        self.features = check_int(features, "features")
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes")
        if standardize not in STANDARDIZE:
            raise ValueError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}")
        if standardize == "class" and self.num_classes is None:
            raise ValueError("standardize='class' needs classes: pass num_classes, or use 'global'")
        per_class = self.num_classes if standardize == "class" else None
        self.standardization = Standardization(self.features, per_class)
        self._class_names: tuple[str, ...] | None = None

    # -- configuration ----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, enough to rebuild the model (JSON-safe)."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.standardization.loc.dtype

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are; inputs are moved there and outputs live there."""
        return self.standardization.loc.device

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def describe_loss(self) -> str | None:
        """What the training loss is, in words, where it is not the negative
        log-likelihood (``None``: it is, in nats per standardized point)."""
        return None

    @classmethod
    def likelihood_method(cls, **options: Any) -> str:
        """How :meth:`log_prob` computes the density with these options, in words."""
        return "exact"

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The name of each class id of a conditional model (``None``: ids only).

        Labels may then be given by name, in any case: ``sample(5, labels="blue")``.
        :func:`~flowscope.runs.train_run` sets them from the data and run folders keep
        them; set them on a model you build yourself.

        Raises (on setting):
            ValueError: for names on an unconditional model, another count than
                ``num_classes``, or names that are empty or repeat (ignoring case).
        """
        return self._class_names

    @class_names.setter
    def class_names(self, names: Any) -> None:
        if names is None:
            self._class_names = None
            return
        if self.num_classes is None:
            raise ValueError("this model is unconditional: it has no classes to name")
        names = tuple(str(n) for n in names)
        if len(names) != self.num_classes:
            raise ValueError(
                f"class_names must name all {self.num_classes} classes, got {len(names)}"
            )
        folded = [n.strip().lower() for n in names]
        if "" in folded or len(set(folded)) != len(folded):
            raise ValueError(f"class names must be distinct and non-empty, got {list(names)}")
        self._class_names = names

    def class_id(self, label: int | str) -> int:
        """The class id of a name (any case) or of an id given as an int or its text.

        Raises:
            ValueError: for an unconditional model, or a label that is not a class,
                listing the classes.
        """
        if self.num_classes is None:
            raise ValueError("this model is unconditional: do not pass labels")
        names = [n.strip().lower() for n in self._class_names or ()]
        text = str(label).strip().lower()
        if text in names:
            return names.index(text)
        try:
            i = int(text)
        except ValueError:
            i = -1
        if 0 <= i < self.num_classes and not isinstance(label, bool):
            return i
        known = ", ".join(
            f"{i} {n}" for i, n in enumerate(self._class_names or range(self.num_classes))
        )
        if self._class_names is None:
            known = f"ids 0..{self.num_classes - 1} (the model has no class names)"
        raise ValueError(f"unknown class {label!r}: the classes are {known}")

    # -- input checks ---------------------------------------------------------------------
    def check_points(self, x: Any, name: str = "x") -> torch.Tensor:
        """x as a tensor (N, D) of the model's dtype on its device.

        Raises:
            TypeError: for booleans or complex numbers.
            ValueError: for another shape, or a NaN or infinite coordinate (naming the
                row): no model maps such a point to a number.
        """
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"{name} must have shape (N, {self.features}), got {tuple(x.shape)}")
        x = x.to(self.device, self.dtype)
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{name}: row {row} is {x[row].tolist()}: coordinates must be finite numbers "
                f"(within {self.dtype}'s range)"
            )
        return x

    def check_labels(self, labels: Any, n: int) -> torch.Tensor | None:
        """Class ids (n,) on the model's device, or ``None`` for an unconditional model.

        Labels are one id or class name (:attr:`class_names`, any case) for all n points,
        or n of them (a tensor, or a list of ids or names).

        Raises:
            ValueError: for labels given to an unconditional model, missing labels of a
                conditional one, or ids that are not integers in [0, num_classes).
        """
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("this model is unconditional: do not pass labels")
            return None
        if labels is None:
            raise ValueError(
                f"this model is conditional: pass labels, an int in [0, {self.num_classes}), "
                "a class name, or a tensor or list of shape (N,)"
            )
        if isinstance(labels, str):
            labels = self.class_id(labels)
        elif isinstance(labels, (list, tuple)) and any(isinstance(v, str) for v in labels):
            ids = {v: self.class_id(v) for v in set(labels)}
            labels = [ids[v] for v in labels]
        return check_labels(labels, n, self.num_classes).to(self.device)

    def check(
        self, x: Any, labels: Any = None, name: str = "x"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Points (N, D) and their labels, checked, on the model's device and dtype.

        Returns:
            x (N, D) and labels (N,) int64 or ``None`` (an unconditional model).

        Raises:
            ValueError: for a wrong shape, or labels the model does not take (see
                :func:`~flowscope.data.check_labels`).
        """
        x = self.check_points(x, name)
        return x, self.check_labels(labels, len(x))

    def _display(
        self, states: torch.Tensor, units: str, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Standardized states (..., N, D) of points with labels (N,) or ``None`` in the
        requested units (``"data"`` or ``"standardized"``)."""
        if units == "standardized":
            return states
        if units == "data":
            return self.standardization.inverse(states, labels)
        raise ValueError(f"units must be 'data' or 'standardized', got {units!r}")

    # -- the base distribution ---------------------------------------------------------------
    def base_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents (n, D) from the base distribution N(0, I), drawn on the CPU with
        ``generator`` (so that a seed gives the same latents on every device) and moved
        to the model's device."""
        z = torch.randn(check_int(n, "n"), self.features, generator=generator, dtype=self.dtype)
        return z.to(self.device)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) of latents z (N, D), in nats, (N,)."""
        return standard_normal_log_prob(z)

    # -- the public interface -------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: Any, labels: Any = None, **options: Any) -> torch.Tensor:
        """Latents z (N, D) -> points x (N, D) in data units (the generative map)."""
        z, labels = self.check(z, labels, "z")
        return self.standardization.inverse(self._decode(z, labels, **options), labels)

    @torch.no_grad()
    def encode(self, x: Any, labels: Any = None, **options: Any) -> torch.Tensor:
        """Points x (N, D) in data units -> latents z (N, D).

        Note:
            A trained flow squeezes empty space (far from the data, holes in it) into thin
            slivers of latent space: there a float32 z cannot hold the digits that would
            bring x back, however exact the inverse's formula, and ``decode(encode(x))``
            may miss x by far more than its rounding; on the data it holds to float32's
            rounding. ``model.double()`` computes in float64 (``flowscope invert`` says
            when it is needed: ``--float64``); ``benchmarks/README.md`` ("Round trips far
            from the data") has the measurements.
        """
        x, labels = self.check(x, labels)
        return self._encode(self.standardization(x, labels), labels, **options)

    def forward(self, z: Any, labels: Any = None, **options: Any) -> torch.Tensor:
        """:meth:`decode`."""
        return self.decode(z, labels, **options)

    @torch.no_grad()
    def inverse(
        self, x: Any, labels: Any = None, *, standardized: bool = False, **options: Any
    ) -> Latent:
        """Points x (N, D) in data units -> :class:`Latent` (z (N, D), log_det (N,)).

        ``log_det`` is log|det dz/dx| with x in data units (it includes the
        standardization), or in standardized units with ``standardized=True``; in both
        ``log_prob(x) = log N(z; 0, I) + log_det`` in the matching units.
        """
        x, labels = self.check(x, labels)
        z, log_det = self._inverse(self.standardization(x, labels), labels, **options)
        if not standardized:
            log_det = log_det + self.standardization.log_abs_det(labels)
        return Latent(z, log_det)

    def log_prob(
        self, x: Any, labels: Any = None, *, standardized: bool = False, **options: Any
    ) -> torch.Tensor:
        """Log-density of each point, in nats: log N(z; 0, I) + log|det dz/dx|.

        Arguments:
            x: (N, D) points in data units.
            labels: class ids for a conditional model (one int or (N,)), else ``None``;
                the density is then that of x given the class.
            standardized: return the density of the standardized point instead (the
                number the training losses are in); it differs by ``sum(log scale)``
                (of the point's class, if standardized per class).
            options: the family's options (see the model's own ``log_prob``).

        Returns:
            (N,) log p(x); ``-inf`` where the value leaves the floating-point range (cast
            the model to float64 for a wider one). Computed without a graph, unless x is a
            tensor that requires grad: then log p(x) is differentiable in x and in the
            model's parameters (for the score, steering or attribution; flow matching then
            keeps the graph of the whole ODE solve, several times the cost).
        """
        graph = torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad
        with torch.set_grad_enabled(graph):
            x, labels = self.check(x, labels)
            z, log_det = self._inverse(self.standardization(x, labels), labels, **options)
            lp = self.base_log_prob(z) + log_det
            if not standardized:
                lp = lp + self.standardization.log_abs_det(labels)
            # A point far outside the data can overflow z; its density is below float range.
            finite = torch.isfinite(z).all(dim=1) & torch.isfinite(lp)
            return torch.where(finite, lp, torch.full_like(lp, -math.inf))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: Any = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """n points (n, D) in data units: latents from :meth:`base_sample`, decoded.

        Arguments:
            n: the number of points, >= 1.
            labels: for a conditional model, one class id for all or (n,) ids.
            generator: for the latents.
            options: the family's options (see the model's own ``sample``).

        Raises:
            ValueError: for n < 1, bad labels or bad options.
        """
        n = check_int(n, "n")
        labels = self.check_labels(labels, n)
        self._check_options(**options)  # before drawing
        return self.decode(self.base_sample(n, generator), labels, **options)

    @torch.no_grad()
    def trajectory(
        self,
        points: Any,
        *,
        labels: Any = None,
        inverse: bool = False,
        units: str = "data",
        **options: Any,
    ) -> torch.Tensor:
        """The states along the map, starting with the input.

        Arguments:
            points: latents z (N, D), or with ``inverse=True`` data points x (N, D) in
                data units.
            labels: class ids of a conditional model.
            inverse: follow the map from the data to the latent instead.
            units: ``"data"`` maps every state through the model's destandardization (a
                fixed affine map, so that all states share the data's axes), or
                ``"standardized"``.
            options: the family's options (see the model's own ``trajectory``).

        Returns:
            (T, N, D): entry 0 is the input and entry T - 1 the output, exactly.
        """
        y, labels = self.check(points, labels, "x" if inverse else "z")
        if inverse:
            y = self.standardization(y, labels)
        return self._display(self._trajectory(y, labels, inverse, **options), units, labels)

    def loss(
        self,
        x: Any,
        labels: Any = None,
        *,
        generator: torch.Generator | None = None,
        standardized: bool = False,
    ) -> torch.Tensor:
        """The training loss of a batch x (N, D), a 0-dim tensor in standardized space.

        Arguments:
            x: (N, D) points, in data units or, with ``standardized=True``, already
                standardized (as the trainer passes them).
            labels: class ids of a conditional model.
            generator: for the randomness the loss draws, if any.
        """
        x, labels = self.check(x, labels)
        y = x if standardized else self.standardization(x, labels)
        return self._loss(y, labels, generator)

    def fit_standardization(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Fit the standardization on the training points x (N, D) in data units (labels
        (N,) per class); the trainer calls this before the first epoch. A model whose
        coordinates are fixed by one of its parts (flow matching on reflow's pairs)
        keeps them instead.

        Raises:
            ValueError: as :meth:`~flowscope.standardize.Standardization.fit`.
        """
        self.standardization.fit(x, labels, self._class_names)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ``ValueError`` if the model cannot train on batches of ``batch_size``
        points (the trainer asks before the first step); every size fits by default."""

    def validation_terms(
        self, y: torch.Tensor, labels: Any, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """Validation numbers on standardized points y (N, D); include ``"loss"``, the
        training loss."""
        with torch.no_grad():
            return {"loss": float(self.loss(y, labels, generator=generator, standardized=True))}

    # -- the hooks of a model type (standardized units) -------------------------------------
    def _check_options(self, **options: Any) -> None:
        """Raise ``TypeError``/``ValueError`` for options the type does not take."""
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    def _decode(self, z: torch.Tensor, labels: torch.Tensor | None, **options: Any):
        raise NotImplementedError

    def _encode(self, y: torch.Tensor, labels: torch.Tensor | None, **options: Any):
        raise NotImplementedError

    def _inverse(self, y: torch.Tensor, labels: torch.Tensor | None, **options: Any):
        raise NotImplementedError

    def _trajectory(self, y, labels, inverse: bool, **options: Any) -> torch.Tensor:
        raise NotImplementedError

    def _loss(self, y: torch.Tensor, labels: torch.Tensor | None, generator) -> torch.Tensor:
        raise NotImplementedError
