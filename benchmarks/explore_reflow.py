"""Reflow recipes against the few-step target of issue 18, on one data set and seed.

Trains the base fm run as ``bench_fewstep.py`` does (kept in ``--root`` and reused), then
one 2-rectified flow per ``--variant`` through :func:`flowscope.reflow.reflow_run`, and
prints (and appends to ``--log``) its W2 with K Euler steps against the base run's test
points, as ``bench_fewstep.py`` measures it, with straightness, NPE and the training CPU
seconds (the drawing of the pairs included).

A variant is ``key=value`` pairs joined by commas: ``pairs``, ``epochs``, ``batch``,
``lr``, ``times`` (``uniform`` or the alpha of Beta(alpha, 1)), ``skip`` (``on`` or
``off``), ``warm`` (0 or 1); what is not given is :func:`~flowscope.reflow.reflow_run`'s
default (U[0, 1]; no skip, or the parent's with a warm start; 250,000 pairs; the fm
recipe: 20 epochs, batch 128, lr 1e-3).

Run: ``python benchmarks/explore_reflow.py --data moons --seed 0 --variant
pairs=100000,times=5,skip=on --variant pairs=250000 --variant warm=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from flowscope import metrics
from flowscope.reflow import reflow_run
from flowscope.runs import load_run, run_data, train_run
from flowscope.train import TrainConfig

NFE = [1, 2, 4, 100]


def base_run(data: str, seed: int, root: Path, n: int) -> Path:
    out = root / f"{data}-{seed}" / "fm"
    if not (out / "model.safetensors").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        config = TrainConfig(epochs=20, seed=seed)
        train_run(
            "fm", out, data=data, n_points=250_000, holdout_points=n, config=config, progress=False
        )
    return out


def w2_row(model, test, seed: int) -> dict:
    curve = metrics.w2_by_nfe(model, test, nfe=NFE, adaptive=False, seed=seed)
    pm = metrics.path_metrics(model, test, generator=torch.Generator().manual_seed(seed))
    return {"w2": {p.nfe: round(p.w2, 4) for p in curve}, "straightness": pm.straightness,
            "npe": pm.npe}  # fmt: skip


def parse(spec: str) -> dict:
    kv = dict(item.split("=", 1) for item in spec.split(",") if item)
    unknown = set(kv) - {"pairs", "epochs", "batch", "lr", "times", "skip", "warm"}
    if unknown:
        raise SystemExit(f"unknown variant keys {sorted(unknown)}")
    return kv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="moons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--root", default="/tmp/explore_reflow")
    p.add_argument("--log", default="/tmp/explore_reflow/log.jsonl")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    base = base_run(args.data, args.seed, root, args.n)
    model, info = load_run(base)
    test = run_data(info, "test").x[: args.n]
    row = {"data": args.data, "seed": args.seed, "variant": "base fm"}
    row.update(w2_row(model, test, args.seed))
    log = open(args.log, "a")  # noqa: SIM115 - appended to as the variants finish
    print(json.dumps(row), flush=True)
    print(json.dumps(row), file=log, flush=True)
    for spec in args.variant:
        kv = parse(spec)
        config = TrainConfig(
            epochs=int(kv.get("epochs", 20)),
            batch_size=int(kv.get("batch", 128)),
            lr=float(kv.get("lr", 1e-3)),
            seed=args.seed,
        )
        extra = {}
        if kv.get("times", "default") != "default":  # else the library's default
            alpha = 1.0 if kv["times"] == "uniform" else float(kv["times"])
            extra["times"] = {"name": "uniform"} if alpha == 1 else {"name": "beta", "alpha": alpha}
        if kv.get("skip", "default") != "default":
            extra["gaussian_skip"] = {"on": True, "off": False}[kv["skip"]]
        out = root / f"{args.data}-{args.seed}" / f"rf-{time.time_ns()}"
        cpu, wall = time.process_time(), time.perf_counter()
        rf, rinfo, _ = reflow_run(
            base,
            out,
            n_points=int(kv.get("pairs", 250_000)),
            config=config,
            progress=False,
            warm_start=bool(int(kv.get("warm", 0))),
            **extra,
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        res = w2_row(rf, test, args.seed)
        row = {"data": args.data, "seed": args.seed, "variant": spec,
               "times": rf.times.describe(), "skip": rf.gaussian_skip, **res,
               "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
               "load": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
        print(json.dumps(row), flush=True)
        print(json.dumps(row), file=log, flush=True)
    log.close()


if __name__ == "__main__":
    main()
