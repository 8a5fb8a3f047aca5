"""Evaluation metrics: held-out likelihood, Wasserstein distance, ring geometry, round trips,
and the paths of flow matching (straightness, path energy, W2 by function evaluations).

Every function returns plain Python floats (or small frozen dataclasses of them), so the
numbers go straight into tables and JSON. Units are stated per metric: *nats per point*
for likelihoods, *data units* (the coordinates of the data) for distances.

The ring metrics use the known geometry of the Olympic data (:mod:`flowscope.data`): five
rings of radius 1 around ``RING_CENTERS``, each a band of width ``ring_thickness`` about its
centre line, and test membership with :func:`~flowscope.data.in_band` (bands widened by
:data:`BAND_TOLERANCE` for the float32 rounding of stored points). They mean nothing for
other data sets.

Samples with a NaN or infinite coordinate (a diverged model) are counted, never dropped:
they lie in no band, cover no cell, are never correct, and are infinitely far from
everything (offsets and W2 become ``inf``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from .base import FlowModel
from .data import (
    BAND_TOLERANCE,
    RING_CENTERS,
    RING_NAMES,
    RING_THICKNESS,
    check_int,
    check_labels,
    in_band,
    nearest_ring,
)
from .models import model_type

__all__ = [
    "BAND_TOLERANCE",
    "NLL",
    "ClassAccuracy",
    "NFEPoint",
    "PathMetrics",
    "RingPrecision",
    "RoundTrip",
    "class_accuracy",
    "class_coverage",
    "heldout_nll",
    "path_metrics",
    "ring_coverage",
    "ring_precision",
    "round_trip_error",
    "sample_quality",
    "standard_error",
    "t95",
    "w2_by_nfe",
    "w2_noise_floor",
    "wasserstein2",
]


def _points(x: Any, name: str, features: int | None = None) -> torch.Tensor:
    """x as a float64 tensor (N, D); raises ValueError for another shape or non-numbers."""
    if not isinstance(x, torch.Tensor):
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got an array of {arr.dtype}")
        x = torch.from_numpy(arr.astype(np.float64))
    t = x
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] == 0 or (features is not None and t.shape[1] != features):
        want = f"(N, {features})" if features is not None else "(N, D)"
        raise ValueError(f"{name} must have shape {want} with N >= 1, got {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float64)


def _nonempty(x: torch.Tensor, name: str, what: str) -> torch.Tensor:
    if len(x) == 0:
        raise ValueError(
            f"{name} holds no points (shape {tuple(x.shape)}); {what} needs at least one"
        )
    return x


# -- likelihood -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NLL:
    """Mean negative log-likelihood of a held-out set, in nats per point.

    Attributes:
        standardized: ``-mean log p(y)`` of the standardized points y, the quantity the
            training loss of a normalizing flow is in (and the study's losses).
        data: ``-mean log p(x)`` in data units; it equals ``standardized + sum(log scale)``.
        n: number of points averaged.
        points: (n,) float64, ``-log p(x_i)`` of each point in data units (their mean is
            ``data``), for paired comparisons of two models on the same points.
    """

    standardized: float
    data: float
    n: int
    points: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def sem(self) -> float | None:
        """The standard error of ``data``, nats per point: the standard deviation of
        ``points`` over sqrt(n) (also that of ``standardized`` unless the model is
        standardized per class, whose shift differs from class to class); ``None``
        without ``points``, for one point or for an infinite NLL."""
        return standard_error(self.points)


def t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with ``dof`` >= 1 degrees of freedom
    (12.7 for 1, 1.96 for many): how many standard errors a mean difference must exceed
    to be told apart from 0 (scipy's ``t.ppf(0.975, dof)``)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def standard_error(values: torch.Tensor | None) -> float | None:
    """The standard error of the mean of values (N,): sample standard deviation over
    sqrt(N); ``None`` for ``None``, fewer than 2 values or a non-finite one.

    Example:
        >>> standard_error(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # 1.291 / 2
        0.6454972243679028
    """
    if values is None or len(values) < 2 or not bool(torch.isfinite(values).all()):
        return None
    v = values.double()
    return float(v.std() / math.sqrt(len(v)))


def heldout_nll(
    model: FlowModel,
    x: torch.Tensor,
    labels: Any = None,
    *,
    batch_size: int = 4096,
    **log_prob_kwargs: Any,
) -> NLL:
    r"""Held-out negative log-likelihood, in nats per point, evaluated in batches.

    .. math:: \mathrm{NLL} = -\frac{1}{N} \sum_i \log p(x_i)

    A normalizing flow's ``log_prob`` is exact (change of variables, the study's Eqs. 2
    and 8); a flow-matching model's is the instantaneous change of variables integrated by
    an ODE solver (``solver=``, ``steps=``, ``divergence=`` are passed on). The density is
    computed once per point, in standardized coordinates; the data-unit value adds the
    log|det| of the standardization (a constant, or per class for a model standardized per
    class), exactly as ``model.log_prob`` does. For a conditional model this is the
    class-conditional NLL, ``-mean log p(x | label)``.

    A flow-matching model's exact divergence costs D backward passes per solver stage;
    ``benchmarks/README.md`` has the measured speed.

    Arguments:
        model: a registered model (:data:`~flowscope.models.MODELS`).
        x: (N, D) held-out points in data units, never seen in training.
        labels: class ids (one int or (N,)) for a conditional model, else ``None``.
        batch_size: points per call of ``log_prob`` (bounds memory, not the result).
        **log_prob_kwargs: passed to ``model.log_prob``.

    Returns:
        :class:`NLL`, with each point's value (``points``) and the standard error
        (``sem``); ``inf`` if some point has zero density within floating-point range.

    Raises:
        ValueError: for a bad shape, labels or batch size, or no points at all.

    References:
        Papamakarios et al. Normalizing Flows for Probabilistic Modeling and Inference.
        2021, arXiv:1912.02762 (held-out log-likelihood as the evaluation of density
        models); Chen et al. Neural Ordinary Differential Equations. 2018, arXiv:1806.07366.

    Example:
        >>> from flowscope import NormalizingFlow
        >>> flow = NormalizingFlow(couplings=0)
        >>> nll = heldout_nll(flow, torch.zeros(3, 2))
        >>> round(nll.standardized, 4), nll.n  # log(2 pi), a standard normal at its mode
        (1.8379, 3)
    """
    batch_size = check_int(batch_size, "batch_size")
    x, labels = model.check(x, labels)
    x = _nonempty(x, "x", "the held-out NLL")
    parts, total = [], 0.0
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        lb = None if labels is None else labels[start:stop]
        lp = model.log_prob(x[start:stop], lb, standardized=True, **log_prob_kwargs)
        lp = lp.detach().double().cpu()
        total += float(lp.sum())
        parts.append(-lp)
    nll = torch.cat(parts)  # (N,) standardized
    shift = model.standardization.log_abs_det(labels).double().cpu().expand(len(x))
    std = -total / len(x)
    return NLL(standardized=std, data=std - float(shift.mean()), n=len(x), points=nll - shift)


# -- optimal transport ----------------------------------------------------------------------


def wasserstein2(a: Any, b: Any) -> float:
    r"""Exact 2-Wasserstein distance between two point sets of equal size, in data units.

    For two empirical measures with N equally weighted points each, the optimal transport
    plan is a permutation (Birkhoff), so

    .. math:: W_2(a, b) = \Big(\min_\sigma \frac{1}{N} \sum_i \|a_i - b_{\sigma(i)}\|^2\Big)^{1/2}

    found by ``scipy.optimize.linear_sum_assignment`` on the squared Euclidean cost, in
    float64, in time O(N^3) (``benchmarks/README.md`` has the measured time). A point with
    a NaN or infinite coordinate is infinitely far from every other, so W2 is then ``inf``.

    Arguments:
        a: (N, D) points (tensor or array).
        b: (N, D) points.

    Returns:
        W2 in the units of the points; ``inf`` if a point is not finite.

    Raises:
        ValueError: if the shapes differ or are not (N, D) with N >= 1.

    References:
        Peyre, Cuturi. Computational Optimal Transport. 2019, arXiv:1803.00567
        (Proposition 2.1, assignment between uniform empirical measures).

    Example:
        >>> wasserstein2([[0.0, 0.0], [1.0, 0.0]], [[1.0, 3.0], [0.0, 3.0]])
        3.0
    """
    a, b = _points(a, "a"), _points(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape (N, D), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf
    cost = cdist(a.numpy(), b.numpy(), "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(max(float(cost[rows, cols].mean()), 0.0)))


def w2_noise_floor(sample_fn: Any, n: int = 2000, seed: int = 0) -> float:
    """W2 between two independent draws of n points of the same distribution, in data units.

    Even a perfect model scores this much at sample size n: the finite-sample W2 between
    two draws of the data itself. A model's W2 is meaningful only above it.

    Arguments:
        sample_fn: callable ``(n, seed) -> (n, D)`` points, e.g.
            ``lambda n, s: olympic_rings(n, seed=s)``.
        n: points per draw.
        seed: the draws use ``seed`` and ``seed + 1``.

    Returns:
        ``wasserstein2(sample_fn(n, seed), sample_fn(n, seed + 1))``.

    Raises:
        ValueError: if n is not a positive integer.
    """
    n = check_int(n, "n")
    return wasserstein2(sample_fn(n, seed), sample_fn(n, seed + 1))


# -- ring geometry (Olympic data) -----------------------------------------------------------


@dataclass(frozen=True)
class RingPrecision:
    """Where generated points lie relative to the rings' bands.

    Attributes:
        precision: share of points inside at least one ring's band, in [0, 1]; a point
            with a NaN or infinite coordinate counts as outside.
        mean_offset: mean distance, in data units, from each point outside every band to
            the nearest band (0.0 when no point is outside; ``inf`` when a point is not
            finite).
        max_offset: the largest such distance (0.0 when no point is outside; ``inf``
            when a point is not finite).
    """

    precision: float
    mean_offset: float
    max_offset: float


def ring_precision(x: Any, *, ring_thickness: float = RING_THICKNESS) -> RingPrecision:
    r"""Share of points in a ring's band, and how far off the others are.

    A point p is in ring k's band when :math:`|\,\|p - c_k\| - 1| \le w/2` (plus
    :data:`BAND_TOLERANCE`; :func:`~flowscope.data.in_band`), the support of the Olympic
    data; its offset is :math:`\min_k |\,\|p - c_k\| - 1| - w/2`, the distance to the
    nearest band. A point with a NaN or infinite coordinate is outside, at offset ``inf``:
    a diverged model scores low precision and infinite offsets, never a perfect score.

    Arguments:
        x: (N, 2) points in data units.
        ring_thickness: band width w in data units (the data's, 0.25 by default).

    Returns:
        :class:`RingPrecision`.

    Raises:
        ValueError: if x is not (N, 2) or the thickness is not in (0, 2).

    Example:
        >>> ring_precision([[1.0, 0.0], [0.0, 1.5]])  # on the blue ring; 0.375 above it
        RingPrecision(precision=0.5, mean_offset=0.375, max_offset=0.375)
    """
    pts = _points(x, "x", 2)
    outside = ~in_band(pts, ring_thickness).any(dim=1)
    _, dist = nearest_ring(pts)
    finite = torch.isfinite(pts).all(dim=1)
    offset = torch.where(finite, dist - ring_thickness / 2, math.inf)
    off = offset[outside]
    return RingPrecision(
        precision=float(1.0 - outside.double().mean()),
        mean_offset=float(off.mean()) if len(off) else 0.0,
        max_offset=float(off.max()) if len(off) else 0.0,
    )


def ring_coverage(x: Any, *, bins: int = 36, ring_thickness: float = RING_THICKNESS) -> float:
    """Share of the (ring, angle bin) cells that hold at least one point.

    Each band is cut into ``bins`` equal angular sectors about its centre, 5 x ``bins``
    cells in all. A point counts for every cell it lies in (bands overlap where rings
    cross; membership by :func:`~flowscope.data.in_band`); a point with a NaN or infinite
    coordinate lies in no cell. Precision says whether samples are on the rings; coverage
    says whether they reach all of them (a model that drops a ring or an arc scores
    below 1).

    Arguments:
        x: (N, 2) points in data units.
        bins: angular sectors per ring, >= 1.
        ring_thickness: band width in data units.

    Returns:
        coverage in [0, 1].

    Raises:
        ValueError: for a bad shape, ``bins`` or thickness.

    References:
        The precision/coverage split follows Naeem et al. Reliable Fidelity and Diversity
        Metrics for Generative Models. 2020, arXiv:2002.09797, with the known support of
        the data in place of nearest-neighbour balls.

    Example:
        >>> from flowscope import olympic_rings
        >>> ring_coverage(olympic_rings(5000, seed=0))
        1.0
    """
    inside, sector = _ring_cells(x, bins, ring_thickness)
    ring = torch.arange(len(RING_CENTERS)).expand_as(sector)
    cells = (ring * bins + sector)[inside]
    return float(len(torch.unique(cells)) / (len(RING_CENTERS) * bins))


def _ring_cells(x: Any, bins: int, ring_thickness: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each point (N, 2) lies in each ring's band, (N, 5) bool, and its angular
    sector about each ring's centre, (N, 5) in [0, bins)."""
    check_int(bins, "bins")
    pts = _points(x, "x", 2)
    inside = in_band(pts, ring_thickness)  # (N, 5)
    centers = torch.tensor(RING_CENTERS, dtype=torch.float64)
    rel = pts[:, None, :] - centers[None]  # (N, 5, 2)
    angle = torch.atan2(rel[..., 1], rel[..., 0])  # (N, 5) in [-pi, pi]
    sector = ((angle + math.pi) / (2 * math.pi) * bins).long().clamp(0, bins - 1)
    return inside, sector


@dataclass(frozen=True)
class ClassAccuracy:
    """Shares per class of a conditional model's samples: of the samples in their own
    ring's band (:func:`class_accuracy`) or of their ring's sectors reached
    (:func:`class_coverage`).

    Attributes:
        per_class: one share per class, in the order of ``RING_NAMES``; ``nan`` for a
            class with no samples.
        overall: the share over all samples (all cells, for the coverage).
    """

    per_class: tuple[float, ...]
    overall: float


def class_accuracy(x: Any, labels: Any, *, ring_thickness: float = RING_THICKNESS) -> ClassAccuracy:
    r"""Class accuracy of a conditional model on the Olympic data.

    A sample x generated for class k is correct when it lies in ring k's band,
    :math:`|\,\|x - c_k\| - 1| \le w/2` (plus :data:`BAND_TOLERANCE`;
    :func:`~flowscope.data.in_band`); a sample with a NaN or infinite coordinate is never
    correct. Class ids follow :data:`~flowscope.data.RING_NAMES` (0 black, 1 blue,
    2 green, 3 red, 4 yellow).

    Arguments:
        x: (N, 2) samples in data units.
        labels: (N,) integer class ids in [0, 5), the class each sample was drawn for
            (or one int for all).
        ring_thickness: band width in data units.

    Returns:
        :class:`ClassAccuracy`.

    Raises:
        ValueError: for mismatched shapes or labels outside [0, 5).

    Example:
        >>> from flowscope import olympic_rings
        >>> x, y = olympic_rings(500, conditional=True, seed=0)
        >>> class_accuracy(x, y).per_class
        (1.0, 1.0, 1.0, 1.0, 1.0)
    """
    inside = in_band(_points(x, "x", 2), ring_thickness)  # (N, 5)
    k = len(RING_NAMES)
    y = check_labels(labels, len(inside), k).cpu()
    hit = inside.gather(1, y[:, None]).squeeze(1)
    per = tuple(
        float(hit[y == c].double().mean()) if (y == c).any() else math.nan for c in range(k)
    )
    return ClassAccuracy(per_class=per, overall=float(hit.double().mean()))


def class_coverage(
    x: Any, labels: Any, *, bins: int = 36, ring_thickness: float = RING_THICKNESS
) -> ClassAccuracy:
    """Share of each ring's angle bins that the samples drawn for its class reach.

    Ring k's band is cut into ``bins`` equal angular sectors about its centre (as in
    :func:`ring_coverage`); a sector counts when a sample generated for class k lies in
    it, inside ring k's band. Class accuracy says whether the samples of a class stay on
    their ring; this says whether they still go all the way round it (guidance that
    sharpens a class can empty the arcs where the rings cross).

    Arguments:
        x: (N, 2) samples in data units.
        labels: (N,) the class ids in [0, 5) the samples were drawn for (or one int).
        bins: angular sectors per ring, >= 1.
        ring_thickness: band width in data units.

    Returns:
        a :class:`ClassAccuracy` of shares of sectors: ``per_class`` one per class
        (``nan`` for a class with no samples), ``overall`` the share of all 5 x ``bins``
        (ring, sector) cells reached by their own class.

    Raises:
        ValueError: for a bad shape, ``bins``, thickness or labels.

    Example:
        >>> from flowscope import olympic_rings
        >>> x, y = olympic_rings(5000, conditional=True, seed=0)
        >>> class_coverage(x, y).overall
        1.0
    """
    inside, sector = _ring_cells(x, bins, ring_thickness)
    k = len(RING_NAMES)
    y = check_labels(labels, len(inside), k).cpu()
    own = inside.gather(1, y[:, None]).squeeze(1)  # (N,): in its own ring's band
    cells = (y * bins + sector.gather(1, y[:, None]).squeeze(1))[own]
    reached = torch.zeros(k * bins, dtype=torch.bool)
    reached[cells] = True
    per = tuple(
        float(reached[c * bins : (c + 1) * bins].double().mean()) if (y == c).any() else math.nan
        for c in range(k)
    )
    return ClassAccuracy(per_class=per, overall=float(reached.double().mean()))


# -- invertibility --------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """Distances between points and their round trip through a model, in data units.

    Attributes:
        mean: mean Euclidean distance.
        max: largest Euclidean distance.
    """

    mean: float
    max: float


def round_trip_error(
    model: FlowModel,
    x: torch.Tensor,
    labels: Any = None,
    *,
    dt: float = 1e-3,
    solver: str = "euler",
) -> RoundTrip:
    r"""How well a model maps points back onto themselves through its latent space.

    :math:`\|x - \mathrm{decode}(\mathrm{encode}(x))\|`. For a normalizing flow this is zero
    up to rounding, since every coupling is inverted in closed form (the study's Eqs. 4
    and 7). For flow matching x is integrated from t = 1 back to t = 0 (Eq. 18) and the
    latent forward again (Eq. 17), both with step ``dt`` and ``solver``; the error
    measures the discretization, O(dt) for Euler.

    Arguments:
        model: a registered model (:data:`~flowscope.models.MODELS`).
        x: (N, D) points in data units.
        labels: class ids of a conditional model, else ``None``.
        dt: step of an ODE model's integration (ignored by a type without steps).
        solver: ODE solver of an ODE model's integration (ignored likewise).

    Returns:
        :class:`RoundTrip`, computed under ``torch.no_grad()``.

    Raises:
        ValueError: for a bad shape, no points, labels, dt or solver.
    """
    x, labels = model.check(x, labels)
    x = _nonempty(x, "x", "the round-trip error")
    options = model_type(model).sampling(dt=dt, solver=solver)
    with torch.no_grad():
        back = model.decode(model.encode(x, labels, **options), labels, **options)
        err = (back - x).double().norm(dim=1)
    return RoundTrip(mean=float(err.mean()), max=float(err.max()))


# -- everything about a set of samples --------------------------------------------------------


def sample_quality(
    samples: Any,
    reference: Any,
    *,
    labels: Any = None,
    ring_thickness: float = RING_THICKNESS,
    bins: int = 36,
) -> dict[str, float]:
    """The sample metrics of the Olympic data in one dict (data units, shares in [0, 1]).

    Arguments:
        samples: (N, 2) generated points.
        reference: (N, 2) held-out data points, as many as samples.
        labels: (N,) the classes the samples were generated for (conditional models).
        ring_thickness: band width in data units.
        bins: angular sectors per ring for the coverage.

    Returns:
        ``w2`` (:func:`wasserstein2`), ``ring_precision``, ``ring_mean_offset``,
        ``ring_max_offset`` (:func:`ring_precision`), ``ring_coverage``
        (:func:`ring_coverage`) and, with labels, ``class_accuracy`` and
        ``class_accuracy_<ring name>`` (:func:`class_accuracy`).

    Raises:
        ValueError: as the functions above.
    """
    prec = ring_precision(samples, ring_thickness=ring_thickness)
    out = {
        "w2": wasserstein2(samples, reference),
        "ring_precision": prec.precision,
        "ring_mean_offset": prec.mean_offset,
        "ring_max_offset": prec.max_offset,
        "ring_coverage": ring_coverage(samples, bins=bins, ring_thickness=ring_thickness),
    }
    if labels is not None:
        acc = class_accuracy(samples, labels, ring_thickness=ring_thickness)
        out["class_accuracy"] = acc.overall
        for name, v in zip(RING_NAMES, acc.per_class, strict=True):
            out[f"class_accuracy_{name}"] = v
    return out


# -- paths and function evaluations ------------------------------------------------------------


@dataclass(frozen=True)
class PathMetrics:
    """How straight and how cheap a flow-matching model's paths are, in squared data units
    (``npe``: a ratio).

    Attributes:
        straightness: Liu et al.'s S, the mean over points and times of
            ||(x_1 - x_0) - v_t||^2 (0 for straight paths at constant speed).
        path_energy: PE, the mean over points of the integral of ||v_t||^2 over [0, 1].
        w2_squared: W2^2 between the source points and the data points (per class for
            a conditional model, weighted by the class sizes): the least path energy of
            any flow between them (Benamou-Brenier).
        npe: the normalized path energy |PE - W2^2| / W2^2 of Tong et al.
        steps: the Euler steps of the trajectories.
        n: the points.
    """

    straightness: float
    path_energy: float
    w2_squared: float
    npe: float
    steps: int
    n: int


def _ode_type(model: FlowModel) -> bool:
    """Whether the model's type integrates an ODE (its sampler takes steps)."""
    return "dt" in model_type(model).sample_options


def _source_points(model: FlowModel, n: int, generator) -> torch.Tensor:
    """n points of the model's source at t = 0 (standardized units)."""
    return model.base_sample(n, generator)


def path_metrics(
    model: FlowModel,
    x: Any,
    labels: Any = None,
    *,
    steps: int = 100,
    generator: torch.Generator | None = None,
) -> PathMetrics:
    r"""Straightness and normalized path energy of a flow-matching model's paths.

    Draws ``len(x)`` source points (the labels of x for a conditional model), follows them
    with ``steps`` Euler steps in data units, and takes each step's velocity as the
    displacement over the step (exact for Euler, and in data units, since the
    standardization is affine):

    .. math::

        S = \frac{1}{K} \sum_k E\|(x_1 - x_0) - v_k\|^2, \qquad
        PE = \frac{1}{K} \sum_k E\|v_k\|^2, \qquad
        NPE = \frac{|PE - W_2^2(p_0, p_1)|}{W_2^2(p_0, p_1)}

    with W2^2 between the source points and the data points x (exact, by assignment).

    Arguments:
        model: a model whose type integrates an ODE (flow matching).
        x: (N, D) held-out data points in data units, N >= 2.
        labels: (N,) their classes, for a conditional model.
        steps: Euler steps over [0, 1].
        generator: for the source points.

    Returns:
        :class:`PathMetrics`, computed under ``torch.no_grad()``.

    Raises:
        ValueError: for a model without an ODE, a bad shape or labels.

    References:
        Liu, Gong, Liu. Flow Straight and Fast: Learning to Generate and Transfer Data
        with Rectified Flow. 2022, arXiv:2209.03003 (straightness, Eq. 6).
        Tong et al. Improving and Generalizing Flow-Based Generative Models with
        Minibatch Optimal Transport. TMLR 2024, arXiv:2302.00482 (normalized path energy).
    """
    if not _ode_type(model):
        raise ValueError(
            f"path metrics need a model that integrates an ODE; a {model_type(model).title} "
            "maps in one pass"
        )
    steps = check_int(steps, "steps")
    x, labels = model.check(x, labels)
    x = _nonempty(x, "x", "the path metrics")
    with torch.no_grad():
        z = _source_points(model, len(x), generator)
        states = model.trajectory(z, labels=labels, dt=1.0 / steps).double().cpu()  # (K+1, N, D)
    v = (states[1:] - states[:-1]) * steps  # (K, N, D)
    chord = states[-1] - states[0]  # (N, D)
    straight = float(((chord - v) ** 2).sum(-1).mean())
    energy = float((v**2).sum(-1).mean())
    src, data = states[0], x.double().cpu()
    if labels is None:
        w2sq = wasserstein2(src, data) ** 2
    else:
        w2sq = 0.0
        for k in torch.unique(labels):
            m = (labels == k).cpu()
            w2sq += float(m.sum()) / len(x) * wasserstein2(src[m], data[m]) ** 2
    npe = abs(energy - w2sq) / w2sq if w2sq > 0 else math.inf
    return PathMetrics(straight, energy, w2sq, npe, steps, len(x))


@dataclass(frozen=True)
class NFEPoint:
    """W2 to held-out data at one sampler setting.

    Attributes:
        solver: ``"euler"``, ``"dopri5"`` or ``"one pass"`` (a normalizing flow).
        nfe: the velocity evaluations per sample (the passes, for a flow).
        w2: W2 between the samples and the data, data units.
        seconds: the wall time of the sampling.
        in_band: the share of the samples in some ring's band (:func:`ring_precision`),
            where asked for (the Olympic data), else ``None``.
    """

    solver: str
    nfe: int
    w2: float
    seconds: float
    in_band: float | None = None


def w2_by_nfe(
    model: FlowModel,
    x: Any,
    labels: Any = None,
    *,
    nfe: Sequence[int] = (1, 2, 4, 8, 16, 32, 100),
    adaptive: bool = True,
    seed: int = 0,
    guidance: float | None = None,
    rings: bool = False,
) -> list[NFEPoint]:
    """W2 to held-out data against the number of function evaluations.

    Every row samples ``len(x)`` points from the same source points (drawn with
    ``seed``; with the labels of x for a conditional model) and measures their exact W2 to
    x. An ODE model gets one row per Euler step count in ``nfe`` and, with ``adaptive``,
    one for dopri5 (rtol = atol = 1e-5) with the evaluations it made; a one-pass model
    (a normalizing flow) gets one row.

    Arguments:
        model: a registered model.
        x: (N, D) held-out points in data units.
        labels: (N,) their classes, for a conditional model.
        nfe: Euler step counts, each >= 1.
        adaptive: add the dopri5 row.
        seed: of the source points.
        guidance: a classifier-free guidance scale w for the samples of a model trained
            with label dropout (``None``: unguided); a guided step evaluates the network
            twice, for the class and the null class, and counts two evaluations.
        rings: also measure each row's share of samples in a ring's band (2D points of
            the Olympic rings).

    Returns:
        a list of :class:`NFEPoint`, in the order of ``nfe`` (dopri5 last).

    Raises:
        ValueError: for a bad step count, shape or labels, or a guidance the model does
            not take.
    """
    x, labels = model.check(x, labels)
    x = _nonempty(x, "x", "W2 by function evaluations").double().cpu()
    counts = [check_int(k, "nfe") for k in nfe]

    def z() -> torch.Tensor:
        return _source_points(model, len(x), torch.Generator().manual_seed(seed))

    rows: list[NFEPoint] = []

    def point(solver: str, count: int, out: torch.Tensor, seconds: float) -> NFEPoint:
        band = ring_precision(out).precision if rings else None
        return NFEPoint(solver, count, wasserstein2(out, x), seconds, band)

    guided = {} if guidance is None else {"guidance": guidance}
    per_step = 1 if guidance is None else 2
    if not _ode_type(model):
        if guided:
            raise ValueError(f"guidance steers an ODE's velocity; {type(model).__name__} has none")
        t0 = time.perf_counter()
        out = model.decode(z(), labels)
        seconds = time.perf_counter() - t0  # the sampling alone, not the W2 after it
        rows.append(point("one pass", 1, out, seconds))
        return rows
    for k in counts:
        t0 = time.perf_counter()
        out = model.decode(z(), labels, dt=1.0 / k, solver="euler", **guided)
        seconds = time.perf_counter() - t0
        rows.append(point("euler", per_step * k, out, seconds))
    if adaptive:
        from .matching import integrate

        calls = [0]
        field = model.ode_velocity(labels, **guided)

        def counted(y, t):
            calls[0] += 1
            return field(y, t)

        t0 = time.perf_counter()
        with torch.no_grad():
            y1 = integrate(counted, z(), [0.0, 1.0], "dopri5")[-1]
            out = model.standardization.inverse(y1, labels)
        seconds = time.perf_counter() - t0
        rows.append(point("dopri5", per_step * calls[0], out, seconds))
    return rows
