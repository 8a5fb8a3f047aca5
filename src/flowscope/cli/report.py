"""``flowscope report``: the options, then :func:`~flowscope.report.build_report`, then a
table of the stages' wall times."""

from __future__ import annotations

import argparse
import time

from ..report.presets import PRESETS
from . import add_command, int_type, text_table

__all__ = ["add_commands"]


def _report_command(args: argparse.Namespace) -> int:
    from ..report.build import build_report  # matplotlib and reportlab: only to run it

    t0 = time.perf_counter()
    result = build_report(args.out, preset=args.preset, seed=args.seed, retrain=args.retrain)
    rows = [("stage", "seconds")]
    rows += [(name, f"{secs:.1f}") for name, secs in result.timings.items()]
    rows.append(("total", f"{time.perf_counter() - t0:.1f}"))
    print(text_table(rows, align="lr"))
    print(f"report: {result.pdf} ({result.pages} pages), {result.html}")
    print(f"figures: {result.out / 'figures'}; numbers: {result.metrics}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope report`` with the CLI."""
    p = add_command(
        sub,
        "report",
        "Train (or reuse) NF, FM and CFM on the Olympic rings, run the whole study and "
        "write report.pdf, report.html, figures/ and metrics.json.",
        "flowscope report --preset quick --out runs/olympic",
        _report_command,
    )
    p.add_argument("--out", default="runs/olympic", help="output folder (default runs/olympic)")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="full",
        help="full: the study's recipe (250,000 points, 20 epochs); quick: 7 epochs; "
        "smoke: a tiny end-to-end run (seconds)",
    )
    p.add_argument(
        "--retrain", action="store_true", help="train the models even if saved ones match"
    )
    p.add_argument(
        "--seed",
        type=int_type(0),
        default=0,
        help="seed of data, training and experiments, >= 0 (default 0)",
    )
