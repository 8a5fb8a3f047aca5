"""Classifier-free guidance of conditional flow matching on the Olympic rings (issue 18).

For each seed, in one process: a ``cfm`` trained exactly as ``flowscope train cfm
--label-dropout P [--epochs E] [--time-alpha A]`` trains it (:func:`flowscope.runs.train_run`
with the type's recipe and ``label_dropout``; global standardization, which label
dropout implies, and the time sampler Beta(A, 1), or unless A is given the conditional
model's default), then, for
each guidance scale w, 5000 balanced samples (1000 per ring) from the same noise (seed 0)
with the study's Euler step 1e-3:

- class accuracy: the share of samples in their own ring's band
  (:func:`flowscope.metrics.class_accuracy`);
- coverage: the share of each ring's 36 angle bins that its class's samples reach inside
  its band (:func:`flowscope.metrics.class_coverage`), overall (all 5 x 36 cells) and the
  worst ring;
- precision: the share in any ring's band (:func:`flowscope.metrics.ring_precision`).

The target (issue 18): at some w > 1 the class accuracy exceeds 99.5% while the coverage
stays at least 95%.

Results go to ``benchmarks/results/guidance.json``, ``guidance.md`` and ``guidance.png``
(``--name`` for others; rewritten after every seed, so an interrupted run keeps what it
measured).

Usage::

    python benchmarks/bench_guidance.py                      # seeds 0-4, 20 epochs
    python benchmarks/bench_guidance.py --epochs 40 --time-alpha 12 \
        --scales 0 1 1.25 1.375 1.5 1.625 1.75 2 3 5             # results/guidance.md
    python benchmarks/bench_guidance.py --label-dropout 0.2 --scales 0 1 1.25 1.5 1.75 2 3 5 \
        --name guidance_p0.2                                 # another probability, more w
    python benchmarks/bench_guidance.py --seeds 0 --epochs 2 --out /tmp/g   # a quick check
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowscope.bench import cpu_model
from flowscope.metrics import class_accuracy, class_coverage, ring_precision
from flowscope.runs import recipe, train_run

RESULTS = Path(__file__).resolve().parent / "results"
SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0)
SAMPLES = 5000
ACCURACY_TARGET = 0.995
COVERAGE_TARGET = 0.95


def measure(model, w: float, dt: float) -> dict:
    """The sample metrics of 5000 balanced samples at guidance w."""
    labels = torch.arange(SAMPLES) % model.num_classes
    t0 = time.perf_counter()
    x = model.sample(
        SAMPLES, labels=labels, generator=torch.Generator().manual_seed(0), dt=dt, guidance=w
    )
    seconds = time.perf_counter() - t0
    acc = class_accuracy(x, labels)
    cov = class_coverage(x, labels)
    return {
        "w": w,
        "class_accuracy": acc.overall,
        "class_accuracy_per_class": list(acc.per_class),
        "coverage": cov.overall,
        "coverage_per_class": list(cov.per_class),
        "coverage_worst_ring": min(cov.per_class),
        "precision": ring_precision(x).precision,
        "sample_s": seconds,
    }


def run_seed(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    config = dataclasses.replace(recipe("cfm"), seed=seed)
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    t0 = time.perf_counter()
    model_args: dict = {"label_dropout": args.label_dropout}
    if args.time_alpha is not None:
        a = args.time_alpha
        model_args["times"] = {"name": "uniform"} if a == 1 else {"name": "beta", "alpha": a}
    model, _, history = train_run(
        "cfm",
        tmp / f"cfm-{seed}",
        n_points=args.n_points,
        config=config,
        model_args=model_args,
        progress=False,
    )
    wall = time.perf_counter() - t0
    rows = [measure(model, w, args.dt) for w in args.scales]
    return {
        "seed": seed,
        "train_s": history.seconds,
        "wall_s": wall,
        "epochs": len(history.epochs),
        "fast_path": history.fast_path,
        "config": model.config(),
        "times": model.times.describe(),
        "load_average_at_end": list(os.getloadavg()),
        "rows": rows,
    }


def _span(values: list[float], spec: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, spec) if f"{lo:{spec}}" == f"{hi:{spec}}" else f"{lo:{spec}}-{hi:{spec}}"


def _meets(row: dict) -> bool:
    return row["class_accuracy"] > ACCURACY_TARGET and row["coverage"] >= COVERAGE_TARGET


def markdown(result: dict, name: str = "guidance") -> str:
    s, m = result["settings"], result["machine"]
    seeds = result["seeds"]
    lines = [
        f"# Classifier-free guidance ({result['date']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m.get('cpu', 'CPU')}, {m['cores']} cores, torch {m['torch']} with "
        f"{m['threads']} thread(s), load "
        f"average at start {', '.join(f'{v:.1f}' for v in m['load_average_at_start'])} "
        "(shared machine: wall times are noisy).",
        "",
        f"cfm with label dropout {s['label_dropout']:g} (global standardization, t ~ "
        f"{seeds[0]['times'] if seeds else '?'}), "
        f"{s['epochs']} epochs on {s['n_points']:,} points, seeds "
        f"{', '.join(str(r['seed']) for r in seeds)}; {SAMPLES} balanced samples per w "
        f"from the same noise, Euler dt {s['dt']:g}. Class accuracy: share in the own "
        "ring's band; coverage: share of the 5 x 36 (ring, angle bin) cells reached by "
        "the ring's own samples (worst ring beside it); precision: share in any band.",
        "",
        "| w | class accuracy | coverage | worst ring's coverage | precision | seeds meeting "
        "the target |",
        "|---|---|---|---|---|---|",
    ]
    for i, w in enumerate(s["scales"]):
        rows = [r["rows"][i] for r in seeds]
        lines.append(
            f"| {w:g} | {_span([100 * r['class_accuracy'] for r in rows], '.2f')}% "
            f"| {_span([100 * r['coverage'] for r in rows], '.1f')}% "
            f"| {_span([100 * r['coverage_worst_ring'] for r in rows], '.1f')}% "
            f"| {_span([100 * r['precision'] for r in rows], '.2f')}% "
            f"| {sum(_meets(r) for r in rows)} of {len(rows)} |"
        )
    lines += ["", "Per seed (class accuracy / coverage, %):", ""]
    lines.append(
        "| seed | train s (load) | " + " | ".join(f"w = {w:g}" for w in s["scales"]) + " |"
    )
    lines.append("|---" * (len(s["scales"]) + 2) + "|")
    for r in seeds:
        cells = [f"{100 * x['class_accuracy']:.2f} / {100 * x['coverage']:.1f}" for x in r["rows"]]
        load = r.get("load_average_at_end", [float("nan")])[0]
        lines.append(
            f"| {r['seed']} | {r['train_s']:.1f} ({load:.1f}) | " + " | ".join(cells) + " |"
        )
    met = [
        w for i, w in enumerate(s["scales"]) if w > 1 and all(_meets(r["rows"][i]) for r in seeds)
    ]
    lines += [
        "",
        f"Target (class accuracy > {100 * ACCURACY_TARGET:g}% with coverage >= "
        f"{100 * COVERAGE_TARGET:g}% at some w > 1, on every seed): "
        + (f"met at w = {', '.join(f'{w:g}' for w in met)}." if met else "not met at any w."),
        "",
        f"![class accuracy and coverage against w]({name}.png)",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = result["settings"]["scales"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for key, ax, target, title in (
        ("class_accuracy", axes[0], ACCURACY_TARGET, "class accuracy (own ring's band)"),
        ("class_accuracy", axes[1], ACCURACY_TARGET, "class accuracy, 98-100%"),
        ("coverage", axes[2], COVERAGE_TARGET, "coverage (ring's 36 angle bins)"),
    ):
        for r in result["seeds"]:
            ax.plot(
                scales,
                [100 * x[key] for x in r["rows"]],
                "o-",
                lw=1,
                ms=3,
                label=f"seed {r['seed']}",
            )
        ax.axhline(100 * target, c="k", ls=":", lw=1, label=f"target {100 * target:g}%")
        ax.set(xlabel="guidance scale w", ylabel="%", title=title)
        ax.legend(loc="lower right", fontsize=8)
    axes[1].set(xlim=(0.9, 2.1), ylim=(98, 100.05))
    axes[1].legend(loc="lower center", fontsize=8)
    fig.suptitle(
        f"cfm with label dropout, seeds {', '.join(str(r['seed']) for r in result['seeds'])}"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=None, help="default: the cfm recipe's")
    p.add_argument(
        "--time-alpha", type=float, default=None, help="t ~ Beta(A, 1); default: the model's"
    )
    p.add_argument("--n-points", type=int, default=250_000)
    p.add_argument("--dt", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    p.add_argument("--name", default="guidance", help="file names: NAME.{json,md,png}")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # a shared machine: one thread, as the timings say
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_guidance.py " + " ".join(argv or sys.argv[1:])
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "settings": {
            "label_dropout": args.label_dropout,
            "time_alpha": args.time_alpha,
            "epochs": args.epochs or recipe("cfm").epochs,
            "n_points": args.n_points,
            "dt": args.dt,
            "scales": args.scales,
        },
        "seeds": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            result["seeds"].append(run_seed(seed, args, Path(tmp)))
            (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
            (args.out / f"{args.name}.md").write_text(markdown(result, args.name))
            plot(result, args.out / f"{args.name}.png")
            last = result["seeds"][-1]
            print(
                f"seed {seed}: trained in {last['train_s']:.1f} s; "
                + "; ".join(
                    f"w={x['w']:g} acc {100 * x['class_accuracy']:.2f}% "
                    f"cov {100 * x['coverage']:.1f}%"
                    for x in last["rows"]
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
