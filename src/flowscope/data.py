"""Data: the Olympic rings, the field's 2D toy sets, user files, standardization and splits.

All samplers return ``torch.float32`` tensors in *data units* (the coordinates the user
sees). Models standardize internally with a :class:`Standardization` fitted once on their
training set and stored with their weights.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
    "file_sha256",
    "in_band",
    "load_points",
    "make_dataset",
    "nearest_ring",
    "olympic_rings",
    "ring_distance",
    "split",
    "split_sizes",
]

# Class ids follow the reference generator (alphabetical by colour).
RING_NAMES: tuple[str, ...] = ("black", "blue", "green", "red", "yellow")
RING_CENTERS: tuple[tuple[float, float], ...] = (
    (2.0, 0.0),
    (0.0, 0.0),
    (3.0, -1.0),
    (4.0, 0.0),
    (1.0, -1.0),
)
RING_COLORS: tuple[str, ...] = ("#000000", "#0081C8", "#00A651", "#EE334E", "#FCB131")
RING_RADIUS = 1.0
RING_THICKNESS = 0.25  # width w of each ring's band, data units (the reference's default)
OLYMPIC_BOX = (-1.0, 5.0, -2.0, 1.0)  # x_min, x_max, y_min, y_max of the reference's rejection box

# The one policy for "is this point in a ring's band" (see in_band). Points are stored in
# float32: a coordinate near 5 is rounded by up to 2.4e-7, which can push a point drawn
# exactly on a band's edge just outside it. Membership tests of points (the metrics, the
# report's checks) therefore widen each band by this much, in data units, so that the
# data itself always counts as inside. Only the computations of the exact set in float64
# (the generator's rejection step, the Monte Carlo area of the bands) use tolerance 0.
BAND_TOLERANCE = 1e-6


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``, else a ``ValueError``.

    The one check of counts, sizes and seeds given to the library. Python and numpy
    integers pass; ``bool``, floats (even 3.0), strings and other types do not.

    Arguments:
        value: the value to check.
        name: the argument's name, for the message.
        minimum: the least value allowed (1: a positive integer; 0: a non-negative one).

    Returns:
        ``int(value)``.

    Raises:
        ValueError: naming the argument and the value.

    Example:
        >>> check_int(3, "epochs")
        3
        >>> check_int(True, "epochs")
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {_int_requirement(minimum)}, got {value!r}")
    return int(value)


def check_labels(labels: Any, n: int, num_classes: int) -> torch.Tensor:
    """Class ids for n points: one int (for all of them) or n integers, in [0, num_classes).

    Returns:
        (n,) int64, contiguous.

    Raises:
        ValueError: for non-integer labels, a shape other than () or (n,), or an id
            outside [0, num_classes), naming it.
    """
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise ValueError(f"labels must be one int or have shape ({n},), got {tuple(labels.shape)}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"unknown label {int(labels[bad][0])}: the classes are 0..{num_classes - 1}"
        )
    return labels.long().contiguous()


def _int_requirement(minimum: int) -> str:
    """How :func:`check_int` (and the command line's integer options) word the bound."""
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def _check_thickness(ring_thickness: Any) -> float:
    if not (
        isinstance(ring_thickness, numbers.Real)
        and not isinstance(ring_thickness, bool)
        and 0 < ring_thickness < 2
    ):
        raise ValueError(f"ring_thickness must be in (0, 2), got {ring_thickness!r}")
    return float(ring_thickness)


def ring_distance(points: torch.Tensor) -> torch.Tensor:
    """Distance of each point from each ring's centre line.

    Arguments:
        points: (N, 2) in data units.

    Returns:
        (N, 5) absolute radial distances ``| ||p - c_k|| - 1 |``, ring order as ``RING_NAMES``.
    """
    centers = torch.tensor(RING_CENTERS, dtype=points.dtype, device=points.device)
    return ((points[:, None, :] - centers[None]).norm(dim=-1) - RING_RADIUS).abs()


def in_band(
    points: torch.Tensor,
    ring_thickness: float = RING_THICKNESS,
    *,
    tolerance: float = BAND_TOLERANCE,
) -> torch.Tensor:
    r"""Whether each point lies in each ring's band: the one test of band membership.

    Point p is in ring k's band when

    .. math:: |\,\|p - c_k\| - 1| \le w / 2 + \mathrm{tolerance}.

    The default tolerance, :data:`BAND_TOLERANCE` (1e-6 data units), absorbs the float32
    rounding of stored points, so that every point of :func:`olympic_rings` is inside;
    pass ``tolerance=0.0`` only to compute the exact set from float64 points. A point
    with a NaN or infinite coordinate is in no band.

    Arguments:
        points: (N, 2) in data units.
        ring_thickness: band width w in data units, in (0, 2).
        tolerance: widening of each band, data units, >= 0.

    Returns:
        (N, 5) bool, ring order as ``RING_NAMES``; ``.any(dim=1)`` says whether a point
        is in the union of the bands.

    Raises:
        ValueError: for a thickness outside (0, 2) or a negative or non-finite tolerance.

    Example:
        >>> in_band(torch.tensor([[1.0, 0.0], [0.0, 1.5]])).any(dim=1)
        tensor([ True, False])
    """
    half = _check_thickness(ring_thickness) / 2
    if not (isinstance(tolerance, numbers.Real) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return ring_distance(points) <= half + float(tolerance)


def nearest_ring(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ring whose centre line is nearest to each point, and the distance to it.

    Arguments:
        points: (N, 2) in data units.

    Returns:
        ring ids (N,) int64 (order of ``RING_NAMES``) and distances (N,) to that ring's
        centre line, data units (NaN for a point with a NaN coordinate).
    """
    dist, ring = ring_distance(points).min(dim=1)
    return ring, dist


def olympic_rings(
    n: int,
    *,
    conditional: bool = False,
    ring_thickness: float = RING_THICKNESS,
    seed: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Points drawn from the Olympic logo: five rings of radius 1.

    Unconditional: uniform (by area) over the union of the rings' bands, drawn by
    rejection from the box [-1, 5] x [-2, 1], as the reference generator does (the box
    clips the outer edge of the bands at the four extremes). Conditional: each ring gets
    ``n // 5`` points (the first ``n % 5`` rings one more), radius uniform in
    [1 - w/2, 1 + w/2] and angle uniform in [0, 2 pi); the points are shuffled.

    Arguments:
        n: number of points, >= 1.
        conditional: also return the ring id of each point.
        ring_thickness: band width w, in data units.
        seed: seed of the generator; ``None`` draws fresh entropy.

    Returns:
        points (n, 2) float32 in data units, and with ``conditional`` the labels (n,) int64
        (0 black, 1 blue, 2 green, 3 red, 4 yellow).

    Raises:
        ValueError: if ``n < 1`` or ``ring_thickness`` is not in (0, 2).

    Example:
        >>> x = olympic_rings(1000, seed=0)
        >>> x.shape
        torch.Size([1000, 2])
        >>> bool(in_band(x).any(dim=1).all())
        True
    """
    n = check_int(n, "n")
    half = _check_thickness(ring_thickness) / 2
    rng = _rng(seed)
    centers = np.asarray(RING_CENTERS)
    if conditional:
        labels = np.repeat(np.arange(5), n // 5)
        labels = np.concatenate([labels, np.arange(n % 5)])
        radius = rng.uniform(RING_RADIUS - half, RING_RADIUS + half, size=n)
        angle = rng.uniform(0.0, 2 * math.pi, size=n)
        pts = centers[labels] + radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        order = rng.permutation(n)
        return (
            torch.from_numpy(pts[order]).float(),
            torch.from_numpy(labels[order]).long(),
        )
    x0, x1, y0, y1 = OLYMPIC_BOX
    out, have = [], 0
    while have < n:
        m = max(1024, int((n - have) * 2.6))  # acceptance is about 0.36
        cand = rng.uniform((x0, y0), (x1, y1), size=(m, 2))
        # The exact bands (tolerance 0): the candidates are float64, and the float32
        # output must stay within BAND_TOLERANCE of them.
        inside = in_band(torch.from_numpy(cand), ring_thickness, tolerance=0.0).any(dim=1)
        keep = cand[inside.numpy()]
        out.append(keep)
        have += len(keep)
    return torch.from_numpy(np.concatenate(out)[:n]).float()


# --- the field's standard 2D toy sets (as popularised by FFJORD, Grathwohl et al. 2019) ---


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, math.pi, size=n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(a), 1 - np.cos(a))
    y = np.where(upper, np.sin(a), 0.5 - np.sin(a))
    return np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))


def _8gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    ang = np.arange(8) * math.pi / 4
    centers = 2 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return centers[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _2spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.random(n)) * 3 * math.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pts = sign[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], 1)
    return pts / 3 + 0.1 * rng.standard_normal((n, 2))


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms, rate = 5, 0.25
    labels = rng.integers(0, arms, n)
    feats = rng.standard_normal((n, 2)) * np.array([0.3, 0.05]) + np.array([1.0, 0.0])
    ang = 2 * math.pi * labels / arms + rate * np.exp(feats[:, 0])
    c, s = np.cos(ang), np.sin(ang)
    return 2 * np.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi, n)
    r = np.where(rng.random(n) < 0.5, 1.0, 0.5)
    return 2 * r[:, None] * np.stack([np.cos(a), np.sin(a)], 1) + 0.04 * rng.standard_normal((n, 2))


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) + 0.5 * rng.standard_normal((n, 2))
    return pts / 5


DATASETS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": _moons,
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _2spirals,
    "pinwheel": _pinwheel,
    "circles": _circles,
    "swissroll": _swissroll,
}


@dataclass(frozen=True)
class Dataset:
    """Points and optional labels, with where they came from.

    Attributes:
        x: (N, D) float32 in data units.
        labels: (N,) int64 class ids, or ``None``.
        source: a registry name or a file path.
        class_names: names of the classes, indexed by id, or ``None``.
    """

    x: torch.Tensor
    labels: torch.Tensor | None
    source: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.x)


def make_dataset(source: str, n: int, *, conditional: bool = False, seed: int = 0) -> Dataset:
    """Build a data set by registry name (``olympic`` or a :data:`DATASETS` key) or file path.

    Arguments:
        source: ``"olympic"``, one of ``DATASETS``, or a path for :func:`load_points`.
        n: number of points to draw (ignored for files, which give all their rows).
        conditional: ask for class labels (only ``olympic`` and labelled files have them).
        seed: generator seed.

    Raises:
        ValueError: for an unknown name, or labels asked of a source that has none.
    """
    if source == "olympic":
        if conditional:
            x, y = olympic_rings(n, conditional=True, seed=seed)
            return Dataset(x, y, source, RING_NAMES)
        return Dataset(olympic_rings(n, seed=seed), None, source)
    if source in DATASETS:
        if conditional:
            raise ValueError(f"data set {source!r} has no class labels; use 'olympic' or a file")
        pts = DATASETS[source](check_int(n, "n"), _rng(seed))
        return Dataset(torch.from_numpy(pts).float(), None, source)
    path = Path(source)
    if not path.exists():
        if path.suffix.lower() in (".csv", ".npy", ".npz"):
            raise ValueError(f"{path}: no such file")
        known = ", ".join(["olympic", *DATASETS])
        raise ValueError(f"unknown data {source!r}: not a file and not one of {known}")
    x, labels = load_points(path)
    if conditional and labels is None:
        raise ValueError(f"{path}: conditional training needs a third column of integer labels")
    if not conditional:
        labels = None
    names = None if labels is None else tuple(str(i) for i in range(int(labels.max()) + 1))
    return Dataset(x, labels, str(path), names)


def load_points(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read points from ``.csv`` (header optional), ``.npy`` or ``.npz``.

    Two numeric columns are the coordinates; an optional third column holds integer class
    labels. An ``.npz`` holds one array of 2 or 3 columns, or ``x`` (N, 2) and ``labels`` (N,).

    Returns:
        points (N, 2) float32 and labels (N,) int64 or ``None``.

    Raises:
        ValueError: naming the file and the row or column, for an empty file, text that is
            not a number, NaN or inf, a value beyond float32's range (the points are
            float32), a wrong number of columns, or labels that are negative or not
            integers.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a data file (.csv, .npy or .npz)")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    labels = None
    lines = None  # for a csv: the file line of each row, so that errors name the line
    if suffix == ".csv":
        arr, lines = _read_csv(path)
    elif suffix in (".npy", ".npz"):
        try:
            obj = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for bad files
            raise ValueError(f"{path}: not a readable {suffix} file ({err})") from None
        if suffix == ".npz":
            keys = list(obj.keys())
            if "x" in keys:
                arr = np.asarray(obj["x"])
                if "labels" in keys:
                    labels = np.asarray(obj["labels"])
                    if labels.shape != (len(arr),):
                        raise ValueError(
                            f"{path}: 'labels' has shape {labels.shape}, expected ({len(arr)},)"
                        )
            elif len(keys) == 1:
                arr = np.asarray(obj[keys[0]])
            else:
                raise ValueError(
                    f"{path}: expected an array 'x' (and optional 'labels'), got {keys}"
                )
        else:
            arr = np.asarray(obj)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array of type {arr.dtype} is not numeric")
        arr = arr.astype(np.float64)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .npy or .npz")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{path}: no points found (array of shape {arr.shape})")
    if labels is None and arr.shape[1] == 3:
        arr, labels = arr[:, :2], arr[:, 2]
    if arr.shape[1] != 2:
        raise ValueError(
            f"{path}: expected 2 columns (x, y) and an optional label column, got {arr.shape[1]}"
        )

    def where(row: int) -> str:
        return f"row {row + 1}" if lines is None else f"row {row + 1} (line {lines[row]})"

    # Points are float32: check them after the conversion, which turns a value beyond
    # float32's range (about 3.4e38) into inf.
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    bad = ~np.isfinite(arr32)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = arr[row, col]
        why = (
            f"beyond float32's range, |value| <= {float(np.finfo(np.float32).max):.4g}"
            if np.isfinite(value)
            else "not finite"
        )
        raise ValueError(f"{path}: {where(row)}, column {col + 1} is {value} ({why})")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float64)
        wrong = ~np.isfinite(labels) | (labels < 0) | (labels != np.round(labels))
        if wrong.any():
            row = int(np.argmax(wrong))
            raise ValueError(
                f"{path}: {where(row)}: label {labels[row]} is not a non-negative integer"
            )
        labels = torch.from_numpy(labels.astype(np.int64))
    return torch.from_numpy(arr32), labels


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (to notice a changed data file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[np.ndarray, list[int]]:
    """The numeric rows of a csv file (N, C) and the file line (1-based) of each."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); a .csv holds rows "
            "of numbers x,y[,label]; binary arrays go in .npy or .npz"
        ) from None
    rows, numbers, start = [], [], 0
    if lines and lines[0].strip() and not any(_is_number(v) for v in lines[0].split(",")):
        start = 1  # a header: no field is a number (a row with some numbers is data)
    for i, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        fields = line.split(",")
        where = f"row {len(rows) + 1} (line {i})"
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            raise ValueError(f"{path}: {where}: {line.strip()!r} is not numeric") from None
        numbers.append(i)
        if len(rows[-1]) != len(rows[0]):
            raise ValueError(
                f"{path}: {where} has {len(rows[-1])} columns, row 1 has {len(rows[0])}"
            )
    if not rows:
        raise ValueError(f"{path}: the file holds no points")
    return np.asarray(rows, dtype=np.float64), numbers


SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train, validation, test shares of a data file


def split_sizes(
    n: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[int, int, int]:
    """The sizes of the train, validation and test parts :func:`split` makes of n points.

    Train and validation get ``round(fraction * n)`` points (Python's rounding, half to
    even), test the rest; a part can be empty when n is small.

    Example:
        >>> split_sizes(100), split_sizes(12)
        ((90, 5, 5), (11, 1, 0))

    Raises:
        ValueError: if n is negative or the fractions are not >= 0 with sum 1.
    """
    n = check_int(n, "n", minimum=0)
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three numbers >= 0 that sum to 1, got {fractions}")
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return n_train, n_val, n - n_train - n_val


def split(
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    seed: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Seeded random split into train, validation and test parts.

    Arguments:
        x: (N, D) points; labels: (N,) or ``None``.
        fractions: shares of train, validation and test; they must sum to 1.

    Returns:
        ``[(x_train, y_train), (x_val, y_val), (x_test, y_test)]`` of the sizes
        :func:`split_sizes` gives; a part may be empty (callers that need every part,
        like :func:`~flowscope.runs.run_data`, check the sizes).
    """
    n = len(x)
    n_train, n_val, _ = split_sizes(n, fractions)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]
    return [(x[p], None if labels is None else labels[p]) for p in parts]


class Standardization(nn.Module):
    """Per-axis z-scoring, fitted once and saved with a model (buffers ``loc``, ``scale``).

    ``forward`` maps data units to standardized units. A log-density in data units equals
    the standardized one plus :meth:`log_abs_det` (that is, minus ``sum(log scale)``).

    With ``num_classes`` the mean and standard deviation are those of each class: ``loc``
    and ``scale`` are (C, D), and every map takes the class ids. A model whose base is
    N(0, I) in these coordinates has, in data units, the class-conditional prior
    N(mean_k, diag(std_k^2)) for class k: a Gaussian centred on the class's average point,
    as in Issachar et al., Designing a Conditional Prior Distribution for Flow-Based
    Generative Models, TMLR 2025, arXiv:2502.09611.

    Arguments:
        features: the dimension D.
        num_classes: fit per class (C classes), or ``None`` for one mean and scale.
    """

    def __init__(self, features: int, num_classes: int | None = None):
        super().__init__()
        rows = () if num_classes is None else (num_classes,)
        self.register_buffer("loc", torch.zeros(*rows, features))
        self.register_buffer("scale", torch.ones(*rows, features))

    @property
    def per_class(self) -> bool:
        """Whether ``loc`` and ``scale`` are per class, (C, D)."""
        return self.loc.ndim == 2

    def _labels(self, labels: Any, n: int) -> torch.Tensor:
        """Checked class ids (n,) of a per-class standardization."""
        if labels is None:
            raise ValueError("this standardization is per class: pass the labels (N,)")
        return check_labels(labels, n, len(self.loc))

    def _rows(self, labels: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) for n points: (D,) each, or (n, D) each per class."""
        if not self.per_class:
            return self.loc, self.scale
        labels = self._labels(labels, n)
        return self.loc[labels], self.scale[labels]

    @torch.no_grad()
    def fit(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Standardization:
        """Set ``loc`` and ``scale`` to the mean and standard deviation of x (N, D), of each
        class's points (labels (N,)) when per class.

        Raises:
            ValueError: if x is not (N >= 2, D) or holds NaN or inf, a coordinate is
                constant, or (per class) labels are missing or a class has fewer than 2
                points.
        """
        d = self.loc.shape[-1]
        if x.ndim != 2 or x.shape[1] != d or len(x) < 2:
            raise ValueError(f"need (N >= 2, {d}) points to fit, got {tuple(x.shape)}")
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ValueError(f"cannot standardize: point {row} is {x[row].tolist()} (not finite)")
        if not self.per_class:
            loc, scale = x.mean(dim=0), x.std(dim=0)
            if (scale <= 0).any():
                raise ValueError(
                    "cannot standardize: a coordinate is constant in the training data"
                )
        else:
            global_hint = (
                "or standardize all classes together (a model's standardize='global', "
                "flowscope train's --standardize global)"
            )
            labels = self._labels(labels, len(x))
            loc, scale = torch.empty_like(self.loc), torch.empty_like(self.scale)
            for k in range(len(self.loc)):
                xk = x[labels == k]
                if len(xk) < 2:
                    have = "no training points" if len(xk) == 0 else "1 training point"
                    raise ValueError(
                        f"cannot standardize per class: class {k} has {have} and each class "
                        f"needs at least 2; add points of that class {global_hint}"
                    )
                loc[k], scale[k] = xk.mean(dim=0), xk.std(dim=0)
                if (scale[k] <= 0).any():
                    raise ValueError(
                        f"cannot standardize per class: a coordinate is constant within "
                        f"class {k} in the training data; add varied points of that class "
                        f"{global_hint}"
                    )
        self.loc.copy_(loc)
        self.scale.copy_(scale)
        return self

    def forward(self, x: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Data units -> standardized units: x (N, D) -> (N, D).

        Arguments:
            labels: per class, the class ids (one int or (N,)); ignored otherwise.

        Raises:
            ValueError: per class, for missing labels, a wrong shape or an unknown id.
        """
        loc, scale = self._rows(labels, len(x))
        return (x - loc) / scale

    def inverse(self, y: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Standardized units -> data units: y (..., N, D) -> (..., N, D), e.g. the states
        of a trajectory (T, N, D) with the labels (N,) of its points.

        Raises:
            ValueError: as :meth:`forward`.
        """
        loc, scale = self._rows(labels, y.shape[-2])
        return y * scale + loc

    def log_abs_det(self, labels: Any = None) -> torch.Tensor:
        """log|det| of the data-to-standardized map, ``-sum(log scale)``: a scalar, or per
        class (N,) for labels (N,) (one int gives (1,)).

        Raises:
            ValueError: as :meth:`forward`.
        """
        if not self.per_class:
            return -self.scale.log().sum()
        n = 1 if labels is None else torch.as_tensor(labels).numel()
        return -self._rows(labels, n)[1].log().sum(dim=-1)
