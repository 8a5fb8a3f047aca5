"""``flowscope eval``: the options, then :func:`~flowscope.evaluate.evaluate_run`, its table
and its JSON file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluate import DEFAULT_N, FLOOR_PAIRS, evaluate_run, format_table
from ..matching import DEFAULT_DT, FlowMatching
from ..runs import atomic_write
from . import CommandError, add_command, int_type
from .commands import add_device

__all__ = ["add_commands"]


def _eval(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    out = Path(args.json) if args.json else run_dir / "eval.json"
    if args.json and not out.parent.is_dir():
        raise CommandError(f"{out.parent}: folder does not exist; create it first")
    result = evaluate_run(
        run_dir, n=args.n, seed=args.seed, floor_pairs=args.floor_pairs, device=args.device
    )
    print(format_table(result))
    atomic_write(out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope eval``."""
    p = add_command(
        sub,
        "eval",
        "Measure a trained model: held-out NLL, W2 to the data and its noise floor, ring "
        f"metrics, round trip. Flow matching samples with Euler steps of {DEFAULT_DT:g} and "
        f"computes the NLL with {FlowMatching.likelihood_method()}.",
        "flowscope eval runs/nf -n 2000 --json runs/nf/eval.json",
        _eval,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by flowscope train")
    add_device(p)
    p.add_argument(
        "-n",
        "--n",
        dest="n",
        type=int_type(2),
        default=DEFAULT_N,
        help=f"samples to draw and compare, >= 2 (default {DEFAULT_N})",
    )
    p.add_argument(
        "--seed", type=int_type(0), default=0, help="seed of the samples, >= 0 (default 0)"
    )
    p.add_argument(
        "--floor-pairs",
        type=int_type(1),
        default=FLOOR_PAIRS,
        help=f"pairs of data draws averaged for the W2 noise floor (default {FLOOR_PAIRS})",
    )
    p.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default RUN_DIR/eval.json)"
    )
