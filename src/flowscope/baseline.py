"""The honest baseline: a Gaussian mixture fitted to the same training points as a model.

A flow that does not beat a few Gaussians on its own held-out points has not earned its
keep. :func:`mixture_baseline` fits scikit-learn's ``GaussianMixture`` (full covariances)
with 1 to ``max_components`` components, keeps the one of lowest BIC, and scores the
test points in the units ``flowscope eval`` reports a model's NLL in.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import check_int
from .errors import MissingDependency
from .standardize import Standardization

__all__ = [
    "COLLAPSE_FLOOR",
    "COLLAPSE_RATIO",
    "MAX_COMPONENTS",
    "MAX_POINTS",
    "MixtureBaseline",
    "collapsed",
    "fit_mixture",
    "mixture_baseline",
    "most_components",
]

#: The most components the BIC chooses among.
MAX_COMPONENTS = 10
#: A component whose variance along some axis is within this factor of scikit-learn's
#: covariance floor (``reg_covar``, added to every variance) has collapsed onto repeated
#: values (:func:`collapsed`) ...
COLLAPSE_FLOOR = 10.0
#: ... where its spread along that axis is also below this share of the training points'.
COLLAPSE_RATIO = 0.1
#: The most training points a mixture is fitted on (a seeded random subset of more):
#: BIC's choice is settled long before, and EM on the study's 250,000 points ten times
#: over would take longer than the rest of ``flowscope eval``.
MAX_POINTS = 5_000


@dataclass(frozen=True)
class MixtureBaseline:
    """The held-out NLL of a BIC-chosen Gaussian mixture.

    Attributes:
        nll_data: nats per test point, data units.
        nll_standardized: nats per test point in the model's standardized coordinates
            (data units plus the mean log|det| of its standardization, as the model's).
        components: the components chosen, one per class for a conditional baseline.
        train_points: the training points it was fitted on (at most
            :data:`MAX_POINTS` per class).
        test_points: the test points it scored.
        seconds: wall time of the fits and the scoring (a fit of the same training
            points with the same settings is reused from the last few, not repeated).
        collapsed_components: the components that collapsed onto repeated values
            (:func:`collapsed`), all classes together.
        collapsed_test_points: the test points whose most probable component is one of
            them: there a continuous density can be made as large as wished (the
            mixture's is held up only by scikit-learn's covariance floor, ``reg_covar``),
            so that beating the mixture on them measures the floor, not the model.
        points: (M,) float64, ``-log p(x_i)`` of each test point in data units, in the
            order given (their mean is ``nll_data``), for a paired comparison with a model.
        on_collapsed: (M,) bool, the test points counted in ``collapsed_test_points``.
    """

    nll_data: float
    nll_standardized: float
    components: tuple[int, ...]
    train_points: int
    test_points: int
    seconds: float
    collapsed_components: int = 0
    collapsed_test_points: int = 0
    points: torch.Tensor | None = field(default=None, repr=False, compare=False)
    on_collapsed: torch.Tensor | None = field(default=None, repr=False, compare=False)


def _gaussian_mixture():
    try:
        from sklearn.mixture import GaussianMixture  # lazy: about a second to import
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise MissingDependency(
            "the Gaussian-mixture baseline needs scikit-learn, which is not installed: "
            "pip install scikit-learn"
        ) from None
    return GaussianMixture, threadpool_limits


def most_components(n: int, features: int, max_components: int = MAX_COMPONENTS) -> int:
    """The most components a mixture fitted to n points of ``features`` dimensions may
    have: no more free parameters than points (each component has D means, D(D + 1) / 2
    covariances and a weight, less one weight for all), at least 1. More would let
    components collapse onto single points, whose likelihood grows without bound, and
    BIC then prefers them, with an absurd held-out NLL.

    Example:
        >>> most_components(10, 2), most_components(100, 2), most_components(240, 2)
        (1, 10, 10)
    """
    per = features + features * (features + 1) // 2 + 1
    return max(1, min(max_components, (n + 1) // per))


def fit_mixture(x: np.ndarray, max_components: int = MAX_COMPONENTS, seed: int = 0):
    """The scikit-learn ``GaussianMixture`` (full covariances, EM from two k-means starts)
    of lowest BIC among 1 .. max_components components (fewer on few points:
    :func:`most_components`) fitted to x (N, D), float64, data units: the fit of
    :func:`mixture_baseline`, for a caller that needs the mixture itself.

    Arguments:
        x: (N, D) float64 numpy array of training points.
        max_components: the most components, >= 1.
        seed: seeds EM's k-means starts (``random_state``).

    Returns:
        the fitted ``sklearn.mixture.GaussianMixture``; its ``score_samples(x)`` is
        log p(x) in nats, in x's units.

    Raises:
        MissingDependency: if scikit-learn is not installed.
    """
    mixture, threadpool_limits = _gaussian_mixture()
    best, best_bic = None, math.inf
    # One thread: k-means' OpenMP threads on a busy machine made a fit 10x slower.
    with threadpool_limits(1):
        for k in range(1, most_components(len(x), x.shape[1], max_components) + 1):
            g = mixture(k, covariance_type="full", n_init=2, random_state=seed)
            g.fit(x)
            bic = g.bic(x)
            if bic < best_bic:
                best, best_bic = g, bic
    return best


#: The mixtures :func:`mixture_baseline` fitted last, by their training points, so that
#: the models of one data set (``flowscope eval A B``, the report's rows) share one fit.
_FITS: OrderedDict[str, object] = OrderedDict()
_FITS_KEPT = 8


def _fitted(x: np.ndarray, max_components: int, seed: int):
    """:func:`fit_mixture` of x, from the last fits where the same points were fitted
    with the same settings (EM is seeded: the same fit either way)."""
    key = hashlib.sha256(
        np.ascontiguousarray(x).tobytes() + f"{x.shape}|{max_components}|{seed}".encode()
    ).hexdigest()
    if key not in _FITS:
        _FITS[key] = fit_mixture(x, max_components, seed)
        while len(_FITS) > _FITS_KEPT:
            _FITS.popitem(last=False)
    _FITS.move_to_end(key)
    return _FITS[key]


def collapsed(mixture, x: np.ndarray) -> np.ndarray:
    """Which components of a fitted full-covariance ``GaussianMixture`` have collapsed
    onto repeated values (or single points) of its training points x (N, D): along one
    of its principal axes its variance is held up only by the covariance floor, within
    :data:`COLLAPSE_FLOOR` times ``mixture.reg_covar`` (the floor is in data units, as
    the fit), and its spread there is below :data:`COLLAPSE_RATIO` of the data's, as on
    a duration coded as exactly 4 minutes many times over. Data whose own spread is near
    the floor do not count as collapsed (:func:`mixture_baseline` judges the mixture of
    a class of at most D points, which has no spread of its own along some axis, against
    all classes' points).

    Returns:
        (K,) bool, one per component.
    """
    variances, axes = np.linalg.eigh(mixture.covariances_)  # (K, D), (K, D, D) columns
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    data = np.einsum("kdi,de,kei->ki", axes, cov, axes)  # the data's variance on each axis
    at_floor = variances <= COLLAPSE_FLOOR * mixture.reg_covar
    narrow = variances < COLLAPSE_RATIO**2 * data
    return (at_floor & narrow).any(axis=1)


def mixture_baseline(
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    labels_train: torch.Tensor | None = None,
    labels_test: torch.Tensor | None = None,
    *,
    standardization: Standardization | None = None,
    max_components: int = MAX_COMPONENTS,
    max_points: int = MAX_POINTS,
    seed: int = 0,
) -> MixtureBaseline:
    r"""Fit a Gaussian mixture to the training points by BIC and score the test points.

    Each candidate (1 to ``max_components`` components, full covariances, EM from two
    k-means starts) is fitted in data units, in float64; the one of lowest BIC,
    :math:`k \log N - 2 \log L`, is kept. With labels, one mixture per class is fitted
    on that class's points and the NLL is ``-mean log p(x | class)``, as a conditional
    model's.

    Arguments:
        x_train: (N, D) training points, data units.
        x_test: (M, D) held-out points, data units.
        labels_train, labels_test: (N,) and (M,) class ids for a conditional baseline,
            else ``None``.
        standardization: the model's, for the standardized NLL (``None``: the same as
            data units).
        max_components: the most components, >= 1 (fewer on few points:
            :func:`most_components`).
        max_points: a seeded random subset of at most this many training points (per
            class) is fitted on, >= 1.
        seed: seeds the subset and EM's starts.

    Returns:
        a :class:`MixtureBaseline`.

    Raises:
        MissingDependency: if scikit-learn is not installed.
        ValueError: for a bad count, labels on one side only, or a class of the test
            points without training points.

    References:
        Schwarz. Estimating the Dimension of a Model. Annals of Statistics, 1978 (BIC).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, x_test = torch.randn(500, 2, generator=g), torch.randn(5000, 2, generator=g)
        >>> b = mixture_baseline(x, x_test)
        >>> b.components, round(b.nll_data, 2)  # one Gaussian; log(2 pi e) = 2.84
        ((1,), 2.84)
    """
    max_components = check_int(max_components, "max_components")
    max_points = check_int(max_points, "max_points")
    if (labels_train is None) != (labels_test is None):
        raise ValueError("pass labels for both the training and the test points, or neither")
    t0 = time.perf_counter()
    xtr = x_train.detach().cpu().double().numpy()
    xte = x_test.detach().cpu().double().numpy()
    rng = np.random.default_rng(seed)
    if labels_train is None:
        groups = [(xtr, np.arange(len(xte)))]
    else:
        ytr, yte = labels_train.cpu().numpy(), labels_test.cpu().numpy()
        missing = sorted(set(yte.tolist()) - set(ytr.tolist()))
        if missing:
            raise ValueError(f"class {missing[0]} has test points but no training points")
        groups = [(xtr[ytr == c], np.flatnonzero(yte == c)) for c in np.unique(yte)]
    nll_points = np.zeros(len(xte))
    on = np.zeros(len(xte), dtype=bool)
    total, components, fitted, spikes = 0.0, [], 0, 0
    for train, where in groups:
        if len(train) > max_points:
            train = train[rng.choice(len(train), max_points, replace=False)]
        g = _fitted(train, max_components, seed)
        # A class of at most D points has no spread along some axis of its own: judged
        # against all the training points', its mixture collapses as on a coded value.
        spike = collapsed(g, xtr if len(train) <= xtr.shape[1] else train)
        scores = g.score_samples(xte[where])
        total += float(scores.sum())
        nll_points[where] = -scores
        components.append(g.n_components)
        fitted += len(train)
        spikes += int(spike.sum())
        if spike.any() and len(where):
            on[where] = spike[g.predict(xte[where])]
    nll = -total / len(xte)
    shift = 0.0
    if standardization is not None:
        shift = float(standardization.log_abs_det(labels_test).double().mean())
    return MixtureBaseline(
        nll_data=nll,
        nll_standardized=nll + shift,
        components=tuple(components),
        train_points=fitted,
        test_points=len(xte),
        seconds=time.perf_counter() - t0,
        collapsed_components=spikes,
        collapsed_test_points=int(on.sum()),
        points=torch.from_numpy(nll_points),
        on_collapsed=torch.from_numpy(on),
    )
