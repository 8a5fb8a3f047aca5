"""The library's own exceptions that are not a bad value (those are ``ValueError``)."""

from __future__ import annotations

__all__ = ["MissingDependency"]


class MissingDependency(ImportError):
    """An optional dependency that a feature needs is not installed.

    The message names the package and how to install it, e.g. ``flowscope report needs
    reportlab for the PDF: pip install 'flowscope[report]'``; the command line prints it
    as one line.
    """
