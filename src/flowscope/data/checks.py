"""The checks of the values given to the library: counts, sizes, seeds and class ids."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["check_int", "check_labels", "int_requirement"]


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``, else a ``ValueError``.

    The one check of counts, sizes and seeds given to the library. Python and numpy
    integers pass; ``bool``, floats (even 3.0), strings and other types do not.

    Arguments:
        value: the value to check.
        name: the argument's name, for the message.
        minimum: the least value allowed (1: a positive integer; 0: a non-negative one).

    Returns:
        ``int(value)``.

    Raises:
        ValueError: naming the argument and the value.

    Example:
        >>> check_int(3, "epochs")
        3
        >>> check_int(True, "epochs")
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {int_requirement(minimum)}, got {value!r}")
    return int(value)


def check_labels(labels: Any, n: int, num_classes: int) -> torch.Tensor:
    """Class ids for n points: one int (for all of them) or n integers, in [0, num_classes).

    Returns:
        (n,) int64, contiguous.

    Raises:
        ValueError: for non-integer labels, a shape other than () or (n,), or an id
            outside [0, num_classes), naming it.
    """
    import torch  # here: the counts' checks are plain Python, for the command line's parser

    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise ValueError(f"labels must be one int or have shape ({n},), got {tuple(labels.shape)}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"unknown label {int(labels[bad][0])}: the classes are 0..{num_classes - 1}"
        )
    return labels.long().contiguous()


def int_requirement(minimum: int) -> str:
    """How :func:`check_int` and the command line's integer options word the bound.

    Example:
        >>> int_requirement(1), int_requirement(0), int_requirement(2)
        ('a positive integer', 'a non-negative integer', 'an integer >= 2')
    """
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"
