r"""Probability paths: how a noise point x0 and a data point x1 are joined in time.

An affine path puts the point at time t at

.. math:: x_t = \alpha(t)\, x_1 + \sigma(t)\, x_0, \qquad
    \dot x_t = \dot\alpha(t)\, x_1 + \dot\sigma(t)\, x_0,

with x_t = x0 at t = 0 (the source) and close to x1 at t = 1 (the data). Flow matching
regresses a velocity field on the path's velocity (the study's Eqs. 13-16); every path
here defines alpha, sigma and their derivatives, and :meth:`AffinePath.sample` returns
the pair (x_t, dx_t) that the loss and the fused kernel use.

References:
    Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. 2022,
    arXiv:2210.02747 (the linear path with sigma_min, their Eq. 22).
    Liu, Gong, Liu. Flow Straight and Fast. 2022, arXiv:2209.03003 (the linear path).
    Lipman et al. Flow Matching Guide and Code. 2024, arXiv:2412.06264 (affine paths
    and schedulers; the variance-preserving cosine path).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..registry import Part, Registry

if TYPE_CHECKING:
    import torch

# The paths' names are plain Python, which the command line's help quotes; PyTorch is
# imported where a path computes on tensors.

__all__ = ["PATHS", "AffinePath", "CosinePath", "LinearPath", "PathSample"]

#: The registered probability paths, by name.
PATHS: Registry[type[AffinePath]] = Registry("probability path")

#: A time: a number or a tensor (0-dimensional or (N, 1)).
Time = "torch.Tensor | float"


@dataclass(frozen=True)
class PathSample:
    """Points on a path and the path's velocity there.

    Attributes:
        x_t: (N, D) the points at their times.
        dx_t: (N, D) the velocity of the path at those points, d x_t / dt.
    """

    x_t: torch.Tensor
    dx_t: torch.Tensor


class AffinePath(Part):
    r"""x_t = alpha(t) x1 + sigma(t) x0, with alpha(0) = 0 and sigma(0) = 1.

    Subclasses define :meth:`alpha`, :meth:`sigma` and their derivatives for t a number
    or a tensor, and may override :meth:`sample` and :meth:`gaussian_rate` with exact
    shortcuts of the same values.
    """

    def alpha(self, t: Time) -> Time:
        raise NotImplementedError

    def sigma(self, t: Time) -> Time:
        raise NotImplementedError

    def d_alpha(self, t: Time) -> Time:
        raise NotImplementedError

    def d_sigma(self, t: Time) -> Time:
        raise NotImplementedError

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """The points x_t and velocities dx_t for noise x0 (N, D), data x1 (N, D) and
        times t (N, 1)."""
        return PathSample(
            x_t=self.alpha(t) * x1 + self.sigma(t) * x0,
            dx_t=self.d_alpha(t) * x1 + self.d_sigma(t) * x0,
        )

    def gaussian_rate(self, t: Time) -> Time:
        r"""g(t) such that g(t) y is the path's marginal velocity when x0 and x1 are
        independent N(0, I):

        .. math:: g(t) = \frac{\alpha \dot\alpha + \sigma \dot\sigma}{\alpha^2 + \sigma^2}

        x_t is then N(0, (alpha^2 + sigma^2) I), and E[dx_t | x_t = y] = g(t) y is the
        regression of one jointly Gaussian vector on the other. It is exact, not an
        approximation, for that pair of distributions; for standardized data it is the
        part of the field their first two moments determine.
        """
        a, s = self.alpha(t), self.sigma(t)
        return (a * self.d_alpha(t) + s * self.d_sigma(t)) / (a * a + s * s)

    def gaussian_velocity(self, y: torch.Tensor, t: Time) -> torch.Tensor:
        """:meth:`gaussian_rate` times y: y (N, D), t a number, a 0-dim tensor or (N, 1).

        Raises:
            ValueError: for a t of another shape (an (N,) t would broadcast across the
                coordinates instead of the points).
        """
        import torch

        if isinstance(t, torch.Tensor) and t.ndim and (t.ndim != 2 or t.shape[1] != 1):
            raise ValueError(
                f"t must be a number or (N, 1), got a tensor of shape {tuple(t.shape)}"
            )
        return self.gaussian_rate(t) * y

    def gaussian_average_velocity(self, y: torch.Tensor, r: Time, t: Time) -> torch.Tensor:
        r"""The average velocity from y at time t to time r when x0 and x1 are independent
        N(0, I) (the mean flow's counterpart of :meth:`gaussian_velocity`):

        .. math:: u(y, r, t) = \frac{s(r) - s(t)}{(r - t)\, s(t)}\, y
            = \frac{s(r)^2 - s(t)^2}{r - t}\, \frac{y}{s(t)\,(s(r) + s(t))}

        with s = sqrt(alpha^2 + sigma^2): the marginal flow of that pair scales every
        point by s(r) / s(t), so this is exact, and u(y, t, t) is the Gaussian velocity.

        Arguments:
            y: (N, D) points at time t, standardized units.
            r, t: numbers or (N, 1) times in [0, 1].

        Returns:
            (N, D).
        """
        s_r, s_t = self._scale(r), self._scale(t)
        return self._scale_squared_slope(r, t) / (s_t * (s_r + s_t)) * y

    def _scale(self, t: Time) -> Time:
        """s(t) = sqrt(alpha^2 + sigma^2), the standard deviation of x_t for N(0, I) pairs."""
        import torch

        value = self.alpha(t) ** 2 + self.sigma(t) ** 2
        return value.sqrt() if isinstance(value, torch.Tensor) else math.sqrt(value)

    def _scale_squared_slope(self, r: Time, t: Time) -> Time:
        """(s(r)^2 - s(t)^2) / (r - t), and its limit 2 (alpha alpha' + sigma sigma') at
        r = t; a path with a closed form overrides this (the quotient loses digits as
        r - t shrinks and is replaced by the midpoint's derivative below 1e-3)."""
        import torch

        near = abs(r - t) < 1e-3
        mid = (r + t) / 2
        slope = 2 * (self.alpha(mid) * self.d_alpha(mid) + self.sigma(mid) * self.d_sigma(mid))
        if isinstance(near, torch.Tensor):
            h = torch.where(near, torch.ones_like(r - t), r - t)
            quotient = (self._scale(r) ** 2 - self._scale(t) ** 2) / h
            return torch.where(near, slope, quotient)
        return slope if near else (self._scale(r) ** 2 - self._scale(t) ** 2) / (r - t)


def _check_sigma_min(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"sigma_min must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0 <= value < 1:
        raise ValueError(f"sigma_min must be in [0, 1), got {value!r}")
    return value


@PATHS.decorator("linear")
class LinearPath(AffinePath):
    r"""The straight line from noise to data (the study's Eq. 14), optionally ending in a
    small Gaussian around the data point:

    .. math:: x_t = t\, x_1 + (1 - (1 - \sigma_{min})\, t)\, x_0, \qquad
        \dot x_t = x_1 - (1 - \sigma_{min})\, x_0

    With ``sigma_min = 0`` (the default) this is Eq. 14 and its velocity Eq. 15, x1 - x0,
    and the Gaussian rate is (2t - 1) / (t^2 + (1 - t)^2).

    Arguments:
        sigma_min: the noise left at t = 1, in [0, 1) (standardized units).

    Raises:
        ValueError: for a sigma_min outside [0, 1).
    """

    name = "linear"

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = _check_sigma_min(sigma_min)

    def arguments(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min}

    def alpha(self, t: Time) -> Time:
        return t

    def sigma(self, t: Time) -> Time:
        return 1 - (1 - self.sigma_min) * t

    def d_alpha(self, t: Time) -> Time:
        return 1.0

    def d_sigma(self, t: Time) -> Time:
        return -(1 - self.sigma_min)

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        if self.sigma_min == 0:  # Eqs. 14 and 15: x0 + t (x1 - x0), in one operation each
            import torch

            return PathSample(x_t=torch.lerp(x0, x1, t), dx_t=x1 - x0)
        return super().sample(x0, x1, t)

    def gaussian_rate(self, t: Time) -> Time:
        if self.sigma_min == 0:
            return (2 * t - 1) / (t * t + (1 - t) ** 2)
        return super().gaussian_rate(t)

    def _scale_squared_slope(self, r: Time, t: Time) -> Time:
        # s^2 = t^2 + (1 - k t)^2 with k = 1 - sigma_min: the quotient in closed form.
        k = 1 - self.sigma_min
        return (r + t) * (1 + k * k) - 2 * k


@PATHS.decorator("cosine")
class CosinePath(AffinePath):
    r"""The variance-preserving cosine path:

    .. math:: x_t = \sin(\tfrac{\pi}{2} t)\, x_1 + \cos(\tfrac{\pi}{2} t)\, x_0

    alpha^2 + sigma^2 = 1 at every t, so for N(0, I) data every x_t is N(0, I) and the
    Gaussian rate is 0: the skip of :class:`~flowscope.matching.FlowMatching` adds
    nothing on this path.
    """

    name = "cosine"

    def _angle(self, t: Time) -> Time:
        return (math.pi / 2) * t

    def alpha(self, t: Time) -> Time:
        import torch

        return (
            torch.sin(self._angle(t)) if isinstance(t, torch.Tensor) else math.sin(self._angle(t))
        )

    def sigma(self, t: Time) -> Time:
        import torch

        return (
            torch.cos(self._angle(t)) if isinstance(t, torch.Tensor) else math.cos(self._angle(t))
        )

    def d_alpha(self, t: Time) -> Time:
        return (math.pi / 2) * self.sigma(t)

    def d_sigma(self, t: Time) -> Time:
        return -(math.pi / 2) * self.alpha(t)

    def gaussian_rate(self, t: Time) -> Time:
        return t * 0.0  # alpha alpha' + sigma sigma' = 0 exactly

    def _scale_squared_slope(self, r: Time, t: Time) -> Time:
        return (r + t) * 0.0  # s = 1 at every t
