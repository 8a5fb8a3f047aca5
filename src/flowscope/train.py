"""One trainer for both model families: Adam, cosine learning-rate decay, validation, NaN guard.

The trainer knows nothing of the models beyond ``_loss_and_grad_std`` (the fused fast
path: loss and every ``.grad`` from one kernel call, or ``None``), ``_loss_std`` (the
training loss on a batch of standardized points, for autograd when the fast path declines)
and ``validation_terms``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .base import FlowModel
from .data import check_int

__all__ = ["TrainConfig", "History", "TrainState", "TrainingDiverged", "fit"]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters; the defaults are the seed's recipe (sections 3.3 and 4.3).

    Attributes:
        epochs: passes over the training set, >= 1.
        batch_size: points per step, >= 1.
        lr: Adam's learning rate, decayed to 0 over all steps by ``CosineAnnealingLR``.
        seed: seeds the shuffling and the flow-matching noise (model initialisation is
            seeded by the caller).
        val_size: at most this many validation points are used per epoch.
        grad_clip: if set, the gradient's global norm is clipped to this value before
            each step (``torch.nn.utils.clip_grad_norm_``); ``None`` (the seed's recipe)
            does not clip.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    val_size: int = 10_000
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_size"):
            check_int(getattr(self, name), name)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")


@dataclass
class History:
    """What training recorded.

    Attributes:
        batch_loss: the training loss of every step (standardized space; nats per point
            for a normalizing flow).
        epochs: one dict per epoch: ``epoch``, ``train_loss`` (mean over the epoch),
            ``val_loss`` and the model's other validation terms prefixed ``val_``, ``lr``
            (at the end of the epoch) and ``seconds`` (wall time of the epoch).
    """

    batch_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))


@dataclass
class TrainState:
    """Everything needed to continue a run after an epoch: see :func:`fit`'s ``state``."""

    epoch: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    history: History


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step.

    The message says only what :func:`fit` knows: the model keeps the weights of the
    failing step, and whatever ``on_epoch_end`` wrote for earlier epochs is untouched
    (fit itself writes no file). A caller with more to say (the command line) builds its
    own message from the attributes.

    Attributes:
        problem: what happened and when, e.g. ``"nf: the training loss became nan at
            epoch 2, step 1 of 5"``.
        epoch: the epoch (1-based) in which it happened.
        step: the step (1-based) within that epoch.
    """

    def __init__(self, problem: str, *, epoch: int, step: int):
        self.problem, self.epoch, self.step = problem, epoch, step
        super().__init__(
            f"{problem}. Lower the learning rate or change the seed; checkpoints written by "
            "on_epoch_end before this epoch are untouched"
        )


def _adam(params, lr: float) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device or dtype
        return torch.optim.Adam(params, lr=lr, foreach=True)


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
    """Train ``model`` on x (N, D) in data units with the seed's recipe.

    Fits the model's standardization on x (per class with the labels, if the model
    standardizes per class; unless resuming), then runs Adam with
    ``CosineAnnealingLR`` stepped every batch (T_max = all steps). Each epoch indexes a
    fresh random permutation of the in-memory data; the last batch may be smaller.
    Training runs with one PyTorch thread; the caller's thread count is restored after.

    Arguments:
        model: a :class:`~flowscope.base.FlowModel`.
        x: (N, D) training points in data units; labels: (N,) for a conditional model.
        x_val, labels_val: held-out points for the per-epoch validation (default: none).
        config: :class:`TrainConfig`.
        progress: show a progress bar; ``None`` shows it only on a terminal.
        on_epoch_end: called with the model and a :class:`TrainState` after every epoch
            (for checkpoints).
        state: a state saved by ``on_epoch_end``, to continue from the epoch after it; the
            result matches an uninterrupted run with the same seed.

    Returns:
        the :class:`History`, also after resuming (it includes the earlier epochs).

    Raises:
        TrainingDiverged: if a loss is NaN or infinite (naming the epoch and step); the
            model keeps the weights of that step, ``on_epoch_end`` is not called again.
        ValueError: for inconsistent shapes or labels, an empty ``x`` or ``x_val``, or
            data the standardization cannot be fitted on (see
            :meth:`~flowscope.data.Standardization.fit`).
    """
    x = model._check_points(x)
    if len(x) == 0:
        raise ValueError("x holds no points; training needs at least two")
    labels = model._check_labels(labels, len(x))
    if x_val is not None:
        x_val = model._check_points(x_val, "x_val")
        if len(x_val) == 0:
            raise ValueError("x_val holds no points; pass x_val=None to train without validation")
        labels_val = model._check_labels(labels_val, len(x_val))
    if state is None:
        model.standardization.fit(x, labels)
    y = model.standardization(x, labels).detach()
    y_val = None
    if x_val is not None:
        x_val = x_val[: config.val_size]
        labels_val = None if labels_val is None else labels_val[: config.val_size]
        y_val = model.standardization(x_val, labels_val).detach()

    n, bs = len(y), config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * config.epochs
    params = list(model.parameters())
    opt = _adam(params, config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    gen = torch.Generator().manual_seed(config.seed)
    history = History()
    first_epoch = 1
    if state is not None:
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        gen.set_state(state.generator)
        history = state.history
        first_epoch = state.epoch + 1

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
    # One thread: these networks are too small for two to help; on this project's busy
    # 2-core machine a second thread made each step about 4x slower (1.1 vs 4.7 ms, NF).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    grad_mode = torch.is_grad_enabled()
    torch.set_grad_enabled(True)  # training needs gradients, also when called under no_grad
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            bar.set_description(f"{model.kind} epoch {epoch}/{config.epochs}")
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            losses: list[float] = []
            for step in range(steps_per_epoch):
                idx = order[step * bs : (step + 1) * bs]
                lb = None if labels is None else labels[idx]
                # The fused path fills every .grad itself; otherwise autograd does below.
                loss = model._loss_and_grad_std(y[idx], lb, gen)
                fused = loss is not None
                if not fused:
                    loss = model._loss_std(y[idx], lb, gen)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{model.kind}: the training loss became {value} at epoch {epoch}, "
                        f"step {step + 1} of {steps_per_epoch}",
                        epoch=epoch,
                        step=step + 1,
                    )
                losses.append(value)
                if not fused:
                    for p in params:  # zero_grad(set_to_none=True) without its profiling hooks
                        p.grad = None
                    loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
                opt.step()
                sched.step()
                if step % 64 == 0:
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                    bar.update(64 if step + 64 <= steps_per_epoch else steps_per_epoch - step)
            history.batch_loss.extend(losses)
            row: dict[str, float] = {"epoch": epoch, "train_loss": math.fsum(losses) / len(losses)}
            if y_val is not None:
                model.eval()
                val_gen = torch.Generator().manual_seed(config.seed + 10_007)
                terms = model.validation_terms(y_val, labels_val, val_gen)
                model.train()
                row.update({f"val_{k}": v for k, v in terms.items()})
                if not math.isfinite(terms["loss"]):
                    raise TrainingDiverged(
                        f"{model.kind}: the validation loss became {terms['loss']} after epoch "
                        f"{epoch}, step {steps_per_epoch} of {steps_per_epoch}",
                        epoch=epoch,
                        step=steps_per_epoch,
                    )
            row["lr"] = sched.get_last_lr()[0]
            row["seconds"] = time.perf_counter() - t0
            history.epochs.append(row)
            if on_epoch_end is not None:
                on_epoch_end(
                    model,
                    TrainState(
                        epoch, opt.state_dict(), sched.state_dict(), gen.get_state(), history
                    ),
                )
    finally:
        torch.set_grad_enabled(grad_mode)
        torch.set_num_threads(threads)
        bar.close()
        model.eval()
    return history


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a JSON-safe dict."""
    return asdict(config)
