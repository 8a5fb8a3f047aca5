"""Evaluate a trained run folder: the ``flowscope eval`` command and :func:`evaluate_run`.

Every number comes from :mod:`flowscope.metrics`; this module only chooses the points
(the run's held-out test part, seeded samples) and lays the results out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import metrics
from .cli import CommandError, add_command, int_type, text_table
from .data import DATASETS, RING_NAMES, check_int, make_dataset
from .matching import FlowMatching, time_grid
from .runs import atomic_write, load_run, run_data

__all__ = ["evaluate_run", "format_table", "add_commands"]


def _json_safe(value: Any) -> Any:
    """JSON has no inf or NaN: such floats become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_run(
    run_dir: str | Path,
    *,
    n: int = 2000,
    seed: int = 0,
    dt: float = 1e-3,
    solver: str = "euler",
    nll_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All metrics of a trained run, as a flat JSON-safe dict.

    What is measured:

    - held-out NLL (:func:`~flowscope.metrics.heldout_nll`) on the run's whole test part
      (:func:`~flowscope.runs.run_data`; ``holdout_points`` points, 10,000 by default,
      drawn with a seed the training never used), class-conditional for a conditional
      model; a flow-matching model uses ``rk4``, 100 steps, exact divergence unless
      ``nll_kwargs`` says otherwise (about 7 s for 10,000 points on one CPU thread);
    - n samples drawn with ``torch.Generator().manual_seed(seed)``; a conditional model
      gets balanced labels ``arange(n) % num_classes``; flow matching integrates with
      ``dt`` and ``solver``;
    - W2 (:func:`~flowscope.metrics.wasserstein2`) between min(n, test size) samples and as
      many test points, and its noise floor at that size: for registry data, two fresh
      draws of the data (seeds ``data seed + 3 + 2 * seed`` and one more, never the run's
      own); for file data, two disjoint random subsets of the test part (halves when it
      holds fewer than twice as many points);
    - for the Olympic data: ring precision, offsets, coverage of the samples and, for a
      conditional model, class accuracy (overall and per ring);
    - round-trip error (:func:`~flowscope.metrics.round_trip_error`) of the first
      min(n, 1000) test points (flow matching: ``dt`` and ``solver``).

    Arguments:
        run_dir: a run folder written by ``flowscope train``.
        n: number of samples, >= 2.
        seed: seed of the samples and of the noise-floor draws, >= 0.
        dt: step of the flow-matching sampling and round trip, in (0, 1].
        solver: ODE solver of the flow-matching sampling and round trip.
        nll_kwargs: passed to ``log_prob`` of a flow-matching model (``solver``,
            ``steps``, ``divergence``).

    Returns:
        A dict of plain values; ``None`` marks a metric that does not apply (or an
        infinite NLL). Keys: ``run``, ``model``, ``kind``, ``data``, ``conditional``,
        ``n``, ``seed``, ``sampler``; ``nll_standardized``, ``nll_data`` (nats per point),
        ``nll_points``, ``nll_method``, ``nll_seconds``; ``w2``, ``w2_noise_floor``,
        ``w2_points``, ``w2_noise_floor_points`` (data units); ``ring_precision``,
        ``ring_mean_offset``, ``ring_max_offset``, ``ring_coverage``, ``class_accuracy``
        and ``class_accuracy_<ring>`` per class; ``round_trip_mean``, ``round_trip_max``
        (data units), ``round_trip_points``; ``seconds`` (the whole evaluation).

    Raises:
        RunError: if the folder is not a loadable run.
        ValueError: for a bad ``n``, ``seed``, ``dt`` or ``solver``, or (from
            :func:`~flowscope.runs.run_data`) a data file too small for a test part.

    Example:
        ``evaluate_run("runs/nf")["nll_standardized"]``
    """
    n = check_int(n, "n", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    t_start = time.perf_counter()
    model, info = load_run(run_dir)
    is_fm = isinstance(model, FlowMatching)
    if is_fm:
        time_grid(dt)  # check dt before the long computations
    source = str(info.data["source"])
    conditional = model.num_classes is not None
    test = run_data(info, "test")
    labels_test = test.labels if conditional else None
    result: dict[str, Any] = {
        "run": str(run_dir),
        "model": str(info.extra.get("name", info.kind)),
        "kind": info.kind,
        "data": source,
        "conditional": conditional,
        "n": n,
        "seed": seed,
        "sampler": f"{solver}, dt={dt:g}" if is_fm else "exact",
    }

    # Held-out likelihood.
    nll_kwargs = dict(nll_kwargs or {}) if is_fm else {}
    if is_fm:
        nll_kwargs.setdefault("solver", "rk4")
        nll_kwargs.setdefault("steps", 100)
        nll_kwargs.setdefault("divergence", "exact")
    t0 = time.perf_counter()
    nll = metrics.heldout_nll(model, test.x, labels_test, **nll_kwargs)
    result.update(
        nll_standardized=_json_safe(nll.standardized),
        nll_data=_json_safe(nll.data),
        nll_points=nll.n,
        nll_method=(
            f"{nll_kwargs['solver']}, {nll_kwargs['steps']} steps, "
            f"{nll_kwargs['divergence']} divergence"
            if is_fm
            else "exact"
        ),
        nll_seconds=time.perf_counter() - t0,
    )

    # Samples.
    gen = torch.Generator().manual_seed(seed)
    labels = None
    if conditional:
        labels = torch.arange(n) % model.num_classes
    if is_fm:
        samples = model.sample(n, dt=dt, labels=labels, solver=solver, generator=gen)
    else:
        samples = model.sample(n, generator=gen)

    # W2 and its noise floor.
    m = min(n, len(test.x))
    result["w2"] = metrics.wasserstein2(samples[:m], test.x[:m])
    result["w2_points"] = m
    if source == "olympic" or source in DATASETS:

        def draw(k: int, s: int) -> torch.Tensor:
            return make_dataset(source, k, conditional=conditional, seed=s).x

        base = int(info.data["seed"]) + 3 + 2 * seed
        result["w2_noise_floor"] = metrics.w2_noise_floor(draw, m, seed=base)
        result["w2_noise_floor_points"] = m
    else:
        k = m if len(test.x) >= 2 * m else len(test.x) // 2
        if k >= 1:
            order = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(seed))
            x = test.x[order]
            result["w2_noise_floor"] = metrics.wasserstein2(x[:k], x[k : 2 * k])
        else:
            result["w2_noise_floor"] = None
        result["w2_noise_floor_points"] = k

    # The Olympic data's geometry.
    olympic = source == "olympic"
    prec = metrics.ring_precision(samples) if olympic else None
    result.update(
        ring_precision=prec.precision if prec else None,
        ring_mean_offset=prec.mean_offset if prec else None,
        ring_max_offset=prec.max_offset if prec else None,
        ring_coverage=metrics.ring_coverage(samples) if olympic else None,
        class_accuracy=None,
    )
    if olympic and conditional:
        acc = metrics.class_accuracy(samples, labels)
        result["class_accuracy"] = acc.overall
        for name, v in zip(RING_NAMES, acc.per_class, strict=True):
            result[f"class_accuracy_{name}"] = _json_safe(v)

    # Invertibility.
    r = min(n, 1000, len(test.x))
    rt = metrics.round_trip_error(
        model, test.x[:r], None if labels_test is None else labels_test[:r], dt=dt, solver=solver
    )
    result.update(round_trip_mean=rt.mean, round_trip_max=rt.max, round_trip_points=r)
    result["seconds"] = time.perf_counter() - t_start
    return {k: _json_safe(v) for k, v in result.items()}


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_table(result: dict[str, Any]) -> str:
    """A readable table of an :func:`evaluate_run` result (metric, value, units)."""
    r = result
    rows: list[tuple[str, str, str]] = [
        (
            "held-out NLL, standardized",
            _fmt(r["nll_standardized"]),
            f"nats/point ({r['nll_points']} test points, {r['nll_method']}, "
            f"{r['nll_seconds']:.1f} s)",
        ),
        ("held-out NLL, data units", _fmt(r["nll_data"]), "nats/point"),
        ("W2, samples vs test", _fmt(r["w2"]), f"data units ({r['w2_points']} points each)"),
        (
            "W2 noise floor, data vs data",
            _fmt(r["w2_noise_floor"]),
            f"data units ({r['w2_noise_floor_points']} points each)",
        ),
    ]
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
            f"data units ({r['round_trip_points']} test points)",
        ),
        ("round trip, max", _fmt(r["round_trip_max"], ".2e"), "data units"),
    ]
    head = (
        f"{r['run']}: {r['model']} on {r['data']}, {r['n']} samples "
        f"(seed {r['seed']}, sampler {r['sampler']}), {r['seconds']:.1f} s"
    )
    return head + "\n" + text_table([("metric", "value", "units"), *rows], align="lrl")


def _eval(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    out = Path(args.json) if args.json else run_dir / "eval.json"
    if args.json and not out.parent.is_dir():
        raise CommandError(f"{out.parent}: folder does not exist; create it first")
    result = evaluate_run(run_dir, n=args.n, seed=args.seed)
    print(format_table(result))
    atomic_write(out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope eval``."""
    p = add_command(
        sub,
        "eval",
        "Measure a trained model: held-out NLL, W2 to the data, ring metrics, round trip.",
        "flowscope eval runs/nf --n 2000 --json runs/nf/eval.json",
        _eval,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by flowscope train")
    p.add_argument("--n", type=int_type(2), default=2000, help="samples to draw and compare (>= 2)")
    p.add_argument("--seed", type=int_type(0), default=0, help="seed of the samples (>= 0)")
    p.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default RUN_DIR/eval.json)"
    )
