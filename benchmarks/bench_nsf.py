"""Spline flows and class-conditional flows on the Olympic rings, beside zuko (issue 16).

For each seed, in one process:

- ``nsf``: the neural spline flow exactly as ``flowscope train nsf`` trains it
  (:func:`flowscope.runs.train_run` with the type's own recipe, 250,000 points); the
  held-out NLL on the run's 10,000 test points (drawn with seed + 2), in standardized
  nats as ``flowscope eval`` computes it; the training time; the float32 round trip
  max |decode(encode(x)) - x| (data units) over the 10,000 test points, the points at the
  first coupling's tail bound beside them (apart: far from the data, where the trained
  flow squeezes empty space, float32 cannot hold them), and the same in float64; over a
  201 x 201 grid of the whole box [-B, B]^2 (standardized), the share within 1e-5 and the
  largest miss in float32 and float64; the issue's set of 10,000 points (half test points,
  half at every coupling's knots and tail bound, :func:`round_trips`), each miss beside
  the reach of z's float32 rounding there; the log-densities of (4, 5), (1e3, -1e3) and
  (1e30, 0);
- ``zuko``: ``zuko.flows.NSF`` of the same size (as many transforms as couplings, the same
  bins, hidden widths and depth) on the same standardized training points, with the same
  batch size and learning rate, decayed by a cosine of the elapsed share of the time, for
  the same wall time as flowscope's training took; its NLL on the same test points in the
  same standardized coordinates, and its float32 round trip over the same grid;
- the training step of both at the same batch size, timed interleaved (forward, backward,
  Adam; flowscope's as its trainer runs it, zuko's in the plain loop of ``flowscope
  bench``): the median of the rounds' best times, in CPU time of this process (the wall
  time moves with the machine's other load) and in wall time;
- ``nf --conditional`` and ``nsf --conditional`` with each standardization asked for
  (``class``: each ring by its own mean and scale, the library's default; ``global``):
  the share of 5000 balanced samples in their own ring's band and the class-conditional
  NLL in the coordinates of the unconditional one (all training points standardized
  together), as ``benchmarks/bench_quality.py`` gives it for the conditional
  flow-matching model. The conditional affine flow has no fused kernel, so it trains
  with the spline flow's recipe (batch 512) rather than the study's batch 128.

Results go to ``benchmarks/results/nsf.json`` and ``nsf.md`` (rewritten after every seed,
so an interrupted run keeps what it measured).

Usage::

    python benchmarks/bench_nsf.py                        # seeds 0-4, about an hour
    python benchmarks/bench_nsf.py --no-conditional       # the same in two processes
    python benchmarks/bench_nsf.py --no-zuko --step-rounds 0 --name nsf_conditional
    python benchmarks/bench_nsf.py --seeds 0 --train epochs=2 --no-conditional   # a quick check
    python benchmarks/bench_nsf.py --seeds 0 --no-zuko --step-rounds 0 --no-conditional \
        --model couplings=6 --train epochs=12 --train lr=2e-3   # one row of the exploration
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowscope.bench import cpu_model
from flowscope.metrics import class_accuracy, heldout_nll
from flowscope.models import MODELS
from flowscope.runs import recipe, run_data, train_run
from flowscope.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
NLL_TARGET = 1.65  # nats, standardized (issue 16)
NLL_FLOOR = 1.562  # differential entropy of the standardized Olympic data, nats
ACCURACY_SAMPLES = 5000
FAR = ((4.0, 5.0), (1e3, -1e3), (1e30, 0.0))


def _machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "load_average_at_start": list(os.getloadavg()),
    }


def _zuko():
    try:
        import zuko
    except ImportError:
        return None
    return zuko


def zuko_nsf(zuko, model_config: dict):
    """zuko's NSF of the same size as a flowscope SplineFlow's config."""
    hidden = [model_config["hidden"]] * (model_config["linear_layers"] - 1)
    return zuko.flows.NSF(
        2,
        transforms=model_config["couplings"],
        bins=model_config["bins"],
        hidden_features=hidden,
    )


# -- round trips at the knots and the tail bound ---------------------------------------------


def knot_points(model, y: torch.Tensor, per_coupling: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points whose way through an unconditional spline flow meets a coupling's spline
    exactly at one of its knots: for each coupling, ``per_coupling`` of the standardized
    points y (N, D) are encoded up to that coupling, their transformed coordinate is set
    to each knot of the spline the coupling has there (the K - 1 interior knots and the
    tail bound -B and B), and the result is decoded back to data units. Built in float64.

    Returns (points (M, D) in data units, is_bound (M,) True at the tail bound)."""
    from flowscope.flows import Permutation

    twin = copy.deepcopy(model).double()
    layers, weights = list(twin.layers), twin.weights()
    y = y[:per_coupling].double()
    points, bound = [], []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if isinstance(layer, Permutation):
                continue
            h = y  # encode through the layers nearer the data (the last ones)
            for later, w in zip(reversed(layers[i + 1 :]), reversed(weights[i + 1 :]), strict=True):
                h = h.index_select(1, later.inv) if w is None else later.inverse(h, None, w)[0]
            h_l = h[:, : layer.split]
            widths = layer.spline(layer.conditioner(h_l, None, weights[i])).widths
            knots = (
                torch.cat([torch.zeros_like(widths[..., :1]), widths.cumsum(-1)], -1)
                - layer.tail_bound
            )  # (N, D_r, K + 1): -B, the interior knots, B
            for k in range(knots.shape[-1]):
                g = torch.cat([h_l, knots[..., k]], dim=1)
                for later, w in zip(layers[i + 1 :], weights[i + 1 :], strict=True):
                    g = later(g)[0] if w is None else later(g, None, w)[0]
                points.append(g)
                bound.append(torch.full((len(g),), k in (0, knots.shape[-1] - 1)))
    x = twin.standardization.inverse(torch.cat(points)).to(model.theta.dtype)
    return x, torch.cat(bound)


def rounding_reach(model, x: torch.Tensor) -> torch.Tensor:
    """How far one float32 rounding of the latent alone moves the decoded point (N,), data
    units: float32's eps * max(1, |z|_inf) * ||dx/dz||_inf, with the Jacobian of decode
    at z = encode(x) in float64. A round trip can miss by about this much however exact
    its arithmetic; a miss far above it would be the inverse's own error."""
    twin = copy.deepcopy(model).double()
    with torch.no_grad():
        z = twin.encode(x.double())
    zr = z.clone().requires_grad_()
    with torch.enable_grad():
        back = twin.standardization.inverse(twin._decode(zr))
        rows = [
            torch.autograd.grad(back[:, i].sum(), zr, retain_graph=True)[0]
            for i in range(x.shape[1])
        ]
    jac = torch.stack(rows, dim=1)  # (N, D, D): d x / d z
    eps = torch.finfo(torch.float32).eps
    return eps * z.abs().amax(dim=1).clamp_min(1.0) * jac.abs().sum(dim=2).amax(dim=1)


def round_trips(model, test_x: torch.Tensor, n: int = 10_000) -> dict:
    """The float32 round trip over n points (the issue's set): half test points, half at
    the couplings' knots and tail bounds (:func:`knot_points`); each part's largest miss
    in float32 and float64, and the misses beside :func:`rounding_reach`."""
    couplings = len(model.coupling_layers())
    positions = model.coupling_layers()[0].bins + 1
    per = max(1, (n // 2) // (couplings * positions))
    knots, is_bound = knot_points(model, model.standardization(test_x), per)
    x = torch.cat([test_x[: n - len(knots)], knots])
    part = torch.cat([torch.zeros(n - len(knots), dtype=torch.long), 1 + is_bound.long()])
    twin = copy.deepcopy(model).double()
    with torch.no_grad():
        miss = (model.decode(model.encode(x)) - x).abs().amax(dim=1).double()
        miss64 = (twin.decode(twin.encode(x.double())) - x.double()).abs().amax(dim=1)
    reach = rounding_reach(model, x)
    out = {"points": len(x), "per_coupling": per}
    for k, name in enumerate(("test", "knots", "bound")):
        m = part == k
        out[name] = {
            "points": int(m.sum()),
            "max": float(miss[m].max()),
            "share_within_1e-5": float((miss[m] <= 1e-5).double().mean()),
            "float64_max": float(miss64[m].max()),
        }
    missed = miss > 1e-5
    out["max"] = float(miss.max())
    out["float64_max"] = float(miss64.max())
    out["misses"] = int(missed.sum())
    # The largest miss over the rounding's reach there (a few: conditioning, not arithmetic).
    out["miss_over_reach_max"] = (
        float((miss[missed] / reach[missed]).max()) if missed.any() else 0.0
    )
    out["reach_where_missed_min"] = float(reach[missed].min()) if missed.any() else None
    return out


# -- the spline flow and zuko's --------------------------------------------------------------


def train_nsf(
    seed: int, n_points: int, config: TrainConfig, model_args: dict, tmp: Path
) -> tuple[dict, dict]:
    """One ``flowscope train nsf`` run and its numbers; also what zuko needs."""
    t0, c0 = time.perf_counter(), time.process_time()
    model, info, history = train_run(
        "nsf",
        tmp / f"nsf-{seed}",
        n_points=n_points,
        config=config,
        model_args=model_args,
        progress=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = run_data(info, "test")
    nll = heldout_nll(model, test.x)
    st = model.standardization
    bound = model.coupling_layers()[0].tail_bound
    corners = torch.tensor([[bound, bound], [-bound, -bound], [bound, 0.0], [0.0, -bound]])
    x = torch.cat([st.inverse(corners), test.x])  # the tail bound, then the test points
    back = model.decode(model.encode(x))
    twin = copy.deepcopy(model).double()
    back64 = twin.decode(twin.encode(x.double()))
    err = (back - x).abs().max(dim=1).values
    # The whole box [-B, B]^2 (standardized) on a 201 x 201 grid: mostly empty space,
    # where the flow squeezes (see benchmarks/README.md, "Round trips far from the data").
    g = torch.linspace(-bound, bound, 201)
    grid = st.inverse(torch.cartesian_prod(g, g))
    grid_err = (model.decode(model.encode(grid)) - grid).abs().max(dim=1).values
    grid64 = (twin.decode(twin.encode(grid.double())) - grid.double()).abs().max()
    far = model.log_prob(torch.tensor(FAR))
    trips = round_trips(model, test.x)
    steps = len(history.batch_loss)
    row = {
        "seed": seed,
        "nll": nll.standardized,
        "nll_data": nll.data,
        "train_s": history.seconds,
        "wall_s": wall,
        "cpu_s": cpu,
        "epochs": len(history.epochs),
        "steps": steps,
        "ms_per_step_in_run": 1e3 * history.seconds / steps,
        "nan": not all(math.isfinite(v) for v in history.batch_loss),
        "round_trip_max": float(err[len(corners) :].max()),
        "round_trip_points": len(x) - len(corners),
        "round_trip_bound_max": float(err[: len(corners)].max()),
        "round_trip_float64_max": float((back64 - x.double()).abs().max()),
        "round_trip_grid_share": float((grid_err <= 1e-5).double().mean()),
        "round_trip_grid_max": float(grid_err.max()),
        "round_trip_grid_float64_max": float(grid64),
        "round_trip_knots": trips,
        "far_log_prob": [float(v) for v in far],
        "val_curve": [e.get("val_loss") for e in history.epochs],
        "parameters": sum(p.numel() for p in model.parameters()),
        "load_average_after": list(os.getloadavg()),
    }
    train = run_data(info, "train")
    data = {
        "y": st(train.x).detach(),
        "y_test": st(test.x).detach(),
        "model": model.config(),
        "grid": grid,
        "standardization": st,
    }
    return row, data


def train_zuko(zuko, data: dict, config: TrainConfig, budget_s: float) -> dict:
    """zuko's NSF trained on the same standardized points for ``budget_s`` seconds, with
    the learning rate decayed by a cosine of the elapsed share of the budget (so that a
    change of the machine's load neither cuts the schedule short nor leaves it unfinished)."""
    torch.manual_seed(config.seed)
    flow = zuko_nsf(zuko, data["model"])
    y, bs = data["y"], config.batch_size
    opt = torch.optim.Adam(flow.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    steps, seen = 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    elapsed = 0.0
    while elapsed < budget_s:
        order = torch.randperm(len(y), generator=gen)
        for k in range(0, len(y), bs):
            for group in opt.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * elapsed / budget_s))
            loss = -flow().log_prob(y[order[k : k + bs]]).mean()
            if not math.isfinite(loss.item()):
                return {"nan": True, "steps": steps}
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, seen = steps + 1, seen + len(order[k : k + bs])
            elapsed = time.perf_counter() - t0
            if elapsed >= budget_s:
                break
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        lp = torch.cat([flow().log_prob(part) for part in data["y_test"].split(4096)])
        # The same box grid's float32 round trip through zuko's flow, in data units.
        st, t = data["standardization"], flow().transform
        grid_err = (st.inverse(t.inv(t(st(data["grid"])))) - data["grid"]).abs().amax(dim=1)
    return {
        "round_trip_grid_share": float((grid_err <= 1e-5).double().mean()),
        "round_trip_grid_max": float(grid_err.max()),
        "nll": float(-lp.double().mean()),
        "train_s": seconds,
        "train_cpu_s": cpu,
        "steps": steps,
        "epochs": seen / len(y),
        "ms_per_step_in_run": 1e3 * seconds / steps,
        "nan": not bool(torch.isfinite(lp).all()),
        "parameters": sum(p.numel() for p in flow.parameters()),
    }


def step_times(zuko, model_config: dict, batch: int, rounds: int, steps: int) -> dict:
    """ms per training step of flowscope's SplineFlow, as fit runs it (the fused kernel and
    Adam in C where :func:`flowscope.kernels.select` picks them) and on PyTorch operations
    (autograd and torch.optim.Adam, fit's fallback), and of zuko's NSF, interleaved."""
    from flowscope import kernels, olympic_rings
    from flowscope.flows import SplineFlow
    from flowscope.train import TrainConfig, _adam, _Stepper

    y = olympic_rings(batch * steps, seed=0)
    y = (y - y.mean(0)) / y.std(0)
    config = TrainConfig(batch_size=batch, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    contenders, chosen = {}, {}
    for name in ("flowscope", "flowscope-pytorch"):
        torch.manual_seed(0)
        ours = SplineFlow(**{k: v for k, v in model_config.items() if k != "num_classes"})
        choice = kernels.select(ours, y, None, batch) if name == "flowscope" else None
        fused = None if choice is None else choice.step
        chosen[name] = "pytorch" if fused is None else choice.name
        if choice is not None and choice.reason:
            chosen[name] += f" ({choice.reason})"
        step = _Stepper(ours, _adam(list(ours.parameters()), config.lr), fused, config, 0.0)
        contenders[name] = lambda b, step=step: step(b, None, gen)
    if zuko is not None:
        theirs = zuko_nsf(zuko, model_config)
        zopt = torch.optim.Adam(theirs.parameters(), lr=1e-3)

        def zuko_step(b: torch.Tensor) -> None:
            loss = -theirs().log_prob(b).mean()
            if math.isfinite(loss.item()):
                zopt.zero_grad()
                loss.backward()
                zopt.step()

        contenders["zuko"] = zuko_step
    batches = y.split(batch)
    for step in contenders.values():  # warm-up
        for b in batches[:5]:
            step(b)
    cpu = {name: [] for name in contenders}
    wall = {name: [] for name in contenders}
    for r in range(rounds):
        names = list(contenders)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            c0, w0 = time.process_time(), time.perf_counter()
            for b in batches:
                contenders[name](b)
            cpu[name].append(1e3 * (time.process_time() - c0) / len(batches))
            wall[name].append(1e3 * (time.perf_counter() - w0) / len(batches))
    out = {
        "batch": batch,
        "rounds": rounds,
        "steps_per_round": steps,
        "flowscope_path": chosen,
        "cflags": os.environ.get("FLOWSCOPE_CFLAGS", ""),
        "cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
        "wall_ms": {k: statistics.median(v) for k, v in wall.items()},
        "cpu_ms_rounds": cpu,
        "wall_ms_rounds": wall,
    }
    ratios = {}
    for other in ("zuko", "flowscope-pytorch"):
        if other in out["cpu_ms"]:
            # the ratios of one run's interleaved rounds, round by round, then the median
            ratios[other] = {
                kind: statistics.median(
                    a / b for a, b in zip(times[other], times["flowscope"], strict=True)
                )
                for kind, times in (("cpu", cpu), ("wall", wall))
            }
    out["speedup"] = ratios
    if "zuko" in ratios:
        out["speedup_cpu"], out["speedup_wall"] = ratios["zuko"]["cpu"], ratios["zuko"]["wall"]
    return out


# -- class-conditional flows ---------------------------------------------------------------


def train_conditional(
    name: str,
    seed: int,
    standardize: str,
    n_points: int,
    config: TrainConfig,
    model_args: dict,
    tmp: Path,
) -> dict:
    """A conditional ``name`` run: class accuracy of balanced samples, conditional NLL."""
    t0 = time.perf_counter()
    model, info, history = train_run(
        name,
        tmp / f"{name}-cond-{standardize}-{seed}",
        n_points=n_points,
        config=config,
        model_args={**model_args, "standardize": standardize},
        progress=False,
        conditional=True,
    )
    wall = time.perf_counter() - t0
    test = run_data(info, "test")
    labels = torch.arange(ACCURACY_SAMPLES) % model.num_classes
    x = model.sample(ACCURACY_SAMPLES, labels=labels, generator=torch.Generator().manual_seed(0))
    acc = class_accuracy(x, labels)
    nll = heldout_nll(model, test.x, test.labels)
    # All training points standardized per axis together: the unconditional NLL's units.
    log_scale = float(run_data(info, "train").x.double().std(dim=0).log().sum())
    return {
        "model": name,
        "seed": seed,
        "standardize": standardize,
        "class_accuracy": acc.overall,
        "class_accuracy_per_class": list(acc.per_class),
        "nll_conditional": nll.data - log_scale,
        "train_s": history.seconds,
        "wall_s": wall,
        "epochs": len(history.epochs),
        "fast_path": history.fast_path,
        "batch_size": config.batch_size,
        "nan": not all(math.isfinite(v) for v in history.batch_loss),
    }


# -- the tables -------------------------------------------------------------------------------


def _box(row: dict) -> str:
    """The grid's share within 1e-5 and its largest misses (runs before the grid: -)."""
    if "round_trip_grid_share" not in row:
        return "- | -"
    return (
        f"{_pct(row['round_trip_grid_share'])} | {row['round_trip_grid_max']:.1e} / "
        f"{row['round_trip_grid_float64_max']:.1e}"
    )


def _span(values: list[float], spec: str) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return format(lo, spec) if lo == hi else f"{lo:{spec}}-{hi:{spec}}"


def _sizes(model: dict) -> str:
    return (
        f"{model['couplings']} spline couplings of {model['bins']} bins on "
        f"[-{model['tail_bound']:g}, {model['tail_bound']:g}], networks of "
        f"{model['linear_layers']} Linear layers of width {model['hidden']}"
    )


def _recipe(train: dict, rows: list[dict]) -> str:
    """The recipe in words; its epochs as given, else as the runs trained them."""
    epochs = train.get("epochs") or train.get("min_epochs") or rows[0]["epochs"]
    return f"{epochs} epochs, batch {train['batch_size']}, Adam lr {train['lr']:g}"


def _training_table(s: dict, rows: list[dict]) -> list[str]:
    """The lines of the spline flow's training table and its summary."""
    lines = [
        "",
        f"nsf: {_sizes(s['model'])}, trained with its recipe ({_recipe(s['train'], rows)}) on "
        f"{s['n_points']:,} points; zuko: `zuko.flows.NSF(2, transforms="
        f"{s['model']['couplings']}, bins={s['model']['bins']}, hidden_features="
        f"{[s['model']['hidden']] * (s['model']['linear_layers'] - 1)})` on the same "
        "standardized points with the same batch size and learning rate, decayed by a cosine "
        "of the elapsed share of the time, for the same wall time. train s: wall time of "
        "training; CPU s: the CPU time of the whole train_run (data, training, "
        "checkpoints), which other jobs do not inflate. NLL: "
        "held-out, 10,000 test points, standardized nats (target "
        f"<= {NLL_TARGET}; the data's entropy, the floor, is {NLL_FLOOR}). Round trip: max "
        "|decode(encode(x)) - x| in float32, data units, over the 10,000 test points; at the "
        "bound: over (B, B), (-B, -B), (B, 0) and (0, -B) (standardized), far outside the data; "
        "float64: all of them in float64. Box: the share of a 201 x 201 grid over [-B, B]^2 "
        "(standardized, mostly empty space) whose float32 round trip is within 1e-5, and its "
        "largest miss, float32 / float64. Far points: log p of (4, 5), (1e3, -1e3) and "
        "(1e30, 0) in float32 (-inf: z^2 leaves float32's range; float64 gives a number).",
        "",
        "| seed | nsf NLL | train s | CPU s | epochs | ms/step | round trip | at the bound | "
        "float64 | box <= 1e-5 | box max | far log p | zuko NLL | zuko train s | zuko epochs "
        "| zuko ms/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        z = r.get("zuko") or {}
        far = ", ".join(f"{v:.4g}" for v in r["far_log_prob"])
        lines.append(
            f"| {r['seed']} | {r['nll']:.4f} | {r['train_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['epochs']} | "
            f"{r['ms_per_step_in_run']:.2f} | {r['round_trip_max']:.1e} | "
            f"{r['round_trip_bound_max']:.1e} | {r['round_trip_float64_max']:.1e} | "
            f"{_box(r)} | {far} | "
            f"{z.get('nll', math.nan):.4f} | {z.get('train_s', math.nan):.1f} | "
            f"{z.get('epochs', math.nan):.1f} | {z.get('ms_per_step_in_run', math.nan):.2f} |"
        )
    nlls = [r["nll"] for r in rows]
    trips = [r["round_trip_max"] for r in rows]
    zuko_nlls = [r["zuko"]["nll"] for r in rows if r.get("zuko")]
    lines += [
        "",
        f"nsf NLL {_span(nlls, '.4f')} (target <= {NLL_TARGET} on every seed: "
        f"{'met' if max(nlls) <= NLL_TARGET else 'missed'}); training "
        f"{_span([r['train_s'] for r in rows], '.1f')} s (target <= 60 s: "
        f"{'met' if max(r['train_s'] for r in rows) <= 60 else 'missed'}); NaN on no seed: "
        f"{'yes' if not any(r['nan'] for r in rows) else 'no'}; parameters "
        f"{rows[0]['parameters']:,}.",
        f"Round trip over the test points {_span(trips, '.1e')} (target <= 1e-5: "
        f"{'met' if max(trips) <= 1e-5 else 'missed'}), at the tail bound "
        f"{_span([r['round_trip_bound_max'] for r in rows], '.1e')}, "
        f"in float64 {_span([r['round_trip_float64_max'] for r in rows], '.1e')}."
        + (
            " Over the box's grid: "
            f"{_span([100 * r['round_trip_grid_share'] for r in rows], '.1f')}% of the "
            "points within 1e-5 in float32, misses up to "
            f"{_span([r['round_trip_grid_max'] for r in rows], '.1e')} (float64: "
            f"{_span([r['round_trip_grid_float64_max'] for r in rows], '.1e')})."
            if all("round_trip_grid_share" in r for r in rows)
            else ""
        ),
    ]
    if zuko_nlls:
        better = all(r["nll"] <= r["zuko"]["nll"] for r in rows if r.get("zuko"))
        lines.append(
            f"zuko NLL {_span(zuko_nlls, '.4f')} in the same wall time (flowscope at most "
            f"zuko's on every seed: {'yes' if better else 'no'}); parameters "
            f"{rows[0]['zuko']['parameters']:,}."
        )
    if any("round_trip_knots" in r for r in rows):
        lines += _knots_table(rows)
    return lines


def _pct(share: float) -> str:
    """A share as a percentage, rounded down (so that 100.0% means every point)."""
    return f"{math.floor(1000 * share) / 10:.1f}%"


def _knots_table(rows: list[dict]) -> list[str]:
    """The issue's round-trip set: test points, knots, tail bound; and zuko's box."""
    k = rows[0]["round_trip_knots"]
    lines = [
        "",
        f"Round trip over the issue's set of {k['points']:,} points (float32, data units): "
        f"{k['test']['points']:,} test points, {k['knots']['points']:,} points at the "
        f"couplings' interior knots and {k['bound']['points']:,} at their tail bound "
        f"({k['per_coupling']} test points per coupling moved, in that coupling's "
        "coordinates, onto each knot of its spline there, then decoded to data units: "
        "`knot_points`). Share within 1e-5 and largest miss, float64's largest miss; "
        "miss / reach: the largest miss over the reach of one float32 rounding of z alone "
        "(eps * max(1, |z|) * ||dx/dz||, float64 Jacobian; a small factor: the miss is "
        "float32's conditioning there; far above it, the inverse's own arithmetic); zuko "
        "box: zuko's float32 round trip over the same 201 x 201 grid.",
        "",
        "| seed | test max | knots within 1e-5 | knots max | bound within 1e-5 | bound max "
        "| float64 max | miss / reach | zuko box <= 1e-5 | zuko box max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k, z = r.get("round_trip_knots"), r.get("zuko") or {}
        if k is None:
            continue
        zb = (
            f"{_pct(z['round_trip_grid_share'])} | {z['round_trip_grid_max']:.1e}"
            if "round_trip_grid_share" in z
            else "- | -"
        )
        ratio = f"{k['miss_over_reach_max']:.2f}" if k["misses"] else "-"
        lines.append(
            f"| {r['seed']} | {k['test']['max']:.1e} | "
            f"{_pct(k['knots']['share_within_1e-5'])} | {k['knots']['max']:.1e} | "
            f"{_pct(k['bound']['share_within_1e-5'])} | {k['bound']['max']:.1e} | "
            f"{k['float64_max']:.1e} | {ratio} | {zb} |"
        )
    ks = [r["round_trip_knots"] for r in rows if "round_trip_knots" in r]
    met = all(k["max"] <= 1e-5 for k in ks)
    lines += [
        "",
        f"Issue's set within 1e-5 in float32 on every seed: {'met' if met else 'missed'} "
        f"(largest misses {_span([k['max'] for k in ks], '.1e')}; float64 "
        f"{_span([k['float64_max'] for k in ks], '.1e')})."
        + (
            " Every miss is at most "
            f"{max(k['miss_over_reach_max'] for k in ks):.1f}x the reach of z's float32 "
            "rounding there."
            if any(k["misses"] for k in ks)
            else ""
        ),
    ]
    return lines


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    rows = result["nsf"]
    lines = [
        "# Spline flows and class-conditional flows on the Olympic rings",
        "",
        f"{result['date']}; `python benchmarks/bench_nsf.py {' '.join(result['argv'])}`; "
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, load average (1 min) at start "
        f"{m['load_average_at_start'][0]:.2f}"
        + (f", at end {m['load_average_at_end'][0]:.2f}" if "load_average_at_end" in m else "")
        + " (other sessions share the machine; the CPU times of the step table are the "
        "least affected by them).",
    ]
    if rows:
        lines += _training_table(s, rows)
    st = result.get("step_times")
    if st:
        lines += [
            "",
            f"Training step at batch {st['batch']} ({st['rounds']} interleaved rounds "
            f"of {st['steps_per_round']} steps, median):",
            "",
        ]
        lines += ["| contender | CPU ms/step | wall ms/step |", "|---|---|---|"]
        for k in st["cpu_ms"]:
            lines.append(f"| {k} | {st['cpu_ms'][k]:.2f} | {st['wall_ms'][k]:.2f} |")
        paths = st.get("flowscope_path", {})
        lines += [
            "",
            f"flowscope's step: {paths.get('flowscope', 'as fit runs it')}; flowscope-pytorch: "
            "autograd and torch.optim.Adam (fit's path without a kernel); C flags "
            f"`{st.get('cflags') or 'native'}`.",
        ]
        for other, r in st.get("speedup", {}).items():
            target = " (target >= 2x)" if other == "zuko" else ""
            lines.append(
                f"flowscope is {r['cpu']:.2f}x faster than {other} in CPU time "
                f"({r['wall']:.2f}x in wall time; medians of the rounds' ratios){target}."
            )
    cond = result.get("conditional") or []
    if cond:
        lines += [
            "",
            f"Class-conditional flows: share of {ACCURACY_SAMPLES} balanced samples in their own "
            "ring's band (target >= 99%) and the class-conditional NLL, -log p(x | ring), in "
            "the unconditional NLL's coordinates.",
            "",
            "| model | standardize | seed | class accuracy | per ring | conditional NLL | "
            "train s | batch | epochs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in cond:
            per = " ".join(f"{100 * a:.1f}" for a in r["class_accuracy_per_class"])
            lines.append(
                f"| {r['model']} | {r['standardize']} | {r['seed']} | "
                f"{100 * r['class_accuracy']:.2f}% | {per} | {r['nll_conditional']:.4f} | "
                f"{r['train_s']:.1f} | {r['batch_size']} | {r['epochs']} |"
            )
        groups = sorted({(r["model"], r["standardize"]) for r in cond})
        lines.append("")
        for g in groups:
            rs = [r for r in cond if (r["model"], r["standardize"]) == g]
            lines.append(
                f"- {g[0]} --conditional, standardize {g[1]}: class accuracy "
                f"{_span([100 * r['class_accuracy'] for r in rs], '.2f')}%, conditional NLL "
                f"{_span([r['nll_conditional'] for r in rs], '.4f')}"
            )
    return "\n".join(lines) + "\n"


def _setting(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON where it parses (6, 2e-3), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated (default 0-4)")
    p.add_argument("--n-points", type=int, default=250_000)
    p.add_argument(
        "--model",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a SplineFlow argument other than its default, e.g. couplings=6 (repeatable)",
    )
    p.add_argument(
        "--train",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the nsf recipe to override: epochs, batch_size or lr (repeatable)",
    )
    p.add_argument("--no-zuko", action="store_true", help="skip zuko")
    p.add_argument("--no-conditional", action="store_true", help="skip the conditional flows")
    p.add_argument(
        "--standardize", default="class", help="conditional standardizations (class,global)"
    )
    p.add_argument("--conditional-models", default="nf,nsf", help="comma-separated")
    p.add_argument("--step-rounds", type=int, default=7, help="interleaved rounds (0: skip)")
    p.add_argument("--step-only", action="store_true", help="only the step times (no training)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of nsf.json and nsf.md")
    p.add_argument("--name", default="nsf", help="results file name (default nsf)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [] if args.step_only else [int(s) for s in args.seeds.split(",")]
    given, sizes = dict(args.train), dict(args.model)
    zuko = None if args.no_zuko else _zuko()
    if zuko is None and not args.no_zuko:
        print("zuko is not installed: pip install -e '.[bench]'; skipping it", file=sys.stderr)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": _machine(),
        "settings": {
            "n_points": args.n_points,
            "model": MODELS.get("nsf").build(features=2, **sizes).config(),
            "train": {
                k: v
                for k, v in vars(recipe("nsf", **given)).items()
                if k in ("epochs", "min_epochs", "batch_size", "lr")
            },
            "zuko": None if zuko is None else zuko.__version__,
        },
        "nsf": [],
        "conditional": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{args.name}.md").write_text(markdown(result))

    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = recipe("nsf", seed=seed, **given)
            row, data = train_nsf(seed, args.n_points, config, sizes, Path(tmp))
            print(f"nsf seed {seed}: NLL {row['nll']:.4f} in {row['train_s']:.1f} s", flush=True)
            if zuko is not None:
                row["zuko"] = train_zuko(zuko, data, config, row["train_s"])
                print(f"  zuko: NLL {row['zuko']['nll']:.4f} in {row['zuko']['train_s']:.1f} s")
            result["nsf"].append(row)
            if not args.no_conditional:
                for name in args.conditional_models.split(","):
                    for how in args.standardize.split(","):
                        extra = sizes if name == "nsf" else {}
                        c = train_conditional(
                            name, seed, how, args.n_points, config, extra, Path(tmp)
                        )
                        result["conditional"].append(c)
                        print(
                            f"  {name} --conditional ({how}): accuracy "
                            f"{100 * c['class_accuracy']:.2f}%, NLL {c['nll_conditional']:.4f} "
                            f"in {c['train_s']:.1f} s",
                            flush=True,
                        )
            save()
    if args.step_rounds:
        model = result["settings"]["model"]
        batch = recipe("nsf", **given).batch_size
        result["step_times"] = step_times(zuko, model, batch, args.step_rounds, 40)
        st = result["step_times"]
        print(f"step at batch {batch}: {st['cpu_ms']} CPU ms", flush=True)
        save()
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    save()
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
