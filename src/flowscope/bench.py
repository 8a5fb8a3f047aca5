"""``flowscope bench``: the training step of flowscope timed beside other implementations.

In one process, at the study's sizes (batch 128 of Olympic points), every contender trains
``steps`` steps per round; the rounds go round-robin over the contenders (each round
starting one further along), and each contender's median over the rounds is reported.
Interleaving spreads the noise of a shared or throttled machine over all contenders
alike, which is what makes the ratios fair; the absolute numbers still move with the load.

Contenders (libraries that are not installed are skipped with a note):

- ``flowscope-NAME`` for every registered model type (:data:`~flowscope.models.MODELS`):
  :func:`flowscope.fit` itself, one epoch over ``steps * 128`` points, divided by
  ``steps``. Included: the trainer's per-call set-up (standardization, optimizer, the
  choice of its fast path), shuffling, batch indexing, loss, the NaN check, backward,
  Adam and the cosine scheduler; no validation (``x_val`` is not given).
- ``flowscope-NAME-pytorch`` for each type with a fused kernel: the same with
  ``FLOWSCOPE_NO_KERNEL`` set, flowscope's own PyTorch path.
- ``reference-nf``: :mod:`flowscope.reference`, the study's flow written plainly (two
  ``nn.Sequential`` per coupling, default Adam).
- ``zuko-nf``: ``zuko.flows.RealNVP(features=2, transforms=15, hidden_features=[8] * 4)``.
- ``normflows-nf``: 15 ``AffineCouplingBlock`` (MLP [1, 8, 8, 8, 8, 2], LeakyReLU) with
  swaps between them, fixed N(0, I) base, ``forward_kld`` loss.
- ``torchcfm-fm``: torchcfm's ``ConditionalFlowMatcher`` with the same velocity MLP as
  flowscope's (5 Linear layers of width 64, LeakyReLU; input point and time).

The non-flowscope contenders run the same plain loop: shuffle, index a batch, loss,
``.item()`` check, ``zero_grad``, backward, default ``torch.optim.Adam`` (lr 1e-3),
``CosineAnnealingLR`` step. Each contender trains once on a few batches before the
rounds (warm-up; the flow kernel's one-off build is timed separately).

Beside ms per step, each row gives the arithmetic of a step of its family's network
(:func:`step_flops`) and the rate achieved in GFLOP/s, so that the distance to the
machine's limit is visible; the header names the CPU and its vector extensions.

``sampling`` times drawing 1000 points with 1000 Euler steps (dt = 1e-3) from flowscope's
flow matching models, unconditional and conditional (target: <= 0.3 s).

The command's options are :mod:`flowscope.cli.bench`.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import check_int, olympic_rings
from .reference import ReferenceFlow
from .tables import text_table

__all__ = [
    "CONTENDERS",
    "BenchResult",
    "Timing",
    "cpu_model",
    "run_bench",
    "vector_extensions",
    "format_table",
    "markdown",
    "to_json",
]

BATCH = 128
TRAIN_POINTS = 250_000
EPOCHS = 20
STEPS_PER_EPOCH = math.ceil(TRAIN_POINTS / BATCH)  # 1954
SAMPLE_POINTS, SAMPLE_DT = 1000, 1e-3

# A training pass: (x (N, 2) data units, labels (N,)) -> number of optimizer steps taken.
TrainPass = Callable[[torch.Tensor, torch.Tensor], int]


class Unavailable(Exception):
    """A contender cannot run here (library missing); the message says why."""


# -- contenders -------------------------------------------------------------------------


def _study_model(name: str):
    """The registered model type ``name`` at the study's sizes (5 classes if conditional)."""
    from .models import MODELS

    entry = MODELS.get(name)
    torch.manual_seed(0)
    return entry.build(features=2, **({"num_classes": 5} if entry.conditional else {}))


def _flowscope(name: str, kernel: bool = True) -> Callable[[], TrainPass]:
    """The registered model type ``name`` trained by :func:`fit`; with ``kernel=False``
    with ``FLOWSCOPE_NO_KERNEL`` set, so that the trainer runs on PyTorch operations."""

    def setup() -> TrainPass:
        from .train import TrainConfig, fit

        model = _study_model(name)
        conditional = model.num_classes is not None
        calls = [0]

        def train(x: torch.Tensor, labels: torch.Tensor) -> int:
            calls[0] += 1
            config = TrainConfig(epochs=1, batch_size=BATCH, seed=calls[0])
            with _kernels_off(not kernel):
                fit(model, x, labels if conditional else None, config=config, progress=False)
            return math.ceil(len(x) / BATCH)

        return train

    return setup


@contextlib.contextmanager
def _kernels_off(off: bool):
    """``FLOWSCOPE_NO_KERNEL=1`` within the block, if ``off``; restored after."""
    if not off:
        yield
        return
    old = os.environ.get("FLOWSCOPE_NO_KERNEL")
    os.environ["FLOWSCOPE_NO_KERNEL"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["FLOWSCOPE_NO_KERNEL"]
        else:
            os.environ["FLOWSCOPE_NO_KERNEL"] = old


def step_flops(model: torch.nn.Module, batch: int = 128) -> int:
    """The arithmetic of one training step of a network of weights, in FLOPs: each
    weight is one multiply-add per point in the forward pass and two in the backward pass
    (the input's gradient and its own), so 6 x weights x batch. Biases and element-wise
    operations are counted as weights too (an overcount of a few percent at these sizes);
    the arithmetic is the same for every implementation of the same network."""
    return 6 * sum(p.numel() for p in model.parameters()) * batch


def _plain_loop(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], params) -> TrainPass:
    """The loop every non-flowscope contender runs, on standardized points."""
    params = list(params)
    opt = torch.optim.Adam(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * STEPS_PER_EPOCH)

    def train(x: torch.Tensor, labels: torch.Tensor) -> int:
        y = (x - x.mean(0)) / x.std(0)
        order = torch.randperm(len(y))
        steps = 0
        for start in range(0, len(y), BATCH):
            idx = order[start : start + BATCH]
            loss = loss_fn(y[idx], labels[idx])
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss became {loss.item()} at step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
        return steps

    return train


def _reference() -> TrainPass:
    torch.manual_seed(0)
    model = ReferenceFlow()
    return _plain_loop(lambda y, _: model.loss(y), model.parameters())


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise Unavailable(f"{err} (pip install 'flowscope[bench]')") from None


def _zuko() -> TrainPass:
    zuko = _import("zuko")
    torch.manual_seed(0)
    flow = zuko.flows.RealNVP(features=2, transforms=15, hidden_features=[8] * 4)
    return _plain_loop(lambda y, _: -flow().log_prob(y).mean(), flow.parameters())


def _normflows() -> TrainPass:
    nf = _import("normflows")
    torch.manual_seed(0)
    flows = []
    for k in range(15):
        flows.append(nf.flows.AffineCouplingBlock(nf.nets.MLP([1, 8, 8, 8, 8, 2], leaky=0.01)))
        if k < 14:
            flows.append(nf.flows.Permute(2, mode="swap"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    return _plain_loop(lambda y, _: model.forward_kld(y), model.parameters())


def _torchcfm() -> TrainPass:
    cfm_module = _import("torchcfm.conditional_flow_matching")
    torch.manual_seed(0)
    matcher = cfm_module.ConditionalFlowMatcher(sigma=0.0)
    dims = [3, 64, 64, 64, 64, 2]  # (point, t) -> velocity, as flowscope's VelocityField
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.LeakyReLU()] if i < len(dims) - 2 else [])
    net = nn.Sequential(*layers)

    def loss(x1: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        x0 = torch.randn_like(x1)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        vt = net(torch.cat([xt, t[:, None]], dim=-1))
        return ((vt - ut) ** 2).sum(dim=1).mean()

    return _plain_loop(loss, net.parameters())


@dataclass(frozen=True)
class Contender:
    name: str
    family: str  # "nf" or "fm": the flowscope row it is compared with
    setup: Callable[[], TrainPass]


def _contenders() -> tuple[Contender, ...]:
    """Every registered model type and the other libraries' implementations, grouped by
    family; each row is compared with the family's first flowscope row."""
    from .kernels import FAST_PATHS
    from .models import MODELS

    ours = []
    for e in MODELS:
        ours.append(Contender(f"flowscope-{e.name}", e.model.kind, _flowscope(e.name)))
        model = _study_model(e.name)  # a fused kernel for the type (not for meanflow's JVP)
        if any(
            isinstance(model, fp.model_class) and fp.supports(model) is None for fp in FAST_PATHS
        ):
            plain = Contender(
                f"flowscope-{e.name}-pytorch", e.model.kind, _flowscope(e.name, False)
            )
            ours.append(plain)
    theirs = [
        Contender("reference-nf", "nf", _reference),
        Contender("zuko-nf", "nf", _zuko),
        Contender("normflows-nf", "nf", _normflows),
        Contender("torchcfm-fm", "fm", _torchcfm),
    ]
    families = list(dict.fromkeys(c.family for c in ours))  # grouped, in registration order
    return tuple(sorted(ours + theirs, key=lambda c: families.index(c.family)))


CONTENDERS: tuple[Contender, ...] = _contenders()
BASELINE = {c.family: c.name for c in reversed(CONTENDERS) if c.name.startswith("flowscope-")}
NAMES = tuple(c.name for c in CONTENDERS) + ("sampling",)


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One contender's training step.

    Attributes:
        name, family: the contender and the flowscope row it is compared with.
        ms_per_step: median over the rounds of milliseconds per step.
        ms_rounds: milliseconds per step of every round.
        ratio: ms_per_step / that of the flowscope row of its family (None if not run).
        projected_s: ms_per_step x 1954 steps x 20 epochs, in seconds.
        mflop: the arithmetic of one step of the family's network (:func:`step_flops`),
            in millions of floating-point operations.
        gflops: the rate achieved, mflop / ms_per_step, in GFLOP/s.
    """

    name: str
    family: str
    ms_per_step: float
    ms_rounds: list[float]
    ratio: float | None
    projected_s: float
    mflop: float | None = None
    gflops: float | None = None


@dataclass(frozen=True)
class SampleTiming:
    """Median seconds to draw 1000 points with 1000 Euler steps."""

    name: str
    seconds: float
    rounds: list[float]


@dataclass
class BenchResult:
    machine: dict
    settings: dict
    timings: list[Timing] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sampling: list[SampleTiming] = field(default_factory=list)


def _kernels() -> dict[str, bool]:
    """Which fused kernels can be built and used for float32 here; builds them."""
    from .kernels import FAST_PATHS, load

    return {fp.kernel: load(fp.kernel, torch.float32) is not None for fp in FAST_PATHS}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions that decide the kernels' speed, as ``/proc/cpuinfo``
    names them (empty where it cannot be read)."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512bw", "neon", "asimd")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _machine(threads: int, kernels: dict[str, bool]) -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cores": cores,
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "vector_extensions": vector_extensions(),
        "kernels": kernels,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_bench(
    *,
    steps: int = 200,
    rounds: int = 5,
    only: Sequence[str] | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time the contenders' training steps (and sampling), interleaved; see the module doc.

    Arguments:
        steps: optimizer steps per contender per round (batch 128).
        rounds: rounds; each contender's median over them is reported.
        only: names from :data:`NAMES` to run (default: all).
        threads: torch threads while timing (``flowscope.fit`` always trains with 1).
        log: called with a line of progress after every round, if given.

    Returns:
        :class:`BenchResult`.

    Raises:
        ValueError: for an unknown name or a non-positive ``steps``, ``rounds``, ``threads``.
    """
    steps, rounds = check_int(steps, "steps"), check_int(rounds, "rounds")
    threads = check_int(threads, "threads")
    chosen = list(NAMES) if not only else list(only)
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown contender {unknown[0]!r}; choose from {', '.join(NAMES)}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        kernels = _kernels()  # the first look-up builds them on a cold cache
        build_s = time.perf_counter() - t0
        result = BenchResult(
            machine=_machine(threads, kernels),
            settings={
                "steps": steps,
                "rounds": rounds,
                "batch_size": BATCH,
                "kernel_first_load_s": build_s,
                "steps_per_epoch": STEPS_PER_EPOCH,
                "epochs": EPOCHS,
            },
        )
        x, labels = olympic_rings(steps * BATCH, conditional=True, seed=0)
        passes = _warmed_up(chosen, x, labels, result.skipped)
        samplers = _samplers() if "sampling" in chosen else {}
        ms, secs = _interleaved(passes, samplers, x, labels, rounds, result.skipped, log)
        result.timings.extend(_timings(ms, result.skipped))
        for name, v in secs.items():
            result.sampling.append(SampleTiming(name, statistics.median(v), v))
        return result
    finally:
        torch.set_num_threads(old_threads)


def _warmed_up(
    chosen: Sequence[str], x: torch.Tensor, labels: torch.Tensor, skipped: dict[str, str]
) -> dict[str, TrainPass]:
    """The training pass of each chosen contender, set up and trained on a few batches;
    one that cannot run here or fails in the warm-up goes to ``skipped`` with the reason."""
    passes: dict[str, TrainPass] = {}
    for c in CONTENDERS:
        if c.name not in chosen:
            continue
        try:
            train = c.setup()
        except Unavailable as err:
            skipped[c.name] = str(err)
            continue
        warm = min(len(x), 8 * BATCH)
        try:
            train(x[:warm], labels[:warm])
        except RuntimeError as err:
            skipped[c.name] = f"stopped in the warm-up: {err}"
            continue
        passes[c.name] = train
    return passes


def _interleaved(
    passes: dict[str, TrainPass],
    samplers: dict[str, Callable[[], object]],
    x: torch.Tensor,
    labels: torch.Tensor,
    rounds: int,
    skipped: dict[str, str],
    log: Callable[[str], None] | None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every round runs each training pass on ``x`` and each sampler once, round-robin,
    each round starting one job further along.

    Returns:
        milliseconds per step of each training pass and seconds of each sampler, per
        round; a pass that fails goes to ``skipped`` and is not run again.
    """
    ms: dict[str, list[float]] = {name: [] for name in passes}
    secs: dict[str, list[float]] = {name: [] for name in samplers}
    jobs = [(name, True) for name in passes] + [(name, False) for name in samplers]
    for r in range(rounds):
        k = r % len(jobs) if jobs else 0
        for name, is_train in jobs[k:] + jobs[:k]:
            if is_train and name in skipped:
                continue
            t0 = time.perf_counter()
            if is_train:
                try:
                    n = passes[name](x, labels)
                except RuntimeError as err:  # a diverged loss (TrainingDiverged too)
                    skipped[name] = f"stopped in round {r + 1}: {err}"
                    continue
                ms[name].append(1e3 * (time.perf_counter() - t0) / n)
            else:
                samplers[name]()
                secs[name].append(time.perf_counter() - t0)
        if log is not None:
            log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {v[-1]:.2f} ms" for n, v in ms.items() if v)
            )
    return ms, secs


def _timings(ms: dict[str, list[float]], skipped: dict[str, str]) -> list[Timing]:
    """Each contender's median over the rounds and its ratio to its family's baseline,
    in the order of :data:`CONTENDERS`; the skipped ones are left out."""
    medians = {name: statistics.median(v) for name, v in ms.items() if v and name not in skipped}

    def own(name: str) -> str:  # the registered type of a flowscope row
        return name.removeprefix("flowscope-").removesuffix("-pytorch")

    flops = {  # the family's network, or for a flowscope row its own
        c.name: step_flops(
            _study_model(own(c.name if c.name.startswith("flowscope-") else BASELINE[c.family])),
            BATCH,
        )
        / 1e6
        for c in CONTENDERS
        if c.name in medians
    }
    timings = []
    for c in CONTENDERS:
        if c.name not in medians:
            continue
        base = medians.get(BASELINE[c.family])
        m = medians[c.name]
        mflop = flops.get(c.name)
        timings.append(
            Timing(
                name=c.name,
                family=c.family,
                ms_per_step=m,
                ms_rounds=ms[c.name],
                ratio=None if base is None else m / base,
                projected_s=m * STEPS_PER_EPOCH * EPOCHS / 1e3,
                mflop=mflop,
                gflops=None if mflop is None else mflop / m,
            )
        )
    return timings


def _samplers() -> dict[str, Callable[[], object]]:
    """Sampling of every registered type with an ODE sampler, at the study's step."""
    from .models import MODELS

    out: dict[str, Callable[[], object]] = {}
    for e in MODELS:
        if "dt" not in e.sample_options:
            continue
        torch.manual_seed(0)
        model = e.build(features=2, **({"num_classes": 5} if e.conditional else {}))
        labels = torch.arange(SAMPLE_POINTS) % 5 if e.conditional else None

        def draw(model=model, labels=labels) -> object:
            return model.sample(SAMPLE_POINTS, labels=labels, dt=SAMPLE_DT)

        out[f"flowscope-{e.name}"] = draw
    return out


# -- reporting --------------------------------------------------------------------------


def _header(result: BenchResult) -> list[str]:
    m, s = result.machine, result.settings
    load = m.get("load_average")
    kernels = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in m["kernels"].items()) or "none"
    return [
        f"training step, batch {s['batch_size']} of Olympic points: {s['steps']} steps x "
        f"{s['rounds']} rounds per contender, interleaved; median of the rounds",
        f"CPU: {m.get('cpu', '?')} ({', '.join(m.get('vector_extensions') or []) or 'unknown'})",
        f"machine: {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} thread(s) "
        f"(flowscope.fit trains with 1); fused kernels: {kernels} "
        f"(first load {s['kernel_first_load_s']:.2f} s)"
        + (f"; load average {load[0]:.1f}" if load else ""),
        f"projection: {s['steps_per_epoch']} steps per epoch x {s['epochs']} epochs "
        "(250,000 points)",
    ]


def _rows(result: BenchResult) -> list[list[str]]:
    rows = []
    for t in result.timings:
        lo, hi = min(t.ms_rounds), max(t.ms_rounds)
        rows.append(
            [
                t.name,
                f"{t.ms_per_step:.2f}",
                f"{lo:.2f}-{hi:.2f}",
                "-" if t.ratio is None else f"{t.ratio:.2f}x",
                f"{t.projected_s:.0f} s",
                "-" if t.mflop is None else f"{t.mflop:.1f}",
                "-" if t.gflops is None else f"{t.gflops:.1f}",
            ]
        )
    return rows


_COLUMNS = [
    "contender",
    "ms/step",
    "range",
    "vs flowscope",
    "20 epochs (proj.)",
    "MFLOP/step",
    "GFLOP/s",
]


def format_table(result: BenchResult) -> str:
    """The result as plain text: header, table, skipped contenders, sampling times."""
    table = text_table([_COLUMNS, *_rows(result)], align="l" + "r" * (len(_COLUMNS) - 1))
    lines = [*_header(result), "", table]
    for name, why in result.skipped.items():
        lines.append(f"skipped {name}: {why}")
    for s in result.sampling:
        lines.append(
            f"sampling {SAMPLE_POINTS} points with {round(1 / SAMPLE_DT)} Euler steps, "
            f"{s.name}: {s.seconds:.3f} s (median; target <= 0.3 s)"
        )
    return "\n".join(lines)


def markdown(result: BenchResult, command: str = "") -> str:
    """The result as a markdown section (for ``benchmarks/results/speed.md``)."""
    lines = [f"# Speed benchmark ({result.machine['date']})", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "Timings on a machine shared with other work are noisy; the contenders run "
        "interleaved in one process, so they share the noise and the ratios stay fair.",
        "",
    ]
    lines += [f"- {h}" for h in _header(result)]
    lines += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    lines.append("")
    for name, why in result.skipped.items():
        lines.append(f"- skipped {name}: {why}")
    for s in result.sampling:
        lines.append(
            f"- sampling {SAMPLE_POINTS} points, {round(1 / SAMPLE_DT)} Euler steps, "
            f"{s.name}: {s.seconds:.3f} s (median of {len(s.rounds)})"
        )
    return "\n".join(lines) + "\n"


def to_json(result: BenchResult) -> str:
    return json.dumps(asdict(result), indent=2) + "\n"
