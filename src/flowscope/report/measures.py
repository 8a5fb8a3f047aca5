"""Measures of the report's experiments: how paths move, where points lie, the data's area.

Paths are arrays (T, N, 2) of T states of N points, in data units; the functions return
plain floats and lists, ready for ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data import OLYMPIC_BOX, RING_RADIUS, RING_THICKNESS, in_band, nearest_ring

__all__ = [
    "as_numpy",
    "axis_aligned_share",
    "band_area",
    "conditional_entropy",
    "fifth_shares",
    "fifth_turning",
    "locate",
    "step_lengths",
    "straightness",
    "successive_cosine",
]


def as_numpy(x: Any) -> np.ndarray:
    """A tensor or array as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def step_lengths(path: np.ndarray) -> np.ndarray:
    """(T, N, 2) -> (T - 1, N) length of each step, data units."""
    return np.linalg.norm(np.diff(path, axis=0), axis=-1)


def straightness(path: np.ndarray) -> float:
    """Mean over points of |end - start| / path length (1 for a straight path)."""
    length = step_lengths(path).sum(axis=0)
    chord = np.linalg.norm(path[-1] - path[0], axis=-1)
    ok = length > 0
    return float((chord[ok] / length[ok]).mean()) if ok.any() else 1.0


def fifth_shares(path: np.ndarray) -> list[float]:
    """Share of the total movement (sum of step lengths, all points) in each fifth of the
    steps; the number of steps must be a multiple of 5."""
    steps = step_lengths(path).sum(axis=1)
    if len(steps) % 5:
        raise ValueError(f"{len(steps)} steps do not split into fifths")
    parts = steps.reshape(5, -1).sum(axis=1)
    return (parts / parts.sum()).tolist()


def fifth_turning(path: np.ndarray) -> list[float]:
    """Share of the total change of velocity (all points) in each fifth of the time.

    ``path`` (T, N, 2) holds states at equally spaced times from 0 to 1 with T - 1 a
    multiple of 5; the velocity of each step is its displacement over its duration, and a
    change between consecutive steps is counted in the fifth of the time where it happens.
    """
    steps = len(path) - 1
    if steps % 5:
        raise ValueError(f"{steps} steps do not split into fifths")
    vel = np.diff(path, axis=0) * steps  # (T - 1, N, 2)
    change = np.linalg.norm(np.diff(vel, axis=0), axis=-1).sum(axis=1)  # (T - 2,)
    fifth = np.minimum(np.arange(1, steps) * 5 // steps, 4)  # the time of change k is (k+1)/steps
    parts = np.bincount(fifth, weights=change, minlength=5)
    return (parts / max(parts.sum(), 1e-300)).tolist()


def successive_cosine(path: np.ndarray) -> float:
    """Mean cosine between the directions of successive steps of paths (T, N, 2)."""
    d = np.diff(path, axis=0)  # (T - 1, N, 2)
    a, b = d[:-1], d[1:]
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    cos = (a * b).sum(axis=-1)[ok] / (na[ok] * nb[ok])
    return float(cos.mean()) if cos.size else 1.0


def axis_aligned_share(path: np.ndarray, tol: float = 1e-6) -> float:
    """Share of the steps of all points that leave one coordinate unchanged (to ``tol``)."""
    d = np.abs(np.diff(path, axis=0))  # (T - 1, N, 2)
    return float((d.min(axis=-1) <= tol * (1 + np.abs(path[1:]).max(axis=-1))).mean())


def locate(point: Sequence[float]) -> tuple[bool, int, float]:
    """(inside a band, nearest ring id, distance to that ring's centre line) of a point
    (x, y) in data units; inside as :func:`~flowscope.data.in_band` decides, like the
    metrics."""
    p = torch.tensor([point], dtype=torch.float64)  # (1, 2)
    ring, dist = nearest_ring(p)
    return bool(in_band(p).any()), int(ring[0]), float(dist[0])


def band_area(n: int, seed: int) -> float:
    """Area of the union of the rings' bands, in squared data units, by Monte Carlo.

    The Olympic data is uniform on that union (clipped by the generator's box), so its
    differential entropy is the log of this area. The test is :func:`~flowscope.data.in_band`
    with tolerance 0: the exact bands, as the generator draws them (the Monte Carlo
    points are float64, so no rounding tolerance is needed).
    """
    x0, x1, y0, y1 = OLYMPIC_BOX
    gen = torch.Generator().manual_seed(seed)
    inside = 0
    for start in range(0, n, 1_000_000):
        m = min(1_000_000, n - start)
        u = torch.rand(m, 2, generator=gen, dtype=torch.float64)
        pts = torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)
        inside += int(in_band(pts, tolerance=0.0).any(dim=1).sum())
    return inside / n * (x1 - x0) * (y1 - y0)


def conditional_entropy(radius: float = RING_RADIUS, thickness: float = RING_THICKNESS) -> float:
    r"""Differential entropy of the conditional Olympic data given the ring, nats, data units.

    Given its ring, a point has radius r uniform in [R - w/2, R + w/2] and a uniform
    angle (:func:`~flowscope.data.olympic_rings` with ``conditional=True``), so its density
    is 1 / (2 pi w r) on the annulus and

    .. math:: H(X \mid C) = \log(2 \pi w) + \mathrm{E}[\log r]
        = \log(2 \pi w) + \frac{[r \log r - r]_{R - w/2}^{R + w/2}}{w}.

    No conditional density can score a held-out ``-log p(x | c)`` below this on average.
    """
    a, b = radius - thickness / 2, radius + thickness / 2
    mean_log_r = ((b * math.log(b) - b) - (a * math.log(a) - a)) / thickness
    return math.log(2 * math.pi * thickness) + mean_log_r
