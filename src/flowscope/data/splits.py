"""The seeded split of a data set into train, validation and test parts."""

from __future__ import annotations

import torch

from .checks import check_int

__all__ = ["SPLIT_FRACTIONS", "split", "split_sizes"]

SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train, validation, test shares of a data file


def split_sizes(
    n: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[int, int, int]:
    """The sizes of the train, validation and test parts :func:`split` makes of n points.

    Train and validation get ``round(fraction * n)`` points (Python's rounding, half to
    even), test the rest; a part can be empty when n is small.

    Example:
        >>> split_sizes(100), split_sizes(12)
        ((90, 5, 5), (11, 1, 0))

    Raises:
        ValueError: if n is negative or the fractions are not >= 0 with sum 1.
    """
    n = check_int(n, "n", minimum=0)
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three numbers >= 0 that sum to 1, got {fractions}")
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return n_train, n_val, n - n_train - n_val


def split(
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    seed: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Seeded random split into train, validation and test parts.

    Arguments:
        x: (N, D) points; labels: (N,) or ``None``.
        fractions: shares of train, validation and test; they must sum to 1.

    Returns:
        ``[(x_train, y_train), (x_val, y_val), (x_test, y_test)]`` of the sizes
        :func:`split_sizes` gives; a part may be empty (callers that need every part,
        like :func:`~flowscope.runs.run_data`, check the sizes).
    """
    n = len(x)
    n_train, n_val, _ = split_sizes(n, fractions)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]
    return [(x[p], None if labels is None else labels[p]) for p in parts]
