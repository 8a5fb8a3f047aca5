"""Minibatch OT coupling, side by side: flowscope's independent and OT couplings beside
torchcfm's I-CFM and OT-CFM on the same 2D tasks, in one run.

A shortened version of the 2D protocol of torchcfm's runner for Tong et al. 2024
(``runner/scripts/two-dim-cfm.sh``, ``runner/configs/``): 10,000 training and 1,000 test
points, batch 512, AdamW (lr 1e-3, weight decay 1e-5), torchcfm's velocity network of
three hidden layers of 64 with SELU; what is shortened or differs is in
``benchmarks/README.md`` ("Minibatch OT") and in the results file.

Each task is a source and a target, from flowscope's toy generators (``flowscope.data``) or
torchcfm's:

- ``normal-8gaussians``: N(0, I) to 8 Gaussians (the target of Tong et al.'s Table 2);
- ``8gaussians-moons``: 8 Gaussians to the moons (C2OT's Figure 1 task, unconditional);
- ``normal-moons``: N(0, I) to the moons (the runner's ``moons``);
- ``moons-8gaussians``: the moons to 8 Gaussians (the runner's ``twodim``);
- ``normal-tcfm8gaussians``, ``normal-tcfmmoons``, ``tcfmmoons-tcfm8gaussians``: the
  runner's ``gaussians``, ``moons`` and ``twodim`` with torchcfm's own generators
  (``torchcfm.utils``; they need torchdyn, which ``make bench`` installs);
- ``normal-scurve``: the runner's ``scurve`` (its ``SKLearnDataModule``: scikit-learn's
  ``make_s_curve`` with noise 0.05, the first and third coordinates, times 1.5).

Reported per method, mean and standard deviation over the seeds: W2 (exact) between
1,000 samples and the 1,000 test points at 1 Euler step and at 100, NPE
(|PE - W2^2| / W2^2 along 100 Euler steps) and ms per training step.

Run: ``python benchmarks/bench_ot.py --epochs 50 --seeds 42,43 --out benchmarks/results/ot``;
``--tasks normal-tcfm8gaussians,normal-tcfmmoons,tcfmmoons-tcfm8gaussians --seeds
42,43,44,45,46 --sigma 0.1 --epochs 50 --out benchmarks/results/ot_tcfm`` for torchcfm's data
(``--tasks normal-scurve ... --out benchmarks/results/ot_scurve`` for the runner's S);
``--overhead --out benchmarks/results/ot_overhead`` times only the OT pairing's share of a
training step of the study's model at batch 128 and 512.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flowscope import FlowMatching, TrainConfig, fit
from flowscope.data import DATASETS
from flowscope.matching.assignment import SOLVERS, assignment_cost
from flowscope.metrics import wasserstein2

TASKS = {
    "normal-8gaussians": ("normal", "8gaussians"),
    "8gaussians-moons": ("8gaussians", "moons"),
    "normal-moons": ("normal", "moons"),
    "moons-8gaussians": ("moons", "8gaussians"),
    # The runner's tasks with torchcfm's own generators (torchcfm.utils: 8 gaussians of
    # radius 5 and covariance sqrt(0.1) I, torchdyn's moons * 3 - 1); `make bench` installs
    # torchcfm and torchdyn without their dependencies.
    "normal-tcfm8gaussians": ("normal", "tcfm-8gaussians"),  # the runner's `gaussians`
    "normal-tcfmmoons": ("normal", "tcfm-moons"),  # the runner's `moons`
    "tcfmmoons-tcfm8gaussians": ("tcfm-moons", "tcfm-8gaussians"),  # the runner's `twodim`
    "normal-scurve": ("normal", "runner-scurve"),  # the runner's `scurve`
}
#: torchcfm's generators (they draw from torch's global generator, seeded here).
TORCHCFM_DATA = {"tcfm-8gaussians": "sample_8gaussians", "tcfm-moons": "sample_moons"}
N_TRAIN, N_TEST, BATCH = 10_000, 1_000, 512


def draw(name: str, n: int, seed: int) -> torch.Tensor:
    if name == "normal":
        return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    if name == "runner-scurve":  # the runner's SKLearnDataModule: x and z of the 3D S, x 1.5
        from sklearn.datasets import make_s_curve

        points, _ = make_s_curve(n, noise=0.05, random_state=seed)
        return torch.from_numpy(1.5 * points[:, [0, 2]]).float()
    if name in TORCHCFM_DATA:
        import torchcfm.utils

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return getattr(torchcfm.utils, TORCHCFM_DATA[name])(n).float()
    return torch.from_numpy(DATASETS[name](n, np.random.default_rng(seed))).float()


class SeluNet(nn.Module):
    """torchcfm runner's VelocityNet: (x, t) -> v, hidden [64, 64, 64], SELU."""

    def __init__(self, dim: int = 2, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, width),
            nn.SELU(),
            nn.Linear(width, width),
            nn.SELU(),
            nn.Linear(width, width),
            nn.SELU(),
            nn.Linear(width, dim),
        )

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(len(x), 1)], 1))


def evaluate(velocity, x0, x1) -> dict[str, float]:
    """W2 at 1 and 100 Euler steps and NPE along 100 steps of a field ``velocity(x, t)``
    in data units, from the test source points x0 to the test targets x1 (N, 2)."""
    out = {}
    with torch.no_grad():
        out["w2_1"] = wasserstein2(x0 + velocity(x0, 0.0), x1)
        x, energy = x0, 0.0
        for k in range(100):
            v = velocity(x, k / 100)
            energy += float((v.double() ** 2).sum(1).mean()) / 100
            x = x + v / 100
    out["w2_100"] = wasserstein2(x, x1)
    w2sq = wasserstein2(x0, x1) ** 2
    out["npe"] = abs(energy - w2sq) / w2sq
    return out


def data(task: str, seed: int):
    """Training source and target (10,000 each) and test source and target (1,000 each)."""
    src, tgt = TASKS[task]
    return (
        draw(src, N_TRAIN, seed),
        draw(tgt, N_TRAIN, seed + 1000),
        draw(src, N_TEST, seed + 2000),
        draw(tgt, N_TEST, seed + 3000),
    )


def torchcfm_run(task, ot: bool, seed: int, epochs: int, sigma: float, tmp: Path):
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    x0_all, x1_all, x0t, x1t = data(task, seed)
    torch.manual_seed(seed)
    net = SeluNet()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    fm = (ExactOptimalTransportConditionalFlowMatcher if ot else ConditionalFlowMatcher)(sigma)
    steps = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm0, perm1 = torch.randperm(N_TRAIN), torch.randperm(N_TRAIN)
        for k in range(N_TRAIN // BATCH):  # drop_last, as the runner's loaders
            x0 = x0_all[perm0[k * BATCH : (k + 1) * BATCH]]
            x1 = x1_all[perm1[k * BATCH : (k + 1) * BATCH]]
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
            loss = ((net(xt, t) - ut) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    ms = (time.perf_counter() - t0) / steps * 1e3
    res = evaluate(lambda x, t: net(x, torch.full((len(x),), t)), x0t, x1t)
    return dict(**res, ms_per_step=ms)


def flowscope_run(task, coupling: str, seed: int, epochs: int, sigma: float, tmp: Path):
    # The same training source points as torchcfm's, given as a file source (in data
    # units, mapped by the target's standardization), and the same test points.
    x0_all, x1_all, x0t, x1t = data(task, seed)
    path = tmp / f"{task}-{seed}-source.npy"
    np.save(path, x0_all.numpy())
    torch.manual_seed(seed)
    fm = FlowMatching(
        hidden=64,
        layers=4,
        coupling=coupling,
        source={"name": "file", "path": str(path)},
        times="uniform",
        path={"name": "linear", "sigma_min": sigma},
        gaussian_skip=False,
    )
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, seed=seed)
    t0 = time.perf_counter()
    hist = fit(fm, x1_all, config=cfg, progress=False)
    ms = (time.perf_counter() - t0) / len(hist.batch_loss) * 1e3
    fm.eval()
    st = fm.standardization

    def velocity(x, t):  # data units: v_data = scale * v(standardized x)
        return fm.velocity(st(x), t) * st.scale

    return dict(**evaluate(velocity, x0t, x1t), ms_per_step=ms, fast_path=hist.fast_path)


METHODS = {
    "torchcfm I-CFM": lambda *a: torchcfm_run(a[0], False, *a[1:]),
    "torchcfm OT-CFM": lambda *a: torchcfm_run(a[0], True, *a[1:]),
    "flowscope independent": lambda *a: flowscope_run(a[0], "independent", *a[1:]),
    "flowscope ot": lambda *a: flowscope_run(a[0], "ot", *a[1:]),
}


def overhead(steps: int = 400) -> list[str]:
    """ms per training step of the study's FlowMatching() on the Olympic rings with the
    independent and the OT coupling (each assignment solver), at batch 128 and 512 (one
    epoch of ``steps`` steps, the trainer's own choice of fast path; the second of two
    fits, so that the kernel's one-time check and timing are not counted); beside them the
    exact assignment of one batch alone (the cost matrix and the faster solver on the
    standardized points, as the model pairs them; median over the epoch's batches): the
    floor under any OT step, however the assignment were scheduled; and the assignment
    time the issue's 20% would allow."""
    import datetime
    import os

    from flowscope.bench import cpu_model, vector_extensions
    from flowscope.data import olympic_rings
    from flowscope.matching.assignment import ot_assignment

    couplings = {
        "independent": "independent",
        **{f"ot ({s})": {"name": "ot", "solver": s} for s in ("auto", *SOLVERS)},
    }
    load = os.getloadavg()
    lines = [
        f"{datetime.date.today()}; CPU: {cpu_model()} ({', '.join(vector_extensions())}), "
        f"one torch thread; load average at the start {load[0]:.1f} (1 min), {load[2]:.1f} "
        "(15 min).",
        "",
        "| batch | "
        + " | ".join(f"{c} ms/step" for c in couplings)
        + " | OT (auto) adds | assignment alone ms | 20% of the independent step ms |",
        "|---" * (len(couplings) + 4) + "|",
    ]
    for batch in (128, 512):
        x = olympic_rings(batch * steps, seed=0)
        ms = {}
        for name, coupling in couplings.items():
            for _ in range(2):  # the first fit also checks and times the fused kernel
                torch.manual_seed(0)
                fm = FlowMatching(coupling=coupling)
                t0 = time.perf_counter()
                hist = fit(fm, x, config=TrainConfig(epochs=1, batch_size=batch), progress=False)
                ms[name] = (time.perf_counter() - t0) / len(hist.batch_loss) * 1e3
        batches = iter(((x - x.mean(0)) / x.std(0)).split(batch))  # as the model pairs
        x0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0))
        alone = _median_ms(lambda x0=x0, b=batches: ot_assignment(x0, next(b)), steps - 2)
        extra = ms["ot (auto)"] / ms["independent"] - 1
        cells = " | ".join(f"{ms[c]:.3f}" for c in couplings)
        allowed = 0.2 * ms["independent"]
        lines.append(f"| {batch} | {cells} | {extra:+.0%} | {alone:.3f} | {allowed:.3f} |")
        print(lines[-1], flush=True)
    return lines


def _median_ms(f, reps: int) -> float:
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _time_solvers(x0: torch.Tensor, x1: torch.Tensor, reps: int) -> dict[str, float]:
    import ot

    cost = assignment_cost(x0, x1)
    r = {"cost_ms": _median_ms(lambda: assignment_cost(x0, x1), reps)}
    for name, solve in SOLVERS.items():
        r[name] = _median_ms(lambda solve=solve: solve(cost), reps)
    a, b, w = x0.float(), x1.float(), np.full(len(x0), 1.0 / len(x0))
    # torchcfm's OTPlanSampler: float32 cdist squared, POT's emd with its default limit.
    r["torchcfm"] = _median_ms(
        lambda: ot.emd(w, w, (torch.cdist(a, b) ** 2).numpy(), numItermax=100_000), reps
    )
    return r


def solvers(sizes=(32, 64, 128, 256, 512), reps: int = 7) -> tuple[list[str], list[dict]]:
    """Median ms of one exact assignment by each solver (float64 squared Euclidean cost,
    :func:`flowscope.matching.assignment.assignment_cost`) on the batches the couplings
    see: N(0, I) to the standardized rings, to 8 gaussians, and 8 gaussians to moons;
    with the cost matrix's own time and that of torchcfm's (``torch.cdist(...) ** 2`` in
    float32, then POT's ``ot.emd`` with uniform weights, its public entry point)."""
    from flowscope.data import olympic_rings

    rng = np.random.default_rng(0)

    def batch(kind, n):
        if kind == "normal-rings":
            x1 = olympic_rings(n, seed=n).double()
            return torch.randn(n, 2, dtype=torch.float64), (x1 - x1.mean(0)) / x1.std(0)
        src, tgt = kind.split("-")
        return draw(src, n, n).double(), torch.from_numpy(DATASETS[tgt](n, rng)).double()

    rows, lines = [], []
    head = ["N", "batch", "cost matrix", *SOLVERS, "faster", "torchcfm's cost + ot.emd"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for n in sizes:
        for kind in ("normal-rings", "normal-8gaussians", "8gaussians-moons"):
            r = dict(n=n, batch=kind, **_time_solvers(*batch(kind, n), reps))
            rows.append(r)
            best = min(SOLVERS, key=lambda k: r[k])
            cells = [f"{r['cost_ms']:.3f}", *(f"{r[k]:.3f}" for k in SOLVERS)]
            lines.append(f"| {n} | {kind} | {' | '.join(cells)} | {best} | {r['torchcfm']:.3f} |")
            print(lines[-1], flush=True)
    return lines, rows


#: The methods of ``--rings``: name -> (conditional, FlowMatching's arguments).
RINGS = {
    "cfm independent": (True, {"coupling": "independent"}),
    "cfm class-ot": (True, {"coupling": "class-ot"}),
    "cfm ot": (True, {"coupling": "ot"}),
    "fm independent": (False, {"coupling": "independent"}),
    "fm ot": (False, {"coupling": "ot"}),
}


def rings(
    methods: list[str],
    seeds: list[int],
    n_points: int,
    epochs: int,
    batch_size: int = 128,
    table: dict[str, tuple[bool, dict]] = RINGS,
) -> list[dict]:
    """Each method of ``table`` on the Olympic rings with the default recipe otherwise
    (the coupling's own defaults: skip and time sampler; TrainConfig's lr 1e-3),
    ``n_points`` training points drawn with the seed: class accuracy of 2,000 balanced
    samples at 4, 100 and 1,000 Euler steps (conditional), and W2 to 2,000 test points at
    1, 2, 4, 8 and 100 Euler steps (:func:`flowscope.metrics.w2_by_nfe`)."""
    from flowscope.data import olympic_rings
    from flowscope.metrics import class_accuracy, w2_by_nfe

    rows = []
    for seed in seeds:
        for name in methods:
            conditional, model_args = table[name]
            torch.manual_seed(seed)
            if conditional:
                x, labels = olympic_rings(n_points, conditional=True, seed=seed)
                xt, lt = olympic_rings(2000, conditional=True, seed=seed + 2)
            else:
                x, labels = olympic_rings(n_points, seed=seed), None
                xt, lt = olympic_rings(2000, seed=seed + 2), None
            fm = FlowMatching(num_classes=5 if conditional else None, **model_args)
            config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed)
            t0 = time.perf_counter()
            hist = fit(fm, x, labels, config=config, progress=False)
            row = dict(method=name, seed=seed, seconds=time.perf_counter() - t0)
            row.update(gaussian_skip=fm.gaussian_skip, times=fm.times.describe())
            row.update(fast_path=hist.fast_path)
            if conditional:
                for steps in (4, 100, 1000):
                    g = torch.Generator().manual_seed(seed + 1)
                    s = fm.sample(len(lt), labels=lt, dt=1 / steps, generator=g)
                    row[f"accuracy_{steps}"] = class_accuracy(s, lt).overall
            for p in w2_by_nfe(fm, xt, lt, nfe=(1, 2, 4, 8, 100), adaptive=False, seed=seed + 1):
                row[f"w2_{p.nfe}"] = p.w2
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def rings_table(rows: list[dict]) -> list[str]:
    keys = ["accuracy_4", "accuracy_100", "accuracy_1000", "w2_1", "w2_2", "w2_4", "w2_8"]
    keys += ["w2_100", "seconds"]
    lines = ["| method | skip, times | seeds | " + " | ".join(keys) + " |"]
    lines.append("|---" * (len(keys) + 3) + "|")
    for name in RINGS:
        rs = [r for r in rows if r["method"] == name]
        if not rs:
            continue
        cells = []
        for k in keys:
            vals = [r[k] for r in rs if k in r]
            if not vals:
                cells.append("")
                continue
            m, sd = summarize(vals)
            cells.append(f"{m:.4f} ± {sd:.4f}" if k != "seconds" else f"{m:.0f}")
        setting = f"{'on' if rs[0]['gaussian_skip'] else 'off'}, {rs[0]['times']}"
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {setting} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def summarize(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--sigma", type=float, default=0.0)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--out", default="benchmarks/results/ot")
    p.add_argument(
        "--overhead", action="store_true", help="only time the OT pairing's share of a step"
    )
    p.add_argument("--solvers", action="store_true", help="only time the assignment solvers")
    p.add_argument(
        "--rings", default=None, help=f"couplings on the Olympic rings: some of {list(RINGS)}"
    )
    p.add_argument("--n-points", type=int, default=250_000, help="rings training points")
    p.add_argument("--steps", type=int, default=400, help="steps of each --overhead fit")
    args = p.parse_args()
    torch.set_num_threads(1)
    head = f"Command: `python benchmarks/bench_ot.py {' '.join(sys.argv[1:])}`\n\n"
    if args.rings is not None:
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = rings(args.rings.split(","), seeds, args.n_points, args.epochs)
        out = Path(args.out)
        out.with_suffix(".json").write_text(json.dumps(dict(args=vars(args), runs=rows), indent=1))
        out.with_suffix(".md").write_text(head + "\n".join(rings_table(rows)) + "\n")
        return
    if args.overhead or args.solvers:
        lines, rows = solvers() if args.solvers else (overhead(args.steps), None)
        out = Path(args.out)
        out.with_suffix(".md").write_text(head + "\n".join(lines) + "\n")
        if rows is not None:
            out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_ot_"))
    for task in args.tasks.split(","):
        for seed in seeds:
            for name, run in METHODS.items():
                r = run(task, seed, args.epochs, args.sigma, tmp)
                results.append(dict(task=task, method=name, seed=seed, **r))
                print(json.dumps(results[-1]), flush=True)
    lines = [
        f"# Minibatch OT side by side ({args.epochs} epochs of {N_TRAIN // BATCH} steps, "
        f"batch {BATCH}, seeds {args.seeds}, sigma {args.sigma:g})",
        "",
        "| task | method | W2, 1 Euler step | W2, 100 Euler steps | NPE | ms/step |",
        "|---|---|---|---|---|---|",
    ]
    for task in args.tasks.split(","):
        for name in METHODS:
            rs = [r for r in results if r["task"] == task and r["method"] == name]
            cells = [
                summarize([r[k] for r in rs]) for k in ("w2_1", "w2_100", "npe", "ms_per_step")
            ]
            fmt = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells)
            lines.append(f"| {task} | {name} | {fmt} |")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(dict(args=vars(args), runs=results), indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
