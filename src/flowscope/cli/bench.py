"""``flowscope bench``: the options, then :func:`~flowscope.bench.run_bench` and its table.

:func:`add_arguments`, :func:`command_line` and :func:`run_from_args` are shared with
``benchmarks/bench_speed.py``, which only changes where the results go by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench import NAMES, format_table, markdown, run_bench, to_json
from ..runs import atomic_write
from . import CommandError, add_command, int_type

__all__ = ["add_arguments", "add_commands", "command_line", "run_from_args"]

_positive = int_type(1)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown contender {bad[0] if bad else text!r}; choose from {', '.join(NAMES)}"
        )
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``flowscope bench`` (shared with ``benchmarks/bench_speed.py``)."""
    p.add_argument(
        "--steps", type=_positive, default=200, help="steps per contender per round (default 200)"
    )
    p.add_argument("--rounds", type=_positive, default=5, help="interleaved rounds (default 5)")
    p.add_argument(
        "--only",
        type=_names,
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(NAMES)}",
    )
    p.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    p.add_argument("--out", metavar="DIR", help="also write DIR/speed.json and DIR/speed.md")
    p.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")


def run_from_args(args: argparse.Namespace, command: str) -> int:
    """Run the benchmark for parsed options, print the table, write files if asked."""
    out = None
    if args.out is not None:
        out = Path(args.out)
        if not out.is_dir():
            raise CommandError(f"{out}: folder does not exist; create it first")
    result = run_bench(
        steps=args.steps,
        rounds=args.rounds,
        only=args.only,
        threads=args.threads,
        log=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    if not result.timings and result.skipped:
        reasons = "; ".join(f"{name}: {why}" for name, why in result.skipped.items())
        raise CommandError(f"no contender could run ({reasons})")
    print(format_table(result))
    if out is not None:
        atomic_write(out / "speed.json", to_json(result))
        atomic_write(out / "speed.md", markdown(result, command))
    return 0


def command_line(args: argparse.Namespace, prog: str) -> str:
    """The command line that reproduces ``args`` (for the results files)."""
    parts = [prog, f"--steps {args.steps}", f"--rounds {args.rounds}", f"--threads {args.threads}"]
    if args.only:
        parts.append(f"--only {','.join(args.only)}")
    if args.out is not None:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def _bench(args: argparse.Namespace) -> int:
    return run_from_args(args, command_line(args, "flowscope bench"))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``flowscope`` parser."""
    p = add_command(
        sub,
        "bench",
        "Time the training step of flowscope beside a plain PyTorch reference, zuko, "
        "normflows and torchcfm (interleaved, median of rounds).",
        "flowscope bench --steps 100 --rounds 3 --only flowscope-nf,zuko-nf",
        _bench,
    )
    add_arguments(p)
