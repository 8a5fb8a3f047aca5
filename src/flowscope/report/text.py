"""Number formatting of the report's text: fixed decimals, a true minus sign, powers of ten.

The markup (``<sup>``) is understood by both outputs, see :class:`~.document.Block`.

Example:
    >>> num(-1.23456), pct(0.5), pair((1, -2.5)), pm(0.18612, 0.0061)
    ('−1.235', '50.0%', '(1.00, −2.50)', '0.186 ± 0.006')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["balanced", "num", "pair", "pct", "pm", "sci"]


def num(x: float | None, digits: int = 3) -> str:
    """A number with a fixed number of decimals and a true minus sign."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}f}".replace("-", "−")


def sci(x: float | None, digits: int = 2) -> str:
    """A number in scientific notation, ``1.2×10<sup>−7</sup>`` (markup for both outputs)."""
    if x is None or not math.isfinite(x):
        return num(x)
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x)))
    if -2 <= exp <= 3:
        return num(x, max(0, digits - 1 - exp))
    mant = x / 10**exp
    return f"{mant:.{digits - 1}f}×10<sup>{str(exp).replace('-', '−')}</sup>"


def pct(x: float, digits: int = 1) -> str:
    """A share as a percentage: ``0.123`` -> ``12.3%``."""
    return f"{100 * x:.{digits}f}%"


def pair(point: Sequence[Any], digits: int = 2) -> str:
    """A point (x, y) (floats, numpy or 0-d tensor entries) as ``(x, y)`` with :func:`num`."""
    return f"({num(float(point[0]), digits)}, {num(float(point[1]), digits)})"


def pm(mean: float, spread: float, digits: int = 3) -> str:
    """A value and its spread, ``0.186 ± 0.006``, both with :func:`num`."""
    return f"{num(mean, digits)} ± {num(spread, digits)}"


def balanced(n: int, classes: int) -> str:
    """How many of ``n`` balanced samples (labels ``arange(n) % classes``) each class
    gets: ``"400"``, or ``"400 or 401"`` when ``n`` does not split evenly."""
    k, extra = divmod(n, classes)
    return f"{k:,}" if extra == 0 else f"{k:,} or {k + 1:,}"
