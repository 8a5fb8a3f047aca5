"""flowscope: train, sample, invert and look inside flow-based generative models."""

from .data import Standardization, load_points, make_dataset, olympic_rings
from .flows import AffineCoupling, NormalizingFlow, Permutation
from .matching import FlowMatching, VelocityField
from .train import History, TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "AffineCoupling",
    "FlowMatching",
    "History",
    "NormalizingFlow",
    "Permutation",
    "Standardization",
    "TrainConfig",
    "VelocityField",
    "fit",
    "load_points",
    "make_dataset",
    "olympic_rings",
]
