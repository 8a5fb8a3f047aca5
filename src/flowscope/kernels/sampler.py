"""The sampler's fast path: flow matching's Euler steps by ``fm.c``'s ``fm_euler``.

:class:`~flowscope.matching.FlowMatching` integrates its ODE with ``solver="euler"`` by
the first of :data:`~flowscope.matching.model.EULER_ACCELERATORS` that runs; importing
this module registers :func:`accelerate` there. It runs where it computes what the
PyTorch sampler computes, ``integrate(model.ode_velocity(labels), y, grid, "euler")``:
the same network and skip, the same operations per point, the same results to rounding
(:func:`reason` says why not, else): sampling, encoding and trajectories cost one C call
instead of a few PyTorch operations per layer and step. It also steps aside where it is
not faster than the PyTorch sampler on this machine (:func:`speed`, measured once). A
guided field (classifier-free guidance) is two fields: the model calls it one step at a
time for both, on the points doubled (``FlowMatching._guided_euler``).

``FLOWSCOPE_NO_KERNEL=1`` turns it off, like every kernel.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch

from ..atomic import atomic_write
from ..matching import field as field_module
from ..matching.field import VelocityField
from ..matching.model import EULER_ACCELERATORS, FlowMatching
from ..matching.solvers import integrate
from .build import cache_dir, disabled, load

__all__ = ["accelerate", "bucket", "euler", "reason", "speed", "supports"]

KERNEL = "fm_euler"
#: The largest batch the speed is measured at: beyond it both costs grow with the batch.
MAX_BUCKET = 4096
#: Steps of the speed measurement (the cost per step is what is compared).
SPEED_STEPS = 16


def supports(model: FlowMatching, y: torch.Tensor, labels: torch.Tensor | None) -> str | None:
    """``None`` if the kernel computes the PyTorch sampler's steps for this model and
    these points, else why not (read off the model, its parts and the inputs)."""
    f = model.field
    if type(f) is not VelocityField or "frozen" in vars(f):
        return f"the kernel computes the built-in VelocityField, not {type(f).__name__}"
    if f.activation != "leaky_relu":
        return f"the kernel computes LeakyReLU layers, not {f.activation}"
    if type(model).ode_velocity is not FlowMatching.ode_velocity or "ode_velocity" in vars(model):
        return f"{type(model).__name__} overrides ode_velocity, which the kernel reproduces"
    if y.device.type != "cpu" or f.theta.device.type != "cpu":
        return f"the kernels run on the CPU, the points are on {y.device}"
    if y.shape[0] == 0:
        return "there are no points to integrate"
    if y.dtype not in (torch.float32, torch.float64):
        return f"the kernel computes in float32 or float64, not {y.dtype}"
    weights = f.kernel_params()
    if any(w.dtype != y.dtype for w in weights):
        return f"the points are {y.dtype} and the weights {f.theta.dtype}"
    if torch.is_grad_enabled() and (y.requires_grad or any(w.requires_grad for w in weights)):
        return "gradients are required, and the kernel computes none"
    if f.embedding is not None and labels is None:
        return "a conditional model needs labels"
    if disabled():
        return "FLOWSCOPE_NO_KERNEL is set"
    if load(KERNEL, y.dtype) is None:
        return "the C kernel could not be built here (no working C compiler?)"
    return None


def euler(
    model: FlowMatching,
    y: torch.Tensor,
    labels: torch.Tensor | None,
    grid: list[float],
    record: list[int],
) -> torch.Tensor:
    """Euler steps of the model's ODE along ``grid`` by the kernel, unchecked (see
    :func:`supports`): the states (len(record), N, D) at grid[i] for i in ``record``
    (any order, repeats allowed), from y (N, D) at grid[0], standardized units.

    Raises:
        ValueError: for a label outside the model's classes.
        MemoryError: where the kernel's scratch memory could not be allocated.
    """
    fn = load(KERNEL, y.dtype)
    f = model.field
    emb = f.embedding
    ts = torch.tensor(grid, dtype=y.dtype)  # the times the PyTorch sampler's network sees
    rate = None
    if model.gaussian_skip:  # as ode_velocity: g at each step's start time, from the path
        g = model.path.gaussian_rate
        rate = torch.tensor([float(g(t)) for t in ts[:-1].tolist()], dtype=torch.float64)
    steps = sorted(set(record))
    # Contiguous copies are bound to names so that they outlive the call.
    state = y.detach().to(memory_format=torch.contiguous_format, copy=True)
    times = torch.tensor(grid, dtype=torch.float64)
    rec = torch.tensor(steps, dtype=torch.int64)
    lab = None if emb is None else labels.to(torch.int64).contiguous()
    theta = f.theta.detach().contiguous()
    table = None if emb is None else emb.weight.detach().contiguous()
    out = y.new_empty((len(steps), *y.shape))
    rc = fn(
        y.shape[0],
        f.dims[-1],
        0 if emb is None else emb.embedding_dim,
        0 if emb is None else emb.num_embeddings,
        f.dims[1],
        len(f.dims) - 1,
        field_module.LEAKY_SLOPE,  # read now: the value frozen() uses
        theta.data_ptr(),
        None if table is None else table.data_ptr(),
        None if lab is None else lab.data_ptr(),
        state.data_ptr(),
        len(grid) - 1,
        times.data_ptr(),
        None if rate is None else rate.data_ptr(),
        len(steps),
        rec.data_ptr(),
        out.data_ptr(),
    )
    if rc == 3:
        raise ValueError(f"a label is outside 0..{emb.num_embeddings - 1}")
    if rc == 1:
        raise MemoryError(f"the Euler kernel could not allocate scratch for {len(y)} points")
    if rc != 0:
        raise RuntimeError(f"the Euler kernel refused these sizes (code {rc})")
    if steps == record:
        return out
    where = {s: i for i, s in enumerate(steps)}
    return out[[where[s] for s in record]]


def reason(model: FlowMatching, y: torch.Tensor, labels: torch.Tensor | None) -> str | None:
    """``None`` if :func:`accelerate` runs for these inputs, else why it steps aside:
    :func:`supports`, then the speed (:func:`speed`)."""
    why = supports(model, y, labels)
    if why is not None:
        return why
    ms = speed(model, y.shape[0], y.dtype)
    if ms["kernel"] >= ms["pytorch"]:
        return (
            f"on this CPU the kernel measured {ms['kernel']:.4f} ms per step and PyTorch "
            f"{ms['pytorch']:.4f} ms at these sizes"
        )
    return None


def accelerate(
    model: FlowMatching,
    y: torch.Tensor,
    labels: torch.Tensor | None,
    grid: list[float],
    record: list[int],
) -> torch.Tensor | None:
    """The accelerator registered in :data:`~flowscope.matching.model.EULER_ACCELERATORS`:
    :func:`euler` where :func:`reason` finds nothing against it, else ``None``."""
    if not isinstance(model, FlowMatching) or reason(model, y, labels) is not None:
        return None
    return euler(model, y, labels, grid, record)


#: Speeds measured or read in this process, by key (see :func:`speed`).
_SPEEDS: dict[str, dict[str, float]] = {}


def _speed_file() -> Any:
    return cache_dir() / "sampler_speeds.json"


def bucket(n: int) -> int:
    """The batch size the speed for n points is measured at: the next power of two, at
    most :data:`MAX_BUCKET`."""
    return min(2 ** math.ceil(math.log2(n)), MAX_BUCKET)


def speed(model: FlowMatching, n: int, dtype: torch.dtype) -> dict[str, float]:
    """Milliseconds per Euler step of the kernel and of the PyTorch sampler for n points
    at the model's sizes, ``{"kernel": ..., "pytorch": ...}``: measured once per build
    of the kernel, sizes, batch bucket and thread count on this machine, and kept beside
    the built kernels."""
    f = model.field
    b = bucket(n)
    key = json.dumps(
        {
            "kernel": load(KERNEL, dtype).build_key,
            "dims": f.dims,
            "conditional": f.embedding is not None,
            "skip": model.gaussian_skip,
            "batch": b,
            "threads": torch.get_num_threads(),
        },
        sort_keys=True,
    )
    if key in _SPEEDS:
        return _SPEEDS[key]
    path = _speed_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        _SPEEDS[key] = known[key]
        return known[key]
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(b, f.dims[-1], generator=gen, dtype=dtype)
    labels = None
    if f.embedding is not None:
        labels = torch.arange(b) % f.embedding.num_embeddings
    grid = [k / SPEED_STEPS for k in range(SPEED_STEPS + 1)]
    last = [SPEED_STEPS]

    def kernel() -> None:
        euler(model, y, labels, grid, last)

    def pytorch() -> None:
        with torch.no_grad():
            integrate(model.ode_velocity(labels), y, grid, "euler")

    ms = {
        "kernel": _time(kernel) / SPEED_STEPS,
        "pytorch": _time(pytorch) / SPEED_STEPS,
    }
    known[key] = _SPEEDS[key] = ms
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known, indent=1) + "\n")
    except OSError:
        pass  # not kept: measured again next time
    return ms


def _time(call, rounds: int = 5) -> float:
    """The fastest of ``rounds`` calls, in ms (after one warm-up call)."""
    call()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


if accelerate not in EULER_ACCELERATORS:
    EULER_ACCELERATORS.append(accelerate)
