"""The velocity networks of flow matching: MLPs of the point, the time(s) and the class."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import ACTIVATIONS
from .solvers import Velocity

__all__ = ["ACTIVATIONS", "LEAKY_SLOPE", "AverageVelocityField", "VelocityField"]

#: The negative slope of the LeakyReLU between the layers (``F.leaky_relu``'s default).
LEAKY_SLOPE = 0.01


def _activation(name: str):
    return (lambda a: F.leaky_relu(a, LEAKY_SLOPE)) if name == "leaky_relu" else F.silu


class VelocityField(nn.Module):
    """An MLP v(y, t) -> (N, D): ``layers`` Linear layers of width ``hidden``, LeakyReLU
    (or SiLU) between.

    The input of the first layer is the point, the time and, for a conditional field, the
    class vector from an ``nn.Embedding``: that first fully connected layer mixes the three
    (the study's conditional model). The Linear layers' weights live in one flat parameter
    ``theta`` (for each layer its weight (out, in), as in ``nn.Linear``, then its bias):
    one tensor for the optimizer, whose cost grows with the number of tensors, and for
    the trainer's fused kernel; :meth:`pairs` gives the per-layer views. Each layer is
    initialised as ``nn.Linear`` is.

    Arguments:
        features: the dimension D.
        hidden: width of the hidden layers (the study: >= 64).
        layers: number of Linear layers, >= 2 (the study: 4-5).
        num_classes: number of classes of a conditional field, or ``None``.
        embedding_dim: size of the class vector.
        activation: between the layers, one of :data:`ACTIVATIONS`.

    Raises:
        ValueError: for fewer than 2 layers, a width < 1 or an unknown activation.
    """

    #: The time inputs after the point (the columns of the first layer's weight that
    #: follow the point's; the class vector comes after them).
    time_inputs: ClassVar[int] = 1

    def __init__(
        self,
        features: int = 2,
        hidden: int = 64,
        layers: int = 5,
        num_classes: int | None = None,
        embedding_dim: int = 16,
        activation: str = "leaky_relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        self.activation = activation
        self._act = _activation(activation)
        if layers < 2:
            raise ValueError(f"layers must be >= 2, got {layers}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.embedding = None if num_classes is None else nn.Embedding(num_classes, embedding_dim)
        d_in = features + self.time_inputs + (0 if num_classes is None else embedding_dim)
        self.dims = [d_in] + [hidden] * (layers - 1) + [features]
        flat = []
        for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
            lin = nn.Linear(a, b)
            flat += [lin.weight.detach().reshape(-1), lin.bias.detach()]
        self.theta = nn.Parameter(torch.cat(flat))

    @property
    def features(self) -> int:
        return self.dims[-1]

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
        self, y: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v(y, t): y (N, D), t a number, 0-dim, (N,) or (N, 1), labels (N,) or ``None``
        -> (N, D)."""
        return self._network(y, [_time_column(t, y)], labels)

    def _network(
        self, y: torch.Tensor, times: list[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The MLP of the point y (N, D), the time columns (N, 1) each and the class."""
        parts = [y, *times] if self.embedding is None else [y, *times, self.embedding(labels)]
        a = torch.cat(parts, dim=1)  # (N, dims[0]): the point, the times, the class vector
        pairs = self.pairs()
        for i, (w, b) in enumerate(pairs):
            a = F.linear(a, w, b)
            if i < len(pairs) - 1:
                a = self._act(a)
        return a

    def frozen(self, labels: torch.Tensor | None = None) -> Velocity:
        """v(y, t) for an ODE solver: the same function as :meth:`forward`, with the weights
        detached and the parts of the first layer that do not depend on y computed once.

        Arguments:
            labels: the class ids (N,) of the points to be integrated, or ``None``.

        Returns:
            a callable (y (N, D), t a 0-dim tensor) -> (N, D), a new tensor that the
            caller may modify in place; differentiable in y only. The time inputs after
            the first are 0 (for :class:`AverageVelocityField`, r - t = 0: the
            instantaneous velocity).
        """
        pairs = [(w.detach(), b.detach()) for w, b in self.pairs()]
        w0, b0 = pairs[0]
        d = self.dims[-1]
        w_y, w_t = w0[:, :d].T.contiguous(), w0[:, d]
        const = b0
        if self.embedding is not None:
            emb = self.embedding(labels).detach()
            const = b0 + emb @ w0[:, d + self.time_inputs :].T  # (N, hidden)
        rest = [(w.T.contiguous(), b) for w, b in pairs[1:]]
        act = self._act

        def velocity(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = torch.addmm(const + t * w_t, y, w_y)
            for w, b in rest:
                a = torch.addmm(b, act(a), w)
            return a

        return velocity


def _time_column(t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    """Times as a column (N, 1) for points y (N, D): t a number, 0-dim, (N,) or (N, 1)."""
    t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
    return t.expand(y.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)


class AverageVelocityField(VelocityField):
    """An MLP u(y, r, t) -> (N, D): the average velocity of a mean flow from the point y
    at time t to time r (:class:`~flowscope.matching.meanflow.MeanFlow`).

    The layers are :class:`VelocityField`'s; the first takes the point, t, the step
    r - t and the class vector (the (t, t - r) inputs of Geng et al. 2025, in the
    project's direction of time). With r = t it is an instantaneous velocity, and
    :meth:`frozen` is that one, u(y, t, t).

    Arguments:
        as :class:`VelocityField`.
    """

    time_inputs = 2

    def forward(
        self,
        y: torch.Tensor,
        r: torch.Tensor | float,
        t: torch.Tensor | float,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """u(y, r, t): y (N, D), r and t each a number, 0-dim, (N,) or (N, 1), labels
        (N,) or ``None`` -> (N, D)."""
        t, r = _time_column(t, y), _time_column(r, y)
        return self._network(y, [t, r - t], labels)

    @torch.no_grad()
    def tangent(
        self,
        y: torch.Tensor,
        r: torch.Tensor,
        t: torch.Tensor,
        dy: torch.Tensor,
        dr: torch.Tensor,
        dt: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The derivative (N, D) of :meth:`forward` at (y, r, t) along the tangent
        (dy (N, D), dr (N, 1), dt (N, 1)), by forward mode written out for these layers
        (each Linear maps the tangent by its weight, each activation scales it by its
        slope at the pre-activation), under ``torch.no_grad()``: what
        ``torch.func.jvp(self, (y, r, t), (dy, dr, dt))[1]`` gives, in one pass of
        plain operations."""
        t, r = _time_column(t, y), _time_column(r, y)
        a, da = [y, t, r - t], [dy, dt.reshape(-1, 1), (dr - dt).reshape(-1, 1)]
        if self.embedding is not None:
            e = self.embedding(labels)
            a, da = [*a, e], [*da, torch.zeros_like(e)]
        a, da = torch.cat(a, dim=1), torch.cat(da, dim=1)  # (N, dims[0]) each
        pairs = self.pairs()
        for i, (w, b) in enumerate(pairs):
            a, da = F.linear(a, w, b), F.linear(da, w)
            if i < len(pairs) - 1:
                if self.activation == "leaky_relu":
                    da = torch.where(a > 0, da, LEAKY_SLOPE * da)
                else:  # silu'(a) = s (1 + a (1 - s)), s = sigmoid(a)
                    sig = torch.sigmoid(a)
                    da = da * sig * (1 + a * (1 - sig))
                a = self._act(a)
        return da
