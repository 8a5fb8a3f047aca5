"""The library's own exceptions, plain Python, so that the command line can catch them
without importing PyTorch; :mod:`flowscope.runs` and :mod:`flowscope.train` re-export
:class:`RunError` and :class:`TrainingDiverged`. A bad value is a ``ValueError``."""

from __future__ import annotations

__all__ = ["MissingDependency", "NonFiniteOutput", "RunError", "TrainingDiverged", "UnusedLabels"]


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


class UnusedLabels(ValueError):
    """A data file has a column of class labels, and the model asked for is not
    conditional. The message says how to drop the column or train a conditional model;
    :func:`~flowscope.runs.train_run` adds the model type's own way."""


class RunError(ValueError):
    """A run folder is missing, incomplete, corrupted or from an incompatible version."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step.

    The message says only what :func:`~flowscope.train.fit` knows: the model keeps the
    weights of the failing step, and whatever ``on_epoch_end`` wrote for earlier epochs is
    untouched (fit itself writes no file). A caller with more to say (the command line) builds its
    own message from the attributes.

    Attributes:
        problem: what happened and when, e.g. ``"nf: the training loss became nan at
            epoch 2, step 1 of 5"``.
        epoch: the epoch (1-based) in which it happened.
        step: the step (1-based) within that epoch.
        saved_epoch: set by :func:`~flowscope.runs.train_run`: the epoch of the run's
            checkpoint that its folder now holds, or ``None`` if no epoch of the run was
            saved (the folder, if it held another run, still holds that one).
    """

    saved_epoch: int | None = None

    def __init__(self, problem: str, *, epoch: int, step: int):
        self.problem, self.epoch, self.step = problem, epoch, step
        super().__init__(
            f"{problem}. Lower the learning rate or change the seed; checkpoints written by "
            "on_epoch_end before this epoch are untouched"
        )


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
