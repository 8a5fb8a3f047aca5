"""Why class-aware OT loses class accuracy at many Euler steps on the conditional rings:
the class-ot coupling's time sampler, the Gaussian skip, the training length and the batch,
the standardization, one at a time, against the default (Beta(3, 1), no skip, per-class
standardization, 20 epochs, batch 128).

Each run is ``bench_ot.py --rings "cfm class-ot"``'s (:func:`bench_ot.rings` with the
variant's arguments): 250,000 training points drawn with the seed, class accuracy of
2,000 balanced samples at 4, 100 and 1,000 Euler steps (and W2 at 1-100 steps). Rows are
appended to ``--out`` (JSON lines) and printed.

Run: ``python benchmarks/explore_class_ot.py --variants beta3,uniform,beta7 --seeds 0,1,2``;
``--variants beta3 --epochs 40`` or ``--batch 512`` for the length and the batch;
``--table`` prints the rows gathered so far, mean ± sd over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from bench_ot import rings

#: variant name -> FlowMatching's arguments beside the coupling (the rest its defaults).
VARIANTS = {
    "beta3": {},
    "uniform": {"times": "uniform"},
    "beta2": {"times": {"name": "beta", "alpha": 2.0}},
    "beta7": {"times": {"name": "beta", "alpha": 7.0}},
    "skip": {"gaussian_skip": True},
    "global": {"standardize": "global"},
    "independent": {"coupling": "independent"},  # the baseline, with its own defaults
}


def table(path: Path) -> list[str]:
    """The rows of ``path`` as a markdown table, mean ± sd over the seeds of each setting."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = ("accuracy_4", "accuracy_100", "accuracy_1000")
    lines = [
        "| variant | coupling | times | skip | standardize | epochs | batch | seeds | "
        + " | ".join(keys)
        + " |",
        "|---" * (8 + len(keys)) + "|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["epochs"], r["batch"]), []).append(r)
    for (variant, epochs, batch), rs in groups.items():
        first = rs[0]
        cells = []
        for k in keys:
            v = [r[k] for r in rs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.fmean(v):.4f} ± {sd:.4f}")
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(
            f"| {variant} | {first.get('coupling', 'class-ot')} | {first['times']} | "
            f"{'on' if first['skip'] else 'off'} | {first.get('standardize', 'class')} | "
            f"{epochs} | {batch} | {seeds} | " + " | ".join(cells) + " |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="beta3", help=f"some of {list(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="benchmarks/results/class_ot_explore.jsonl")
    p.add_argument("--table", action="store_true", help="only print --out's rows as a table")
    args = p.parse_args()
    if args.table:
        print("\n".join(table(Path(args.out))))
        return
    torch.set_num_threads(1)
    methods = {n: (True, {"coupling": "class-ot", **a}) for n, a in VARIANTS.items()}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.variants.split(","):
            (row,) = rings([name], [seed], 250_000, args.epochs, args.batch, methods)
            model_args = methods[name][1]
            row.update(variant=row.pop("method"), epochs=args.epochs, batch=args.batch)
            row["skip"] = row.pop("gaussian_skip")
            row["coupling"] = model_args["coupling"]
            row["standardize"] = model_args.get("standardize", "class")
            with Path(args.out).open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
