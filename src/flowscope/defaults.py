"""Defaults and choices that the command line's help quotes, as plain Python.

Each is written once, here, and used by the signature or check it belongs to (e.g.
``NormalizingFlow(couplings=NF_DEFAULTS["couplings"])``), which the library's modules
import from here, so that ``flowscope train --help`` quotes them without importing
PyTorch (``tests/test_cli_fast.py``). The model types that use them are declared in
:mod:`flowscope.models`.
"""

from __future__ import annotations

from types import MappingProxyType

#: The functions between a flow-matching velocity network's layers
#: (:class:`~flowscope.matching.VelocityField`): ``leaky_relu`` (the study's, the fused
#: kernels'), or ``silu`` (x sigmoid(x), smooth: the field's divergence then varies
#: smoothly with the point, so that the gradient of the ODE solve's log-density is the
#: score; a LeakyReLU field's divergence is constant between its kinks and jumps across
#: them).
ACTIVATIONS = ("leaky_relu", "silu")
#: The suffixes of the data files the library reads (:func:`flowscope.data.load_points`).
DATA_SUFFIXES = (".csv", ".npy", ".npz")
#: The files ``flowscope eval`` and ``flowscope explore`` write in a run folder unless
#: told otherwise.
EVAL_FILE = "eval.json"
#: The file a cross-validation writes in its folder (:mod:`flowscope.crossval`).
CV_FILE = "cv.json"
EXPLORE_FILE = "explore.html"
#: The points along the flow per class an explorer page draws by default.
EXPLORE_POINTS = 1500

__all__ = [
    "ACTIVATIONS",
    "COMPARABLE_SPANS",
    "CV_FILE",
    "DATA_SUFFIXES",
    "EVAL_FILE",
    "EXPLORE_FILE",
    "EXPLORE_POINTS",
    "DEFAULT_EMBEDDING_DIM",
    "EVAL_FLOOR_PAIRS",
    "EVAL_N",
    "EVAL_NFE",
    "HOLDOUT_POINTS",
    "LIKELIHOOD",
    "MEANFLOW_DEFAULTS",
    "NF_DEFAULTS",
    "NSF_DEFAULTS",
    "STANDARDIZE",
    "STUDY_DATA",
    "STUDY_POINTS",
    "likelihood_text",
]

# -- models --------------------------------------------------------------------------------

#: How a model standardizes the points of its classes (:class:`~flowscope.base.FlowModel`).
STANDARDIZE = ("global", "class")
#: The size of a conditional coupling flow's learned class embedding.
DEFAULT_EMBEDDING_DIM = 8
#: :class:`~flowscope.flows.NormalizingFlow`'s sizes: the study's affine coupling flow.
NF_DEFAULTS = MappingProxyType({"couplings": 15, "hidden": 8, "linear_layers": 5})
#: :class:`~flowscope.flows.SplineFlow`'s sizes.
NSF_DEFAULTS = MappingProxyType(
    {"couplings": 4, "bins": 24, "tail_bound": 4.0, "hidden": 64, "linear_layers": 3}
)
#: :class:`~flowscope.matching.MeanFlow`'s loss (``benchmarks/README.md`` measures them).
MEANFLOW_DEFAULTS = MappingProxyType({"jump_share": 0.75, "adaptive_power": 0.5})
#: How flow matching computes log p(x) unless told otherwise
#: (:meth:`~flowscope.matching.FlowMatching.log_prob`).
LIKELIHOOD = MappingProxyType({"solver": "rk4", "steps": 100, "divergence": "exact"})


def likelihood_text(
    solver: str = LIKELIHOOD["solver"],
    steps: int = LIKELIHOOD["steps"],
    divergence: str = LIKELIHOOD["divergence"],
) -> str:
    """How flow matching computes log p(x) with these options, in words
    (:meth:`~flowscope.matching.FlowMatching.likelihood_method`)."""
    return f"{solver}, {steps} steps, {divergence} divergence"


# -- runs and evaluation ------------------------------------------------------------------

#: The study's data set, training points and held-out points
#: (:func:`~flowscope.runs.train_run`).
STUDY_DATA = "olympic"
STUDY_POINTS = 250_000
HOLDOUT_POINTS = 10_000
#: Samples :func:`~flowscope.evaluate.evaluate_run` draws, the pairs of data draws of its
#: W2 noise floor and the step counts of its NFE curve.
EVAL_N = 2000
EVAL_FLOOR_PAIRS = 5
EVAL_NFE = (1, 2, 4, 8, 16, 32, 100)


# -- figures and pages -----------------------------------------------------------------------

#: The largest ratio of the two axes' spans drawn with equal aspect (the plots and the
#: explorer's panels); data whose axes differ more (minutes against tens of minutes) get a
#: frame of their own shape, not a strip.
COMPARABLE_SPANS = 4.0
