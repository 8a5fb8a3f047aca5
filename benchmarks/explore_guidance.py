"""Exploration behind issue 18's guidance settings (benchmarks/README.md, "Classifier-free
guidance"): trains one ``cfm`` per seed with the given label dropout and model/training
options and measures class accuracy and coverage (as ``bench_guidance.py`` does: 5000
balanced samples from the same noise) on a grid of guidance scales and samplers.
Appends one JSON line per (setting, seed) to ``--out``.

Usage::

    python benchmarks/explore_guidance.py --tag p0.2 --label-dropout 0.2 --seeds 0 1
    python benchmarks/explore_guidance.py --tag h128 --hidden 128 --seeds 0 1
    python benchmarks/explore_guidance.py --tag rk4 --solver rk4 --dt 0.01
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from flowscope.matching.solvers import time_grid
from flowscope.metrics import class_accuracy, class_coverage, ring_precision
from flowscope.runs import recipe, train_run

SAMPLES = 5000
GRID = [1.0, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875, 2.0]


@torch.no_grad()
def interval_sample(model, labels, w: float, lo: float, hi: float, dt: float) -> torch.Tensor:
    """Euler steps of dt with the guided field for grid times in [lo, hi], the conditional
    field elsewhere, from the noise of seed 0; points in data units."""
    y = model.base_sample(len(labels), torch.Generator().manual_seed(0))
    plain = model.ode_velocity(labels)
    steer = plain if w == 1 else model.ode_velocity(labels, w)
    grid = time_grid(dt)
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        t = torch.tensor(a)
        y = y + (b - a) * (steer if lo <= a <= hi else plain)(y, t)
    return model.standardization.inverse(y, labels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tag", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--scales", type=float, nargs="+", default=GRID)
    p.add_argument("--label-dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--time-alpha", type=float, default=None)
    p.add_argument("--no-gaussian-skip", action="store_true")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n-points", type=int, default=250_000)
    p.add_argument(
        "--sampler",
        nargs="+",
        default=["euler:0.001"],
        help="solver:dt pairs, e.g. euler:0.001 midpoint:0.01 rk4:0.02",
    )
    p.add_argument(
        "--intervals",
        nargs="+",
        default=["0-1"],
        help="LO-HI: guide only for t in [LO, HI], the conditional field elsewhere "
        "(Kynkaanniemi et al. 2024, arXiv:2404.07724); 0-1: everywhere, by model.sample",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/explore_guidance.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model_args: dict = {"label_dropout": args.label_dropout}
    if args.hidden:
        model_args["hidden"] = args.hidden
    if args.layers:
        model_args["layers"] = args.layers
    if args.time_alpha:
        a = args.time_alpha
        model_args["times"] = {"name": "uniform"} if a == 1 else {"name": "beta", "alpha": a}
    if args.no_gaussian_skip:
        model_args["gaussian_skip"] = False
    given = {
        k: v
        for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr))
        if v
    }
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = dataclasses.replace(recipe("cfm", **given), seed=seed)
            load = os.getloadavg()[0]
            model, _, history = train_run(
                "cfm",
                Path(tmp) / f"cfm-{seed}",
                n_points=args.n_points,
                config=config,
                model_args=model_args,
                progress=False,
            )
            labels = torch.arange(SAMPLES) % model.num_classes
            rows = []
            for spec in args.sampler:
                solver, dt = spec.split(":")
                for interval, w in [(i, w) for i in args.intervals for w in args.scales]:
                    t0 = time.perf_counter()
                    if interval == "0-1":
                        x = model.sample(
                            SAMPLES,
                            labels=labels,
                            generator=torch.Generator().manual_seed(0),
                            dt=float(dt),
                            solver=solver,
                            guidance=w,
                        )
                    else:
                        lo, hi = map(float, interval.split("-"))
                        x = interval_sample(model, labels, w, lo, hi, float(dt))
                    s = time.perf_counter() - t0
                    acc, cov = class_accuracy(x, labels), class_coverage(x, labels)
                    rows.append(
                        {
                            "sampler": spec,
                            "interval": interval,
                            "w": w,
                            "acc": acc.overall,
                            "cov": cov.overall,
                            "cov_worst": min(cov.per_class),
                            "prec": ring_precision(x).precision,
                            "s": round(s, 2),
                        }
                    )
            line = {
                "tag": args.tag,
                "seed": seed,
                "model_args": model_args,
                "train": given,
                "epochs": len(history.epochs),
                "train_s": round(history.seconds, 1),
                "load_at_start": load,
                "rows": rows,
            }
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(
                f"{args.tag} seed {seed} ({history.seconds:.0f} s, load {load:.1f}): "
                + "  ".join(
                    f"{r['interval']}:{r['w']:g} {100 * r['acc']:.2f}/{100 * r['cov']:.1f}"
                    for r in rows
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
