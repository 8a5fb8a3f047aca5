"""Training-step speed of flowscope beside a plain reference, zuko, normflows and torchcfm.

A thin wrapper around ``flowscope bench`` (the code is :mod:`flowscope.bench`, the options
:mod:`flowscope.cli.bench`); the only difference is that this script writes
``benchmarks/results/speed.{json,md}`` by default.

Usage::

    python benchmarks/bench_speed.py                     # 200 steps x 5 rounds, all
    python benchmarks/bench_speed.py --steps 100 --rounds 3 --only flowscope-nf,zuko-nf
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flowscope.cli.bench import add_arguments, command_line, run_from_args

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(out=os.path.relpath(RESULTS))
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return run_from_args(args, command_line(args, "python benchmarks/bench_speed.py"))


if __name__ == "__main__":
    sys.exit(main())
