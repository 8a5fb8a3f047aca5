"""Minibatch OT coupling, side by side: flowscope's independent and OT couplings beside
torchcfm's I-CFM and OT-CFM on the same 2D tasks, in one run.

A shortened version of the 2D protocol of torchcfm's runner for Tong et al. 2024
(``runner/scripts/two-dim-cfm.sh``, ``runner/configs/``): 10,000 training and 1,000 test
points, batch 512, AdamW (lr 1e-3, weight decay 1e-5), torchcfm's velocity network of
three hidden layers of 64 with SELU; what is shortened or differs is in
``benchmarks/README.md`` ("Minibatch OT") and in the results file.

Each task is a source and a target, both flowscope's toy generators (``flowscope.data``):

- ``normal-8gaussians``: N(0, I) to 8 Gaussians (the target of Tong et al.'s Table 2);
- ``8gaussians-moons``: 8 Gaussians to the moons (C2OT's Figure 1 task, unconditional).

Reported per method, mean and standard deviation over the seeds: W2 (exact) between
1,000 samples and the 1,000 test points at 1 Euler step and at 100, NPE
(|PE - W2^2| / W2^2 along 100 Euler steps) and ms per training step.

Run: ``python benchmarks/bench_ot.py --epochs 50 --seeds 42,43 --out benchmarks/results/ot``;
``--overhead --out benchmarks/results/ot_overhead`` times only the OT pairing's share of a
training step of the study's model at batch 128 and 512.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flowscope import FlowMatching, TrainConfig, fit
from flowscope.data import DATASETS
from flowscope.metrics import wasserstein2

TASKS = {"normal-8gaussians": ("normal", "8gaussians"), "8gaussians-moons": ("8gaussians", "moons")}
N_TRAIN, N_TEST, BATCH = 10_000, 1_000, 512


def draw(name: str, n: int, seed: int) -> torch.Tensor:
    if name == "normal":
        return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
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
    independent and the OT coupling, at batch 128 and 512 (one epoch of ``steps`` steps,
    the trainer's own choice of fast path; the second of two fits, so that the kernel's
    one-time check and timing are not counted)."""
    from flowscope.data import olympic_rings

    lines = ["| batch | independent ms/step | ot ms/step | OT adds |", "|---|---|---|---|"]
    for batch in (128, 512):
        x = olympic_rings(batch * steps, seed=0)
        ms = {}
        for coupling in ("independent", "ot"):
            for _ in range(2):  # the first fit also checks and times the fused kernel
                torch.manual_seed(0)
                fm = FlowMatching(coupling=coupling)
                t0 = time.perf_counter()
                hist = fit(fm, x, config=TrainConfig(epochs=1, batch_size=batch), progress=False)
                ms[coupling] = (time.perf_counter() - t0) / len(hist.batch_loss) * 1e3
        extra = ms["ot"] / ms["independent"] - 1
        lines.append(f"| {batch} | {ms['independent']:.3f} | {ms['ot']:.3f} | {extra:+.0%} |")
        print(lines[-1], flush=True)
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
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.overhead:
        lines = overhead()
        Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
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
