"""Quality of the seed's recipes after 20 epochs: held-out NLL and class accuracy.

Trains each model exactly as ``flowscope train`` does (:func:`flowscope.runs.train_run`:
250,000 Olympic points, batch 128, Adam lr 1e-3, cosine decay, 20 epochs) and reports

- normalizing flow, seeds 0-4, with and without a soft bound on log s: held-out NLL
  (nats per point, standardized coordinates) on the run's 10,000-point test set, wall
  time, and whether training diverged (issue 3: target <= 2.0, no NaN on any seed);
- unconditional flow matching: held-out NLL by the exact instantaneous change of
  variables (rk4, 100 steps) on the same kind of test set (issue 4: target <= 1.9);
- conditional flow matching: share of samples (1000 Euler steps, balanced labels) that
  land in their own ring's band (issue 4: target >= 98%), with the class-conditional
  held-out NLL beside it, because a model can score a high accuracy with a poor density
  (rings squeezed into clumps);
- for both flow-matching models, W2 between 2000 samples and 2000 test points, and the
  same for two draws of the data (the noise floor at that size);

for each ``time_alpha`` asked for (the training times t ~ Beta(alpha, 1), given to the
model as its time sampler ``times`` the way ``flowscope train --time-alpha`` gives it; 1
is the seed's U[0, 1]; ``default``: each model's library default, 5 for FM and 7 for
CFM; the results keep the key ``time_alpha``, 1 for uniform times), each
``gaussian_skip`` asked for (``on``: the velocity is the network plus the exact field of
N(0, I) data, the library's default; ``off``: the network alone, the seed's recipe) and,
for the conditional model, each ``standardize`` asked for (``class``:
each ring standardized by its own mean and scale, the library's default; ``global``: all
points together, the seed's recipe). The conditional NLL is given in the coordinates of
the unconditional benchmark, all training points standardized per axis together, so that
it compares across both choices.

Results go to ``benchmarks/results/quality.json`` and ``quality.md`` (rewritten after
every run, so an interrupted benchmark keeps what it measured).

Usage::

    python benchmarks/bench_quality.py                       # everything, ~15-20 min
    python benchmarks/bench_quality.py --seeds 0 --bounds none --no-fm --epochs 2
"""

from __future__ import annotations

import argparse
import datetime
import itertools
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

from flowscope.base import STANDARDIZE
from flowscope.matching import DEFAULT_CONDITIONAL_TIME_ALPHA, DEFAULT_TIME_ALPHA, UniformTimes
from flowscope.metrics import class_accuracy, heldout_nll, ring_precision, wasserstein2
from flowscope.models import MODELS
from flowscope.runs import run_data, train_run
from flowscope.train import TrainConfig, TrainingDiverged

RESULTS = Path(__file__).resolve().parent / "results"
NLL_FLOOR = 1.562  # differential entropy of the standardized Olympic data, nats
W2_POINTS = 2000  # samples and test points of each W2
CONDITIONAL_NLL_POINTS = 2000  # test points of the CFM's class-conditional NLL


def _bound(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _alpha(text: str) -> float | None:
    return None if text.lower() == "default" else float(text)


def _machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_start": list(os.getloadavg()),
    }


def model_args(model: str, settings: dict) -> dict:
    """The constructor arguments of a row's settings: ``time_alpha`` a becomes the time
    sampler ``flowscope train --time-alpha a`` gives (Beta(a, 1); uniform for a = 1)."""
    args = {k: v for k, v in settings.items() if k != "time_alpha"}
    if settings.get("time_alpha") is not None:
        (option,) = [o for o in MODELS.get(model).options if o.flag == "--time-alpha"]
        args.update(option.to_args(settings["time_alpha"]))
    return args


def time_alpha(m) -> float:
    """The a of a flow-matching model's training times t ~ Beta(a, 1) (1: uniform)."""
    return 1.0 if isinstance(m.times, UniformTimes) else m.times.alpha


def train_one(
    model: str,
    seed: int,
    epochs: int,
    n_points: int,
    settings: dict,
    keep: Path | None,
    grad_clip: float | None = None,
) -> dict:
    """Train one run (in ``keep`` if given, else a temporary folder); return its numbers.

    ``settings``: the model's constructor arguments, with ``time_alpha`` for the time
    sampler (see :func:`model_args`); they go into the row as given.
    """
    row: dict = {"model": model, "seed": seed, "epochs": epochs, "grad_clip": grad_clip}
    row.update(settings)
    parts = [f"{k}{v}" for k, v in settings.items()] + [f"clip{grad_clip}"] * bool(grad_clip)
    name = "-".join([model, f"seed{seed}", *parts])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            m, info, history = train_run(
                model,
                (keep or Path(tmp)) / name,
                n_points=n_points,
                config=TrainConfig(epochs=epochs, seed=seed, grad_clip=grad_clip),
                model_args=model_args(model, settings),
                progress=False,
                overwrite=keep is not None,
            )
        except TrainingDiverged as err:
            row.update(wall_s=time.perf_counter() - t0, nan=True, error=str(err))
            return row
        row["wall_s"] = time.perf_counter() - t0
    row["train_s"] = history.seconds
    if model != "nf":  # the values the model was built with, defaults included
        row["time_alpha"] = time_alpha(m)
        keys = ("gaussian_skip",) + (("standardize",) if model == "cfm" else ())
        row.update({k: m.config()[k] for k in keys})
    row["val_loss"] = history.epochs[-1].get("val_loss")
    row["val_curve"] = [e.get("val_loss") for e in history.epochs]
    losses = torch.tensor(history.batch_loss, dtype=torch.float64)
    # A diverging step need not give NaN: one batch can blow up the loss (and the weights)
    # and training goes on from there, so the largest batch loss is recorded too.
    worst = int(losses.argmax())
    row["max_batch_loss"] = float(losses[worst])
    row["max_batch_loss_step"] = worst + 1
    row["nan"] = not bool(torch.isfinite(losses).all())
    row["_model"], row["_info"] = m, info
    return row


def evaluate(row: dict, accuracy_samples: int) -> dict:
    """Add the held-out numbers to a trained run's row."""
    m, info = row.pop("_model", None), row.pop("_info", None)
    if m is None:
        return row
    test = run_data(info, "test")
    t0 = time.perf_counter()
    n_w2 = min(W2_POINTS, len(test.x) // 2)
    if info.data.get("conditional"):
        n_w2 = min(n_w2, accuracy_samples)  # W2 takes the accuracy's samples
        labels = torch.arange(accuracy_samples) % m.num_classes
        x = m.sample(accuracy_samples, labels=labels, generator=torch.Generator().manual_seed(0))
        acc = class_accuracy(x, labels)
        row["class_accuracy"] = acc.overall
        row["class_accuracy_per_class"] = list(acc.per_class)
        # In some ring's band at all: separates blur (off every band) from class mix-ups.
        row["in_any_band"] = ring_precision(x).precision
        row["accuracy_samples"] = accuracy_samples
        # The accuracy alone can be bought with a poor density: the conditional NLL shows it.
        k = CONDITIONAL_NLL_POINTS
        nll = heldout_nll(m, test.x[:k], test.labels[:k])
        # In one coordinate system for every CFM: all training points standardized per
        # axis together (equal to nll.standardized for standardize="global").
        log_scale = float(run_data(info, "train").x.double().std(dim=0).log().sum())
        row["test_nll_conditional"] = nll.data - log_scale
        # Test points are shuffled, so their class shares match the balanced samples'.
        row["w2"] = wasserstein2(x[:n_w2], test.x[:n_w2])
    else:
        nll = heldout_nll(m, test.x)
        row["test_nll"] = nll.standardized
        row["test_points"] = nll.n
        row["nan"] = row["nan"] or not math.isfinite(nll.standardized)
        x = m.sample(n_w2, generator=torch.Generator().manual_seed(0))
        row["w2"] = wasserstein2(x, test.x[:n_w2])
    # Two halves of the test set: what a perfect model would score at this size.
    row["w2_floor"] = wasserstein2(test.x[:n_w2], test.x[n_w2 : 2 * n_w2])
    row["w2_points"] = n_w2
    row["eval_s"] = time.perf_counter() - t0
    return row


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    return format(v, ".3g") if abs(v) >= 1e6 else format(v, spec)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Quality benchmark ({result['date']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} thread, "
        f"load average at start {', '.join(f'{v:.1f}' for v in m['load_average_at_start'])} "
        "(shared machine: wall times are noisy).",
        "",
        "NLL: nats per point, standardized coordinates, on each run's 10,000-point test set "
        f"(floor: the data's entropy, {NLL_FLOOR}). Wall time: the whole `train_run` "
        "(data, training, per-epoch validation and checkpoints).",
        "",
        "Flow matching: `time_alpha` a means training times t ~ Beta(a, 1) (1: the seed's "
        "U[0, 1]); `skip`: the velocity is the network plus the exact field of N(0, I) "
        "data (`gaussian_skip`), or the network alone (the seed's recipe); "
        "`standardize` class: each ring standardized by its own mean and scale "
        "(its noise starts around the ring's centre), global: all points together (the "
        "seed's recipe). CFM's NLL is the class-conditional one, -mean log p(x | ring), on "
        "2000 test points, in the coordinates of the NLL column (all training points "
        "standardized together). W2 (data units): 2000 samples against 2000 test points; "
        "floor: two halves of the test set.",
        "",
        "| model | log_scale_bound | grad_clip | time_alpha | skip | standardize | seed "
        "| test NLL | class acc. | W2 (floor) | NaN | max batch loss (step) | train s "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        nf = r["model"] == "nf"
        bound = r.get("log_scale_bound", "-") if nf else "-"
        clip = r.get("grad_clip") if nf else "-"
        acc = r.get("class_accuracy")
        nll = r.get("test_nll", r.get("test_nll_conditional"))
        w2 = "-" if "w2" not in r else f"{r['w2']:.3f} ({r['w2_floor']:.3f})"
        lines.append(
            f"| {r['model']} | {bound} | {clip} | {r.get('time_alpha', '-')} | "
            f"{_skip(r)} | {r.get('standardize', '-')} | {r['seed']} | "
            f"{_fmt(nll, '.4f')} | "
            f"{'-' if acc is None else f'{100 * acc:.2f}%'} | {w2} | "
            f"{'yes' if r['nan'] else 'no'} | "
            f"{_fmt(r.get('max_batch_loss'), '.3g')} ({r.get('max_batch_loss_step', '-')}) | "
            f"{_fmt(r.get('train_s'), '.1f')} | {_fmt(r.get('wall_s'), '.1f')} |"
        )
    lines += ["", "Summary:", ""]
    for s in result["summary"]:
        lines.append(f"- {s}")
    return "\n".join(lines) + "\n"


def _skip(row: dict) -> str:
    if row["model"] == "nf":
        return "-"
    return "on" if row.get("gaussian_skip", False) else "off"  # older rows had none


def _median(rows: list[dict], key: str, spec: str) -> str:
    """The median of ``key`` over the rows that have it (rows written before the key
    existed have none)."""
    values = [r[key] for r in rows if key in r]
    return f"median {statistics.median(values):{spec}}" if values else "not measured"


def summarize(runs: list[dict]) -> list[str]:
    out = []
    nf = [r for r in runs if r["model"] == "nf"]
    settings = {(r.get("log_scale_bound"), r.get("grad_clip")) for r in nf}
    for bound, clip in sorted(settings, key=str):
        rs = [r for r in nf if (r.get("log_scale_bound"), r.get("grad_clip")) == (bound, clip)]
        done = [r for r in rs if "test_nll" in r]
        nlls = [r["test_nll"] for r in done]
        diverged = [r["seed"] for r in rs if "test_nll" not in r]
        nans = sum(r["nan"] for r in rs)
        spikes = [r["seed"] for r in rs if r.get("max_batch_loss", 0) > 100]
        if nlls:
            out.append(
                f"NF, log_scale_bound={bound}, grad_clip={clip}: "
                f"test NLL median {statistics.median(nlls):.4f}, "
                f"worst {_fmt(max(nlls), '.4f')} over seeds {[r['seed'] for r in done]}; "
                f"NaN in {nans} of {len(rs)} runs"
                + (f" (stopped: seeds {diverged})" if diverged else "")
                + "; "
                + (f"a batch loss above 100 nats in seeds {spikes}; " if spikes else "")
                + "mean train time "
                f"{statistics.mean(r['train_s'] for r in done):.1f} s (target <= 2.0 nats)"
            )
    fm = [r for r in runs if r["model"] in ("fm", "cfm")]

    def key(r):
        return r["model"], r.get("time_alpha"), _skip(r), r.get("standardize")

    for model, alpha, skip, how in sorted({key(r) for r in fm}, key=str):
        rs = [r for r in fm if key(r) == (model, alpha, skip, how)]
        seeds = [r["seed"] for r in rs]
        if model == "fm" and all("test_nll" in r for r in rs):
            nlls = [r["test_nll"] for r in rs]
            out.append(
                f"FM, time_alpha={alpha}, skip {skip}: test NLL median "
                f"{statistics.median(nlls):.4f}, "
                f"worst {max(nlls):.4f} over seeds {seeds} (target <= 1.9)"
            )
        if model == "cfm" and all("class_accuracy" in r for r in rs):
            accs = [100 * r["class_accuracy"] for r in rs]
            out.append(
                f"CFM, time_alpha={alpha}, skip {skip}, standardize={how}: class accuracy median "
                f"{statistics.median(accs):.2f}%, "
                f"worst {min(accs):.2f}% over seeds {seeds} (target >= 98%); in some ring's "
                f"band: {_median(rs, 'in_any_band', '.2%')}; "
                f"conditional NLL {_median(rs, 'test_nll_conditional', '.4f')}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[0, 1, 2, 3, 4],
        help="NF seeds (none: skip the flow)",
    )
    p.add_argument(
        "--bounds",
        type=_bound,
        nargs="+",
        default=[1.0, None],
        help="NF log_scale_bound values ('none': no bound); default: 1.0 (the library's) and none",
    )
    p.add_argument(
        "--grad-clip",
        type=_bound,
        nargs="+",
        default=[None],
        help="NF gradient-norm clip values (TrainConfig.grad_clip; 'none': off); default none",
    )
    p.add_argument("--fm-seeds", type=int, nargs="*", default=[0], help="FM and CFM seeds")
    p.add_argument(
        "--time-alpha",
        type=_alpha,
        nargs="+",
        default=[None],
        help="FM and CFM training times t ~ Beta(a, 1); default: the library's "
        f"({DEFAULT_TIME_ALPHA:g} for FM, {DEFAULT_CONDITIONAL_TIME_ALPHA:g} for CFM; "
        "'default' names it in a list); 1 is uniform t (Algorithm 1)",
    )
    p.add_argument(
        "--gaussian-skip",
        choices=["on", "off"],
        nargs="+",
        default=["on"],
        help="FM and CFM velocity: the network plus the exact field of N(0, I) data ('on', "
        "the library's default) and/or the network alone ('off', the seed's recipe)",
    )
    p.add_argument(
        "--standardize",
        choices=STANDARDIZE,
        nargs="+",
        default=["class"],
        help="CFM standardization: 'class' (each ring by its own mean and scale; the "
        "library's default for a conditional model) and/or 'global' (the seed's recipe)",
    )
    p.add_argument("--no-fm", action="store_true", help="skip flow matching")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-points", type=int, default=250_000)
    p.add_argument("--accuracy-samples", type=int, default=5000)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for quality.{json,md}")
    p.add_argument("--keep", type=Path, help="save the run folders under this folder")
    p.add_argument(
        "--render", action="store_true", help="only rewrite quality.md from quality.json"
    )
    args = p.parse_args(argv)
    if args.render:
        result = json.loads((args.out / "quality.json").read_text())
        result["summary"] = summarize(result["runs"])
        (args.out / "quality.md").write_text(markdown(result))
        print(markdown(result))
        return 0
    torch.set_num_threads(1)

    plan: list[tuple[str, int, dict, float | None]] = [
        ("nf", s, {"log_scale_bound": b}, c)
        for c in args.grad_clip
        for b in args.bounds
        for s in args.seeds
    ]
    if not args.no_fm:
        for a, skip, s in itertools.product(args.time_alpha, args.gaussian_skip, args.fm_seeds):
            fm_args = {"gaussian_skip": skip == "on"}
            if a is not None:
                fm_args["time_alpha"] = a
            plan.append(("fm", s, fm_args, None))
            plan += [("cfm", s, {**fm_args, "standardize": h}, None) for h in args.standardize]
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_quality.py " + " ".join(argv or sys.argv[1:]),
        "machine": _machine(),
        "settings": {"epochs": args.epochs, "n_points": args.n_points, "batch_size": 128},
        "runs": [],
        "summary": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    for model, seed, margs, clip in plan:
        row = evaluate(
            train_one(model, seed, args.epochs, args.n_points, margs, args.keep, clip),
            args.accuracy_samples,
        )
        result["runs"].append(row)
        result["summary"] = summarize(result["runs"])
        print(json.dumps(row), flush=True)
        (args.out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "quality.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
