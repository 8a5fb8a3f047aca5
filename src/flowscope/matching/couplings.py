"""Couplings: which noise point each data point of a batch is paired with.

The flow-matching loss draws a batch of noise x0 and pairs it with the batch of data x1.
A coupling may reorder the noise (never the data, so that data and labels stay together);
the independent coupling of the study keeps the order it was drawn in.
"""

from __future__ import annotations

import torch

from ..registry import Part, Registry

__all__ = ["COUPLINGS", "Coupling", "IndependentCoupling"]

#: The registered couplings, by name.
COUPLINGS: Registry[type[Coupling]] = Registry("coupling")


class Coupling(Part):
    """Pairs a batch of noise with a batch of data."""

    def pair(
        self, x0: torch.Tensor, x1: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The noise (N, D) reordered so that row i is paired with data row i of x1 (N, D)
        (labels (N,) or ``None``: the data's classes)."""
        raise NotImplementedError


@COUPLINGS.decorator("independent")
class IndependentCoupling(Coupling):
    """Noise and data drawn independently, paired as drawn (the study's Algorithm 1)."""

    name = "independent"

    def pair(self, x0, x1, labels=None):
        return x0
