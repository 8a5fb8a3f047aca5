"""``flowscope eval``: the options, then :func:`~flowscope.evaluate.evaluate_run`, its table
and its JSON file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..atomic import atomic_write
from ..defaults import CV_FILE, EVAL_FLOOR_PAIRS, EVAL_N, EVAL_NFE, likelihood_text
from ..matching.solvers import DEFAULT_DT
from ..models import MODELS
from . import CommandError, add_command, int_type, run_folder
from .commands import (
    DATA_FILES,
    EVAL_JSON,
    add_device,
    distinct_outputs,
    output_path,
    plot_path,
    run_input_files,
)

__all__ = ["add_commands"]


def _eval(args: argparse.Namespace) -> int:
    from ..evaluate import (
        FEW_TEST_POINTS,
        evaluate_run,
        format_nfe_side_by_side,
        format_nfe_table,
        format_paired,
        format_table,
        plot_nfe,
    )

    runs = [Path(r) for r in args.run_dir]
    if args.json and len(runs) > 1:
        raise CommandError(
            f"--json names one file and {len(runs)} runs were given: drop --json (each run's "
            "eval.json is written in its own folder) or give one run"
        )
    twice = [str(r) for i, r in enumerate(runs) if r.resolve() in {q.resolve() for q in runs[:i]}]
    if twice:
        raise CommandError(f"{twice[0]} is given twice: name each run once")
    if len(runs) > 1:  # every run readable before the first is measured (and its file written)
        from ..runs import read_info

        for r in runs:
            read_info(r)
    outs = [output_path(args.json, "--json") or r / EVAL_JSON for r in runs]
    plot = plot_path(args.plot)
    for run_dir, out in zip(runs, outs, strict=True):
        distinct_outputs(run_input_files(run_dir), json=out, plot=plot)
    if args.plot and args.nfe is None:
        args.nfe = EVAL_NFE  # the plot is of the NFE curve
    results = []
    for k, (run_dir, out) in enumerate(zip(runs, outs, strict=True)):
        if len(runs) > 1:  # each run takes seconds (its NLL alone, for flow matching)
            print(f"measuring {run_dir} ({k + 1} of {len(runs)})...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = evaluate_run(
            run_dir,
            n=args.n,
            seed=args.seed,
            floor_pairs=args.floor_pairs,
            device=args.device,
            nfe=args.nfe,
            per_point=True,  # in eval.json, and for the paired comparison of several runs
        )
        # The files first: a reader that closes the pipe early (`| head`) loses nothing.
        atomic_write(out, json.dumps(result, indent=2, allow_nan=False) + "\n")
        results.append(result)
        if len(runs) > 1:
            print(f"  done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    written = [*outs] + ([plot_nfe(results, plot)] if plot else [])
    for run_dir, result in zip(runs, results, strict=True):
        if len(runs) > 1:
            print(f"== {run_dir}")
        print(format_table(result))
        if args.nfe is not None:
            print()
            print(format_nfe_table(result))
        print()
    if len(runs) > 1:
        print(format_paired(results))
        print()
    elif 0 < (results[0]["nll_points"] or 0) < FEW_TEST_POINTS:
        first = results[0]
        every = ""
        source = Path(first["data"])
        if source.name.startswith("fold-") and (source.parent / CV_FILE).is_file():
            every = (
                f"; it is a fold of the cross-validation in {source.parent}, whose {CV_FILE} "
                "holds every row's NLL, each held out once"
            )
        elif source.suffix.lower() in DATA_FILES:
            entry = MODELS.get(first["model"]) if first["model"] in MODELS.names() else None
            flag = (
                " --conditional"
                if first["conditional"] and entry and entry.conditional_option
                else ""
            )
            every = (
                f"; `flowscope train {first['model']}{flag} --data {first['data']} --folds 5` "
                "(with this run's other options) holds out every row of the file once instead"
            )
        print(
            f"flowscope: note: `flowscope eval {runs[0]} OTHER_RUN` compares this model with "
            f"another run's on the same test points, by the paired standard error{every}",
            file=sys.stderr,
        )
    if args.nfe is not None and len(runs) > 1:
        print(format_nfe_side_by_side(results, args.nfe))
        print()
    print("\n".join(f"wrote {p}" for p in written))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope eval``."""
    p = add_command(
        sub,
        "eval",
        "Measure a trained model: held-out NLL, W2 to the data and its noise floor, ring "
        f"metrics, round trip. Flow matching samples with Euler steps of {DEFAULT_DT:g} (a "
        "mean flow with its one step) and "
        f"computes the NLL with {likelihood_text()}. Several runs on the same test points: "
        "their NLL differences from the first, with paired standard errors. With --nfe: W2 "
        "against the function evaluations, straightness and normalized path energy. "
        "RUN_DIR/eval.json records it all, each test point's NLL among it.",
        "flowscope eval runs/nf runs/fm   # and their NLL difference, paired\n"
        "  flowscope eval runs/fm --nfe 1,2,4,8,16,32,100 --plot nfe.png\n"
        "  flowscope eval runs/fm runs/fm-2rf runs/mf --nfe 1,2,4,8,16,100   # side by side",
        _eval,
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=run_folder,
        nargs="+",
        help="run folders written by flowscope train or reflow; with several, each is "
        "measured on the same settings, the NLL of each is compared with the first's, and "
        "--nfe adds a table of them side by side",
    )
    add_device(p)
    p.add_argument(
        "-n",
        "--n",
        dest="n",
        type=int_type(2),
        default=EVAL_N,
        help=f"samples to draw and compare with the test points (W2, ring metrics), >= 2 "
        f"(default {EVAL_N}); on data other than the rings, where W2 alone uses them, at "
        "most as many as the test points; the held-out NLL uses every test point whatever "
        "-n is",
    )
    p.add_argument(
        "--seed", type=int_type(0), default=0, help="seed of the samples, >= 0 (default 0)"
    )
    p.add_argument(
        "--floor-pairs",
        type=int_type(1),
        default=EVAL_FLOOR_PAIRS,
        help=f"pairs of data draws averaged for the W2 noise floor (default {EVAL_FLOOR_PAIRS})",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        help="where to write the JSON of one run (default RUN_DIR/eval.json, for each run)",
    )
    p.add_argument(
        "--nfe",
        type=_step_counts,
        metavar="K,K,...",
        help="also measure W2 to the test points with Euler at these step counts and with "
        "dopri5 (its evaluation count), and the paths' straightness and normalized path "
        "energy; a normalizing flow gets one row, one pass (e.g. "
        f"{','.join(map(str, EVAL_NFE))})",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="draw W2 against the function evaluations to FILE (.png, .pdf, .svg; implies "
        f"--nfe {','.join(map(str, EVAL_NFE))} unless given)",
    )


def _step_counts(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. ``1,2,4``."""
    try:
        counts = tuple(int(k) for k in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers such as 1,2,4,8, got {text!r}"
        )
    return counts
