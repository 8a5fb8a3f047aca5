"""The trainer's fast paths: fused C kernels that compute a model's training loss and
every gradient in one call, without an autograd graph.

For networks this small, PyTorch's cost is per-operation overhead, not arithmetic; a
kernel does the same arithmetic in one call. Each :class:`FastPath` states which models
it reproduces exactly, and :func:`select` decides once per fit whether it runs:

1. :meth:`FastPath.supports` checks what can be read off the model: its class and the
   parts of it the kernel computes, trainable weights without hooks, the CPU;
2. a check of meaning: on a float64 copy of the model, the kernel's loss and gradients
   must equal those of the model's own :meth:`~flowscope.base.FlowModel.loss` (autograd)
   on a small batch, to 1e-9; a subclass that changes the loss, an activation or a layer
   is caught here, whatever its sizes;
3. a check of speed: the kernel step and the autograd step are timed on this machine at
   the model's sizes and batch size, once (kept in the kernel cache folder); a kernel
   that is not faster than PyTorch does not run.

Where any of these fails, :func:`select` returns ``None`` and the reason, the trainer
says it once, and training runs on PyTorch operations: the same loss, to rounding.
``FLOWSCOPE_NO_KERNEL=1`` turns every kernel off.
"""

from __future__ import annotations

import copy
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..atomic import atomic_write
from .adam import FusedAdam
from .build import available, cache_dir, disabled, load

__all__ = [
    "FAST_PATHS",
    "FastPath",
    "FusedAdam",
    "Selection",
    "Step",
    "available",
    "load",
    "select",
]

#: A bound fast step: (standardized batch (N, D), labels (N,) or None, generator) -> the
#: loss, a 0-dim tensor; every gradient is written into its parameter's ``.grad``.
Step = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


class FastPath:
    """A fused training step for one family of models.

    Subclasses set ``name`` and ``kernel`` (the C kernel of :mod:`.build`), and implement
    :meth:`supports` and :meth:`bind`.
    """

    name: str = ""
    kernel: str = ""
    #: The model class (and its subclasses) this fast path is for.
    model_class: type = type(None)

    def supports(self, model: torch.nn.Module) -> str | None:
        """``None`` if the kernel computes this model's loss, else why it does not (read
        off the model's classes, parts and parameters; the numbers are checked by
        :func:`select`)."""
        raise NotImplementedError

    def params(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters whose gradients the kernel writes, in its order."""
        raise NotImplementedError

    def bind(self, model: torch.nn.Module) -> Step:
        """The step for ``model``, with what does not change between steps prepared."""
        raise NotImplementedError

    def signature(self, model: torch.nn.Module) -> dict[str, Any]:
        """The sizes that decide the kernel's speed (keys of the speed measurement)."""
        raise NotImplementedError


def grad_buffer(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, allocated once, for a kernel to overwrite with p's gradient."""
    g = p.grad
    if g is None or g.shape != p.shape or g.dtype != p.dtype or not g.is_contiguous():
        p.grad = g = torch.empty_like(p, memory_format=torch.contiguous_format)
    return g


def trainable_without_hooks(params: list[torch.nn.Parameter]) -> str | None:
    """Why a kernel may not replace autograd for ``params``, or ``None``: each must be
    trainable and carry no gradient hook (the kernel would bypass it)."""
    for p in params:
        if not p.requires_grad:
            return "some weights are frozen (requires_grad=False)"
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            return "a weight has a gradient hook, which the kernel would bypass"
    return None


def overridden(model: torch.nn.Module, owner: type, methods: tuple[str, ...]) -> str | None:
    """The first of ``methods`` (the loss the kernel reproduces) that a subclass of
    ``owner`` overrides, or ``None``."""
    for m in methods:
        if getattr(type(model), m) is not getattr(owner, m):
            return m
    return None


#: Every fast path, tried in order by :func:`select`.
FAST_PATHS: list[FastPath] = []


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided.

    Attributes:
        step: the fast step, or ``None`` (train with autograd).
        name: the fast path's name, or ``None``.
        reason: why the fast path does not run (``None`` when it does, or when no fast
            path exists for this kind of model).
        ms: measured milliseconds per step, ``{"kernel": ..., "pytorch": ...}``, when
            the speed was checked.
    """

    step: Step | None
    name: str | None = None
    reason: str | None = None
    ms: dict[str, float] | None = None


def select(
    model: torch.nn.Module,
    y: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int,
) -> Selection:
    """The fast step for training ``model`` on standardized points y (N, D) in batches of
    ``batch_size``, or ``None`` with the reason (see the module's docstring).

    Consumes no randomness of the caller: the checks draw from their own generators.
    """
    candidates = [fp for fp in FAST_PATHS if isinstance(model, fp.model_class)]
    if not candidates:
        return Selection(None)
    fp = candidates[0]
    reason = fp.supports(model)
    if reason is None and disabled():
        reason = "FLOWSCOPE_NO_KERNEL is set"
    if reason is None and load(fp.kernel, model_dtype(model)) is None:
        reason = "the C kernel could not be built here (no working C compiler?)"
    if reason is None:
        reason = trainable_without_hooks(list(model.parameters()))
    if reason is None:
        theirs = {id(p) for p in fp.params(model)}
        if any(id(p) not in theirs for p in model.parameters()):
            reason = "the model has weights the kernel does not know"
    if reason is None:
        reason = _checked_numbers(fp, model, y, labels)
    if reason is not None:
        return Selection(None, fp.name, reason)
    ms = _speed(fp, model, y, labels, batch_size)
    if ms["kernel"] >= ms["pytorch"]:
        return Selection(
            None,
            fp.name,
            f"on this CPU the kernel measured {ms['kernel']:.3f} ms per step and PyTorch "
            f"{ms['pytorch']:.3f} ms at these sizes",
            ms,
        )
    return Selection(fp.bind(model), fp.name, None, ms)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model computes in (its standardization's, for a FlowModel)."""
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else next(iter(model.parameters())).dtype


def _sample(y: torch.Tensor, labels: torch.Tensor | None, n: int, seed: int):
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return y[idx], None if labels is None else labels[idx]


#: The outcome of the check of meaning per model, kept while the model lives: the same
#: model, unchanged in type, configuration, dtype and instance attributes, is not checked
#: again by the next fit.
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model: torch.nn.Module) -> tuple:
    """What the check of meaning depends on, beyond the weights' values."""
    config = model.config() if hasattr(model, "config") else None
    overrides = tuple(sorted(k for k, v in vars(model).items() if callable(v)))
    modules = tuple((name, type(m)) for name, m in model.named_modules())
    return (
        type(model),
        json.dumps(config, sort_keys=True, default=str),
        model_dtype(model),
        overrides,
        modules,
    )


def _checked_numbers(fp, model, y, labels) -> str | None:
    """:func:`_check_numbers`, once per model (see :data:`_CHECKED`)."""
    key = _fingerprint(model)
    kept = _CHECKED.get(model)
    if kept is not None and kept[0] == key:
        return kept[1]
    reason = _check_numbers(fp, model, y, labels)
    _CHECKED[model] = (key, reason)
    return reason


def _check_numbers(
    fp: FastPath, model: torch.nn.Module, y: torch.Tensor, labels: torch.Tensor | None
) -> str | None:
    """Why the kernel's loss or gradients differ from autograd's on a float64 copy of the
    model, or ``None`` if they agree."""
    if load(fp.kernel, torch.float64) is None:
        return "the float64 kernel, which checks the float32 one, could not be built"
    twin = copy.deepcopy(model).double()
    yb, lb = _sample(y.double(), labels, 16, seed=0)
    params = fp.params(twin)
    try:
        fast = float(fp.bind(twin)(yb, lb, torch.Generator().manual_seed(1)))
    except (RuntimeError, ValueError, MemoryError) as err:
        return f"the kernel refused this model ({err})"
    fast_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    with torch.enable_grad():
        plain = twin.loss(yb, lb, generator=torch.Generator().manual_seed(1), standardized=True)
        plain.backward()
    plain = float(plain.detach())
    if not abs(fast - plain) <= 1e-9 * max(1.0, abs(plain)):
        return f"the kernel's loss {fast:.12g} differs from the model's {plain:.12g}"
    for p, g in zip(params, fast_grads, strict=True):
        ref = p.grad if p.grad is not None else torch.zeros_like(p)
        if not torch.allclose(g, ref, rtol=1e-7, atol=1e-10):
            return "the kernel's gradients differ from autograd's for this model"
    return None


#: Speeds measured or read in this process, by key (see :func:`_speed`).
_SPEEDS: dict[str, dict[str, float]] = {}


def _speed_file() -> Any:
    return cache_dir() / "speeds.json"


def _speed(
    fp: FastPath, model: torch.nn.Module, y: torch.Tensor, labels, batch_size: int
) -> dict[str, float]:
    """Milliseconds per step of the kernel and of autograd at the model's sizes, measured
    once on this machine and kept beside the built kernels."""
    dtype = model_dtype(model)
    key = json.dumps(
        {
            "kernel": load(fp.kernel, dtype).build_key,
            "batch": batch_size,
            "threads": torch.get_num_threads(),
            **fp.signature(model),
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
    twin = copy.deepcopy(model)
    yb, lb = _sample(y, labels, batch_size, seed=2)
    params = list(twin.parameters())
    fast = fp.bind(twin)
    gen = torch.Generator().manual_seed(3)

    def kernel_step() -> None:
        fast(yb, lb, gen)

    def autograd_step() -> None:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            twin.loss(yb, lb, generator=gen, standardized=True).backward()

    ms = {"kernel": _time(kernel_step), "pytorch": _time(autograd_step)}
    known[key] = _SPEEDS[key] = ms
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known, indent=1) + "\n")
    except OSError:
        pass  # not kept: measured again next time
    return ms


def _time(step: Callable[[], None], rounds: int = 5, per_round: int = 3) -> float:
    """The fastest of ``rounds`` rounds of ``per_round`` calls, ms per call (after one
    warm-up call)."""
    step()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            step()
        best = min(best, (time.perf_counter() - t0) / per_round)
    return 1e3 * best


def _register() -> None:
    from .fm import FMKernel
    from .nf import NFKernel
    from .nsf import SplineKernel

    FAST_PATHS.extend([NFKernel(), SplineKernel(), FMKernel()])


_register()
from . import sampler  # noqa: E402,F401  (registers the Euler sampler's fast path)
