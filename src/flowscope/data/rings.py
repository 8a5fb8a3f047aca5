"""The Olympic rings: their geometry, the one test of band membership, and the sampler."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from .checks import check_int

__all__ = [
    "BAND_TOLERANCE",
    "OLYMPIC_BOX",
    "RING_CENTERS",
    "RING_COLORS",
    "RING_NAMES",
    "RING_RADIUS",
    "RING_THICKNESS",
    "in_band",
    "nearest_ring",
    "olympic_rings",
    "ring_distance",
]

RING_NAMES: tuple[str, ...] = ("black", "blue", "green", "red", "yellow")
RING_CENTERS: tuple[tuple[float, float], ...] = (
    (2.0, 0.0),
    (0.0, 0.0),
    (3.0, -1.0),
    (4.0, 0.0),
    (1.0, -1.0),
)
RING_COLORS: tuple[str, ...] = ("#000000", "#0081C8", "#00A651", "#EE334E", "#FCB131")
RING_RADIUS = 1.0
RING_THICKNESS = 0.25  # width w of each ring's band, data units (the reference's default)
OLYMPIC_BOX = (-1.0, 5.0, -2.0, 1.0)  # x_min, x_max, y_min, y_max of the reference's rejection box

# The one policy for "is this point in a ring's band" (see in_band). Points are stored in
# float32: a coordinate near 5 is rounded by up to 2.4e-7, which can push a point drawn
# exactly on a band's edge just outside it. Membership tests of points (the metrics, the
# report's checks) therefore widen each band by this much, in data units, so that the
# data itself always counts as inside. Only the computations of the exact set in float64
# (the generator's rejection step, the Monte Carlo area of the bands) use tolerance 0.
BAND_TOLERANCE = 1e-6


def _check_thickness(ring_thickness: Any) -> float:
    if not (
        isinstance(ring_thickness, numbers.Real)
        and not isinstance(ring_thickness, bool)
        and 0 < ring_thickness < 2
    ):
        raise ValueError(f"ring_thickness must be in (0, 2), got {ring_thickness!r}")
    return float(ring_thickness)


def ring_distance(points: torch.Tensor) -> torch.Tensor:
    """Distance of each point from each ring's centre line.

    Arguments:
        points: (N, 2) in data units.

    Returns:
        (N, 5) absolute radial distances ``| ||p - c_k|| - 1 |``, ring order as ``RING_NAMES``.
    """
    centers = torch.tensor(RING_CENTERS, dtype=points.dtype, device=points.device)
    return ((points[:, None, :] - centers[None]).norm(dim=-1) - RING_RADIUS).abs()


def in_band(
    points: torch.Tensor,
    ring_thickness: float = RING_THICKNESS,
    *,
    tolerance: float = BAND_TOLERANCE,
) -> torch.Tensor:
    r"""Whether each point lies in each ring's band: the one test of band membership.

    Point p is in ring k's band when

    .. math:: |\,\|p - c_k\| - 1| \le w / 2 + \mathrm{tolerance}.

    The default tolerance, :data:`BAND_TOLERANCE` (1e-6 data units), absorbs the float32
    rounding of stored points, so that every point of :func:`olympic_rings` is inside;
    pass ``tolerance=0.0`` only to compute the exact set from float64 points. A point
    with a NaN or infinite coordinate is in no band.

    Arguments:
        points: (N, 2) in data units.
        ring_thickness: band width w in data units, in (0, 2).
        tolerance: widening of each band, data units, >= 0.

    Returns:
        (N, 5) bool, ring order as ``RING_NAMES``; ``.any(dim=1)`` says whether a point
        is in the union of the bands.

    Raises:
        ValueError: for a thickness outside (0, 2) or a negative or non-finite tolerance.

    Example:
        >>> in_band(torch.tensor([[1.0, 0.0], [0.0, 1.5]])).any(dim=1)
        tensor([ True, False])
    """
    half = _check_thickness(ring_thickness) / 2
    if not (isinstance(tolerance, numbers.Real) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return ring_distance(points) <= half + float(tolerance)


def nearest_ring(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ring whose centre line is nearest to each point, and the distance to it.

    Arguments:
        points: (N, 2) in data units.

    Returns:
        ring ids (N,) int64 (order of ``RING_NAMES``) and distances (N,) to that ring's
        centre line, data units (NaN for a point with a NaN coordinate).
    """
    dist, ring = ring_distance(points).min(dim=1)
    return ring, dist


def olympic_rings(
    n: int,
    *,
    conditional: bool = False,
    ring_thickness: float = RING_THICKNESS,
    seed: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Points drawn from the Olympic logo: five rings of radius 1.

    Unconditional: uniform (by area) over the union of the rings' bands, drawn by
    rejection from the box [-1, 5] x [-2, 1], as the reference generator does (the box
    clips the outer edge of the bands at the four extremes). Conditional: each ring gets
    ``n // 5`` points (the first ``n % 5`` rings one more), radius uniform in
    [1 - w/2, 1 + w/2] and angle uniform in [0, 2 pi); the points are shuffled.

    Arguments:
        n: number of points, >= 1.
        conditional: also return the ring id of each point.
        ring_thickness: band width w, in data units.
        seed: seed of the generator; ``None`` draws fresh entropy.

    Returns:
        points (n, 2) float32 in data units, and with ``conditional`` the labels (n,) int64
        (0 black, 1 blue, 2 green, 3 red, 4 yellow).

    Raises:
        ValueError: if ``n < 1`` or ``ring_thickness`` is not in (0, 2).

    Example:
        >>> x = olympic_rings(1000, seed=0)
        >>> x.shape
        torch.Size([1000, 2])
        >>> bool(in_band(x).any(dim=1).all())
        True
    """
    n = check_int(n, "n")
    half = _check_thickness(ring_thickness) / 2
    rng = np.random.default_rng(seed)
    centers = np.asarray(RING_CENTERS)
    if conditional:
        labels = np.repeat(np.arange(5), n // 5)
        labels = np.concatenate([labels, np.arange(n % 5)])
        radius = rng.uniform(RING_RADIUS - half, RING_RADIUS + half, size=n)
        angle = rng.uniform(0.0, 2 * math.pi, size=n)
        pts = centers[labels] + radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        order = rng.permutation(n)
        return (
            torch.from_numpy(pts[order]).float(),
            torch.from_numpy(labels[order]).long(),
        )
    x0, x1, y0, y1 = OLYMPIC_BOX
    out, have = [], 0
    while have < n:
        m = max(1024, int((n - have) * 2.6))  # acceptance is about 0.36
        cand = rng.uniform((x0, y0), (x1, y1), size=(m, 2))
        # The exact bands (tolerance 0): the candidates are float64, and the float32
        # output must stay within BAND_TOLERANCE of them.
        inside = in_band(torch.from_numpy(cand), ring_thickness, tolerance=0.0).any(dim=1)
        keep = cand[inside.numpy()]
        out.append(keep)
        have += len(keep)
    return torch.from_numpy(np.concatenate(out)[:n]).float()
