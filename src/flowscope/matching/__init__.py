"""Flow matching, built from parts: a probability path, a coupling of noise and data, a
time sampler and a velocity network (the study's section 4, Eqs. 10-18).

Modules, by role: :mod:`.paths` (how noise and data are joined in time), :mod:`.couplings`
(which source point goes with which data point; :mod:`.assignment`, the exact solvers of
the OT couplings), :mod:`.sources` (the distribution at
t = 0), :mod:`.times` (where on the path the loss
looks), :mod:`.field` (the velocity network), :mod:`.solvers` (ODE integration) and
:mod:`.model` (:class:`FlowMatching`, which puts them together) and :mod:`.meanflow`
(:class:`MeanFlow`, the same parts with an average velocity, for one-step sampling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy

if TYPE_CHECKING:
    import torch

# Imported on first use (flowscope.lazy): the declarations the command line's help quotes
# (the solvers, the paths' and couplings' names, the time samplers) are plain Python, and
# `--help` does not wait for PyTorch. FlowMatching's module registers the fused Euler
# sampler when it is imported.
_EXPORTS = {
    **dict.fromkeys(
        ("COUPLINGS", "ClassOTCoupling", "Coupling", "IndependentCoupling", "OTCoupling"),
        ".couplings",
    ),
    "ot_assignment": ".assignment",
    **dict.fromkeys(("LEAKY_SLOPE", "AverageVelocityField", "VelocityField"), ".field"),
    **dict.fromkeys(("MeanFlow", "MeanFlowBatch"), ".meanflow"),
    **dict.fromkeys(("DIVERGENCES", "FlowMatching", "TrainingBatch"), ".model"),
    **dict.fromkeys(("PATHS", "AffinePath", "CosinePath", "LinearPath", "PathSample"), ".paths"),
    **dict.fromkeys(
        ("DEFAULT_DT", "SOLVERS", "Velocity", "divergence_of", "integrate", "time_grid"),
        ".solvers",
    ),
    **dict.fromkeys(("SOURCES", "NoDensity", "Source", "source_from_text"), ".sources"),
    **dict.fromkeys(
        (
            "DEFAULT_CONDITIONAL_TIME_ALPHA",
            "DEFAULT_TIME_ALPHA",
            "TIME_SAMPLERS",
            "BetaTimes",
            "TimeSampler",
            "UniformTimes",
            "sample_times",
        ),
        ".times",
    ),
}

__all__ = [
    "COUPLINGS",
    "DEFAULT_CONDITIONAL_TIME_ALPHA",
    "DEFAULT_DT",
    "DEFAULT_TIME_ALPHA",
    "DIVERGENCES",
    "LEAKY_SLOPE",
    "PATHS",
    "SOLVERS",
    "SOURCES",
    "TIME_SAMPLERS",
    "AffinePath",
    "AverageVelocityField",
    "BetaTimes",
    "ClassOTCoupling",
    "CosinePath",
    "Coupling",
    "FlowMatching",
    "IndependentCoupling",
    "LinearPath",
    "MeanFlow",
    "MeanFlowBatch",
    "NoDensity",
    "OTCoupling",
    "PathSample",
    "Source",
    "TimeSampler",
    "TrainingBatch",
    "UniformTimes",
    "Velocity",
    "VelocityField",
    "divergence_of",
    "gaussian_velocity",
    "integrate",
    "ot_assignment",
    "sample_times",
    "source_from_text",
    "time_grid",
]


def gaussian_velocity(y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    r"""The marginal velocity of the study's linear path when the data are N(0, I):

    .. math:: v(y, t) = E[x_1 - x_0 \mid y_t = y] = \frac{2t - 1}{t^2 + (1 - t)^2}\, y

    :meth:`LinearPath.gaussian_velocity` with ``sigma_min = 0``.

    Arguments:
        y: (N, D) points, standardized units.
        t: a number, a 0-dimensional tensor or (N, 1) times in [0, 1].

    Returns:
        (N, D).

    Raises:
        ValueError: if t is a tensor of another shape.
    """
    from .paths import LinearPath

    return LinearPath().gaussian_velocity(y, t)


__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS)
