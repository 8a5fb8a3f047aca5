"""Few-step sampling: the base flow-matching model, its 2-rectified flow and a mean flow,
W2 and the share in a band against the number of Euler steps, on the moons and the rings.

Per data set and seed, in one process, through the library's run folders:

- ``fm``: :func:`flowscope.runs.train_run` of the fm type with its defaults, on
  ``--n-points`` points for ``--epochs`` epochs;
- ``2-rectified``: :func:`flowscope.reflow.reflow_run` of that run, ``--pairs`` pairs
  drawn with the study's Euler steps (dt 1e-3), trained with the base's recipe and
  reflow's defaults (t ~ U[0, 1], no Gaussian skip; ``--warm-start``: from the base's
  weights, with its skip);
- ``meanflow``: the meanflow type with ``--mf-*`` settings (its own recipe: the
  JVP step costs several fm steps, so it gets larger batches and fewer of them).

For every model and K in ``--nfe`` (Euler steps; a mean flow's steps are its average
velocity's, :class:`flowscope.matching.MeanFlow`): W2 between ``--n`` samples and as many
of the run's held-out test points (:func:`flowscope.metrics.w2_by_nfe`, exact, data units)
and, for the rings, the share of the samples in some ring's band
(:func:`flowscope.metrics.ring_precision`); straightness and normalized path energy
(:func:`flowscope.metrics.path_metrics`, 100 Euler steps) of the base and the 2-rectified
model; the training time of each, wall and CPU (the process's CPU seconds, which a loaded
machine stretches less), the reflow's including the drawing of its pairs.

The issue's targets: the 2-rectified model's 1-step W2 at most twice the base's 100-step
W2 (moons and rings); the mean flow's 1-step W2 on the moons within 2x of the base's
100-step W2 with training time within 3x of the base's.

Run: ``python benchmarks/bench_fewstep.py --data moons,olympic --seeds 0 --out
benchmarks/results/fewstep`` (the options used are in the results file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowscope import metrics
from flowscope.evaluate import data_draw
from flowscope.reflow import reflow_run
from flowscope.runs import load_run, run_data, train_run
from flowscope.train import TrainConfig

MODELS = ("fm", "2-rectified", "meanflow")


def timed(fn):
    """fn's result, its wall seconds and the process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def train_three(data: str, seed: int, args, root: Path) -> dict[str, dict]:
    """The three run folders of one data set and seed, with their training times."""
    base = TrainConfig(epochs=args.epochs, seed=seed)
    mf = TrainConfig(epochs=args.mf_epochs, batch_size=args.mf_batch, lr=args.mf_lr, seed=seed)
    common = dict(data=data, n_points=args.n_points, holdout_points=args.n, progress=False)
    jobs = {
        "fm": lambda: train_run("fm", root / "fm", config=base, **common),
        "2-rectified": lambda: reflow_run(
            root / "fm",
            root / "rf2",
            n_points=args.pairs,
            config=base,
            progress=False,
            warm_start=args.warm_start,
        ),
        "meanflow": lambda: train_run(
            "meanflow",
            root / "mf",
            config=mf,
            model_args={"jump_share": args.jump_share, "adaptive_power": args.adaptive_power},
            **common,
        ),
    }
    runs = {}
    for name, job in jobs.items():
        _, wall, cpu = timed(job)
        runs[name] = {"dir": root / {"fm": "fm", "2-rectified": "rf2", "meanflow": "mf"}[name]}
        runs[name].update(train_wall_s=wall, train_cpu_s=cpu)
        print(f"{data} seed {seed}: trained {name} in {wall:.1f} s ({cpu:.1f} s CPU)", flush=True)
    return runs


def measure(data: str, seed: int, args, root: Path) -> list[dict]:
    runs = train_three(data, seed, args, root)
    _, base_info = load_run(runs["fm"]["dir"])
    test = run_data(base_info, "test").x[: args.n]  # the data's own test part, for all three
    floor = metrics.w2_noise_floor(data_draw(data), args.n, seed=1000 + seed)
    rows = []
    for name, run in runs.items():
        model, _ = load_run(run["dir"])
        curve = metrics.w2_by_nfe(model, test, nfe=args.nfe, adaptive=False, seed=seed)
        row = dict(data=data, seed=seed, model=name, w2_floor=floor, **run)
        row["dir"] = str(run["dir"])
        row.update(times=model.times.describe(), gaussian_skip=model.gaussian_skip)
        row["w2"] = {p.nfe: p.w2 for p in curve}
        if data == "olympic":
            g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731 - the same noise
            row["band"] = {
                k: metrics.ring_precision(model.sample(args.n, generator=g(), dt=1 / k)).precision
                for k in args.nfe
            }
        if name != "meanflow":
            pm = metrics.path_metrics(model, test, generator=torch.Generator().manual_seed(seed))
            row.update(straightness=pm.straightness, npe=pm.npe)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "dir"}), flush=True)
    return rows


def _stat(values: list[float], fmt: str = ".4f") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def markdown(rows: list[dict], args, command: str) -> str:
    nfe = args.nfe
    warm = getattr(args, "warm_start", False)
    start = "from the base's weights" if warm else "from a fresh initialisation"
    rf = [r for r in rows if r["model"] == "2-rectified" and "times" in r]
    if rf:  # as the runs recorded them (rows of older files lack them)
        skip = {r["gaussian_skip"] for r in rf}
        skip_text = (
            "with" if skip == {True} else "without" if skip == {False} else "with or without"
        )
        start += (
            f", t ~ {', '.join(sorted({r['times'] for r in rf}))}, {skip_text} the Gaussian skip"
        )
    lines = [
        "# Few-step sampling: fm, its 2-rectified flow and a mean flow",
        "",
        f"Command: `{command}`",
        "",
        f"fm and the 2-rectified flow: {args.epochs} epochs, batch 128, lr 1e-3 (the fm "
        f"recipe) on {args.n_points:,} points, the reflow on {args.pairs:,} pairs {start}; "
        "meanflow: "
        f"{args.mf_epochs} epochs, batch {args.mf_batch}, lr {args.mf_lr:g}, jump share "
        f"{args.jump_share:g}, adaptive power {args.adaptive_power:g}. W2 (data units) between "
        f"{args.n} samples and {args.n} held-out points with K Euler steps (mean ± sd over "
        "the seeds where there are several); band: the share of the samples in some ring's "
        "band. Training times: wall and CPU seconds, the reflow's with the drawing of its "
        "pairs.",
        "",
    ]
    for data in dict.fromkeys(r["data"] for r in rows):
        rs = [r for r in rows if r["data"] == data]
        floor = _stat([r["w2_floor"] for r in rs if r["model"] == "fm"])
        lines += [f"## {data} (W2 noise floor at {args.n} points: {floor})", ""]
        head = "| model | " + " | ".join(f"W2, K={k}" for k in nfe)
        head += " | straightness | NPE | train s (wall) | train s (CPU) |"
        lines += [head, "|---" * (len(nfe) + 5) + "|"]
        for name in MODELS:
            m = [r for r in rs if r["model"] == name]
            cells = [_stat([r["w2"][k] for r in m]) for k in nfe]
            cells += [_stat([r[k] for r in m if k in r]) for k in ("straightness", "npe")]
            cells += [_stat([r[k] for r in m], ".1f") for k in ("train_wall_s", "train_cpu_s")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if data == "olympic":
            lines += ["", "| model | " + " | ".join(f"band, K={k}" for k in nfe) + " |"]
            lines += ["|---" * (len(nfe) + 1) + "|"]
            for name in MODELS:
                m = [r for r in rs if r["model"] == name]
                cells = [_stat([r["band"][k] for r in m], ".2%") for k in nfe]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", *targets(rs), ""]
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, per seed: met or not, with the numbers."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        by = {r["model"]: r for r in rows if r["seed"] == seed}
        base = by["fm"]["w2"][100]
        rf1 = by["2-rectified"]["w2"][1]
        mf1 = by["meanflow"]["w2"][1]
        ratio = by["meanflow"]["train_cpu_s"] / by["fm"]["train_cpu_s"]
        out.append(
            f"- seed {seed}: 2-rectified 1-step W2 {rf1:.4f} vs 2 x base 100-step "
            f"{2 * base:.4f}: {'met' if rf1 <= 2 * base else 'not met'}; mean flow 1-step "
            f"W2 {mf1:.4f}: {'met' if mf1 <= 2 * base else 'not met'}, training CPU time "
            f"{ratio:.2f}x the base's: {'met' if ratio <= 3 else 'not met'}"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="moons,olympic")
    p.add_argument("--seeds", default="0")
    p.add_argument("--n-points", type=int, default=250_000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--pairs", type=int, default=250_000)
    p.add_argument("--mf-epochs", type=int, default=8)
    p.add_argument("--mf-batch", type=int, default=512)
    p.add_argument("--mf-lr", type=float, default=2e-3)
    p.add_argument("--jump-share", type=float, default=0.75)
    p.add_argument("--adaptive-power", type=float, default=0.5)
    p.add_argument("--warm-start", action="store_true", help="reflow from the base's weights")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--nfe", default="1,2,4,8,16,100")
    p.add_argument("--out", default="benchmarks/results/fewstep")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="write OUT from the rows of these results files (runs of the same settings, "
        "e.g. one per data set or seed, made in parallel) instead of measuring",
    )
    args = p.parse_args()
    args.nfe = [int(k) for k in args.nfe.split(",")]
    torch.set_num_threads(1)
    if args.merge:
        files = [json.loads(Path(f).read_text()) for f in args.merge]
        commands = [f["args"]["command"] for f in files]
        rows = [_keys_as_ints(r) for f in files for r in f["rows"]]
        settings = argparse.Namespace(**{**files[0]["args"], "nfe": args.nfe})
        command = " && ".join(commands) + " && " + _command(sys.argv[1:])
    else:
        settings, command = args, _command(sys.argv[1:])
        rows = []
        tmp = Path(tempfile.mkdtemp(prefix="bench_fewstep_"))
        for data in args.data.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                root = tmp / f"{data}-{seed}"
                root.mkdir()
                rows += measure(data, seed, args, root)
    out = Path(args.out)
    text = markdown(rows, settings, command)
    saved = {**vars(settings), "command": command}
    out.with_suffix(".json").write_text(json.dumps(dict(args=saved, rows=rows), indent=1) + "\n")
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


def _command(argv: list[str]) -> str:
    return " ".join(["python benchmarks/bench_fewstep.py", *argv])


def _keys_as_ints(row: dict) -> dict:
    """A row read back from JSON, whose step counts became strings."""
    for key in ("w2", "band"):
        if key in row:
            row[key] = {int(k): v for k, v in row[key].items()}
    return row


if __name__ == "__main__":
    main()
