"""Variations of the flow-matching recipe, one 20-epoch run each: what moves the targets.

Issue 4 asks, after the seed's 20 epochs, for a held-out NLL <= 1.9 nats (unconditional)
and >= 98% class accuracy (conditional). This script builds one
:class:`~flowscope.matching.FlowMatching` with one change, trains it with
:func:`flowscope.train.fit` on the data ``flowscope train`` uses (the parts of
:func:`flowscope.runs.run_data`: 250,000 Olympic points, 10,000 validation and test
points, data seed = training seed) and prints one JSON line (also appended to ``--log``).
Every variation is a configuration of the library's parts or a small class below that
plugs into one of its extension points (a time sampler, a coupling, a standardization,
a velocity field, a subclass overriding ``training_batch``); nothing in the library is
modified:

- ``--time-alpha A``: training times t ~ Beta(A, 1) (the library's option, default its
  own: 5 for fm, 7 for cfm; 1 is the seed's U[0, 1]);
- ``--mix W``: with probability W a training time is drawn from U[0, 1] instead (from
  Beta(M, 1) with ``--mix-alpha M``): :class:`MixedTimes`;
- ``--ot``: minibatch optimal-transport pairing of noise and data (Tong et al. 2023,
  arXiv:2302.00482): the library's ``ot`` coupling, ``class-ot`` (within each class) for
  a conditional model;
- ``--isotropic S``: one scale for both coordinates (their RMS standard deviation / S)
  instead of per-axis standardization: :class:`IsotropicStandardization`;
- ``--x-prediction EPS``: the network predicts x1, v = (net - y) / max(1 - t, EPS);
- ``--fourier K:SIGMA``: sin/cos of K random projections (N(0, SIGMA^2)) of the point
  as extra inputs of the first layer;
- ``--y-scale C``: the first layer's weights on the point multiplied by C at init (after
  ``--init he``'s draw; the script's earlier form scaled them first, so that He's draw
  undid it);
- ``--stratified``: one training time per stratum of [0, 1] in each batch (random order),
  mapped through Beta(A, 1)'s quantile function: :class:`StratifiedTimes`;
- ``--per-layer``: t and (conditional) a per-class vector also added to every hidden
  layer's pre-activation (zero at init);
- ``--slope S``: LeakyReLU's negative slope (PyTorch's default 0.01);
- ``--standardize class|global`` (cfm): the library's option, default ``class``;
- ``--gaussian-skip`` / ``--no-gaussian-skip``: the library's option, default the
  coupling's (on for the independent coupling: the network plus the exact field of
  N(0, I) data; off with ``--ot``); rows logged before 2026-11-30 have no
  ``gaussian_skip`` key and ran without it: add ``--no-gaussian-skip`` to reproduce them;
- ``--log-time EPS``: -log(1 - t + EPS) / 4 as one more input of the first layer, so that
  the network resolves times near 1;
- ``--activation NAME``: a ``torch.nn.functional`` activation instead of LeakyReLU;
- ``--init he``: weights N(0, 2 / fan_in) (1 / fan_in for the last layer), biases 0;
- ``--stf M``: the stable target field (Xu et al. 2023, arXiv:2302.00670): the target of
  each example is E[dx_t | x_t] under the example's own x1 and M fresh reference points
  of its class: :class:`StableTargetFlowMatching`;
- ``--hidden``, ``--layers``, ``--embedding-dim``, ``--epochs``, ``--seed``, ``--lr``.

The network variations (x-prediction, Fourier features, per-layer conditioning, slope,
log-time, activation) are one :class:`ExploreField` in place of the model's
``VelocityField``; ``--y-scale`` and ``--init he`` only re-initialise the weights of
whichever field the model has. The Gaussian skip is added by
``FlowMatching.velocity`` outside the field, so with the skip on ``--x-prediction`` now
gives v = (net - y) / max(1 - t, EPS) + g(t) y (the network predicts x1 of what the
Gaussian part leaves), where the script's earlier form, which added the skip inside the
field, gave (net + g(t) y - y) / max(1 - t, EPS).

Whether a run trains on the fused kernel or by autograd is the trainer's decision
(:func:`flowscope.kernels.select`: a field other than the built-in one, another path or
an override of the loss falls back to autograd); each row records it as ``fast_path``
(``"pytorch"``: autograd), and training times compare only between rows with the same
value. The validation loss of each epoch is the variation's own loss (``--ot`` pairs the
validation points in blocks of 128, ``--stf`` uses its targets).

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
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowscope.base import STANDARDIZE
from flowscope.data import olympic_rings
from flowscope.matching import (
    DEFAULT_CONDITIONAL_TIME_ALPHA,
    DEFAULT_TIME_ALPHA,
    LEAKY_SLOPE,
    TIME_SAMPLERS,
    BetaTimes,
    FlowMatching,
    TimeSampler,
    TrainingBatch,
    UniformTimes,
    VelocityField,
)
from flowscope.metrics import class_accuracy, heldout_nll, ring_precision, wasserstein2
from flowscope.runs import RunInfo, run_data
from flowscope.standardize import Standardization
from flowscope.train import TrainConfig, fit

# -- time samplers -----------------------------------------------------------------------


@TIME_SAMPLERS.decorator("explore-stratified")
class StratifiedTimes(TimeSampler):
    """One time per stratum of U[0, 1] in each batch of n, in random order, mapped
    through Beta(alpha, 1)'s quantile function u^(1 / alpha): (n, 1).

    Arguments:
        alpha: a finite number > 0.
    """

    name = "explore-stratified"

    def __init__(self, alpha: float = 1.0):
        self.alpha = BetaTimes(alpha).alpha  # the library's check of alpha

    def arguments(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def sample(self, n, generator=None, dtype=torch.float32):
        u = torch.rand(n, 1, generator=generator, dtype=dtype)
        k = torch.randperm(n, generator=generator).reshape(-1, 1).to(dtype)
        return ((k + u) / n).pow(1 / self.alpha)

    def describe(self) -> str:
        return f"Beta({self.alpha:g}, 1), stratified"


@TIME_SAMPLERS.decorator("explore-mix")
class MixedTimes(TimeSampler):
    """Times from ``base``, each replaced with probability ``weight`` by one from
    Beta(alpha, 1) (alpha = 1: U[0, 1]): (n, 1).

    Arguments:
        base: a time sampler of ``TIME_SAMPLERS`` (name, config dict or instance).
        weight: the share of replaced times, in [0, 1].
        alpha: the Beta(alpha, 1) of the replacements, > 0.

    Raises:
        ValueError: for a weight outside [0, 1] or a bad alpha.
    """

    name = "explore-mix"

    def __init__(self, base: Any = "uniform", weight: float = 0.0, alpha: float = 1.0):
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight!r}")
        self.base = TIME_SAMPLERS.build(base)
        self.weight = float(weight)
        self.alpha = BetaTimes(alpha).alpha

    def arguments(self) -> dict[str, Any]:
        return {"base": self.base.config(), "weight": self.weight, "alpha": self.alpha}

    def sample(self, n, generator=None, dtype=torch.float32):
        t = self.base.sample(n, generator, dtype)
        u = torch.rand(t.shape, generator=generator, dtype=dtype) ** (1 / self.alpha)
        pick = torch.rand(t.shape, generator=generator) < self.weight
        return torch.where(pick, u, t)

    def describe(self) -> str:
        return f"{self.base.describe()}, {100 * self.weight:g}% from Beta({self.alpha:g}, 1)"


# -- standardization -----------------------------------------------------------------------


class IsotropicStandardization(Standardization):
    """One scale for all coordinates (per class, with classes): the RMS of the per-axis
    standard deviations divided by ``divisor``; the mean as the library's.

    Arguments:
        features: the dimension D.
        num_classes: per class (C classes), or ``None``.
        divisor: S in scale = RMS std / S, > 0.
    """

    def __init__(self, features: int, num_classes: int | None = None, divisor: float = 1.0):
        super().__init__(features, num_classes)
        self.divisor = float(divisor)

    @torch.no_grad()
    def fit(self, x, labels=None):
        super().fit(x, labels)
        rms = self.scale.pow(2).mean(dim=-1, keepdim=True).sqrt()
        self.scale.copy_((rms / self.divisor).expand_as(self.scale))
        return self


# -- velocity field ------------------------------------------------------------------------


class ExploreField(VelocityField):
    """The velocity MLP with optional Fourier input features, a log-time input, per-layer
    time and class terms, another activation and x-prediction (see the module's
    docstring). The Gaussian skip is not here: ``FlowMatching.velocity`` adds it.

    Arguments:
        features, hidden, layers, num_classes, embedding_dim: as ``VelocityField``.
        fourier: ``"K:SIGMA"`` or ``""``.
        x_prediction: EPS of v = (net - y) / max(1 - t, EPS), or 0 (off).
        per_layer: add t and a per-class vector (zero at init) to every hidden layer.
        slope: LeakyReLU's negative slope.
        log_time: EPS of the input -log(1 - t + EPS) / 4, or 0 (off).
        activation: a ``torch.nn.functional`` name.

    Raises:
        ValueError: for an unknown activation.
    """

    def __init__(
        self,
        features: int = 2,
        hidden: int = 64,
        layers: int = 5,
        num_classes: int | None = None,
        embedding_dim: int = 16,
        *,
        fourier: str = "",
        x_prediction: float = 0.0,
        per_layer: bool = False,
        slope: float = LEAKY_SLOPE,
        log_time: float = 0.0,
        activation: str = "leaky_relu",
    ):
        super().__init__(features, hidden, layers, num_classes, embedding_dim)
        if not callable(getattr(F, activation, None)):
            raise ValueError(f"activation must be a torch.nn.functional name, got {activation!r}")
        self.activation = activation
        self.log_time = log_time
        self.x_prediction = x_prediction
        self.slope = slope
        self.time_w = self.per_class = None
        if per_layer:  # time and class into every hidden layer, zero at init
            n_hidden, width = len(self.dims) - 3, self.dims[1]
            self.time_w = nn.Parameter(torch.zeros(n_hidden, width))
            if self.embedding is not None:
                self.per_class = nn.Parameter(
                    torch.zeros(n_hidden, self.embedding.num_embeddings, width)
                )
        self.k = 0
        extra = 1 if log_time else 0
        if fourier:
            k, sigma = fourier.split(":")
            self.k = int(k)
            g = torch.Generator().manual_seed(123)
            self.register_buffer("b", torch.randn(features, self.k, generator=g) * float(sigma))
            extra += 2 * self.k
        if extra:  # a wider first layer, initialised as nn.Linear is
            self.dims = [self.dims[0] + extra] + self.dims[1:]
            flat = []
            for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
                lin = nn.Linear(a, b)
                flat += [lin.weight.detach().reshape(-1), lin.bias.detach()]
            self.theta = nn.Parameter(torch.cat(flat))

    def _act(self, a: torch.Tensor) -> torch.Tensor:
        if self.activation == "leaky_relu":
            return F.leaky_relu(a, self.slope)
        return getattr(F, self.activation)(a)

    def forward(self, y, t, labels=None):
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        t = t.expand(y.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)
        parts = [y]
        if self.k:
            p = y @ self.b  # (N, K)
            parts += [torch.sin(p), torch.cos(p)]
        parts.append(t)
        if self.embedding is not None:
            parts.append(self.embedding(labels))
        if self.log_time:  # -log(1 - t + EPS) / 4: resolves t near 1 (EDM's c_noise)
            parts.append(-0.25 * torch.log1p(self.log_time - t))
        a = torch.cat(parts, dim=1)  # (N, dims[0])
        pairs = self.pairs()
        for i, (w, b) in enumerate(pairs):
            a = F.linear(a, w, b)
            if i < len(pairs) - 1:
                if i >= 1 and self.time_w is not None:
                    a = a + t * self.time_w[i - 1]
                    if self.per_class is not None:
                        a = a + self.per_class[i - 1][labels]
                a = self._act(a)
        if not self.x_prediction:
            return a
        return (a - y) / (1 - t).clamp(min=self.x_prediction)

    def frozen(self, labels=None):
        """:meth:`forward` without gradients (the parent's precomputation assumes its own
        layers)."""

        def velocity(y, t):
            with torch.no_grad():
                return self.forward(y, t, labels)

        return velocity


def initialise(field: VelocityField, init: str, y_scale: float) -> None:
    """Re-initialise a field's Linear layers in place: He (``init="he"``) and/or the first
    layer's weights on the point times ``y_scale``."""
    with torch.no_grad():
        if init == "he":  # variance-preserving for LeakyReLU; biases zero
            pairs = field.pairs()
            for i, (w, b) in enumerate(pairs):
                gain = 2.0 if i < len(pairs) - 1 else 1.0
                w.normal_(0.0, (gain / w.shape[1]) ** 0.5)
                b.zero_()
        field.pairs()[0][0][:, : field.features] *= y_scale


# -- loss: the stable target field --------------------------------------------------------


class StableTargetFlowMatching(FlowMatching):
    """Flow matching whose regression target is the stable target field (Xu et al. 2023,
    arXiv:2302.00670): E[dx_t | x_t] under a reference set of the example's own x1 and
    ``references`` points of its class drawn afresh every batch from a pool.

    Arguments:
        references: M, the reference points per example besides its own x1.
        pool: (P, D) points in data units to draw the references from, and their
            labels (P,) (``None`` for an unconditional model); standardized on first use,
            after the trainer has fitted the standardization.
        **kwargs: passed to :class:`~flowscope.matching.FlowMatching`.
    """

    def __init__(self, *, references: int, pool: tuple[torch.Tensor, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.references = references
        self._pool_data = pool
        self._pool: torch.Tensor | None = None  # (C, 9000, D) standardized, float64

    def _reference_pool(self) -> torch.Tensor:
        if self._pool is None:
            x, lab = self._pool_data
            c = self.num_classes or 1
            lab = torch.zeros(len(x), dtype=torch.long) if lab is None else lab
            z = self.standardization(x, lab if self.num_classes else None).double()
            self._pool = torch.stack([z[lab == k][:9000] for k in range(c)])
        return self._pool

    def training_batch(self, x1, labels=None, generator=None) -> TrainingBatch:
        b = super().training_batch(x1, labels, generator)
        pool = self._reference_pool()
        # a fresh reference batch each step: M points of each class
        pick = torch.randint(0, pool.shape[1], (self.references,), generator=generator)
        refs = pool[:, pick]  # (C, M, D)
        ref = refs[labels if labels is not None else torch.zeros(len(x1), dtype=torch.long)]
        ref = torch.cat([b.x1.double()[:, None], ref], dim=1)  # (N, 1 + M, D), own x1 first
        t = b.t.double()
        alpha, sigma = self.path.alpha(t), self.path.sigma(t)  # (N, 1) each
        y = alpha * b.x1.double() + sigma * b.x0.double()
        d2 = (y[:, None] - alpha[:, :, None] * ref).pow(2).sum(-1)  # (N, 1 + M)
        w = torch.softmax(-d2 / (2 * sigma.pow(2)), dim=1)
        mean = (w[:, :, None] * ref).sum(1)  # posterior mean of x1 given y, (N, D)
        target = self.path.d_alpha(t) * mean + self.path.d_sigma(t) * (y - alpha * mean) / sigma
        return dataclasses.replace(b, dx_t=target.to(x1.dtype))


# -- one run -------------------------------------------------------------------------------


def time_alpha(args) -> float:
    """The Beta(A, 1) of the run's times: ``--time-alpha`` or the library's default."""
    if args.time_alpha is not None:
        return args.time_alpha
    return DEFAULT_CONDITIONAL_TIME_ALPHA if args.model == "cfm" else DEFAULT_TIME_ALPHA


def times(args) -> TimeSampler:
    a = time_alpha(args)
    base = StratifiedTimes(a) if args.stratified else UniformTimes() if a == 1 else BetaTimes(a)
    return MixedTimes(base, args.mix, args.mix_alpha) if args.mix else base


def network_variant(args) -> bool:
    return bool(
        args.fourier
        or args.x_prediction
        or args.per_layer
        or args.slope != LEAKY_SLOPE
        or args.log_time
        or args.activation != "leaky_relu"
    )


def build(args, train) -> FlowMatching:
    """The model of the run, with the asked-for parts, initialised from the global seed."""
    conditional = args.model == "cfm"
    kwargs: dict[str, Any] = dict(
        features=train.x.shape[1],
        hidden=args.hidden,
        layers=args.layers,
        times=times(args),
        # The library's OT couplings, paired in blocks of 128 (the batch size) also for
        # the validation set, as this script's own coupling did before issue 17.
        coupling={"name": "class-ot" if conditional else "ot", "block": 128}
        if args.ot
        else "independent",
    )
    if args.gaussian_skip is not None:
        kwargs["gaussian_skip"] = args.gaussian_skip
    if conditional:
        kwargs["num_classes"] = len(train.class_names or ()) or int(train.labels.max()) + 1
        kwargs["embedding_dim"] = args.embedding_dim
        kwargs["standardize"] = args.standardize or "class"
    if args.stf:
        c = kwargs.get("num_classes") or 1
        pool = olympic_rings(50_000 * c, conditional=conditional, seed=999)
        pool = pool if conditional else (pool, None)
        model = StableTargetFlowMatching(references=args.stf, pool=pool, **kwargs)
    else:
        model = FlowMatching(**kwargs)
    if args.isotropic:
        per_class = model.num_classes if model.standardization.per_class else None
        model.standardization = IsotropicStandardization(model.features, per_class, args.isotropic)
    if network_variant(args):
        f = model.field
        model.field = ExploreField(
            f.features,
            f.dims[1],
            len(f.dims) - 1,
            model.num_classes,
            args.embedding_dim,
            fourier=args.fourier,
            x_prediction=args.x_prediction,
            per_layer=args.per_layer,
            slope=args.slope,
            log_time=args.log_time,
            activation=args.activation,
        )
    if args.init != "default" or args.y_scale != 1.0:
        initialise(model.field, args.init, args.y_scale)
    return model


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


def parser() -> argparse.ArgumentParser:
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
    p.add_argument("--slope", type=float, default=LEAKY_SLOPE)
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(1)  # as bench_quality.py (fit trains with one thread anyway)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr)
    # The run's data exactly as flowscope.runs.train_run draws them.
    info = RunInfo(
        kind=FlowMatching.kind,
        model={},
        data={
            "source": "olympic",
            "n_points": 250_000,
            "holdout_points": 10_000,
            "seed": config.seed,
            "conditional": args.model == "cfm",
        },
        train=dataclasses.asdict(config),
        extra={"name": args.model},
    )
    train, val = run_data(info, "train"), run_data(info, "val")
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build(args, train)
    info.model = model.config()
    history = fit(
        model,
        train.x,
        train.labels,
        x_val=val.x,
        labels_val=val.labels,
        config=config,
        progress=False,
    )
    row = {k: v for k, v in vars(args).items() if k != "log"}
    row["train_s"] = round(history.seconds, 1)
    row["gaussian_skip"] = model.gaussian_skip
    row["time_alpha"] = time_alpha(args)
    row["fast_path"] = history.fast_path
    row.update(evaluate(model, info))
    line = json.dumps(row)
    print(line, flush=True)
    if args.log is not None:
        with args.log.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
