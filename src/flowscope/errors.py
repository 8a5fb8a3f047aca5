"""The library's own exceptions that are not a bad value (those are ``ValueError``)."""

from __future__ import annotations

__all__ = ["MissingDependency", "NonFiniteOutput"]


class MissingDependency(ImportError):
    """An optional dependency that a feature needs is not installed.

    The message names the package and how to install it, e.g. ``flowscope report needs
    reportlab for the PDF: pip install 'flowscope[report]'``; the command line prints it
    as one line.
    """


class NonFiniteOutput(ValueError):
    """A model produced NaN or infinite samples or latents from finite inputs: its
    weights are corrupted or its training diverged. The message says how many and what
    to do; the command line prints it as one line and exits non-zero, writing no file."""


def check_finite(values, what: str, where: str) -> None:
    """Raise :class:`NonFiniteOutput` if ``values`` (a tensor) holds a NaN or infinity.

    Arguments:
        values: the model's output.
        what: what the values are, e.g. ``"samples"``.
        where: the model or run, for the message.
    """
    import torch

    bad = ~torch.isfinite(values)
    if bad.any():
        rows = int(bad.reshape(len(values), -1).any(dim=1).sum())
        raise NonFiniteOutput(
            f"{where}: {rows} of {len(values)} {what} are not finite (NaN or infinite): the "
            "model's weights are corrupted or its training diverged; retrain it"
        )
