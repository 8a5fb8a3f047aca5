"""Round trips far from the data (issue 16): where does a trained spline flow's float32
round trip decode(encode(x)) miss x, and do higher floors on its splines help?

For each setting of the floors (the bins' least width and height as shares of [-B, B],
the knots' least derivative), one ``flowscope train nsf`` run (the type's defaults and
recipe, seed ``--seed``) with every coupling's floors set so; then its held-out NLL on
the run's test points (standardized nats), the float32 round trip over the test points,
over the four corners of the tail box (B, B), (-B, -B), (B, 0), (0, -B) and over a
201 x 201 grid of the box [-B, B]^2 (standardized): the share within 1e-5 data units,
the largest miss, and the same where log p > -10 nats (data units), and the grid's
largest miss in float64; and bench_nsf's set of 10,000 points, half test points, half at
every coupling's knots and tail bound (``bench_nsf.round_trips``).

Run: ``python benchmarks/explore_spline_floors.py --out benchmarks/results/spline_floors``
(about a minute per setting on this project's machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_nsf import round_trips

import flowscope.flows
from flowscope.metrics import heldout_nll
from flowscope.recipe import recipe
from flowscope.runs import run_data, train_run

#: (min_bin_width, min_bin_height, min_derivative): the library's, then higher ones (30x
#: the bins' and 300x the knots' is about as high as the NLL target of 1.65 allows).
FLOORS = ((1e-3, 1e-3, 1e-3), (1e-2, 1e-2, 5e-2), (2e-2, 2e-2, 0.1), (3e-2, 3e-2, 0.3))


def _with_floors(floors):
    """SplineCoupling with other default floors, for the runs of this script only."""
    init = flowscope.flows.SplineCoupling.__init__
    defaults = list(init.__defaults__)
    defaults[-3:] = floors
    init.__defaults__ = tuple(defaults)


def measure(floors, seed: int, out: Path) -> dict:
    _with_floors(floors)
    t0 = time.perf_counter()
    model, info, _ = train_run(
        "nsf", out, config=recipe("nsf", seed=seed), overwrite=True, progress=False
    )
    seconds = time.perf_counter() - t0
    assert model.coupling_layers()[0].floors == dict(
        min_width=floors[0], min_height=floors[1], min_derivative=floors[2]
    )
    test = run_data(info, "test").x
    st, bound = model.standardization, model.coupling_layers()[0].tail_bound
    corners = st.inverse(torch.tensor([[bound, bound], [-bound, -bound], [bound, 0], [0, -bound]]))
    g = torch.linspace(-bound, bound, 201)
    grid = st.inverse(torch.cartesian_prod(g, g))

    def miss(m, x):
        return (m.decode(m.encode(x)) - x).abs().amax(dim=1)

    grid_miss = miss(model, grid)
    dense = model.log_prob(grid) > -10
    twin = copy.deepcopy(model).double()
    return {
        "floors": floors,
        "seed": seed,
        "nll": heldout_nll(model, test).standardized,
        "train_s": seconds,
        "test_max": float(miss(model, test).max()),
        "corners_max": float(miss(model, corners).max()),
        "grid_share_within_1e-5": float((grid_miss <= 1e-5).double().mean()),
        "grid_max": float(grid_miss.max()),
        "dense_share_of_grid": float(dense.double().mean()),
        "dense_share_within_1e-5": float((grid_miss[dense] <= 1e-5).double().mean()),
        "dense_max": float(grid_miss[dense].max()),
        "grid_float64_max": float(miss(twin, grid.double()).max()),
        "knots": round_trips(model, test),
    }


def _knots_share(k: dict) -> float:
    """The share of the knot and tail-bound points within 1e-5."""
    n = k["knots"]["points"] + k["bound"]["points"]
    within = (
        k["knots"]["share_within_1e-5"] * k["knots"]["points"]
        + k["bound"]["share_within_1e-5"] * k["bound"]["points"]
    )
    return within / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/spline_floors"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, floors in enumerate(FLOORS):
            rows.append(measure(floors, args.seed, Path(tmp) / f"run{k}"))
            print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/explore_spline_floors.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "# Round trips of a trained spline flow far from the data, by its floors",
        "",
        f"`{command.strip()}`; float32 misses max |decode(encode(x)) - x| in data units; "
        "grid: 201 x 201 points of [-B, B]^2 (standardized); dense: the grid's points "
        "with log p > -10 nats (data units); knots: bench_nsf's 5,000 points at every "
        "coupling's knots and tail bound; miss / reach: the largest miss over the reach "
        "of z's float32 rounding there (bench_nsf.rounding_reach).",
        "",
        "| floors (width, height, derivative) | NLL | train s | test max | corners max | "
        "grid within 1e-5 | grid max | dense within 1e-5 | dense max | grid max, float64 | "
        "knots within 1e-5 | knots and bound max | miss / reach |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {', '.join(f'{v:g}' for v in r['floors'])} | {r['nll']:.4f} | "
            f"{r['train_s']:.0f} | {r['test_max']:.1e} | {r['corners_max']:.1e} | "
            f"{100 * r['grid_share_within_1e-5']:.1f}% | {r['grid_max']:.1e} | "
            f"{100 * r['dense_share_within_1e-5']:.1f}% | {r['dense_max']:.1e} | "
            f"{r['grid_float64_max']:.1e} | "
            f"{100 * _knots_share(r['knots']):.1f}% | {r['knots']['max']:.1e} | "
            + (f"{r['knots']['miss_over_reach_max']:.2f} |" if r["knots"]["misses"] else "- |")
        )
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
