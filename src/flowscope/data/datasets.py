"""A data set by name or file: :func:`make_dataset` and the :class:`Dataset` it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UnusedLabels
from .checks import check_int
from .files import _load, check_distinct_names, column_names
from .rings import RING_NAMES, olympic_rings
from .toy import DATASETS

__all__ = ["Dataset", "class_labels", "make_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Points and optional labels, with where they came from.

    Attributes:
        x: (N, D) float32 in data units.
        labels: (N,) int64 class ids, or ``None``.
        source: a registry name or a file path.
        class_names: names of the classes, indexed by id, or ``None``.
        columns: names of the two coordinates (a csv file's header), or ``None``.
    """

    x: torch.Tensor
    labels: torch.Tensor | None
    source: str
    class_names: tuple[str, ...] | None = None
    columns: tuple[str, str] | None = None

    def __len__(self) -> int:
        return len(self.x)


def _check_ids(path: Path, labels: torch.Tensor) -> None:
    """Refuse class ids that leave a class out of 0, 1, ..., K - 1 (R's factors count from 1;
    a gap leaves a class no model could learn, which sampling would still draw).

    Raises:
        ValueError: naming the ids and what to do.
    """
    present = torch.unique(labels).tolist()
    missing = sorted(set(range(int(labels.max()) + 1)) - set(present))
    if not missing:
        return
    shown = ", ".join(map(str, present[:6])) + (", ..." if len(present) > 6 else "")
    if present[0] == 1 and missing == [0]:
        what = "they count from 1 (as R's factors do); subtract 1 from the label column"
    else:
        what = (
            f"class {missing[0]} has no rows, so no model could learn it; renumber the "
            "classes 0, 1, ... without gaps"
        )
    raise ValueError(
        f"{path}: the label column's class ids are {shown}, but ids count 0, 1, ..., K - 1: "
        f"{what}, or give the classes as names"
    )


def make_dataset(source: str, n: int, *, conditional: bool = False, seed: int = 0) -> Dataset:
    """Build a data set by registry name (``olympic`` or a :data:`DATASETS` key) or file path.

    Arguments:
        source: ``"olympic"``, one of ``DATASETS``, or a path for :func:`load_points`
            (a label column of class names is numbered in their sorted order, and
            ``class_names`` holds them).
        n: number of points to draw (ignored for files, which give all their rows).
        conditional: ask for class labels (only ``olympic`` and labelled files have them).
        seed: generator seed.

    Raises:
        ValueError: for an unknown name, labels asked of a source that has none, or class
            ids that leave one of 0, 1, ..., K - 1 out.
        UnusedLabels: (a ``ValueError``) for a file with labels, not ``conditional``.
    """
    if source == "olympic":
        if conditional:
            x, y = olympic_rings(n, conditional=True, seed=seed)
            return Dataset(x, y, source, RING_NAMES)
        return Dataset(olympic_rings(n, seed=seed), None, source)
    if source in DATASETS:
        if conditional:
            raise ValueError(f"data set {source!r} has no class labels; use 'olympic' or a file")
        pts = DATASETS[source](check_int(n, "n"), np.random.default_rng(seed))
        return Dataset(torch.from_numpy(pts).float(), None, source)
    path = Path(source)
    if not path.exists():
        if path.suffix or len(path.parts) > 1:  # a file's name, not a data set's
            raise ValueError(f"{path}: no such file")
        known = ", ".join(["olympic", *DATASETS])
        raise ValueError(f"unknown data {source!r}: not a file and not one of {known}")
    x, labels, names = _load(path, torch.float32)
    if conditional and labels is None:
        raise ValueError(
            f"{path}: conditional training needs a third column of class labels (ids 0, 1, "
            "... or names)"
        )
    if not conditional and labels is not None:
        raise UnusedLabels(
            f"{path}: has a third column (class labels), but the model is unconditional; "
            "give a file of two columns x,y, or train a conditional model"
        )
    if names is not None:
        check_distinct_names(path, names)
    if labels is None:
        names = None
    elif names is None:  # ids: each is its own name
        _check_ids(path, labels)
        names = [str(i) for i in range(int(labels.max()) + 1)]
    return Dataset(x, labels, str(path), tuple(names) if names else None, column_names(path))


def class_labels(n: int, counts: list[int]) -> torch.Tensor:
    """n class ids (N,) int64 in the shares of ``counts`` (the points of each class), each
    class's ids spread evenly through the order: samples of a conditional model with these
    labels are samples of p(x) = sum over c of p(c) p(x | c), p(c) the data's shares.

    Each class gets ``n * share`` ids rounded down, and the ids left over go to the
    largest remainders (ties to the lower id); equal counts give ``arange(n) % K``.

    Raises:
        ValueError: for n < 0, or counts that are negative or all 0.
    """
    n = check_int(n, "n", minimum=0)
    if not counts or min(counts) < 0 or sum(counts) == 0:
        raise ValueError(f"counts must be >= 0 and not all 0, got {counts}")
    k = len(counts)
    if len(set(counts)) == 1:
        return torch.arange(n) % k
    share = [c * n / sum(counts) for c in counts]
    got = [math.floor(v) for v in share]
    for c in sorted(range(k), key=lambda c: (got[c] - share[c], c))[: n - sum(got)]:
        got[c] += 1
    # Class c's j-th id at (j + 0.5) / got[c] of the way: an even interleave.
    where = [((j + 0.5) / got[c], c) for c in range(k) for j in range(got[c])]
    return torch.tensor([c for _, c in sorted(where)], dtype=torch.long)
