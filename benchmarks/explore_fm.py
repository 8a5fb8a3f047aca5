"""Variations of the flow-matching recipe, one 20-epoch run each: what moves the targets.

Issue 4 asks, after the seed's 20 epochs, for a held-out NLL <= 1.9 nats (unconditional)
and >= 98% class accuracy (conditional). This script trains one model the way
``flowscope train`` does (:func:`flowscope.runs.train_run`) with one change and prints one
JSON line (also appended to ``--log``):

- ``--time-alpha A``: training times t ~ Beta(A, 1) (the library's option, default its
  own: 5 for fm, 7 for cfm; 1 is the seed's U[0, 1]);
- ``--mix W``: with probability W a training time is drawn from U[0, 1] instead (from
  Beta(M, 1) with ``--mix-alpha M``);
- ``--ot``: minibatch optimal-transport pairing of noise and data (Tong et al. 2023,
  arXiv:2302.00482), by scipy's ``linear_sum_assignment``, within each class for a
  conditional model;
- ``--isotropic S``: one scale for both coordinates (their RMS standard deviation / S)
  instead of per-axis standardization;
- ``--x-prediction EPS``: the network predicts x1, v = (net - y) / max(1 - t, EPS);
- ``--fourier K:SIGMA``: sin/cos of K random projections (N(0, SIGMA^2)) of the point
  as extra inputs of the first layer;
- ``--y-scale C``: the first layer's weights on the point multiplied by C at init;
- ``--stratified``: one training time per stratum of [0, 1] in each batch (random order),
  mapped through Beta(A, 1)'s quantile function;
- ``--per-layer``: t and (conditional) a per-class vector also added to every hidden
  layer's pre-activation (zero at init);
- ``--slope S``: LeakyReLU's negative slope (PyTorch's default 0.01);
- ``--standardize class|global`` (cfm): the library's option, default ``class``;
- ``--gaussian-skip`` / ``--no-gaussian-skip``: the library's option, default on (the
  network plus the exact field of N(0, I) data); rows logged before 2026-11-30 have no
  ``gaussian_skip`` key and ran without it: add ``--no-gaussian-skip`` to reproduce them;
- ``--log-time EPS``: -log(1 - t + EPS) / 4 as one more input of the first layer, so that
  the network resolves times near 1;
- ``--activation NAME``: a ``torch.nn.functional`` activation instead of LeakyReLU;
- ``--init he``: weights N(0, 2 / fan_in) (1 / fan_in for the last layer), biases 0;
- ``--stf M``: the stable target field (Xu et al. 2023, arXiv:2302.00670): the target of
  each example is E[x1 - x0 | y] under the example's own x1 and M fresh reference points of
  its class (by autograd);
- ``--hidden``, ``--layers``, ``--embedding-dim``, ``--epochs``, ``--seed``, ``--lr``.

The variations that change the network (x-prediction, Fourier features, per-layer
conditioning, slope, log-time, activation) run on the PyTorch layers, and those that
change the loss (mix, OT, stratified, STF) by autograd, not the fused kernel, so their
training times are not comparable.

Evaluation: unconditional - held-out NLL on the run's 10,000 test points (rk4, 100 steps),
in nats per point in the per-axis standardized coordinates of the benchmark (also for
``--isotropic``), and the share of 5000 samples in some ring's band; conditional - class
accuracy and share in some band of 5000 samples with balanced labels, the
class-conditional NLL of 2000 test points and W2 of 2000 samples against 2000 test points.

Usage::

    python benchmarks/explore_fm.py cfm --time-alpha 5
    python benchmarks/explore_fm.py fm --ot --time-alpha 1

Measured on 2026-11-29 (2 cores, seed 0 unless said): see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from flowscope.base import STANDARDIZE
from flowscope.data import olympic_rings
from flowscope.matching import FlowMatching, VelocityField, gaussian_velocity, sample_times
from flowscope.metrics import class_accuracy, heldout_nll, ring_precision, wasserstein2
from flowscope.runs import run_data, train_run
from flowscope.standardize import Standardization
from flowscope.train import TrainConfig


class Variant(VelocityField):
    """The velocity MLP with optional Fourier input features and x-prediction."""

    def __init__(
        self,
        *args,
        fourier: str = "",
        x_prediction: float = 0.0,
        per_layer: bool = False,
        slope: float = 0.01,
        log_time: float = 0.0,
        activation: str = "leaky_relu",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.activation = activation
        self.log_time = log_time
        self.x_prediction = x_prediction
        self.slope = slope
        self.per_layer = None
        if per_layer:  # time and class into every hidden layer, zero at init
            n_hidden = len(self.dims) - 3
            width = self.dims[1]
            self.time_w = nn.Parameter(torch.zeros(n_hidden, width))
            if self.embedding is not None:
                self.per_layer = nn.Parameter(
                    torch.zeros(n_hidden, self.embedding.num_embeddings, width)
                )
        self.k = 0
        extra = 1 if log_time else 0
        if fourier:
            k, sigma = fourier.split(":")
            self.k = int(k)
            g = torch.Generator().manual_seed(123)
            b = torch.randn(self.dims[-1], self.k, generator=g) * float(sigma)
            self.register_buffer("b", b)
            extra += 2 * self.k
        if extra:
            self.dims = [self.dims[0] + extra] + self.dims[1:]
            flat = []
            for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
                lin = nn.Linear(a, b)
                flat += [lin.weight.detach().reshape(-1), lin.bias.detach()]
            self.theta = nn.Parameter(torch.cat(flat))

    def _inputs(self, y, t, labels):
        a = super()._inputs(y, t, labels)
        if self.log_time:  # -log(1 - t + EPS) / 4: resolves t near 1 (EDM's c_noise)
            a = torch.cat([a, -0.25 * torch.log1p(self.log_time - t)], dim=1)
        if not self.k:
            return a
        p = y @ self.b
        return torch.cat([y, torch.sin(p), torch.cos(p), a[:, y.shape[1] :]], dim=1)

    def forward(self, y, t, labels=None):
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        t = t.expand(y.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)
        v = self._inputs(y, t, labels)
        pairs = self.pairs()
        for i, (w, b) in enumerate(pairs):
            v = F.linear(v, w, b)
            if i < len(pairs) - 1:
                if i >= 1 and hasattr(self, "time_w"):
                    v = v + t * self.time_w[i - 1]
                    if self.per_layer is not None:
                        v = v + self.per_layer[i - 1][labels]
                if self.activation == "leaky_relu":
                    v = F.leaky_relu(v, self.slope)
                else:
                    v = getattr(F, self.activation)(v)
        if self.gaussian_skip:
            v = v + gaussian_velocity(y, t)
        if not self.x_prediction:
            return v
        t = torch.as_tensor(t, dtype=y.dtype).reshape(-1, 1).expand(y.shape[0], 1)
        return (v - y) / (1 - t).clamp(min=self.x_prediction)

    def frozen(self, labels=None):
        def velocity(y, t):
            with torch.no_grad():
                return self.forward(y, t, labels)

        return velocity


def patch(args) -> None:
    """Apply the asked-for variation to the library's classes (this process only)."""
    if args.stf:
        pool = {}

        def loss_std(self, x1, labels, generator):
            x0, t = self._draw(x1, generator)
            if not torch.is_grad_enabled():  # validation: the library's loss
                return self._eq16(x1, x0, t, labels)
            if "p" not in pool:  # M reference points per class, standardized as trained
                c = self.num_classes or 1
                x, lab = olympic_rings(50_000 * c, conditional=c > 1, seed=999)
                lab = torch.zeros(len(x), dtype=torch.long) if c == 1 else lab
                z = self.standardization(x, lab if c > 1 else None).double()
                pool["p"] = torch.stack([z[lab == k][:9000] for k in range(c)])
            # a fresh reference batch each step: M points of each class
            pick = torch.randint(0, pool["p"].shape[1], (args.stf,), generator=generator)
            refs = pool["p"][:, pick]
            ref = refs[labels if labels is not None else torch.zeros_like(x1[:, 0]).long()]
            ref = torch.cat([x1.double()[:, None], ref], dim=1)  # (N, 1 + M, D), self first
            td = t.double()
            y = td * x1.double() + (1 - td) * x0.double()
            d2 = (y[:, None] - td[:, :, None] * ref).pow(2).sum(-1)  # (N, 1 + M)
            w = torch.softmax(-d2 / (2 * (1 - td).pow(2)), dim=1)
            target = ((w[:, :, None] * ref).sum(1) - y) / (1 - td)  # posterior mean of x1 - x0
            x0s = (y - td * target).to(x1.dtype)  # the same y, with target x1' - x0'
            x1s = (y + (1 - td) * target).to(x1.dtype)
            return self._eq16(x1s, x0s, t, labels)

        FlowMatching._loss_std = loss_std
        FlowMatching._loss_and_grad_std = lambda self, x1, labels, generator: None
    if args.ot or args.mix or args.stratified:

        def loss_std(self, x1, labels, generator):
            x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
            t = sample_times(x1.shape[0], self.time_alpha, generator, x1.dtype)
            if args.stratified:  # one time per stratum of U[0, 1], in random order
                n = x1.shape[0]
                u = torch.rand(n, 1, generator=generator, dtype=x1.dtype)
                k = torch.randperm(n, generator=generator).reshape(-1, 1).to(x1.dtype)
                t = ((k + u) / n).pow(1 / self.time_alpha)
            if args.mix:
                u = torch.rand(t.shape, generator=generator, dtype=t.dtype) ** (1 / args.mix_alpha)
                pick = torch.rand(t.shape, generator=generator) < args.mix
                t = torch.where(pick, u, t)
            if args.ot and torch.is_grad_enabled():
                cost = torch.cdist(x0, x1).pow(2)
                if labels is not None:  # pair noise with data of one class only
                    cost = cost + 1e6 * (labels[None, :] != labels[:, None])
                _, col = linear_sum_assignment(cost.numpy())
                x1 = x1[torch.as_tensor(col)]
                labels = None if labels is None else labels[torch.as_tensor(col)]
            return self._eq16(x1, x0, t, labels)

        FlowMatching._loss_std = loss_std
        # The fused step reproduces the library's loss, not this one: train by autograd.
        FlowMatching._loss_and_grad_std = lambda self, x1, labels, generator: None
    if args.isotropic:
        fit = Standardization.fit

        def isotropic_fit(self, x, labels=None):
            fit(self, x, labels)
            with torch.no_grad():  # per class: each class's own RMS
                rms = self.scale.pow(2).mean(dim=-1, keepdim=True).sqrt()
                self.scale.copy_((rms / args.isotropic).expand_as(self.scale))
            return self

        Standardization.fit = isotropic_fit
    variant = args.fourier or args.x_prediction or args.per_layer or args.slope != 0.01
    variant = variant or args.log_time or args.activation != "leaky_relu"
    if variant or args.y_scale != 1.0 or args.init != "default":
        init = FlowMatching.__init__

        def variant_init(self, *a, **kw):
            init(self, *a, **kw)
            f = self.field
            if variant:
                f = Variant(
                    f.dims[-1],
                    f.dims[1],
                    len(f.dims) - 1,
                    self.num_classes,
                    16 if f.embedding is None else f.embedding.embedding_dim,
                    fourier=args.fourier,
                    x_prediction=args.x_prediction,
                    per_layer=args.per_layer,
                    slope=args.slope,
                    log_time=args.log_time,
                    activation=args.activation,
                    gaussian_skip=f.gaussian_skip,
                )
            with torch.no_grad():
                f.pairs()[0][0][:, : f.dims[-1]] *= args.y_scale
                if args.init == "he":  # variance-preserving for LeakyReLU; biases zero
                    pairs = f.pairs()
                    for i, (w, b) in enumerate(pairs):
                        gain = 2.0 if i < len(pairs) - 1 else 1.0
                        w.normal_(0.0, (gain / w.shape[1]) ** 0.5)
                        b.zero_()
            self.field = f

        FlowMatching.__init__ = variant_init


def evaluate(model, info) -> dict:
    test = run_data(info, "test")
    # NLL in the benchmark's coordinates: all training points standardized per axis.
    log_scale = float(run_data(info, "train").x.double().std(dim=0).log().sum())
    g = torch.Generator().manual_seed(0)
    out = {}
    if model.num_classes is None:
        out["nll"] = heldout_nll(model, test.x).data - log_scale
        out["in_any_band"] = ring_precision(model.sample(5000, generator=g)).precision
        return out
    labels = torch.arange(5000) % model.num_classes
    x = model.sample(5000, labels=labels, generator=g)
    out["class_accuracy"] = class_accuracy(x, labels).overall
    out["in_any_band"] = ring_precision(x).precision
    out["w2"] = wasserstein2(x[:2000], test.x[:2000])
    out["w2_floor"] = wasserstein2(test.x[:2000], test.x[2000:4000])
    nll = heldout_nll(model, test.x[:2000], test.labels[:2000])
    out["nll_conditional"] = nll.data - log_scale
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["fm", "cfm"])
    p.add_argument("--time-alpha", type=float, help="default: the library's (5 fm, 7 cfm)")
    p.add_argument("--mix", type=float, default=0.0)
    p.add_argument("--ot", action="store_true")
    p.add_argument("--isotropic", type=float, default=0.0)
    p.add_argument("--x-prediction", type=float, default=0.0)
    p.add_argument("--fourier", default="")
    p.add_argument("--y-scale", type=float, default=1.0)
    p.add_argument("--mix-alpha", type=float, default=1.0)
    p.add_argument("--stratified", action="store_true")
    p.add_argument("--standardize", choices=STANDARDIZE, help="cfm (default: per class)")
    p.add_argument("--per-layer", action="store_true")
    p.add_argument("--slope", type=float, default=0.01)
    p.add_argument("--log-time", type=float, default=0.0)
    p.add_argument(
        "--gaussian-skip",
        action=argparse.BooleanOptionalAction,
        help="the library's option (default on)",
    )
    p.add_argument("--init", default="default", choices=["default", "he"])
    p.add_argument("--stf", type=int, default=0, help="stable target field, M refs per class")
    p.add_argument("--activation", default="leaky_relu", help="a torch.nn.functional name")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path, help="append the JSON line to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as bench_quality.py (fit trains with one thread anyway)
    patch(args)
    model_args = dict(hidden=args.hidden, layers=args.layers, time_alpha=args.time_alpha)
    if args.gaussian_skip is not None:
        model_args["gaussian_skip"] = args.gaussian_skip
    if args.model == "cfm":
        model_args["embedding_dim"] = args.embedding_dim
        model_args["standardize"] = args.standardize or "class"
    with tempfile.TemporaryDirectory() as tmp:
        model, info, history = train_run(
            args.model,
            Path(tmp) / "run",
            config=TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr),
            model_args=model_args,
            progress=False,
        )
    row = {k: v for k, v in vars(args).items() if k != "log"}
    row["train_s"] = round(history.seconds, 1)
    row["gaussian_skip"] = model.gaussian_skip
    row["time_alpha"] = model.time_alpha
    row.update(evaluate(model, info))
    line = json.dumps(row)
    print(line, flush=True)
    if args.log is not None:
        with args.log.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
