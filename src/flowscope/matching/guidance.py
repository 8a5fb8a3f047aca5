r"""Classifier-free guidance: label dropout in training, a guidance scale in sampling.

A class-conditional flow-matching model trained with label dropout also learns the
unconditional velocity: with probability p each training example's class is replaced by
a learned null class (one more row of the class embedding, id ``num_classes``), so that
v(y, t, null) regresses on the path's velocity of all classes together. Sampling with a
guidance scale w integrates

.. math:: v_w(y, t, c) = v(y, t, \varnothing) + w\,(v(y, t, c) - v(y, t, \varnothing)),

w = 1 the conditional field, w = 0 the unconditional one, w > 1 pushing each sample
further from the other classes. Flow matching's velocity is an affine function of the
score on an affine path, so this is Ho and Salimans' guided score written for the
velocity.

A guided field for w != 1 is not the velocity of a probability path the model learned:
its flow carries the noise to some distribution, but neither p(x | c) nor the tempered
p(x | c)^w p(x)^(1 - w) in general, so flowscope computes no log-density for it.

References:
    Ho, Salimans. Classifier-Free Diffusion Guidance. 2022, arXiv:2207.12598
    (label dropout, Algorithm 1; the guided score, Eq. 6).
    Zheng, Le, Shaul, Lipman, Grover, Chen. Guided Flows for Generative Modeling and
    Decision Making. 2023, arXiv:2311.13443 (the same combination of velocities).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .solvers import Velocity

__all__ = ["check_guidance", "check_label_dropout", "drop_labels", "guided"]


def check_guidance(w: Any) -> float | None:
    """The guidance scale w as a float (``None``: none asked for, the plain model).

    Raises:
        ValueError: for w that is not a finite number >= 0, naming it.
    """
    if w is None:
        return None
    try:
        value = float(w)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(w, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"the guidance scale w must be a finite number >= 0 (1: the conditional model, "
            f"0: the unconditional one, > 1: stronger guidance), got {w!r}"
        )
    return value


def check_label_dropout(p: Any) -> float:
    """The label-dropout probability p as a float in [0, 1).

    Raises:
        ValueError: for anything else, naming it.
    """
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(p, bool) or not 0 <= value < 1:
        raise ValueError(f"label_dropout must be a probability in [0, 1), got {p!r}")
    return value


def drop_labels(
    labels: torch.Tensor, p: float, null: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Labels (N,) with each replaced by the null class id ``null`` with probability p
    (Ho and Salimans, Algorithm 1): N uniform draws from ``generator`` on the CPU,
    none when p = 0 (the labels are returned as they are)."""
    if p == 0:
        return labels
    drop = torch.rand(len(labels), generator=generator) < p  # (N,)
    return torch.where(drop.to(labels.device), torch.full_like(labels, null), labels)


def guided(v_class: Velocity, v_null: Velocity, w: float) -> Velocity:
    """The guided velocity v_null + w (v_class - v_null), (y (N, D), t) -> (N, D)."""

    def velocity(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        null = v_null(y, t)
        return null + w * (v_class(y, t) - null)

    return velocity
