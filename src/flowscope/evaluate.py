"""Evaluate a trained run folder: :func:`evaluate_run` and its table, :func:`format_table`.

The library behind ``flowscope eval`` (whose options live in :mod:`flowscope.cli.eval`).

Every number comes from :mod:`flowscope.metrics`; this module only chooses the points
(the run's held-out test part, seeded samples) and lays the results out.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import defaults, metrics
from .baseline import mixture_baseline
from .data import DATASETS, RING_NAMES, check_int, make_dataset
from .errors import check_finite
from .matching import DEFAULT_DT, NoDensity, time_grid
from .runs import RunError, atomic_write, load_run, model_type_of, read_info, run_data
from .tables import text_table

__all__ = [
    "DEFAULT_NFE",
    "FEW_TEST_POINTS",
    "NoiseFloor",
    "baseline_verdict",
    "data_draw",
    "evaluate_run",
    "format_nfe_side_by_side",
    "format_nfe_table",
    "format_paired",
    "format_table",
    "noise_floor",
    "paired_nll",
    "plot_nfe",
]

#: Samples drawn, and pairs of data draws averaged for the W2 noise floor (declared in
#: :mod:`flowscope.defaults`, which the command line's help reads).
DEFAULT_N = defaults.EVAL_N
FLOOR_PAIRS = defaults.EVAL_FLOOR_PAIRS
#: The Euler step counts of ``flowscope eval --nfe`` (dopri5 is added to them).
DEFAULT_NFE = defaults.EVAL_NFE
#: The Euler steps of the trajectories behind the path metrics.
PATH_STEPS = 100
#: A test part of fewer points than this gets a note (:func:`evaluate_run`): W2 between
#: so few points, and its noise floor, rank no models, and the NLL's standard error is
#: a sizeable share of the differences between them.
FEW_TEST_POINTS = 100


def _json_safe(value: Any) -> Any:
    """JSON has no inf or NaN: such floats become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class NoiseFloor:
    """The W2 noise floor at one sample size: W2 between pairs of independent draws.

    Attributes:
        n: points per draw.
        mean: mean W2 over the pairs, data units.
        std: standard deviation of W2 over the pairs (ddof 1; 0.0 for one pair).
        values: W2 of each pair (K,), data units.
    """

    n: int
    mean: float
    std: float
    values: tuple[float, ...]


def data_draw(source: str, conditional: bool = False) -> Callable[[int, int], torch.Tensor]:
    """The sampler ``(n, seed) -> (n, D)`` points (data units) of registry data ``source``
    (``olympic`` or a toy set), as :func:`noise_floor` takes it; ``conditional`` draws
    the Olympic data as the class-conditional model is trained on it.

    Raises:
        ValueError: (when called) for an unknown ``source``.
    """

    def draw(n: int, seed: int) -> torch.Tensor:
        return make_dataset(source, n, conditional=conditional, seed=seed).x

    return draw


def noise_floor(
    draw: Callable[[int, int], Any], n: int, *, seed: int, pairs: int = FLOOR_PAIRS
) -> NoiseFloor:
    """W2 between two independent draws of ``n`` points of the data, over ``pairs`` pairs.

    Even a perfect model scores about this W2 at sample size ``n``; one pair alone scatters
    by about ``std``, so a model's W2 within that spread of ``mean`` cannot be told apart
    from the data's own.

    Arguments:
        draw: ``(n, seed) -> (n, D)`` points in data units, e.g.
            ``lambda n, s: olympic_rings(n, seed=s)``.
        n: points per draw, >= 1.
        seed: pair ``k`` draws with seeds ``seed + 2 k`` and ``seed + 2 k + 1``.
        pairs: number of pairs, >= 1.

    Returns:
        a :class:`NoiseFloor`.

    Raises:
        ValueError: if ``n`` or ``pairs`` is not a positive integer.

    Example:
        >>> from flowscope import olympic_rings
        >>> f = noise_floor(lambda k, s: olympic_rings(k, seed=s), 200, seed=10, pairs=3)
        >>> len(f.values), f.mean > 0
        (3, True)
    """
    n = check_int(n, "n")
    pairs = check_int(pairs, "pairs")
    values = [metrics.w2_noise_floor(draw, n, seed=seed + 2 * k) for k in range(pairs)]
    std = float(np.std(values, ddof=1)) if pairs > 1 else 0.0
    return NoiseFloor(n=n, mean=float(np.mean(values)), std=std, values=tuple(values))


def evaluate_run(
    run_dir: str | Path,
    *,
    n: int = DEFAULT_N,
    seed: int = 0,
    dt: float | None = None,
    solver: str = "euler",
    nll_kwargs: dict[str, Any] | None = None,
    floor_pairs: int = FLOOR_PAIRS,
    device: str = "cpu",
    nfe: Sequence[int] | None = None,
    baseline: bool = True,
    guidance: float | None = None,
    per_point: bool = False,
) -> dict[str, Any]:
    """All metrics of a trained run, as a flat JSON-safe dict.

    What is measured:

    - held-out NLL (:func:`~flowscope.metrics.heldout_nll`) on the run's whole test part
      (:func:`~flowscope.runs.run_data`; ``holdout_points`` points, 10,000 by default,
      drawn with a seed the training never used), class-conditional for a conditional
      model; a flow-matching model uses its ``log_prob`` defaults (``rk4``, 100 steps,
      exact divergence) unless ``nll_kwargs`` says otherwise;
    - beside it, with ``baseline``, the held-out NLL of the baseline: a Gaussian mixture
      fitted to the run's training points, its components chosen by BIC
      (:func:`~flowscope.baseline.mixture_baseline`; per class for a conditional model),
      in the same units;
    - n samples (on other data than the Olympic rings, where W2 alone uses them, no more
      than the test part holds) drawn with ``torch.Generator().manual_seed(seed)``; a
      conditional model gets the test points' labels in their order (cycled where n
      exceeds them), so that its samples mix the classes as the test points do; flow matching
      integrates with ``dt`` and ``solver``;
    - W2 (:func:`~flowscope.metrics.wasserstein2`) between min(n, test size) samples and as
      many test points, and its noise floor at that size, mean and standard deviation over
      ``floor_pairs`` pairs (:func:`noise_floor`): for registry data, pairs of fresh draws
      of the data (seeds from ``data seed + 3 + 2 * floor_pairs * seed`` on, never the
      run's own); for file data, pairs of disjoint random subsets of the test part
      (halves when it holds fewer than twice as many points);
    - for the Olympic data: ring precision, offsets, coverage of the samples and, for a
      conditional model, class accuracy (overall and per ring);
    - round-trip error (:func:`~flowscope.metrics.round_trip_error`) of the first
      min(n, 1000) test points (flow matching: ``dt`` and ``solver``);
    - with ``nfe``: W2 between min(n, test size) samples and as many test points for
      each Euler step count and dopri5 (:func:`~flowscope.metrics.w2_by_nfe`; one row,
      one pass, for a normalizing flow) and, for a type that integrates an ODE, the
      straightness and normalized path energy of those points' paths
      (:func:`~flowscope.metrics.path_metrics`, :data:`PATH_STEPS` Euler steps).

    A model whose source has no density (a file, most toy sets) gets no NLL: its
    ``nll_*`` values are ``None`` and ``nll_method`` says why.

    On a test part of fewer than :data:`FEW_TEST_POINTS` points a ``UserWarning`` says
    how little it can tell (the NLL's standard error; W2 on so few points).

    Arguments:
        run_dir: a run folder written by ``flowscope train``.
        n: number of samples, >= 2.
        seed: seed of the samples and of the noise-floor draws, >= 0.
        dt: step of the flow-matching sampling and round trip, in (0, 1] (default: the
            type's own sampler's where it declares one, a mean flow's one step,
            :attr:`~flowscope.models.ModelType.sampler`; else the study's 1e-3).
        solver: ODE solver of the flow-matching sampling and round trip.
        nll_kwargs: passed to ``log_prob`` where the model type takes them
            (:attr:`~flowscope.models.ModelType.likelihood_options`: ``solver``,
            ``steps``, ``divergence`` of flow matching).
        floor_pairs: pairs of draws of the W2 noise floor, >= 0; 0 skips it (the floor
            keys are then ``None``, for a caller that computes its own).
        device: where the model computes (the metrics are computed on the CPU).
        nfe: Euler step counts for the W2-by-evaluations table (e.g.
            :data:`DEFAULT_NFE`), or ``None`` to skip it.
        baseline: also fit and score the Gaussian-mixture baseline.
        guidance: the classifier-free guidance scale w of the samples (W2, ring metrics
            and class accuracy) of a conditional flow-matching model trained with label
            dropout (:mod:`flowscope.matching.guidance`); ``None``: w = 1, the model
            itself. The NLL, round trip and ``nfe`` rows are the unguided model's (a
            guided field has no normalized density).
        per_point: also return each test point's NLL (``nll_per_point``), for paired
            comparisons of runs on the same test points (:func:`paired_nll`).

    Returns:
        A dict of plain values; ``None`` marks a metric that does not apply (or an
        infinite NLL). Keys: ``run``, ``model``, ``kind``, ``data`` (the source of the
        test points), ``data_run`` (for a rectified flow, the ancestor run whose data it
        is measured against; else ``None``), ``conditional``,
        ``n`` (the samples drawn), ``n_asked`` (the ``n`` given), ``seed``,
        ``sampler``; ``test_sha256`` (of the test points' float32 bytes:
        two results with the same one were measured on the same points);
        ``nll_standardized``, ``nll_data`` (nats per point),
        ``nll_sem`` (the standard error of ``nll_data``, nats per point: the per-point
        NLL's standard deviation over sqrt(``nll_points``)),
        ``standardized_per_class`` (whether ``nll_standardized`` is in each class's own
        coordinates, which differ from another model's), ``nll_points``, ``nll_method``,
        ``nll_seconds``; ``gmm_nll_data``, ``gmm_nll_standardized`` (the baseline's, nats
        per point), ``gmm_components`` (a list, one per class for a conditional model),
        ``gmm_train_points``, ``gmm_model_train_points`` (the model's, of which the
        baseline may fit a subsample), ``gmm_seconds``, ``gmm_collapsed_components``,
        ``gmm_collapsed_test_points`` (components collapsed onto repeated values, and the
        test points on them: :class:`~flowscope.baseline.MixtureBaseline`),
        ``gmm_gap_sem`` (the paired standard error of ``gmm_nll_data - nll_data``, over
        the same test points) (all ``None`` without ``baseline``); with ``per_point``,
        ``nll_per_point`` (a list, -log p of each test point in data units, ``None``
        where the model has no density); ``w2``,
        ``w2_noise_floor`` (the mean over the pairs),
        ``w2_noise_floor_std``, ``w2_noise_floor_pairs``, ``w2_points``,
        ``w2_noise_floor_points`` (data units); ``ring_precision``, ``ring_mean_offset``,
        ``ring_max_offset``, ``ring_coverage``, ``class_accuracy`` and
        ``class_accuracy_<ring>`` per class; ``round_trip_mean``, ``round_trip_max``
        (data units), ``round_trip_points``; with ``nfe``: ``nfe_curve`` (a list of
        ``{"solver", "nfe", "w2", "in_band", "seconds"}``; ``in_band``, the share of the
        samples in a ring's band, for the Olympic data only, else ``None``),
        ``straightness``, ``path_energy``,
        ``path_w2_squared``, ``npe`` (``None`` for a one-pass type); ``seconds`` (the
        whole evaluation).

    Raises:
        RunError: if the folder is not a loadable run.
        MissingDependency: with ``baseline``, if scikit-learn is not installed.
        ValueError: for a bad ``n``, ``seed``, ``dt``, ``solver`` or ``floor_pairs``, a
            ``guidance`` the model does not take, or (from
            :func:`~flowscope.runs.run_data`) a data file too small for a test part.

    Example:
        ``evaluate_run("runs/nf")["nll_standardized"]``
    """
    n = check_int(n, "n", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    floor_pairs = check_int(floor_pairs, "floor_pairs", minimum=0)
    counts = None if nfe is None else [check_int(k, "nfe") for k in nfe]
    t_start = time.perf_counter()
    model, info = load_run(run_dir, device)
    entry = model_type_of(info)
    if dt is None:
        dt = entry.sampler.get("dt", DEFAULT_DT)
    sampling = entry.sampling(dt=dt, solver=solver)
    if guidance is not None:
        if not entry.takes("guidance"):
            raise ValueError(f"guidance steers a conditional flow-matching model, not {entry.name}")
        model.guidance_scale(guidance)  # checked before the long computations
        sampling["guidance"] = guidance
    if "dt" in sampling:
        time_grid(dt)  # check dt before the long computations
    conditional = model.num_classes is not None
    data_run, data_info = _data_run(run_dir, info)
    test = run_data(data_info, "test")
    labels_test = test.labels if conditional else None
    result: dict[str, Any] = {
        "run": str(run_dir),
        "model": entry.name,
        "kind": info.kind,
        "data": str(data_info.data["source"]),
        "data_run": None if data_info is info else str(data_run),
        "conditional": conditional,
        "n": n,
        "seed": seed,
        "sampler": _sampler_text(sampling),
        "test_sha256": hashlib.sha256(test.x.float().contiguous().numpy().tobytes()).hexdigest(),
    }
    likelihood, nll_points = _likelihood(model, entry, test.x, labels_test, nll_kwargs or {})
    result.update(likelihood)
    if per_point:
        result["nll_per_point"] = None if nll_points is None else nll_points.tolist()
    if baseline:
        result.update(_baseline(model, data_info, test.x, labels_test, nll_points))
    else:
        result.update(_NO_BASELINE)
    rings = result["data"] == "olympic"  # the ring metrics, here and in the nfe rows
    # Without the ring metrics, W2 alone uses the samples: no more than the test points.
    drawn = n if rings else min(n, len(test.x))
    result.update(n=drawn, n_asked=n)
    gen = torch.Generator().manual_seed(seed)
    # The test points' classes, in their order: W2 compares samples[:m] with test.x[:m],
    # so each sample is of the class of the test point it stands beside (balanced labels
    # would compare another mixture of the classes on unbalanced data).
    labels = None
    if conditional:
        labels = labels_test[torch.arange(drawn) % len(labels_test)].cpu()
    samples = model.sample(drawn, labels=labels, generator=gen, **sampling).cpu()
    check_finite(samples, "samples", str(run_dir))
    result.update(_distance(samples, test.x, data_info, seed, floor_pairs, labels_test))
    if rings:
        result.update(_rings(samples, labels))
    else:
        result.update(ring_precision=None, ring_mean_offset=None, ring_max_offset=None)
        result.update(ring_coverage=None, class_accuracy=None)
    r = min(n, 1000, len(test.x))
    rt = metrics.round_trip_error(
        model, test.x[:r], None if labels_test is None else labels_test[:r], dt=dt, solver=solver
    )
    result.update(round_trip_mean=rt.mean, round_trip_max=rt.max, round_trip_points=r)
    if counts is not None:
        m = min(n, len(test.x))
        labels_m = None if labels_test is None else labels_test[:m]
        result.update(_paths(model, test.x[:m], labels_m, counts, seed, rings))
    result["seconds"] = time.perf_counter() - t_start
    if len(test.x) < FEW_TEST_POINTS:
        registry = result["data"] == "olympic" or result["data"] in DATASETS
        warnings.warn(_few_points_note(result, len(test.x), registry), stacklevel=2)
    return {k: _json_safe(v) for k, v in result.items()}


def _few_points_note(r: dict[str, Any], n: int, registry: bool) -> str:
    """What a test part of n < :data:`FEW_TEST_POINTS` points cannot tell; ``registry``:
    the run's data are drawn (more test points are a training option away)."""
    text = f"{r['run']}: its test part has only {n} point{'s' if n != 1 else ''}"
    if r.get("nll_sem") is not None:
        text += (
            f", so the held-out NLL is known to ± {r['nll_sem']:.2f} nats/point (its "
            "standard error)"
        )
    floor = r.get("w2_noise_floor_points")
    floor = f" (and its noise floor, from {floor}-point draws)" if floor else ""
    more = (
        "train with more --holdout-points"
        if registry
        else "cross-validate over the whole file (flowscope.crossval)"
    )
    return (
        f"{text}; W2 between {r['w2_points']}-point sets{floor} ranks no models. Compare "
        "two models on these points by the paired standard error of their per-point NLLs "
        f"(flowscope.evaluate.paired_nll), or {more}"
    )


def _sampler_text(sampling: dict[str, Any]) -> str:
    """``euler, dt=0.001``, with ``, guidance w=1.5`` where guided; ``exact``: one pass."""
    if "dt" not in sampling:
        return "exact"
    guided = f", guidance w={sampling['guidance']:g}" if "guidance" in sampling else ""
    return f"{sampling.get('solver', 'euler')}, dt={sampling['dt']:g}{guided}"


def _paths(model, x, labels, counts: list[int], seed: int, rings: bool) -> dict[str, Any]:
    """The W2-by-evaluations rows (with ``rings``, their shares in a band) and the path
    metrics of :func:`evaluate_run`."""
    rows = metrics.w2_by_nfe(model, x, labels, nfe=counts, seed=seed, rings=rings)
    out: dict[str, Any] = {
        "nfe_curve": [
            {
                "solver": p.solver,
                "nfe": p.nfe,
                "w2": _json_safe(p.w2),
                "in_band": p.in_band,
                "seconds": p.seconds,
            }
            for p in rows
        ],
        "straightness": None,
        "path_energy": None,
        "path_w2_squared": None,
        "npe": None,
    }
    if rows[0].solver != "one pass":
        gen = torch.Generator().manual_seed(seed)
        pm = metrics.path_metrics(model, x, labels, steps=PATH_STEPS, generator=gen)
        out.update(
            straightness=pm.straightness,
            path_energy=pm.path_energy,
            path_w2_squared=pm.w2_squared,
            npe=_json_safe(pm.npe),
        )
    return out


def _likelihood(model, entry, x, labels, nll_kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The held-out NLL of :func:`evaluate_run`, with the options the type's likelihood
    takes, and each point's (data units; ``None`` for a model whose source has no
    density, whose dict says why)."""
    options = {k: v for k, v in nll_kwargs.items() if k in entry.likelihood_options}
    t0 = time.perf_counter()
    try:
        nll = metrics.heldout_nll(model, x, labels, **options)
    except NoDensity:
        none = dict(
            nll_standardized=None,
            nll_data=None,
            nll_sem=None,
            standardized_per_class=model.standardization.per_class,
            nll_points=0,
            nll_method="none: the model's source is known only by samples, it has no density",
            nll_seconds=0.0,
        )
        return none, None
    found = dict(
        nll_standardized=_json_safe(nll.standardized),
        nll_data=_json_safe(nll.data),
        nll_sem=nll.sem,
        standardized_per_class=model.standardization.per_class,
        nll_points=nll.n,
        nll_method=model.likelihood_method(**options),
        nll_seconds=time.perf_counter() - t0,
    )
    return found, nll.points


_NO_BASELINE = dict.fromkeys(
    (
        "gmm_nll_data",
        "gmm_nll_standardized",
        "gmm_components",
        "gmm_train_points",
        "gmm_model_train_points",
        "gmm_seconds",
        "gmm_collapsed_components",
        "gmm_collapsed_test_points",
        "gmm_gap_sem",
    )
)


def _baseline(model, info, x_test, labels_test, nll_points) -> dict[str, Any]:
    """The Gaussian-mixture baseline of :func:`evaluate_run`, fitted to the run's own
    training points and scored on its test points, and the paired standard error of its
    NLL less the model's (the model's per-point NLL ``nll_points``, data units, or
    ``None``)."""
    train = run_data(info, "train")
    b = mixture_baseline(
        train.x,
        x_test,
        None if labels_test is None else train.labels,
        labels_test,
        standardization=model.standardization,
    )
    return dict(
        gmm_nll_data=b.nll_data,
        gmm_nll_standardized=b.nll_standardized,
        gmm_components=list(b.components),
        gmm_train_points=b.train_points,
        gmm_model_train_points=len(train.x),
        gmm_seconds=b.seconds,
        gmm_collapsed_components=b.collapsed_components,
        gmm_collapsed_test_points=b.collapsed_test_points,
        gmm_gap_sem=None if nll_points is None else metrics.standard_error(b.points - nll_points),
    )


def _data_run(run_dir: str | Path, info: Any) -> tuple[Path, Any]:
    """The run whose data a run is measured against, and its info: the run itself, or for
    a rectified flow (``flowscope reflow``, trained on pairs drawn from its parent) the
    first ancestor trained on data, so that its numbers compare with its parent's. An
    ancestor that cannot be read any more leaves the run's own (its pairs' test part)."""
    run = Path(run_dir)
    while "parent" in info.extra:
        try:
            parent = Path(info.extra["parent"]["run"])
            parent_info = read_info(parent)
        except (KeyError, RunError):
            break
        run, info = parent, parent_info
    return run, info


def _distance(samples, test_x, info, seed: int, floor_pairs: int, labels=None) -> dict[str, Any]:
    """W2 between the samples and the test points, and its noise floor (see
    :func:`evaluate_run`); with the test points' ``labels`` (a conditional model, whose
    samples take them), each pair of subsets of a file's test part holds as many points
    of each class as the other."""
    source = str(info.data["source"])
    m = min(len(samples), len(test_x))
    out: dict[str, Any] = {"w2": metrics.wasserstein2(samples[:m], test_x[:m]), "w2_points": m}
    floor, k = None, m
    if floor_pairs and (source == "olympic" or source in DATASETS):
        base = int(info.data["seed"]) + 3 + 2 * floor_pairs * seed
        conditional = bool(info.data.get("conditional", False))
        floor = noise_floor(data_draw(source, conditional), m, seed=base, pairs=floor_pairs)
    elif floor_pairs:
        k = m if len(test_x) >= 2 * m else len(test_x) // 2
        if k >= 1:
            perm = torch.Generator().manual_seed(seed)
            orders = [torch.randperm(len(test_x), generator=perm) for _ in range(floor_pairs)]
            if labels is not None:  # the same classes in both halves of each pair
                orders, k = _stratified(orders, labels.cpu(), k)

            def subset(k: int, s: int) -> torch.Tensor:  # pair j: seeds 2j, 2j + 1
                start = (s % 2) * k  # the first or the second k points of permutation j
                return test_x[orders[s // 2][start : start + k]]

            floor = noise_floor(subset, k, seed=0, pairs=floor_pairs)
    out.update(
        w2_noise_floor=floor.mean if floor else None,
        w2_noise_floor_std=floor.std if floor else None,
        w2_noise_floor_pairs=len(floor.values) if floor else 0,
        w2_noise_floor_points=k if floor else None,
    )
    return out


def _stratified(
    orders: list[torch.Tensor], labels: torch.Tensor, k: int
) -> tuple[list[torch.Tensor], int]:
    """Each permutation of the test points reordered so that its first k points and its
    next k hold each class in the same number, the classes' shares of k (fewer points
    where a class has too few for both halves): the halves of the W2 noise floor of a
    conditional model, whose samples mix the classes as the test points do."""
    from .data import class_labels

    counts = torch.bincount(labels)
    want = torch.bincount(class_labels(k, counts.tolist()), minlength=len(counts))
    take = torch.minimum(want, counts // 2)
    out = []
    for order in orders:
        halves: list[list[torch.Tensor]] = [[], []]
        for c in range(len(counts)):
            mine = order[labels[order] == c]
            halves[0].append(mine[: take[c]])
            halves[1].append(mine[take[c] : 2 * take[c]])
        out.append(torch.cat([torch.cat(halves[0]), torch.cat(halves[1])]))
    return out, int(take.sum())


def _rings(samples, labels) -> dict[str, Any]:
    """The Olympic data's geometry: ring precision, offsets, coverage and, with labels,
    the class accuracy overall and per ring."""
    prec = metrics.ring_precision(samples)
    out: dict[str, Any] = dict(
        ring_precision=prec.precision,
        ring_mean_offset=prec.mean_offset,
        ring_max_offset=prec.max_offset,
        ring_coverage=metrics.ring_coverage(samples),
        class_accuracy=None,
    )
    if labels is not None:
        acc = metrics.class_accuracy(samples, labels)
        out["class_accuracy"] = acc.overall
        for name, v in zip(RING_NAMES, acc.per_class, strict=True):
            out[f"class_accuracy_{name}"] = _json_safe(v)
    return out


def _count(n: int, noun: str) -> str:
    """``1 test point``, ``13 test points``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _pm(se: float | None) -> str:
    """`` ± 0.0123``: a standard error beside a value, or nothing without one."""
    return "" if se is None else f" ± {se:.4f}"


def _fmt(v: Any, spec: str = ".4f") -> str:
    """A table's value: ``spec`` for a float, in 4 significant digits beyond 1e6 (data of
    a large scale) so that the table keeps its width; ``n/a`` for ``None``."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, ".4g" if spec == ".4f" and abs(v) >= 1e6 else spec)
    return str(v)


def format_table(result: dict[str, Any]) -> str:
    """A readable table of an :func:`evaluate_run` result (metric, value, units)."""
    r = result
    per_class = r.get("standardized_per_class")
    # A conditional model's NLL is -log p(x | class): it compares with other conditional
    # models only (it is lower than an unconditional one by up to log(classes)).
    compare = (
        "compare conditional models here, not with unconditional ones"
        if r.get("conditional")
        else "compare models here"
    )
    rows: list[tuple[str, str, str]] = [
        (
            "held-out NLL, data units" + (", given the class" if r.get("conditional") else ""),
            _fmt(r["nll_data"]) + _pm(r.get("nll_sem")),
            f"nats/point{' ± standard error' if r.get('nll_sem') is not None else ''} "
            f"({_count(r['nll_points'], 'test point')}, {r['nll_method']}, "
            f"{r['nll_seconds']:.1f} s); {compare}",
        ),
        (
            "held-out NLL, standardized",
            _fmt(r["nll_standardized"]),
            "nats/point, each class standardized by its own mean and sd"
            if per_class
            else "nats/point, in the model's standardized coordinates",
        ),
    ]
    rows += _baseline_rows(r)
    rows += [
        (
            "W2, samples vs test",
            _fmt(r["w2"]),
            f"data units ({_count(r['w2_points'], 'point')} each)",
        ),
    ]
    if r.get("w2_noise_floor") is not None:
        rows.append(
            (
                "W2 noise floor, data vs data",
                f"{_fmt(r['w2_noise_floor'])} ± {_fmt(r['w2_noise_floor_std'])}",
                f"data units (mean ± sd over {r['w2_noise_floor_pairs']} pairs of "
                f"{r['w2_noise_floor_points']}-point draws)",
            )
        )
    if r.get("ring_precision") is not None:
        rows += [
            ("ring precision", _fmt(r["ring_precision"]), "share of samples in a ring's band"),
            ("  offset of the others, mean", _fmt(r["ring_mean_offset"]), "data units"),
            ("  offset of the others, max", _fmt(r["ring_max_offset"]), "data units"),
            ("ring coverage", _fmt(r["ring_coverage"]), "share of 5 x 36 (ring, angle) cells"),
        ]
    if r.get("class_accuracy") is not None:
        rows.append(("class accuracy", _fmt(r["class_accuracy"]), "share in own ring's band"))
        for name in RING_NAMES:
            rows.append((f"  {name}", _fmt(r.get(f"class_accuracy_{name}")), ""))
    rows += [
        (
            "round trip, mean",
            _fmt(r["round_trip_mean"], ".2e"),
            f"data units ({r['round_trip_points']} test points to the latent and back; "
            + (
                "exact but for rounding)"
                if r["sampler"] == "exact"
                else f"the error of the ODE's steps, {r['sampler'].split(', guidance')[0]}, "
                "both ways)"
            ),
        ),
        ("round trip, max", _fmt(r["round_trip_max"], ".2e"), "data units"),
    ]
    head = (
        f"{r['run']}: {r['model']} on {r['data']}"
        + (
            f" (the data of {r['data_run']}, which it was rectified from)"
            if r.get("data_run")
            else ""
        )
        + f", {r['n']} samples "
        f"(seed {r['seed']}, sampler {r['sampler']}), {r['seconds']:.1f} s"
        + (
            f" (-n {r['n_asked']} asked, but W2 compares as many samples as test points, {r['n']})"
            if r.get("n_asked", r["n"]) > r["n"]
            else ""
        )
    )
    return head + "\n" + text_table([("metric", "value", "units"), *rows], align="lrl")


def baseline_verdict(
    gap: float,
    se: float | None,
    n: int,
    points: str = "test point",
    error: str = "paired standard error",
) -> str:
    """Whether a model beats the Gaussian-mixture baseline, in words.

    Arguments:
        gap: the mixture's NLL less the model's (nats per point; positive: the model is
            better), a mean over n values.
        se: its standard error (``None`` when unknown); the two are told apart when
            ``gap`` leaves the 95% interval around 0 (Student's t on n - 1 degrees of
            freedom).
        n: the values ``gap`` is the mean of.
        points: what they are, singular (``"test point"``, ``"fold"``).
        error: what ``se`` is, for the text.

    Returns:
        a clause: ``the model is 0.0200 ± 0.0315 nats/point (paired standard error)
        better, ...``.
    """
    by = f"{abs(gap):.4f}{_pm(se)} nats/point" + (f" ({error})" if se else "")
    reach = None if se is None else metrics.t95(n - 1) * se  # a two-sided 95% interval's half
    if se is None and n < FEW_TEST_POINTS:
        text = f"the model is {by} {'better' if gap > 0 else 'worse'} on {_count(n, points)}"
        return text + (": too few to tell the two apart" if n == 1 else "")
    if reach is not None and abs(gap) < reach:
        return (
            f"the model is {by} {'better' if gap > 0 else 'worse'}, inside the 95% "
            f"interval of ± {reach:.4f} around no difference (Student's t on {n - 1} "
            f"degrees of freedom): these {points}s do not tell the two apart"
        )
    if gap > 0:
        return f"the model is {by} better"
    return f"the model is {by} WORSE: the mixture fits these data better"


def _baseline_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The Gaussian-mixture baseline's rows of :func:`format_table`, and by how much the
    model beats it (none without a baseline)."""
    if r.get("gmm_nll_data") is None:
        return []
    comps = r["gmm_components"]
    k = (
        f"{comps[0]} component{'s' if comps[0] != 1 else ''}"
        if len(comps) == 1
        else (f"{'/'.join(map(str, comps))} components per class")
    )
    verdict = ""
    if r.get("nll_data") is not None:
        gap = r["gmm_nll_data"] - r["nll_data"]
        verdict = "; " + baseline_verdict(gap, r.get("gmm_gap_sem"), r["nll_points"])
    rows = [
        (
            "  Gaussian mixture baseline, data units",
            _fmt(r["gmm_nll_data"]),
            f"nats/point (scikit-learn, {k} by BIC, fitted to "
            f"{_fitted_to(r['gmm_train_points'], r.get('gmm_model_train_points'))}){verdict}",
        ),
        (
            "  Gaussian mixture baseline, standardized",
            _fmt(r["gmm_nll_standardized"]),
            "nats/point, in the model's standardized coordinates",
        ),
    ]
    spikes = r.get("gmm_collapsed_components") or 0
    on = r.get("gmm_collapsed_test_points") or 0
    if spikes and on:
        rows.append(
            (
                "  test points on collapsed components",
                str(on),
                f"test point{'s' if on != 1 else ''} on {_count(spikes, 'component')} of the "
                "mixture collapsed onto repeated values of the training points (a spread at "
                "scikit-learn's covariance floor); a density can be made as high as wished "
                "there, so the mixture's score on them measures that floor, not the data",
            )
        )
    return rows


def format_nfe_table(result: dict[str, Any]) -> str:
    """The W2-by-evaluations rows and path metrics of an :func:`evaluate_run` result made
    with ``nfe`` (empty text without them)."""
    rows = result.get("nfe_curve")
    if not rows:
        return ""
    band = rows[0].get("in_band") is not None  # the rings: each row's share in a band
    body = [
        (p["solver"], str(p["nfe"]), _fmt(p["w2"]))
        + ((f"{100 * p['in_band']:.1f}%",) if band else ())
        + (f"{p['seconds']:.2f}",)
        for p in rows
    ]
    head = ("solver", "NFE", "W2") + (("in a band",) if band else ()) + ("seconds",)
    points = result.get("w2_points")
    text = (
        f"W2 to {points} test points by function evaluations (data units; each row draws "
        f"its own {points} samples, so that a row and the W2 above differ by sampling noise)\n"
    )
    text += text_table([head, *body], align="l" + "r" * (len(head) - 1))
    if result.get("straightness") is not None:
        text += (
            f"\npaths ({PATH_STEPS} Euler steps; squared data units, NPE a ratio): straightness "
            f"{result['straightness']:.4f}, path energy {result['path_energy']:.4f}, "
            f"W2^2 source to data {result['path_w2_squared']:.4f}, NPE {_fmt(result['npe'])}"
        )
    return text


def format_nfe_side_by_side(results: Sequence[dict[str, Any]], counts: Sequence[int]) -> str:
    """The W2-by-evaluations rows of several :func:`evaluate_run` results made with
    ``nfe=counts``, side by side: a row per Euler step count (then dopri5, with each
    run's evaluation count), a column per run with its W2 and, on the rings, its share
    in a band; a one-pass model fills its own row."""

    def cell(p: dict[str, Any] | None, nfe: bool = False) -> str:
        if p is None:
            return "—"
        text = _fmt(p["w2"]) + (
            f" ({p['in_band'] * 100:.1f}%)" if p.get("in_band") is not None else ""
        )
        return text + (f", NFE {p['nfe']}" if nfe else "")

    def of(result: dict[str, Any], solver: str, i: int = 0) -> dict[str, Any] | None:
        rows = [p for p in result.get("nfe_curve") or [] if p["solver"] == solver]
        return rows[i] if i < len(rows) else None

    names = [str(r["run"]) for r in results]  # as the user named them
    body = [
        (f"euler, {k} step{'s' * (k != 1)}", *(cell(of(r, "euler", i)) for r in results))
        for i, k in enumerate(counts)
    ]
    body.append(("dopri5", *(cell(of(r, "dopri5"), nfe=True) for r in results)))
    if any(of(r, "one pass") for r in results):
        body.append(("one pass", *(cell(of(r, "one pass")) for r in results)))
    band = any(p.get("in_band") is not None for r in results for p in r.get("nfe_curve") or [])
    sizes = sorted({r.get("w2_points") for r in results}, key=str)
    title = f"W2 to {'/'.join(map(str, sizes))} test points by sampler, side by side (data units"
    title += "; in brackets: the share in a band)\n" if band else ")\n"
    data = {str(r["data"]) for r in results}
    if len(data) > 1:  # say so, rather than set unlike numbers side by side silently
        title += f"note: the runs' test points are of different data ({', '.join(sorted(data))})\n"
    return title + text_table([("sampler", *names), *body], align="l" + "r" * len(names))


def paired_nll(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The NLL of run ``b`` less that of run ``a`` (data units, nats per point), from two
    :func:`evaluate_run` results made with ``per_point`` on the same test points, with
    its paired standard error; ``None`` where they cannot be paired (other test points,
    a model without a density, or a conditional model beside an unconditional one, whose
    NLLs measure different things).

    Returns:
        ``{"difference", "sem", "points", "reach"}``: ``reach`` is the half-width of the
        95% interval of the difference (Student's t on ``points - 1`` degrees of
        freedom), ``None`` with ``sem`` on one point.
    """
    if a.get("test_sha256") != b.get("test_sha256") or a["conditional"] != b["conditional"]:
        return None
    pa, pb = a.get("nll_per_point"), b.get("nll_per_point")
    if pa is None or pb is None:
        return None
    diff = torch.tensor(pb, dtype=torch.float64) - torch.tensor(pa, dtype=torch.float64)
    if not bool(torch.isfinite(diff).all()):
        return None
    se = metrics.standard_error(diff)
    reach = None if se is None else metrics.t95(len(diff) - 1) * se
    return {"difference": float(diff.mean()), "sem": se, "points": len(diff), "reach": reach}


def format_paired(results: Sequence[dict[str, Any]]) -> str:
    """Each run's NLL against the first run's, on the same test points (:func:`paired_nll`):
    a row per other run, or a line saying why none can be paired (empty for one run)."""
    if len(results) < 2:
        return ""
    first, rows = results[0], []
    for r in results[1:]:
        p = paired_nll(first, r)
        if p is None:
            if r.get("test_sha256") != first.get("test_sha256"):
                why = "measured on other test points (other data, seed or split)"
            elif r["conditional"] != first["conditional"]:
                why = "one is conditional: -log p(x | class) is not -log p(x)"
            else:
                why = "no NLL to pair (a model without a density, or an infinite NLL)"
            rows.append((str(r["run"]), "n/a", why))
            continue
        gap = p["difference"]
        told = (
            "apart"
            if p["reach"] is not None and abs(gap) >= p["reach"]
            else "not told apart by these test points"
        )
        if gap == 0 and not p["sem"]:  # every point's NLL the same (the same model)
            told = "identical NLLs on every test point"
        elif told == "apart":
            told = f"{'worse' if gap > 0 else 'better'} than {first['run']}"
        interval = "" if not p["reach"] else f", 95% interval ± {p['reach']:.4f}"
        rows.append((str(r["run"]), f"{gap:+.4f}{_pm(p['sem'])}", f"{told}{interval}"))
    points = first.get("nll_points")
    head = (
        f"held-out NLL against {first['run']}, paired on the same {_count(points, 'test point')} "
        "(nats/point, data units, ± paired standard error; lower is better)"
    )
    return head + "\n" + text_table([("run", "NLL difference", ""), *rows], align="lrl")


def plot_nfe(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Draw W2 against the function evaluations of one or more :func:`evaluate_run`
    results made with ``nfe`` (Euler as a line, dopri5 and one-pass models as points) and
    save the figure to ``path`` (its suffix chooses the format)."""
    from matplotlib.figure import Figure  # the object interface: no global state

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for r in results:
        rows = r.get("nfe_curve") or []
        euler = [p for p in rows if p["solver"] == "euler"]
        folder = Path(str(r["run"])).name
        label = r["model"] if folder == r["model"] else f"{r['model']} ({folder})"
        if euler:
            (line,) = ax.plot(
                [p["nfe"] for p in euler], [p["w2"] for p in euler], "o-", label=label
            )
            colour = line.get_color()
        else:
            colour = None
        for p in rows:
            if p["solver"] != "euler":
                marker = "*" if p["solver"] == "dopri5" else "s"
                ax.plot(
                    [p["nfe"]],
                    [p["w2"]],
                    marker,
                    color=colour,
                    ms=10,
                    label=f"{label if colour is None else ''} {p['solver']}".strip(),
                )
    ax.set_xscale("log")
    ax.set_xlabel("function evaluations per sample")
    ax.set_ylabel("W2 to held-out data (data units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png")
    atomic_write(path, buf.getvalue())
    return path


def _fitted_to(fitted: int, trained: int | None) -> str:
    """What the baseline was fitted to: the model's training points, or a subsample."""
    if trained is None or fitted >= trained:
        return f"the same {fitted} training points"
    return f"{fitted} of the model's {trained:,} training points (a random subsample)"
