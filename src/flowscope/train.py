"""One trainer for every model type: Adam, cosine learning-rate decay, validation, NaN guard.

The trainer uses the models' public surface only: the standardization, :meth:`loss` on
standardized batches and :meth:`validation_terms` (:class:`~flowscope.base.FlowModel`).
Where a fused kernel reproduces a model's loss (:func:`flowscope.kernels.select`, decided
once per fit), each step's kernel call writes the gradients into ``.grad`` instead of
autograd; where no kernel does, the trainer says why once, through the ``flowscope``
logger. Either way Adam's update runs in C where the C kernels are built
(:class:`flowscope.kernels.FusedAdam`, on the optimizer's own state).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from . import kernels
from .base import FlowModel
from .errors import TrainingDiverged
from .recipe import SMALL_DATA_DECAY, Schedule, TrainConfig

__all__ = [
    "SMALL_DATA_DECAY",
    "Best",
    "TrainConfig",
    "History",
    "Schedule",
    "TrainState",
    "TrainingDiverged",
    "fit",
]

log = logging.getLogger("flowscope")


@dataclass
class History:
    """What training recorded.

    Attributes:
        batch_loss: the training loss of every step (standardized space; nats per point
            for a normalizing flow).
        epochs: one dict per epoch: ``epoch``, ``train_loss`` (mean over the epoch),
            ``val_loss`` and the model's other validation terms prefixed ``val_``, ``lr``
            (at the end of the epoch) and ``seconds`` (wall time of the epoch).
        fast_path: how the steps computed their gradients: a fused kernel's name, or
            ``"pytorch"`` (autograd).
        fast_path_note: why no fused kernel ran, where one exists for the model type.
        best_epoch: the epoch whose weights the model ended with, where the run kept
            its best validation loss (:attr:`Schedule.keep_best`), else ``None``.
        length_note: what a run given its epochs on small data lacks
            (:attr:`Schedule.note`), else ``None``.
        lengthened: whether the run was lengthened for small data
            (:attr:`Schedule.lengthened`).
        weight_decay, noise: the weight decay and the noise on the standardized batches
            it trained with (:attr:`Schedule.weight_decay`, :attr:`Schedule.noise`).
        val_points: the validation points each epoch was scored on
            (:meth:`TrainConfig.val_size_for`), else ``None`` (no validation, or a
            checkpoint written before it was recorded: such a run used up to ``val_size``).
    """

    batch_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    fast_path: str = "pytorch"
    fast_path_note: str | None = None
    best_epoch: int | None = None
    length_note: str | None = None
    val_points: int | None = None
    lengthened: bool = False
    weight_decay: float = 0.0
    noise: float = 0.0

    @property
    def seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))


@dataclass
class Best:
    """The best validation so far of a run that keeps it (:attr:`Schedule.keep_best`).

    Attributes:
        epoch: the epoch (1-based) after which it was measured.
        loss: its validation loss.
        weights: the model's ``state_dict`` then (copies).
    """

    epoch: int
    loss: float
    weights: dict[str, torch.Tensor]


@dataclass
class TrainState:
    """Everything needed to continue a run after an epoch: see :func:`fit`'s ``state``.

    ``epochs`` is the run's length (:meth:`TrainConfig.schedule`); ``best`` the best
    validation so far, for a run that keeps it.
    """

    epoch: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    history: History
    epochs: int = 0
    best: Best | None = None


def _adam(params, lr: float) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device or dtype
        return torch.optim.Adam(params, lr=lr, foreach=True)


@dataclass
class _Data:
    """The standardized training and validation points of one fit."""

    y: torch.Tensor
    labels: torch.Tensor | None
    y_val: torch.Tensor | None
    labels_val: torch.Tensor | None


def _prepare(
    model, x, labels, x_val, labels_val, config: TrainConfig, state: TrainState | None
) -> _Data:
    """Check the points, fit the standardization (unless resuming) and standardize; keep
    the first :meth:`TrainConfig.val_size_for` validation points (a resumed run the
    number it recorded, or ``val_size`` if it recorded none)."""
    x, labels = model.check(x, labels)
    if len(x) == 0:
        raise ValueError("x holds no points; training needs at least two")
    if x_val is not None:
        x_val, labels_val = model.check(x_val, labels_val, "x_val")
        if len(x_val) == 0:
            raise ValueError("x_val holds no points; pass x_val=None to train without validation")
    if state is None:
        model.fit_standardization(x, labels)
    y = model.standardization(x, labels).detach()
    y_val = None
    if x_val is not None:
        if state is None:
            used = config.val_size_for(len(x))
        else:
            used = state.history.val_points or config.val_size
        x_val = x_val[:used]
        labels_val = None if labels_val is None else labels_val[:used]
        y_val = model.standardization(x_val, labels_val).detach()
    return _Data(y, labels, y_val, labels_val)


def _choose_step(model: FlowModel, data: _Data, config: TrainConfig, history: History):
    """The fused step of :func:`flowscope.kernels.select`, or ``None``; says once why
    none runs, and records the choice in ``history``."""
    choice = kernels.select(model, data.y, data.labels, config.batch_size)
    history.fast_path = choice.name if choice.step is not None else "pytorch"
    history.fast_path_note = choice.reason
    if choice.reason is not None:
        log.info("%s: training with PyTorch operations: %s", model.kind, choice.reason)
    return choice.step


def _diverged(model: FlowModel, what: str, value: float, epoch: int, step: int, steps: int):
    return TrainingDiverged(
        f"{model.kind}: the {what} became {value} "
        + (f"after epoch {epoch}" if what.startswith("validation") else f"at epoch {epoch}")
        + f", step {step} of {steps}",
        epoch=epoch,
        step=step,
    )


def _validate(model: FlowModel, data: _Data, config: TrainConfig, epoch: int, steps: int):
    """The validation terms after an epoch, prefixed ``val_``."""
    model.eval()
    val_gen = torch.Generator().manual_seed(config.seed + 10_007)
    terms = model.validation_terms(data.y_val, data.labels_val, val_gen)
    model.train()
    if not math.isfinite(terms["loss"]):
        raise _diverged(model, "validation loss", terms["loss"], epoch, steps, steps)
    return {f"val_{k}": v for k, v in terms.items()}


class _Stepper:
    """One optimizer step on a batch: the fused kernel's gradients where it runs
    (:func:`_choose_step`), else autograd's; Adam's update in C where it is built
    (:class:`~flowscope.kernels.FusedAdam`), else ``torch.optim.Adam``'s.

    Returns the loss's value; a NaN or infinite loss returns before any update, so that
    the model keeps the weights it had.
    """

    def __init__(
        self, model: FlowModel, opt: torch.optim.Adam, fused, config: TrainConfig, decay: float
    ):
        self.model, self.opt, self.fused, self.clip = model, opt, fused, config.grad_clip
        self.decay = decay
        self.params = list(model.parameters())
        # Adam in C from the first step, whoever computes the gradients (the fused kernel
        # or autograd), wherever it is built: FusedAdam gives a fresh optimizer the state
        # torch.optim.Adam's first step would (a resumed one has it already), and never
        # calling opt.step() spares the command the import of torch._dynamo it triggers.
        ok = kernels.FusedAdam.supports(opt) is None
        self.adam = kernels.FusedAdam(opt) if ok else None

    def __call__(self, y: torch.Tensor, labels, generator: torch.Generator) -> float:
        if self.fused is not None:  # the kernel fills every .grad itself
            loss = self.fused(y, labels, generator)
        else:
            loss = self.model.loss(y, labels, generator=generator, standardized=True)
        value = loss.item()
        if not math.isfinite(value):
            return value
        if self.fused is None:
            for p in self.params:  # zero_grad(set_to_none=True) without its profiling hooks
                p.grad = None
            loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        if self.decay:  # AdamW's decoupled decay, so that Adam's step stays the fused one
            with torch.no_grad():
                torch._foreach_mul_(self.params, 1 - self.opt.param_groups[0]["lr"] * self.decay)
        if self.adam is not None:
            self.adam.step()
        else:
            self.opt.step()
        return value


def fit(
    model: FlowModel,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    x_val: torch.Tensor | None = None,
    labels_val: torch.Tensor | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen dataclass
    progress: bool | None = None,
    on_epoch_end: Callable[[FlowModel, TrainState], None] | None = None,
    state: TrainState | None = None,
) -> History:
    """Train ``model`` on x (N, D) in data units with the study's recipe.

    The run lasts :meth:`TrainConfig.schedule` epochs: the study's 20 on data as large
    as the study's, longer on small data sets, which are then regularized by weight
    decay and noise on their batches (and end with the weights of the epoch of the best
    validation loss with ``config.keep_best``: ``History.best_epoch``); a run given its
    epochs on small data says in ``History.length_note``, and once through the
    ``flowscope`` logger, that they are short or train without that regularization.

    Fits the model's standardization on x (per class with the labels, if the model
    standardizes per class; unless resuming), then runs Adam with
    ``CosineAnnealingLR`` stepped every batch (T_max = all steps). Each epoch indexes a
    fresh random permutation of the in-memory data; the last batch may be smaller.
    Training runs with one PyTorch thread; the caller's thread count is restored after.
    Each step's gradients come from a fused kernel where one reproduces the model's loss
    (:mod:`flowscope.kernels`; ``History.fast_path`` says which), else from autograd.

    Arguments:
        model: a :class:`~flowscope.base.FlowModel`.
        x: (N, D) training points in data units; labels: (N,) for a conditional model.
        x_val, labels_val: held-out points for the per-epoch validation (default: none),
            in random order: the first :meth:`TrainConfig.val_size_for` of them are used
            (``History.val_points``).
        config: :class:`TrainConfig`.
        progress: show a progress bar; ``None`` shows it only on a terminal.
        on_epoch_end: called with the model and a :class:`TrainState` after every epoch
            (for checkpoints).
        state: a state saved by ``on_epoch_end``, to continue from the epoch after it; the
            result matches an uninterrupted run with the same seed. A state of any
            earlier epoch will do (a caller may checkpoint only some epochs).

    Returns:
        the :class:`History`, also after resuming (it includes the earlier epochs).

    Raises:
        TrainingDiverged: if a loss is NaN or infinite (naming the epoch and step); the
            model keeps the weights of that step, ``on_epoch_end`` is not called again.
        ValueError: for inconsistent shapes or labels, an empty ``x`` or ``x_val``, a
            batch size the model cannot train on (an OT coupling's batch of 1),
            data the standardization cannot be fitted on (see
            :meth:`~flowscope.standardize.Standardization.fit`), or noise on the batches
            (given, or a small-data run's) for a model whose batches must be its points
            (:attr:`~flowscope.base.FlowModel.exact_batches`).
    """
    data = _prepare(model, x, labels, x_val, labels_val, config, state)
    n, bs = len(data.y), config.batch_size
    model.check_batch_size(bs)
    plan = config.schedule(n, validation=data.y_val is not None)
    if plan.noise and model.exact_batches:
        raise ValueError(
            f"{model.kind}: noise {plan.noise:g} on its batches would move the training "
            "points off the fixed pairs this model looks them up in; pass a TrainConfig "
            "with noise=None and small_noise=0 (flowscope.reflow.reflow_run does)"
        )
    steps_per_epoch = plan.steps_per_epoch
    total = steps_per_epoch * plan.epochs
    params = list(model.parameters())
    opt = _adam(params, config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    gen = torch.Generator().manual_seed(config.seed)
    history = History(length_note=plan.note)
    first_epoch, best = 1, None
    if state is not None:
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        gen.set_state(state.generator)
        history, best = state.history, state.best
        first_epoch = state.epoch + 1
    history.val_points = None if data.y_val is None else len(data.y_val)
    history.lengthened = plan.lengthened
    history.weight_decay, history.noise = plan.weight_decay, plan.noise
    if plan.note is not None and state is None:
        log.info("%s: %s", model.kind, plan.note)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(
        total=total,
        initial=(first_epoch - 1) * steps_per_epoch,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    model.train()
    # One thread: these networks are too small for two to help (benchmarks/README.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    grad_mode = torch.is_grad_enabled()
    torch.set_grad_enabled(True)  # training needs gradients, also when called under no_grad
    try:
        fused = _choose_step(model, data, config, history)
        step = _Stepper(model, opt, fused, config, plan.weight_decay)
        for epoch in range(first_epoch, plan.epochs + 1):
            bar.set_description(f"{model.kind} epoch {epoch}/{plan.epochs}")
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            losses: list[float] = []
            for k in range(steps_per_epoch):
                idx = order[k * bs : (k + 1) * bs]
                lb = None if data.labels is None else data.labels[idx]
                y = data.y[idx]
                if plan.noise:  # noise regularization (TrainConfig.noise, small_noise)
                    jitter = torch.randn(y.shape, generator=gen, dtype=y.dtype)
                    y = y + plan.noise * jitter.to(y.device)
                value = step(y, lb, gen)
                if not math.isfinite(value):
                    raise _diverged(model, "training loss", value, epoch, k + 1, steps_per_epoch)
                losses.append(value)
                sched.step()
                if k % 64 == 0:
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                    bar.update(64 if k + 64 <= steps_per_epoch else steps_per_epoch - k)
            history.batch_loss.extend(losses)
            row: dict[str, float] = {"epoch": epoch, "train_loss": math.fsum(losses) / len(losses)}
            if data.y_val is not None:
                row.update(_validate(model, data, config, epoch, steps_per_epoch))
            row["lr"] = sched.get_last_lr()[0]
            row["seconds"] = time.perf_counter() - t0
            history.epochs.append(row)
            if plan.keep_best and (best is None or row["val_loss"] < best.loss):
                best = Best(epoch, row["val_loss"], _copy_weights(model))
            if on_epoch_end is not None:
                on_epoch_end(
                    model,
                    TrainState(
                        epoch,
                        opt.state_dict(),
                        sched.state_dict(),
                        gen.get_state(),
                        history,
                        plan.epochs,
                        best,
                    ),
                )
        if best is not None:  # early stopping: the weights of the best validation
            model.load_state_dict(best.weights)
            history.best_epoch = best.epoch
    finally:
        torch.set_grad_enabled(grad_mode)
        torch.set_num_threads(threads)
        bar.close()
        model.eval()
    return history


def _copy_weights(model: FlowModel) -> dict[str, torch.Tensor]:
    """A copy of the model's ``state_dict`` (weights and standardization buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a JSON-safe dict."""
    return asdict(config)
