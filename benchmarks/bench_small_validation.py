"""What validating on fewer points costs a run lengthened for small data: the study's
normalizing flow on N points of the Olympic rings (a validation part of 10,000, as
``flowscope train nf --n-points N`` draws it), validated each epoch on all 10,000 points
(before) and on the first max(1,000, N) (now, :meth:`flowscope.TrainConfig.val_size_for`),
in the same process, one after the other for each seed: training seconds, the epoch kept
and the kept model's NLL on 10,000 test points (nats per point, data units).

Run: ``python benchmarks/bench_small_validation.py --out benchmarks/results/small_validation``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from flowscope import NormalizingFlow, TrainConfig, fit
from flowscope.bench import cpu_model
from flowscope.data import olympic_rings
from flowscope.metrics import heldout_nll


def one(n: int, seed: int, everything: bool) -> dict:
    x = olympic_rings(n, seed=seed)
    x_val, x_test = olympic_rings(10_000, seed=seed + 1), olympic_rings(10_000, seed=seed + 2)
    torch.manual_seed(seed)
    model = NormalizingFlow()
    config = TrainConfig(seed=seed)
    before = mock.patch.object(TrainConfig, "val_size_for", lambda self, n: self.val_size)
    t0 = time.perf_counter()
    with before if everything else contextlib.nullcontext():
        hist = fit(model, x, x_val=x_val, config=config, progress=False)
    seconds = time.perf_counter() - t0
    return dict(
        n=n, seed=seed, validation="all 10,000" if everything else "max(1,000, N)",
        val_points=hist.val_points, seconds=seconds, epochs=len(hist.epochs),
        best_epoch=hist.best_epoch, test_nll=heldout_nll(model, x_test).data,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="benchmarks/results/small_validation")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            for everything in (True, False):
                rows.append(one(n, seed, everything))
                print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    lines = [
        "# Validating a lengthened run on fewer points",
        "",
        f"`python benchmarks/bench_small_validation.py {' '.join(sys.argv[1:])}`",
        "",
        f"CPU: {cpu_model()}, one torch thread; load average at the end {load[0]:.1f} "
        f"(1 min), {load[2]:.1f} (15 min).",
        "",
        "| N | seed | validation | points | training s | epochs | kept epoch | test NLL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['seed']} | {r['validation']} | {r['val_points']:,} | "
            f"{r['seconds']:.1f} | {r['epochs']} | {r['best_epoch']} | {r['test_nll']:.4f} |"
        )
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
