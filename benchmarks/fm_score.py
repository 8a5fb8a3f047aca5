"""Is autograd's gradient of a flow-matching model's log p(x) its score?

For a run folder and a point, in float64: d log p / dx by autograd through the ODE solve
(``x.requires_grad_(); model.log_prob(x).sum().backward()``) beside central differences
(log p(x + h e) - log p(x - h e)) / 2h over several h, for each number of RK4 steps.

The study's velocity field is a LeakyReLU network: its divergence is constant between the
network's kinks, so that the solve's divergence term has no derivative in x but jumps
wherever a step's state crosses a kink. Autograd differentiates between the jumps; the
differences over a wide h average them, as the score of the continuous model would.

Run: ``flowscope train fm --data benchmarks/data/faithful.csv --out runs/faithful-fm`` then
``python benchmarks/fm_score.py runs/faithful-fm --point 3,70``.
"""

from __future__ import annotations

import argparse

import torch

from flowscope.runs import load_run

H = (1e-4, 1e-3, 1e-2, 5e-2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--point", default="3,70", help="X,Y in data units")
    p.add_argument("--steps", default="100,400", help="RK4 steps over [0, 1], comma-separated")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_run(args.run)
    model = model.double()
    x0 = torch.tensor([[float(v) for v in args.point.split(",")]], dtype=torch.float64)
    print(f"{args.run} at {tuple(x0[0].tolist())}: d log p / dx (first coordinate), float64")
    print(f"{'steps':>5}  {'autograd':>9}  " + "  ".join(f"{f'h={h:g}':>9}" for h in H))
    for steps in (int(s) for s in args.steps.split(",")):
        x = x0.clone().requires_grad_()
        model.log_prob(x, steps=steps).sum().backward()
        row = [float(x.grad[0, 0])]
        for h in H:
            e = torch.tensor([[h, 0.0]], dtype=torch.float64)
            with torch.no_grad():
                up, down = model.log_prob(x0 + e, steps=steps), model.log_prob(x0 - e, steps=steps)
            row.append(float((up - down) / (2 * h)))
        print(f"{steps:>5}  " + "  ".join(f"{v:>9.4f}" for v in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
