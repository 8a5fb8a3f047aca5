"""Data: the Olympic rings, the field's 2D toy sets, user files and splits.

All samplers return ``torch.float32`` tensors in *data units* (the coordinates the user
sees). Models standardize internally with a :class:`~flowscope.standardize.Standardization`
fitted once on their training set and stored with their weights.

The package, by concern: :mod:`.checks` (the checks of counts, seeds and class ids),
:mod:`.rings` (the Olympic rings' geometry and sampler), :mod:`.toy` (the toy sets),
:mod:`.files` (reading the user's files), :mod:`.splits` (train, validation and test
parts) and :mod:`.datasets` (a data set by name or file). Every public name is importable
from ``flowscope.data``.
"""

from __future__ import annotations

from .. import lazy

# Imported on first use (flowscope.lazy): the checks are plain Python, so that the command
# line's parser (and its `--help`) can use them without waiting for PyTorch.
_EXPORTS = {
    **dict.fromkeys(("check_int", "check_labels", "int_requirement"), ".checks"),
    **dict.fromkeys(("Dataset", "class_labels", "make_dataset"), ".datasets"),
    **dict.fromkeys(("column_names", "file_sha256", "load_points", "recorded_file"), ".files"),
    **dict.fromkeys(
        (
            "BAND_TOLERANCE",
            "OLYMPIC_BOX",
            "RING_CENTERS",
            "RING_COLORS",
            "RING_NAMES",
            "RING_RADIUS",
            "RING_THICKNESS",
            "in_band",
            "nearest_ring",
            "olympic_rings",
            "ring_distance",
        ),
        ".rings",
    ),
    **dict.fromkeys(("SPLIT_FRACTIONS", "split", "split_sizes"), ".splits"),
    "DATASETS": ".toy",
    # A model part (flowscope.standardize) that depends on this package.
    "Standardization": "..standardize",
}

__all__ = [
    "BAND_TOLERANCE",
    "RING_CENTERS",
    "RING_COLORS",
    "RING_NAMES",
    "RING_RADIUS",
    "RING_THICKNESS",
    "OLYMPIC_BOX",
    "SPLIT_FRACTIONS",
    "Dataset",
    "Standardization",
    "DATASETS",
    "check_int",
    "check_labels",
    "class_labels",
    "column_names",
    "file_sha256",
    "recorded_file",
    "in_band",
    "int_requirement",
    "load_points",
    "make_dataset",
    "nearest_ring",
    "olympic_rings",
    "ring_distance",
    "split",
    "split_sizes",
]

__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS)
