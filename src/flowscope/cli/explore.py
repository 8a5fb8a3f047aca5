"""``flowscope explore``: the explorer page of a run (:mod:`flowscope.explore`)."""

from __future__ import annotations

import argparse
import time

from ..defaults import EXPLORE_POINTS
from . import add_command, int_type, run_folder
from .commands import distinct_outputs, output_path, point_type, run_input_files

__all__ = ["add_commands"]


def _explore(args: argparse.Namespace) -> int:
    from ..explore import explore_run

    out = output_path(args.out, "-o")
    distinct_outputs(run_input_files(args.run_dir), o=out)
    t0 = time.perf_counter()
    points = [(f"({x:g}, {y:g})", (x, y)) for x, y in args.point or ()]
    path = explore_run(args.run_dir, out, n=args.n, seed=args.seed, points=points)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - t0:.1f} s); open it in a browser")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope explore``."""
    p = add_command(
        sub,
        "explore",
        "Write one offline HTML page to look inside a trained model: the points and the "
        "density along the flow in both directions (a slider per panel), the velocity "
        "field of flow matching, one point's trajectory and the terms of its log p(x), a "
        "class selector for conditional models and the sampler's step size.",
        "flowscope explore runs/fm -o runs/fm/explore.html --point 4,5",
        _explore,
    )
    p.add_argument(
        "run_dir", metavar="RUN", type=run_folder, help="a run folder written by flowscope train"
    )
    p.add_argument("-o", "--out", metavar="PATH", help="the page (default RUN/explore.html)")
    p.add_argument(
        "-n",
        dest="n",
        type=int_type(2),
        default=EXPLORE_POINTS,
        help=f"points along the flow per class (default {EXPLORE_POINTS})",
    )
    p.add_argument("--seed", type=int_type(0), default=0, help="seed of the latents (default 0)")
    p.add_argument(
        "--point",
        metavar="X,Y",
        type=point_type,
        action="append",
        help="a point in data units to offer, exactly, in the page's point list (beside a "
        "click, which snaps to the nearest precomputed point); repeat for more (write "
        "--point=-1,0 for a negative X)",
    )
