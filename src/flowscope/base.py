"""What both model families share: coordinates, input checks and the standard normal base."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .data import Standardization, check_int, check_labels

__all__ = ["STANDARDIZE", "FlowModel", "standard_normal_log_prob"]

#: How a model standardizes its data: all points with one mean and scale, or each class
#: with its own (see :class:`~flowscope.data.Standardization`).
STANDARDIZE = ("global", "class")


def grad_buffer(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, allocated once, for a fused kernel to overwrite with p's gradient."""
    g = p.grad
    if g is None or g.shape != p.shape or g.dtype != p.dtype or not g.is_contiguous():
        p.grad = g = torch.empty_like(p, memory_format=torch.contiguous_format)
    return g


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) of each row of z (N, D), in nats, shape (N,)."""
    return -0.5 * (z * z).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class FlowModel(nn.Module):
    """Base of the two model families: ``NormalizingFlow`` and ``FlowMatching``.

    A model works in standardized coordinates internally and carries the
    :class:`~flowscope.data.Standardization` fitted on its training data (buffers saved with
    the weights), so its public methods take and return data units. A conditional model
    may standardize each class by its own mean and scale (``standardize="class"``).

    Subclasses implement ``_log_prob_std``, ``_loss_std`` and ``validation_terms``, and
    may implement ``_loss_and_grad_std``, the trainer's fast path.
    """

    kind: str = ""

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

    # -- configuration, for saving and loading -------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, enough to rebuild the model (JSON-safe)."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.standardization.loc.dtype

    # -- input checks ---------------------------------------------------------------------
    def _check_points(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"{name} must have shape (N, {self.features}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(self.dtype)
        return x.to(self.dtype)

    def _check_labels(self, labels: Any, n: int) -> torch.Tensor | None:
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("this model is unconditional: do not pass labels")
            return None
        if labels is None:
            raise ValueError(
                f"this model is conditional: pass labels, an int in [0, {self.num_classes}) "
                "or a tensor of shape (N,)"
            )
        return check_labels(labels, n, self.num_classes)

    @staticmethod
    def _check_n(n: int) -> int:
        return check_int(n, "n")

    # -- coordinates ----------------------------------------------------------------------
    def _display(
        self, states: torch.Tensor, units: str, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map standardized states (..., N, D) of points with labels (N,) or ``None`` to
        the requested units ("data" or "standardized")."""
        if units == "standardized":
            return states
        if units == "data":
            return self.standardization.inverse(states, labels)
        raise ValueError(f"units must be 'data' or 'standardized', got {units!r}")

    # -- likelihood and training ----------------------------------------------------------
    @torch.no_grad()
    def log_prob(
        self, x: torch.Tensor, labels: Any = None, *, standardized: bool = False, **kwargs: Any
    ) -> torch.Tensor:
        """Log-density of each point, in nats.

        Arguments:
            x: (N, D) points in data units.
            labels: class ids for a conditional model (one int or (N,)), else ``None``.
            standardized: return the density of the standardized point instead (the
                number the training losses are in); it differs by ``sum(log scale)``
                (of the point's class, if standardized per class).

        Returns:
            (N,) log p(x), computed under ``torch.no_grad()``; ``-inf`` where the value
            leaves the floating-point range (cast the model to float64 for a wider one).
        """
        x = self._check_points(x)
        labels = self._check_labels(labels, len(x))
        lp = self._log_prob_std(self.standardization(x, labels), labels, **kwargs)
        if not standardized:
            lp = lp + self.standardization.log_abs_det(labels)
        return torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp)

    def loss(
        self, x: torch.Tensor, labels: Any = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The training loss of a batch x (N, D) in data units, a scalar (standardized space)."""
        x = self._check_points(x)
        labels = self._check_labels(labels, len(x))
        return self._loss_std(self.standardization(x, labels), labels, generator)

    def _log_prob_std(self, y: torch.Tensor, labels: torch.Tensor | None, **kwargs: Any):
        raise NotImplementedError

    def _loss_std(self, y, labels, generator):
        raise NotImplementedError

    def _loss_and_grad_std(self, y, labels, generator) -> torch.Tensor | None:
        """The trainer's fast path: the training loss of standardized points y (N, D), a
        0-dim tensor, with the gradient of every parameter written into its ``.grad`` by
        one fused kernel call, skipping autograd.

        Returns ``None``, drawing nothing from ``generator``, when the model cannot (see
        :meth:`_fusable`); the trainer then calls :meth:`_loss_std` and ``backward``. Both
        paths draw the same random numbers and give the same loss and gradients.

        Raises:
            ValueError, MemoryError, RuntimeError: as the model's kernel does (bad labels,
                no memory, a failed call).
        """
        return None

    def _fusable(self, params: list[torch.Tensor], owner: type, methods: tuple[str, ...]) -> bool:
        """Whether the fast path may replace autograd for ``params``: grad mode on, all
        of them trainable, no gradient hooks on them (the kernel would bypass them), and
        none of ``methods``, the loss that ``owner``'s kernel reproduces, overridden by a
        subclass (an override's loss is what must train)."""
        if not torch.is_grad_enabled():
            return False
        for p in params:
            if not p.requires_grad:
                return False
            if getattr(p, "_backward_hooks", None) or getattr(
                p, "_post_accumulate_grad_hooks", None
            ):
                return False
        cls = type(self)
        return cls is owner or all(getattr(cls, m) is getattr(owner, m) for m in methods)

    def validation_terms(
        self, y: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
    ) -> dict[str, float]:
        """Validation numbers on standardized points y (N, D); must include ``"loss"``."""
        raise NotImplementedError
