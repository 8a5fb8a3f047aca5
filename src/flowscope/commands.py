"""The model commands of the CLI: train, sample, log-prob, invert."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import add_command
from .train import TrainConfig


def _train(args: argparse.Namespace) -> int:
    from .runs import train_run

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    out = Path(args.out or f"runs/{args.model}")
    if out.parent == Path("runs"):
        out.parent.mkdir(exist_ok=True)
    model, info, history = train_run(
        args.model,
        out,
        data=args.data,
        n_points=args.n_points,
        config=config,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    last = history.epochs[-1]
    print(
        f"trained {args.model} in {history.seconds:.1f} s; "
        f"validation loss {last.get('val_loss', float('nan')):.4f}; saved to {out}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "train",
        "Train a model with the seed's recipe and save a run folder.",
        "flowscope train nf --epochs 7 --out runs/nf",
        _train,
    )
    p.add_argument(
        "model",
        choices=["nf", "fm", "cfm"],
        help="normalizing flow, flow matching, or class-conditional flow matching",
    )
    p.add_argument(
        "--data",
        default="olympic",
        help="olympic, moons, 8gaussians, checkerboard, "
        "2spirals, pinwheel, circles, swissroll, or a .csv/.npy/.npz file",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-points", type=int, default=250_000, help="training points drawn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
