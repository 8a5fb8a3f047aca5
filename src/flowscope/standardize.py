"""Per-axis standardization of the data, fitted once and saved with a model's weights.

Every model standardizes internally: it maps data units to standardized units with a
:class:`Standardization` fitted on its training set, and its base distribution lives in
those coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .data.checks import check_labels

__all__ = ["Standardization"]


class Standardization(nn.Module):
    """Per-axis z-scoring, fitted once and saved with a model (buffers ``loc``, ``scale``).

    ``forward`` maps data units to standardized units. A log-density in data units equals
    the standardized one plus :meth:`log_abs_det` (that is, minus ``sum(log scale)``).

    With ``num_classes`` the mean and standard deviation are those of each class: ``loc``
    and ``scale`` are (C, D), and every map takes the class ids. A model whose base is
    N(0, I) in these coordinates has, in data units, the class-conditional prior
    N(mean_k, diag(std_k^2)) for class k: a Gaussian centred on the class's average point,
    as in Issachar et al., Designing a Conditional Prior Distribution for Flow-Based
    Generative Models, TMLR 2025, arXiv:2502.09611.

    Arguments:
        features: the dimension D.
        num_classes: fit per class (C classes), or ``None`` for one mean and scale.
    """

    def __init__(self, features: int, num_classes: int | None = None):
        super().__init__()
        rows = () if num_classes is None else (num_classes,)
        self.register_buffer("loc", torch.zeros(*rows, features))
        self.register_buffer("scale", torch.ones(*rows, features))

    @property
    def per_class(self) -> bool:
        """Whether ``loc`` and ``scale`` are per class, (C, D)."""
        return self.loc.ndim == 2

    def _labels(self, labels: Any, n: int) -> torch.Tensor:
        """Checked class ids (n,) of a per-class standardization."""
        if labels is None:
            raise ValueError("this standardization is per class: pass the labels (N,)")
        return check_labels(labels, n, len(self.loc))

    def _rows(self, labels: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) for n points: (D,) each, or (n, D) each per class."""
        if not self.per_class:
            return self.loc, self.scale
        labels = self._labels(labels, n)
        return self.loc[labels], self.scale[labels]

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        names: Sequence[str] | None = None,
    ) -> Standardization:
        """Set ``loc`` and ``scale`` to the mean and standard deviation of x (N, D), of each
        class's points (labels (N,)) when per class; ``names``, the classes' names, are
        for the messages.

        Raises:
            ValueError: if x is not (N >= 2, D) or holds NaN or inf, a coordinate is
                constant, or (per class) labels are missing or a class has fewer than 2
                points.
        """
        d = self.loc.shape[-1]
        if x.ndim != 2 or x.shape[1] != d or len(x) < 2:
            raise ValueError(f"need (N >= 2, {d}) points to fit, got {tuple(x.shape)}")
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ValueError(f"cannot standardize: point {row} is {x[row].tolist()} (not finite)")
        if not self.per_class:
            loc, scale = x.mean(dim=0), x.std(dim=0)
            if (scale <= 0).any():
                col = int((scale <= 0).nonzero()[0, 0])
                raise ValueError(
                    f"cannot standardize: coordinate {col + 1} (column {col + 1}) is constant "
                    f"in the training data (every point has {float(loc[col]):g} there); a "
                    "flow needs variation in every coordinate: drop the column or add data"
                )
        else:
            global_hint = (
                "or standardize all classes together (a model's standardize='global', "
                "flowscope train's --standardize global)"
            )
            labels = self._labels(labels, len(x))
            loc, scale = torch.empty_like(self.loc), torch.empty_like(self.scale)
            for k in range(len(self.loc)):
                xk = x[labels == k]
                which = f"class {k}"
                if names is not None and str(names[k]) != str(k):
                    which += f" ({names[k]})"
                if len(xk) < 2:
                    have = "no training points" if len(xk) == 0 else "1 training point"
                    raise ValueError(
                        f"cannot standardize per class: {which} has {have} and each class "
                        f"needs at least 2; add points of that class {global_hint}"
                    )
                loc[k], scale[k] = xk.mean(dim=0), xk.std(dim=0)
                if (scale[k] <= 0).any():
                    col = int((scale[k] <= 0).nonzero()[0, 0])
                    raise ValueError(
                        f"cannot standardize per class: coordinate {col + 1} is constant within "
                        f"{which} in the training data; add varied points of that class "
                        f"{global_hint}"
                    )
        self.loc.copy_(loc)
        self.scale.copy_(scale)
        return self

    def forward(self, x: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Data units -> standardized units: x (N, D) -> (N, D).

        Arguments:
            labels: per class, the class ids (one int or (N,)); ignored otherwise.

        Raises:
            ValueError: per class, for missing labels, a wrong shape or an unknown id.
        """
        loc, scale = self._rows(labels, len(x))
        return (x - loc) / scale

    def inverse(self, y: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Standardized units -> data units: y (..., N, D) -> (..., N, D), e.g. the states
        of a trajectory (T, N, D) with the labels (N,) of its points.

        Raises:
            ValueError: as :meth:`forward`.
        """
        loc, scale = self._rows(labels, y.shape[-2])
        return y * scale + loc

    def log_abs_det(self, labels: Any = None) -> torch.Tensor:
        """log|det| of the data-to-standardized map, ``-sum(log scale)``: a scalar, or per
        class (N,) for labels (N,) (one int gives (1,)).

        Raises:
            ValueError: as :meth:`forward`.
        """
        if not self.per_class:
            return -self.scale.log().sum()
        n = 1 if labels is None else torch.as_tensor(labels).numel()
        return -self._rows(labels, n)[1].log().sum(dim=-1)
