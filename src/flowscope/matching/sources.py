"""Sources: the distribution at t = 0 that flow matching transports to the data.

The study's source is N(0, I). Any distribution that can be sampled works as well (the
coupling then pairs its points with the data, Tong et al. 2024), so flow matching can
carry one data set to another, e.g. 8 Gaussians to the moons.

Units. The velocity works in the model's standardized coordinates (the data's
:class:`~flowscope.standardize.Standardization`). The ``normal`` source is defined there,
as it always was: N(0, I) in standardized units, N(mean, diag(std^2)) of the training data
in data units. Every other source is a distribution in *data units* (the coordinates of
the toy generator or of the file), mapped into standardized units by the *data's*
standardization, the same fixed affine map as the data, so that source and data share one
coordinate system, the transport cost of a coupling is the data units' (axes rescaled),
and a trajectory shown in data units starts at the source's own points. Such a source
therefore needs the one standardization of all points (``standardize="global"``).

A source either has a density (``normal``, ``8gaussians``: a mixture written from its
generator), so that the model keeps ``log_prob``, or is known only by samples (the other
toy sets, a file), for which ``log_prob`` is an error that says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data import DATASETS, load_points, recorded_file
from ..defaults import DATA_SUFFIXES
from ..registry import Part, Registry

__all__ = [
    "SOURCES",
    "EightGaussiansSource",
    "FileSource",
    "NoDensity",
    "NormalSource",
    "Source",
    "ToySource",
    "source_from_text",
]

#: The registered sources, by name.
SOURCES: Registry[type[Source]] = Registry("source")


class NoDensity(ValueError):
    """A source known only by samples has no density: log_prob cannot be computed."""


class Source(Part):
    """A distribution at t = 0.

    Subclasses implement :meth:`_draw` (points in the source's units) and, if they have
    one, :meth:`_log_prob`; ``in_data_units`` says whether those units are the data's
    (mapped by the data's standardization) or already the standardized ones.
    """

    #: Whether the points are in data units (mapped by the data's standardization).
    in_data_units: ClassVar[bool] = True
    #: Whether the source has a density (then the model keeps ``log_prob``).
    has_density: ClassVar[bool] = False

    def check_features(self, features: int) -> None:
        """Raise ``ValueError`` if the source cannot have dimension ``features``."""
        if features != 2:
            raise ValueError(
                f"the {self.name} source is 2-dimensional, but the data have dimension {features}"
            )

    def _draw(self, n: int, features: int, generator, dtype) -> torch.Tensor:
        raise NotImplementedError

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NoDensity(
            f"the {self.describe()} source is known only by its samples: it has no density, "
            "so log_prob (and inverse's density) cannot be computed; sampling, encode, "
            "decode and trajectories work. Use a source with a density (normal, 8gaussians) "
            "for likelihoods"
        )

    def describe(self) -> str:
        return self.name

    def sample(self, n: int, features: int, standardization, generator=None, dtype=None):
        """n points (n, D) of the source in standardized units, drawn on the CPU with
        ``generator`` (a torch generator; numpy draws are seeded from it)."""
        dtype = dtype or torch.float32
        x = self._draw(n, features, generator, dtype).to(dtype)
        if not self.in_data_units:
            return x
        return standardization(x.to(standardization.loc.device))

    def log_prob(self, y: torch.Tensor, standardization) -> torch.Tensor:
        """log-density (N,) of standardized points y (N, D) in standardized units, nats.

        Raises:
            NoDensity: for a source known only by samples.
        """
        if not self.in_data_units:
            return self._log_prob(y)
        # x = y * scale + loc: p_y(y) = p_x(x) * prod(scale) = p_x(x) / |det dy/dx|.
        x = standardization.inverse(y)
        return self._log_prob(x) - standardization.log_abs_det()


def _numpy_rng(generator) -> np.random.Generator:
    """A numpy generator seeded from a torch generator's next draw (reproducible)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


@SOURCES.decorator("normal")
class NormalSource(Source):
    """N(0, I) in standardized units (the study's)."""

    name = "normal"
    in_data_units = False
    has_density = True

    def check_features(self, features):
        pass

    def _draw(self, n, features, generator, dtype):
        return torch.randn(n, features, generator=generator, dtype=dtype)

    def _log_prob(self, x):
        return -0.5 * (x * x).sum(dim=-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class ToySource(Source):
    """One of the toy sets of :data:`~flowscope.data.DATASETS`, in its own (data) units,
    known by its generator's samples."""

    def _draw(self, n, features, generator, dtype):
        return torch.from_numpy(DATASETS[self.name](n, _numpy_rng(generator)))


@SOURCES.decorator("8gaussians")
class EightGaussiansSource(ToySource):
    r"""The toy set ``8gaussians``, with its density: the equal mixture of
    N(c_k, 0.1^2 I) with c_k = 2 (cos(k pi / 4), sin(k pi / 4)), k = 0..7, exactly as
    :mod:`flowscope.data.toy` draws it."""

    name = "8gaussians"
    has_density = True
    scale = 0.1

    def _log_prob(self, x):
        ang = torch.arange(8, dtype=x.dtype, device=x.device) * math.pi / 4
        centers = 2 * torch.stack([ang.cos(), ang.sin()], 1)  # (8, 2)
        d2 = ((x[:, None, :] - centers) ** 2).sum(-1)  # (N, 8)
        s2 = self.scale**2
        comp = -0.5 * d2 / s2 - math.log(2 * math.pi * s2)
        return torch.logsumexp(comp, dim=1) - math.log(8)


for _name in DATASETS:
    if _name not in SOURCES:
        SOURCES.register(_name, type(f"_{_name}Source", (ToySource,), {"name": _name}))


@SOURCES.decorator("file")
class FileSource(Source):
    """Points from a file (``.csv``, ``.npy``, ``.npz``, as ``--data FILE`` reads them; a
    label column is ignored), drawn with replacement; known only by its samples.

    The run records the file's absolute path and SHA-256, and reloading refuses a file
    that is missing or has changed.

    Arguments:
        path: the file.
        sha256: the expected SHA-256 (a reloaded run's), or ``None``.

    Raises:
        ValueError: for a file that cannot be read as points, or that has changed.
    """

    name = "file"

    def __init__(self, path: str, sha256: str | None = None):
        self.path, self.sha256 = recorded_file(path, sha256, "source file")
        self._columns = _columns(self.path)
        try:
            self.points, self._error = load_points(self.path)[0], None
        except ValueError as err:
            self.points, self._error = None, err

    def arguments(self):
        return {"path": self.path, "sha256": self.sha256}

    def describe(self):
        return f"file {self.path}"

    def check_features(self, features):
        if self._columns is not None and self._columns not in (features, features + 1):
            raise ValueError(
                f"source file {self.path} holds points of dimension {self._columns}, but the "
                f"data have dimension {features}"
            )
        if self._error is not None and self._columns == features + 1:
            # One column more than the data: points of another dimension, unless the
            # last column is labels, which it is not.
            raise ValueError(
                f"source file {self.path} holds points of dimension {self._columns}, but the "
                f"data have dimension {features} (nor is its last column a label column: "
                f"{self._error})"
            )
        if self._error is not None:
            raise ValueError(f"source {self._error}")
        super().check_features(features)

    def _draw(self, n, features, generator, dtype):
        idx = torch.randint(0, len(self.points), (n,), generator=generator)
        return self.points[idx]


def _columns(path: str) -> int | None:
    """The number of columns of a points file (a label column included), or ``None`` if
    it cannot be told without reading it fully (``load_points`` then says why)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return arr.shape[1] if arr.ndim == 2 else None
        if suffix == ".csv":
            with open(path) as f:
                lines = [line for line in (f.readline() for _ in range(2)) if line.strip()]
            return len(lines[-1].split(",")) if lines else None
    except Exception:  # noqa: BLE001 - load_points names the problem
        return None
    return None


def source_from_text(text: str) -> dict[str, Any]:
    """A source's config from a command-line value: a registered name, else a file.

    Raises:
        ValueError: for a name that is neither, listing the choices.
    """
    if text in SOURCES and text != "file":
        return {"name": text}
    if Path(text).suffix.lower() in DATA_SUFFIXES or Path(text).exists():
        return {"name": "file", "path": str(Path(text).expanduser().resolve())}
    names = ", ".join(n for n in SOURCES.names() if n != "file")
    raise ValueError(f"unknown source {text!r}; choose one of: {names}, or a .csv/.npy/.npz file")
