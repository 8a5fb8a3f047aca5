"""How long the command line takes to print a help or an argument error.

Usage: ``python benchmarks/bench_cli.py [--repeat N] [--src DIR]``: each command line below
run N times (default 5) in a fresh interpreter, ``python -m flowscope.cli ...`` with
``PYTHONPATH=DIR`` (default: this checkout's ``src``; give an older checkout's to compare),
and the median CPU seconds (user + system, of the child) and wall seconds of each, as a
Markdown table, with whether PyTorch was imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMAND_LINES = [
    ["--help"],
    ["train", "--help"],
    ["train", "nf", "--help"],
    ["train", "cfm", "--help"],
    ["reflow", "--help"],
    ["sample", "--help"],
    ["log-prob", "--help"],
    ["invert", "--help"],
    ["report", "--help"],
    ["eval", "--help"],
    ["explore", "--help"],
    ["bench", "--help"],
    ["train", "nf", "--bogus"],
    ["train", "cfm", "--time-alpha", "-1"],
    ["sample"],
    ["eval", "runs/none", "--nfe", "0"],
]

# Runs the command line, then says whether PyTorch was imported (on stderr's last line).
_RUN = (
    "import sys\nfrom flowscope.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print('torch' in sys.modules, file=sys.stderr)"
)


def measure(argv: list[str], src: Path, repeat: int) -> tuple[float, float, bool]:
    """Median CPU and wall seconds of ``flowscope ARGV``, and whether it imported torch."""
    env = {**os.environ, "PYTHONPATH": str(src), "FLOWSCOPE_THREADS": "1"}
    cpu, wall, torch = [], [], False
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _RUN, *argv], env=env, capture_output=True, text=True
        )
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        torch = out.stderr.strip().splitlines()[-1] == "True"
    return statistics.median(cpu), statistics.median(wall), torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command line")
    parser.add_argument(
        "--src",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "src",
        help="the source tree to run (default this checkout's src)",
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {args.repeat} runs each, {args.src}\n")
    print("| command | CPU s | wall s | imports torch |")
    print("|---|---|---|---|")
    for argv in COMMAND_LINES:
        cpu, wall, torch = measure(argv, args.src, args.repeat)
        torch_ = "yes" if torch else "no"
        print(f"| `flowscope {' '.join(argv)}` | {cpu:.2f} | {wall:.2f} | {torch_} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
