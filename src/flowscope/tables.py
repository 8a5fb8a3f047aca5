"""Plain-text tables: the layout of every table flowscope prints (eval, bench, report)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["count", "text_table"]


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural but for one: ``1 sample``, ``1,000 samples``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def text_table(rows: Sequence[Sequence[str]], align: str, *, min_width: int = 0) -> str:
    """Rows of text cells as aligned columns, the first row the header.

    Arguments:
        rows: the header and the rows, each with one cell per letter of ``align``.
        align: per column, ``"l"`` (left-aligned) or ``"r"`` (right-aligned).
        min_width: the least width of a column, in characters.

    Returns:
        the lines, joined by newlines; columns are two spaces apart, and no line ends
        in spaces.

    Example:
        >>> print(text_table([("stage", "seconds"), ("train", "2.5")], align="lr"))
        stage  seconds
        train      2.5
    """
    widths = [max([min_width, *(len(r[i]) for r in rows)]) for i in range(len(align))]
    lines = (
        "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in rows
    )
    return "\n".join(lines)
