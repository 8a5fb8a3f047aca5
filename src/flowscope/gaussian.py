"""A Gaussian with a full covariance, as a one-layer flow: the baseline every flow should beat."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import FlowModel, standard_normal_log_prob

__all__ = ["Gaussian"]


class Gaussian(FlowModel):
    r"""x = mu + L z with z ~ N(0, I) and L lower triangular with a positive diagonal.

    The density is N(mu, L L^T) (in standardized units; the model's standardization
    maps it to data units), trained by maximum likelihood like any flow; its optimum is
    the sample mean and covariance of the training points. The map has one step, so a
    :meth:`trajectory` has two states.

    .. math:: \log p(x) = \log N(L^{-1}(x - \mu); 0, I) - \sum_i \log L_{ii}

    Arguments:
        features: the dimension D.

    Example:
        >>> g = Gaussian(features=2)
        >>> x = g.sample(4, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(g.decode(g.encode(x)), x, atol=1e-6))
        True
    """

    kind = "gaussian"

    def __init__(self, features: int = 2):
        super().__init__(features)
        self.loc = nn.Parameter(torch.zeros(self.features))
        # Below the diagonal: L's entries; on it: log L_ii.
        self.raw_scale = nn.Parameter(torch.zeros(self.features, self.features))

    def config(self) -> dict[str, Any]:
        return {"features": self.features}

    def scale_tril(self) -> torch.Tensor:
        """L (D, D), lower triangular with a positive diagonal."""
        raw = self.raw_scale
        return torch.tril(raw, -1) + torch.diag(raw.diagonal().exp())

    def _decode(self, z, labels=None):
        return self.loc + z @ self.scale_tril().T

    def _inverse(self, y, labels=None):
        centred = (y - self.loc).T  # (D, N)
        z = torch.linalg.solve_triangular(self.scale_tril(), centred, upper=False).T
        log_det = -self.raw_scale.diagonal().sum().expand(len(y))
        return z, log_det

    def _encode(self, y, labels=None):
        return self._inverse(y)[0]

    def _trajectory(self, y, labels, inverse):
        out = self._encode(y) if inverse else self._decode(y)
        return torch.stack([y, out])

    def _loss(self, y, labels, generator):
        z, log_det = self._inverse(y)
        return -(standard_normal_log_prob(z) + log_det).mean()
