"""Hutchinson's divergence estimate against the exact one, on a trained flow-matching run.

Usage: ``python benchmarks/hutchinson_error.py RUN_DIR`` (e.g. a run of
``flowscope train fm --epochs 5 --out /tmp/fm5``): the log-density of 1000 test points
exactly and with 1, 4 and 16 Rademacher probes, its error per point and the time taken.
"""

import sys
import time

import torch

from flowscope.runs import load_run, run_data

torch.set_num_threads(1)
m, info = load_run(sys.argv[1])
x = run_data(info, "test").x[:1000]
t = time.perf_counter()
ex = m.log_prob(x)
print(f"exact: {time.perf_counter() - t:.1f} s, mean {ex.mean():.4f}")
for k in (1, 4, 16):
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    h = m.log_prob(x, divergence="hutchinson", probes=k, generator=gen)
    took = time.perf_counter() - t
    e = (h - ex).abs()
    print(
        f"probes {k}: {took:.1f} s, |error| per point median {e.median():.3f}, "
        f"90% {e.quantile(0.9):.3f}, max {e.max():.3f}; mean over points off by "
        f"{h.mean() - ex.mean():.4f}"
    )
