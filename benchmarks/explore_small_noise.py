"""Exploration for issue 20: how should a run lengthened for small data be regularized?

On the tuning file (``benchmarks/data/faithful.csv``; geyser is kept out), the 5 folds of
``bench_small.py`` (the same seeds and splits, each run trained as ``flowscope train
MODEL --data fold.csv`` does), for each model type and each setting of the small-data
regularization (:class:`flowscope.train.TrainConfig`'s ``small_noise``, the standard
deviation of the Gaussian noise added to each standardized training batch;
``small_decay``, the weight decay; ``keep_best``, early stopping on the validation part
rather than the last weights), the held-out NLL (nats per point, data units), mean and
standard deviation over the folds, and the mean training seconds.

Run: ``python benchmarks/explore_small_noise.py --out benchmarks/results/small_noise``
(``--models nf --grid 0.1:0.5:last`` for one setting: noise:decay:last|best, optionally
:steps for ``min_steps``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_small  # noqa: E402

from flowscope.metrics import heldout_nll  # noqa: E402
from flowscope.recipe import recipe  # noqa: E402
from flowscope.runs import train_run  # noqa: E402

#: noise:decay:last|best. The first is the defaults before noise regularization.
GRID = {
    "nf": (
        "0:2:best 0.05:2:best 0.1:2:best 0.15:2:best 0.2:2:best 0.05:0:best 0.1:0:best "
        "0.15:0:best 0.2:0:best 0.1:0.5:best 0.15:0.5:best 0.1:1:best 0.1:0:last "
        "0.1:0.25:last 0.05:0.5:last 0.1:0.5:last 0.15:0.5:last 0.1:1:last 0.15:1:last "
        "0.1:2:last"
    ),
    "fm": (
        "0:2:best 0.05:2:best 0.1:2:best 0.15:2:best 0.2:2:best 0.1:0:best 0.1:2:last "
        "0.15:2:last 0.2:2:last 0.25:2:last 0.3:2:last 0.2:4:last 0.1:1:last 0.2:1:last "
        "0.25:1:last 0.1:0.5:last"
    ),
    "nsf": "0:2:best 0.15:2:last 0.1:0.5:last",
    "meanflow": "0:2:best 0.15:2:last",
}


def setting(text: str) -> dict:
    """noise:decay:last|best, optionally :steps (``min_steps``, 2,000 by default)."""
    noise, decay, end, *steps = text.split(":")
    if end not in ("last", "best") or len(steps) > 1:
        raise SystemExit(f"--grid {text}: noise:decay:last|best[:steps]")
    fields = {"small_noise": float(noise), "small_decay": float(decay), "keep_best": end == "best"}
    if steps:
        fields["min_steps"] = int(steps[0])
    return fields


def run(name: str, model: str, fields: dict, tmp: Path, model_args: dict | None = None) -> dict:
    header, x = bench_small.read(name)
    nll, secs = [], []
    for test_idx in bench_small.folds(len(x), 5, 0):
        train_idx = np.setdiff1d(np.arange(len(x)), test_idx)
        csv = tmp / "train.csv"
        np.savetxt(csv, x[train_idx], delimiter=",", header=",".join(header), comments="")
        t0 = time.perf_counter()
        trained, _, _ = train_run(
            model,
            tmp / "run",
            data=str(csv),
            config=recipe(model, **fields),
            model_args=model_args,
            overwrite=True,
            progress=False,
        )
        secs.append(time.perf_counter() - t0)
        nll.append(heldout_nll(trained, torch.tensor(x[test_idx], dtype=torch.float32)).data)
    return {
        "file": name,
        "model": model,
        **fields,
        **({"model_args": model_args} if model_args else {}),
        "nll": statistics.fmean(nll),
        "nll_std": statistics.stdev(nll),
        "seconds": statistics.fmean(secs),
        "folds": nll,
    }


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Small-data regularization on the tuning file (benchmarks/explore_small_noise.py)",
        "",
        f"`{command}`",
        "",
        "5-fold held-out NLL (nats per point, data units; lower is better), mean ± sd over "
        "the folds; noise in standardized units; `best`: the best validation epoch kept, "
        "`last`: the last weights.",
        "",
        "| file | model | noise | decay | weights | steps | model's arguments | NLL | training s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['model']} | {r['small_noise']:g} | {r['small_decay']:g} | "
            f"{'best' if r['keep_best'] else 'last'} | {r.get('min_steps', 2000):,} | "
            f"{json.dumps(r.get('model_args', {}))} | {r['nll']:.3f} ± {r['nll_std']:.3f} | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default="faithful")
    p.add_argument("--models", default=",".join(GRID))
    p.add_argument("--grid", help="settings noise:decay:last|best[:steps], space-separated")
    p.add_argument(
        "--model-args", type=json.loads, help='the model\'s arguments, JSON: {"hidden": 32}'
    )
    p.add_argument("--out", default="benchmarks/results/small_noise")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            for model in args.models.split(","):
                for text in (args.grid or GRID[model]).split():
                    rows.append(run(name, model, setting(text), Path(tmp), args.model_args))
                    print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/explore_small_noise.py " + " ".join(argv or sys.argv[1:])
    out = Path(args.out)
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out.with_suffix(".md").write_text(markdown(rows, command.strip()))
    print(markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
