"""The sizes of a report run (:class:`Preset`) and the fixed settings of the study.

The settings quote the study where it fixes them (section 3.3 for the normalizing flow,
section 4.3 for flow matching, the Bonus); the rest are choices of the report, in data
units unless a comment says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PRESETS", "Preset"]

#: The study's three models, registered types of :data:`~flowscope.models.MODELS`.
STUDY_MODELS = ("nf", "fm", "cfm")
DTS = (0.002, 0.02, 0.05, 0.1, 0.2)  # the study's section 4.3, FM Q4
FM_TIMES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # the study's section 4.3, FM Q2
BONUS_TARGET = (4.0, 5.0)  # data units
BONUS_REACHED = 0.05  # data units: a landing error below this counts as reaching the target
BONUS_LR = 0.5  # Adam's step on the noise, standardized units (the target's noise is far out)
_C45 = math.cos(math.pi / 4)
# NF Q5 / FM Q5: three points on the rings' centre lines, two off the rings (data units).
PROBE_POINTS = (
    ("A", (-_C45, _C45)),  # blue ring, upper left
    ("B", (1.0 - _C45, -1.0 - _C45)),  # yellow ring, lower left
    ("C", (4.0 + _C45, _C45)),  # red ring, upper right
    ("D", (0.0, 0.0)),  # the centre of the blue ring
    ("E", (2.0, 2.5)),  # above the logo
)
FIGURE_DPI = 150  # PNG resolution; figures are drawn at their printed size in inches
NORMAL_ENTROPY_2D = math.log(2 * math.pi) + 1.0  # E[-log N(z; 0, I)] in 2D, nats


@dataclass(frozen=True)
class Preset:
    """Sizes of one report run.

    Attributes:
        name: the preset's name.
        n_points: training points per model (the study: 250,000).
        epochs: training epochs (the study: 20).
        holdout_points: validation and test points each (10,000).
        n_show: points per point-cloud figure (the study: 1000).
        n_quality: samples for W2 and the ring metrics of the summary.
        nll_steps: RK4 steps of the flow-matching likelihood.
        dt: Euler step of the flow-matching sampler (the study: 1/1000).
        cfm_samples: conditional samples of CFM Q3 (the study: at least 3000).
        bonus_steps: gradient steps of the Bonus optimisation.
        bonus_dt: Euler step of the sampler the Bonus optimisation differentiates through.
        bonus_pool: samples drawn by the Bonus's best-of-n baseline.
        background: data points drawn as grey context behind trajectories.
        entropy_points: Monte Carlo points for the area of the rings' bands.
        beyond_epochs: the most epochs of a model outside the study ("Beyond the study"),
            which otherwise trains for its type's recipe: about a minute each on 2 cores.
    """

    name: str
    n_points: int = 250_000
    epochs: int = 20
    holdout_points: int = 10_000
    n_show: int = 1000
    n_quality: int = 2000
    nll_steps: int = 100
    dt: float = 1e-3
    cfm_samples: int = 3000
    bonus_steps: int = 300
    bonus_dt: float = 1e-2
    bonus_pool: int = 100_000
    background: int = 4000
    entropy_points: int = 4_000_000
    beyond_epochs: int = 10


PRESETS: dict[str, Preset] = {
    "full": Preset("full"),
    "quick": Preset("quick", epochs=7, beyond_epochs=5),
    "smoke": Preset(
        "smoke",
        n_points=3000,
        epochs=2,
        holdout_points=2000,
        n_show=400,
        n_quality=300,
        nll_steps=8,
        dt=1e-2,
        cfm_samples=3000,
        bonus_steps=20,
        bonus_pool=2000,
        background=1500,
        entropy_points=200_000,
        beyond_epochs=1,
    ),
}
