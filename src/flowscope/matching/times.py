"""Time samplers: where on the path each training example is taken (t in [0, 1]).

Any time density that is positive on (0, 1) gives the flow-matching loss the same
minimiser, the marginal velocity field (the study's Eq. 13) at every t; the choice only
changes where a small network spends its capacity and how noisy the gradient is.

References:
    Esser et al. Scaling Rectified Flow Transformers for High-Resolution Image Synthesis.
    2024, arXiv:2403.03206 (non-uniform time densities for flow matching).
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import TYPE_CHECKING, Any

from ..registry import Part, Registry

if TYPE_CHECKING:
    import torch

# PyTorch is imported where a time is drawn: the samplers' names and descriptions are plain
# Python, which the command line's help quotes without waiting for it.

__all__ = [
    "DEFAULT_CONDITIONAL_TIME_ALPHA",
    "DEFAULT_TIME_ALPHA",
    "TIME_SAMPLERS",
    "BetaTimes",
    "TimeSampler",
    "UniformTimes",
    "sample_times",
]

#: The default time sampler of an unconditional flow-matching model with the independent
#: coupling: t ~ Beta(5, 1) (``benchmarks/README.md`` has the measurements).
DEFAULT_TIME_ALPHA = 5.0
#: The same for a class-conditional model: t ~ Beta(7, 1).
DEFAULT_CONDITIONAL_TIME_ALPHA = 7.0

#: The registered time samplers, by name.
TIME_SAMPLERS: Registry[type[TimeSampler]] = Registry("time sampler")


class TimeSampler(Part):
    """Draws training times t (n, 1) in [0, 1]."""

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """n times, shape (n, 1), drawn with ``generator`` (``dtype`` ``None``:
        ``torch.float32``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The distribution in words, e.g. ``"Beta(5, 1)"``."""
        raise NotImplementedError


@TIME_SAMPLERS.decorator("uniform")
class UniformTimes(TimeSampler):
    """t ~ U[0, 1], the study's Algorithm 1."""

    name = "uniform"

    def sample(self, n, generator=None, dtype=None):
        import torch

        return torch.rand(n, 1, generator=generator, dtype=dtype or torch.float32)

    def describe(self) -> str:
        return "U[0, 1]"


def _check_alpha(alpha: Any) -> float:
    # A tensor exists only once PyTorch is imported: a number needs no import.
    torch = sys.modules.get("torch")
    tensor = torch is not None and isinstance(alpha, torch.Tensor)
    if isinstance(alpha, bool) or not (isinstance(alpha, numbers.Real) or tensor):
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if tensor and alpha.numel() != 1:
        raise ValueError(f"alpha must be one number, got a tensor of shape {alpha.shape}")
    value = float(alpha)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return value


@TIME_SAMPLERS.decorator("beta")
class BetaTimes(TimeSampler):
    """t ~ Beta(alpha, 1), density alpha t^(alpha - 1): alpha > 1 trains mostly near the
    data (t = 1).

    Drawn by inverting the CDF t^alpha: t = u^(1/alpha) with u ~ U[0, 1], so that
    ``alpha=1`` returns the uniform draws of :class:`UniformTimes` bit for bit.

    Arguments:
        alpha: a finite number > 0.

    Raises:
        ValueError: for another alpha.
    """

    name = "beta"

    def __init__(self, alpha: float = 1.0):
        self.alpha = _check_alpha(alpha)

    def arguments(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def sample(self, n, generator=None, dtype=None):
        import torch

        u = torch.rand(n, 1, generator=generator, dtype=dtype or torch.float32)
        return u if self.alpha == 1.0 else u.pow(1.0 / self.alpha)

    def describe(self) -> str:
        return f"Beta({self.alpha:g}, 1)"


def sample_times(
    n: int, alpha: float, generator: torch.Generator | None = None, dtype=None
) -> torch.Tensor:
    """Training times t ~ Beta(alpha, 1), shape (n, 1): :class:`BetaTimes` ``(alpha)``.

    Raises:
        ValueError: if n is not a positive integer or alpha not a finite number > 0.
    """
    from ..data import check_int

    return BetaTimes(alpha).sample(check_int(n, "n"), generator, dtype)
