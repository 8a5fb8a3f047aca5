"""Small real data sets: do ``flowscope train nf`` and ``train fm`` with their defaults beat
a Gaussian mixture?

On each data file of ``benchmarks/data/`` (a few hundred 2D points; sources there), a
seeded 5-fold cross-validation: each fold's other four folds are written to a CSV file
and trained on exactly as ``flowscope train MODEL --data fold.csv`` does
(:func:`flowscope.runs.train_run` with the type's default recipe, which splits the file
90/5/5 into train, validation and test), and the held-out fold is scored by the run's
model. Beside them, on the same four folds (all their points: the baselines get the 10%
the runs hold out for validation and test), a Gaussian mixture whose components BIC
chooses (1 to 10, :func:`flowscope.baseline.mixture_baseline`) and one Gaussian; and the
same mixture fitted to the runs' own training points (90% of the four folds: the
baseline ``flowscope eval`` prints, "fitted to the same training points").

Reported per data set and model: the held-out NLL (nats per point, data units) mean and
standard deviation over the folds, the training seconds of each run, and the NLL less
the mixture's over every test point of the folds with its paired standard error
(``results/small.json`` keeps each point's NLL).

Run: ``python benchmarks/bench_small.py --out benchmarks/results/small``
(``--folds 2 --models nf`` for a quick check).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowscope.baseline import mixture_baseline
from flowscope.crossval import fold_indices
from flowscope.metrics import heldout_nll, standard_error
from flowscope.runs import load_run, read_info, run_data, train_run

DATA = Path(__file__).parent / "data"
FILES = ("faithful", "geyser")  # faithful chose the defaults; geyser was kept out


def read(name: str) -> tuple[list[str], np.ndarray]:
    """The header and the (N, 2) points of ``benchmarks/data/NAME.csv``."""
    path = DATA / f"{name}.csv"
    header = path.read_text().splitlines()[0].split(",")
    return header, np.loadtxt(path, delimiter=",", skiprows=1)


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index sets covering range(n), from a seeded permutation: the folds of
    ``flowscope train MODEL --data FILE --folds k`` (:func:`flowscope.crossval.fold_indices`)."""
    return fold_indices(n, k, seed)


def one_fold(name, header, x, test_idx, models, tmp: Path) -> dict:
    """Train every model on the other folds and score the held-out one."""
    train_idx = np.setdiff1d(np.arange(len(x)), test_idx)
    train_csv = tmp / f"{name}-train.csv"
    np.savetxt(train_csv, x[train_idx], delimiter=",", header=",".join(header), comments="")
    test = torch.tensor(x[test_idx], dtype=torch.float32)
    train = torch.tensor(x[train_idx], dtype=torch.float32)
    row: dict = {"test_points": len(test_idx), "train_points": len(train_idx)}
    per_point = {}  # each model's NLL of each test point
    for model in models:
        out = tmp / f"{name}-{model}"
        t0 = time.perf_counter()
        _, _, history = train_run(model, out, data=str(train_csv), overwrite=True, progress=False)
        seconds = time.perf_counter() - t0
        trained, _ = load_run(out)
        nll = heldout_nll(trained, test)
        per_point[model] = nll.points
        row[model] = {
            "nll": nll.data,
            "points": nll.points.tolist(),
            "seconds": seconds,
            "epochs": len(history.epochs),
            "best_epoch": history.best_epoch,
        }
    gmm = mixture_baseline(train, test)
    one = mixture_baseline(train, test, max_components=1)
    # Every run splits its file with the same seed: one training part for all of them.
    own = run_data(read_info(tmp / f"{name}-{models[0]}"), "train").x
    same = mixture_baseline(own, test)
    row["gmm_same"] = {
        "nll": same.nll_data,
        "points": same.points.tolist(),
        "components": same.components[0],
        "train_points": len(own),
    }
    row["gmm"] = {
        "nll": gmm.nll_data,
        "points": gmm.points.tolist(),
        "components": gmm.components[0],
        "collapsed_test_points": gmm.collapsed_test_points,
    }
    row["gaussian"] = {"nll": one.nll_data, "points": one.points.tolist()}
    # The same scores on the test points off the mixture's collapsed components, where no
    # density can spike.
    off = ~gmm.on_collapsed
    row["off_collapsed"] = {"points": int(off.sum()), "gmm": float(gmm.points[off].mean())}
    row["off_collapsed"]["gaussian"] = float(one.points[off].mean())
    for model in models:
        row["off_collapsed"][model] = float(per_point[model][off].mean())
    return row


def summary(rows: list[dict], key: str) -> dict:
    values = [r[key]["nll"] for r in rows]
    off = [r["off_collapsed"][key] for r in rows if key in r.get("off_collapsed", {})]
    out = {"nll_mean": statistics.fmean(values), "nll_std": statistics.stdev(values)}
    if len(off) == len(rows):
        out.update(off_mean=statistics.fmean(off), off_std=statistics.stdev(off))
    if "seconds" in rows[0][key]:
        secs = [r[key]["seconds"] for r in rows]
        out.update(seconds_mean=statistics.fmean(secs), seconds_max=max(secs))
    for base, name in (("gmm", "vs_gmm"), ("gmm_same", "vs_same")):
        if key in ("gmm", "gmm_same") or base not in rows[0] or "points" not in rows[0][key]:
            continue
        # Against the mixture, paired on every fold's test points (each point held out once).
        diff = torch.tensor(
            [m - g for r in rows for m, g in zip(r[key]["points"], r[base]["points"], strict=True)],
            dtype=torch.float64,
        )
        out.update(
            {
                name: float(diff.mean()),
                f"{name}_sem": standard_error(diff),
                f"{name}_points": len(diff),
            }
        )
    return out


def markdown(results: dict, command: str) -> str:
    left = "; ".join(
        f"{name} {sum(f['off_collapsed']['points'] for f in r['folds'])} of "
        f"{sum(f['test_points'] for f in r['folds'])}"
        for name, r in results["data"].items()
    )
    lines = [
        "# Small real data sets: 5-fold held-out NLL against a Gaussian mixture",
        "",
        f"`{command}`",
        "",
        "Nats per point, data units, mean ± sd over the folds (lower is better); training "
        "seconds of each `flowscope train` run, mean and max over the folds. "
        f"{results['settings']['note']}",
        "",
        "The last two columns score only the test points off the mixture's collapsed "
        "components (components whose variance along an axis is at scikit-learn's "
        "covariance floor, fitted on values recorded many times over: "
        "`flowscope.baseline.collapsed`), where a "
        f"density can be made as high as wished; test points left there, over the folds: "
        f"{left}.",
        "",
        "The column 'against the mixture' is the model's NLL less the mixture's, averaged "
        "over every test point of the folds (each point held out once), ± its paired "
        "standard error; 'against the mixture on the run's points' is the same against the "
        "mixture fitted to the runs' own training points (90% of the four folds, as "
        "`flowscope eval` fits it) rather than all four folds.",
        "",
        "| data | points | model | NLL | training s (mean / max) | beats the mixture | "
        "against the mixture, paired | against the mixture on the run's points, paired | "
        "NLL off collapsed components | beats the mixture there |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["data"].items():
        gmm = r["summary"]["gmm"]["nll_mean"]
        for key, s in r["summary"].items():
            secs = (
                f"{s['seconds_mean']:.1f} / {s['seconds_max']:.1f}" if "seconds_mean" in s else ""
            )
            gmm_off = r["summary"]["gmm"]["off_mean"]
            off = f"{s['off_mean']:.3f} ± {s['off_std']:.3f}" if "off_mean" in s else ""
            if key in ("gmm", "gmm_same", "gaussian"):
                beats = beats_off = ""
            else:
                beats = "yes" if s["nll_mean"] < gmm else "no"
                beats_off = "yes" if s.get("off_mean", math.inf) < gmm_off else "no"
            paired = f"{s['vs_gmm']:+.3f} ± {s['vs_gmm_sem']:.3f}" if "vs_gmm" in s else ""
            same = f"{s['vs_same']:+.3f} ± {s['vs_same_sem']:.3f}" if "vs_same" in s else ""
            label = {
                "gmm": "Gaussian mixture (BIC, components " + r["components"] + ")",
                "gmm_same": "the mixture on the runs' training points (components "
                + r["components_same"]
                + ")",
                "gaussian": "one Gaussian",
            }.get(key, f"flowscope train {key}")
            lines.append(
                f"| {name} | {r['points']} | {label} | {s['nll_mean']:.3f} ± "
                f"{s['nll_std']:.3f} | {secs} | {beats} | {paired} | {same} | {off} | "
                f"{beats_off} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default=",".join(FILES))
    p.add_argument("--models", default="nf,fm")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.add_argument("--out", default="benchmarks/results/small")
    args = p.parse_args(argv)
    models = args.models.split(",")
    results: dict = {
        "settings": {
            "folds": args.folds,
            "seed": args.seed,
            "models": models,
            "torch_threads": torch.get_num_threads(),
            "note": "Each run trains on 90% of its four folds (the rest is its validation "
            "and test part); the baselines fit all of them.",
        },
        "data": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            header, x = read(name)
            rows = []
            for k, test_idx in enumerate(folds(len(x), args.folds, args.seed)):
                rows.append(one_fold(name, header, x, test_idx, models, Path(tmp)))
                scores = ", ".join(
                    f"{key} {v['nll']:.3f}"
                    for key, v in rows[-1].items()
                    if isinstance(v, dict) and "nll" in v
                )
                print(f"{name} fold {k}: {scores}", flush=True)
            results["data"][name] = {
                "points": len(x),
                "columns": header,
                "folds": rows,
                "components": ",".join(str(r["gmm"]["components"]) for r in rows),
                "components_same": ",".join(str(r["gmm_same"]["components"]) for r in rows),
                "summary": {
                    key: summary(rows, key) for key in (*models, "gmm", "gmm_same", "gaussian")
                },
            }
    command = "python benchmarks/bench_small.py " + " ".join(argv or sys.argv[1:])
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, command.strip()))
    print(markdown(results, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
