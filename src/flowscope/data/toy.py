"""The field's standard 2D toy sets (as popularised by FFJORD, Grathwohl et al. 2019).

:data:`DATASETS` maps each name to its sampler ``(n, rng) -> (n, 2)`` points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["DATASETS"]


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, math.pi, size=n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(a), 1 - np.cos(a))
    y = np.where(upper, np.sin(a), 0.5 - np.sin(a))
    return np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))


def _8gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    ang = np.arange(8) * math.pi / 4
    centers = 2 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return centers[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _2spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.random(n)) * 3 * math.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pts = sign[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], 1)
    return pts / 3 + 0.1 * rng.standard_normal((n, 2))


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms, rate = 5, 0.25
    labels = rng.integers(0, arms, n)
    feats = rng.standard_normal((n, 2)) * np.array([0.3, 0.05]) + np.array([1.0, 0.0])
    ang = 2 * math.pi * labels / arms + rate * np.exp(feats[:, 0])
    c, s = np.cos(ang), np.sin(ang)
    return 2 * np.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi, n)
    r = np.where(rng.random(n) < 0.5, 1.0, 0.5)
    return 2 * r[:, None] * np.stack([np.cos(a), np.sin(a)], 1) + 0.04 * rng.standard_normal((n, 2))


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) + 0.5 * rng.standard_normal((n, 2))
    return pts / 5


DATASETS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": _moons,
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _2spirals,
    "pinwheel": _pinwheel,
    "circles": _circles,
    "swissroll": _swissroll,
}
