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

from typing import Any

from .checks import check_int, check_labels, int_requirement
from .datasets import Dataset, make_dataset
from .files import column_names, file_sha256, load_points, recorded_file
from .rings import (
    BAND_TOLERANCE,
    OLYMPIC_BOX,
    RING_CENTERS,
    RING_COLORS,
    RING_NAMES,
    RING_RADIUS,
    RING_THICKNESS,
    in_band,
    nearest_ring,
    olympic_rings,
    ring_distance,
)
from .splits import SPLIT_FRACTIONS, split, split_sizes
from .toy import DATASETS

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


def __getattr__(name: str) -> Any:
    # Standardization is a model part (flowscope.standardize) that depends on this
    # package; it is looked up here on first use, so that neither import needs the other
    # to be finished first.
    if name == "Standardization":
        from ..standardize import Standardization

        return Standardization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
