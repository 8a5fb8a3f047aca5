"""flowscope: train, sample, invert and look inside flow-based generative models.

"The study" throughout flowscope is the Olympic-rings study of normalizing flows and flow
matching that ``flowscope report`` runs: 2D points from the five rings, an affine
coupling flow and flow matching (unconditional and class-conditional) trained with its
recipe, and its questions answered with measured figures. Equation numbers (Eq. 9,
Eq. 16, ...) are those of the study's text.
"""

from . import lazy

__version__ = "0.1.0"

# Imported on first use (flowscope.lazy): `import flowscope` and the command line's
# `--help` do not wait for PyTorch.
_EXPORTS = {
    "FlowModel": ".base",
    "Latent": ".base",
    "load_points": ".data",
    "make_dataset": ".data",
    "olympic_rings": ".data",
    "AffineCoupling": ".flows",
    "NormalizingFlow": ".flows",
    "Permutation": ".flows",
    "SplineCoupling": ".flows",
    "SplineFlow": ".flows",
    "Gaussian": ".gaussian",
    "FlowMatching": ".matching",
    "VelocityField": ".matching",
    "MODELS": ".models",
    "ModelType": ".models",
    "Standardization": ".standardize",
    "History": ".train",
    "TrainConfig": ".recipe",
    "fit": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS)
