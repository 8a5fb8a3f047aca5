"""``flowscope explore``: the explorer page of a run (:mod:`flowscope.explore`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..models import model_type
from ..runs import RunError, load_run, run_data
from . import CommandError, add_command, int_type

__all__ = ["add_commands", "explore_run"]


def explore_run(
    run_dir: str | Path, out: str | Path | None = None, *, n: int = 1500, seed: int = 0
):
    """Write the explorer page of the run in ``run_dir`` (default ``RUN/explore.html``),
    with the run's test points as the data; returns the path."""
    from ..explore import write_explorer

    run_dir = Path(run_dir)
    model, info = load_run(run_dir)
    try:
        data = run_data(info, "test")
        x, labels, names = data.x, data.labels, data.class_names
    except (RunError, ValueError, OSError):  # the data file moved: the model's own samples
        x, labels, names = None, None, info.data.get("class_names")
    out = Path(out) if out else run_dir / "explore.html"
    title = f"{model_type(model).title} ({run_dir.name})"
    return write_explorer(model, out, x, labels, n=n, seed=seed, title=title, class_names=names)


def _explore(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise CommandError(f"{out.parent}: folder does not exist; create it first")
    t0 = time.perf_counter()
    path = explore_run(args.run_dir, out, n=args.n, seed=args.seed)
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
        "flowscope explore runs/fm -o runs/fm/explore.html",
        _explore,
    )
    p.add_argument("run_dir", metavar="RUN", help="a run folder written by flowscope train")
    p.add_argument("-o", "--out", metavar="PATH", help="the page (default RUN/explore.html)")
    p.add_argument(
        "-n",
        dest="n",
        type=int_type(2),
        default=1500,
        help="points along the flow per class (default 1500)",
    )
    p.add_argument("--seed", type=int_type(0), default=0, help="seed of the latents (default 0)")
