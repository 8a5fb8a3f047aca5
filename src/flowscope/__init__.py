"""flowscope: train, sample, invert and look inside flow-based generative models.

"The study" throughout flowscope is the Olympic-rings study of normalizing flows and flow
matching that ``flowscope report`` runs: 2D points from the five rings, an affine
coupling flow and flow matching (unconditional and class-conditional) trained with its
recipe, and its questions answered with measured figures. Equation numbers (Eq. 9,
Eq. 16, ...) are those of the study's text.
"""

from .base import FlowModel, Latent
from .data import load_points, make_dataset, olympic_rings
from .flows import AffineCoupling, NormalizingFlow, Permutation, SplineCoupling, SplineFlow
from .gaussian import Gaussian
from .matching import FlowMatching, VelocityField
from .models import MODELS, ModelType
from .standardize import Standardization
from .train import History, TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "AffineCoupling",
    "FlowMatching",
    "FlowModel",
    "Gaussian",
    "History",
    "Latent",
    "ModelType",
    "NormalizingFlow",
    "Permutation",
    "SplineCoupling",
    "SplineFlow",
    "Standardization",
    "TrainConfig",
    "VelocityField",
    "fit",
    "load_points",
    "make_dataset",
    "olympic_rings",
]
