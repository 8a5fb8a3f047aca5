"""The training recipe, :class:`TrainConfig`: plain Python, so that the command line's
help quotes its defaults without importing PyTorch. :mod:`flowscope.train` (which fits a
model with it) re-exports it, and :func:`recipe` gives a model type's."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .data import check_int

__all__ = [
    "SMALL_DATA_DECAY",
    "SMALL_DATA_NOISE",
    "SMALL_DATA_VAL_SIZE",
    "Schedule",
    "TrainConfig",
    "recipe",
    "upgrade_train",
]


#: The weight decay of a run lengthened for small data (:meth:`TrainConfig.schedule`;
#: :attr:`TrainConfig.small_decay`'s default), measured on the Old Faithful data
#: (``benchmarks/README.md``, small data sets).
SMALL_DATA_DECAY = 2.0
#: The standard deviation of the Gaussian noise added to each training batch of a run
#: lengthened for small data, in standardized units (:attr:`TrainConfig.small_noise`'s
#: default; noise regularization, Rothfuss et al. 2019, arXiv:1907.08982), measured as
#: :data:`SMALL_DATA_DECAY`.
SMALL_DATA_NOISE = 0.15
#: The fewest validation points a run lengthened for small data validates on per epoch
#: when it has more (:meth:`TrainConfig.val_size_for`); every epoch is scored on the same
#: points, so the epochs are compared on equal terms.
SMALL_DATA_VAL_SIZE = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters; the defaults are the study's recipe (its sections 3.3 and 4.3)
    on the study's data, and train small data sets long enough (see :meth:`schedule`).

    Attributes:
        epochs: passes over the training set, >= 1, exactly; ``None`` (the default):
            ``min_epochs``, or more on a training set so small that ``min_epochs`` make
            fewer than ``min_steps`` optimizer steps, and then regularized
            (``small_decay``, ``small_noise``; :meth:`schedule`).
        min_epochs: the epochs of ``epochs=None`` on data large enough (the study's 20).
        min_steps: the optimizer steps ``epochs=None`` gives at least; a run with fewer
            is short for its data (``History.length_note`` says so).
        batch_size: points per step, >= 1.
        lr: Adam's learning rate, decayed to 0 over all steps by ``CosineAnnealingLR``.
        seed: seeds the shuffling and the randomness of the loss, e.g. flow matching's
            noise and times (model initialisation is seeded by the caller).
        val_size: at most this many validation points are used per epoch, the first
            ones (fewer on a run lengthened for small data: :meth:`val_size_for`).
        grad_clip: if set, the gradient's global norm is clipped to this value before
            each step (``torch.nn.utils.clip_grad_norm_``); ``None`` (the study's recipe)
            does not clip.
        weight_decay: decoupled weight decay per step (AdamW's: each weight is scaled by
            ``1 - lr * weight_decay`` before Adam's update), >= 0; ``None`` (the default):
            none on data large enough (the study's Adam) and ``small_decay`` on a run
            lengthened for small data, where it pulls the weights towards 0, the model
            towards the Gaussian of its standardization (:meth:`schedule`).
        noise: the standard deviation, in standardized units, >= 0, of the Gaussian
            noise added afresh to every training batch (noise regularization, Rothfuss et
            al. 2019, arXiv:1907.08982); ``None`` (the default): none on data large enough
            and ``small_noise`` on a run lengthened for small data (:meth:`schedule`).
            Validation points are never jittered.
        small_decay: the weight decay of a run lengthened for small data, >= 0
            (:data:`SMALL_DATA_DECAY`; a model type's recipe may set its own).
        small_noise: the noise of a run lengthened for small data, >= 0
            (:data:`SMALL_DATA_NOISE`; a model type's recipe may set its own; ``noise``
            says otherwise where given): each step sees the points jittered afresh, which
            smooths the density the model learns.
        keep_best: whether a run lengthened for small data ends with the weights of its
            epoch of the best validation loss (early stopping) rather than its last; off
            by default: with the noise, the last weights scored better on held-out points
            (``benchmarks/README.md``, small data sets).
    """

    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    val_size: int = 10_000
    grad_clip: float | None = None
    min_epochs: int = 20
    min_steps: int = 2000
    weight_decay: float | None = None
    noise: float | None = None
    small_decay: float = SMALL_DATA_DECAY
    small_noise: float = SMALL_DATA_NOISE
    keep_best: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_size", "min_epochs"):
            check_int(getattr(self, name), name)
        if self.epochs is not None:
            check_int(self.epochs, "epochs")
        check_int(self.min_steps, "min_steps", minimum=0)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        for name in ("weight_decay", "noise", "small_decay", "small_noise"):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if (value is not None or name not in ("weight_decay", "noise")) and not (
                number and math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("weight_decay", "small_decay"):
            value = getattr(self, name)
            if value is not None and self.lr * value >= 1:
                raise ValueError(
                    f"{name}={value:g} with lr={self.lr:g}: each step scales every weight by "
                    f"1 - lr * {name} = {1 - self.lr * value:g}, which must stay above 0; "
                    f"give a {name} below {1 / self.lr:g}"
                )
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"keep_best must be True or False, got {self.keep_best!r}")

    def schedule(self, n: int, validation: bool = True) -> Schedule:
        """How long a fit on ``n`` training points runs.

        With ``epochs`` given, exactly that many. With ``epochs=None``, ``min_epochs``
        if they make at least ``min_steps`` optimizer steps (the study: 20 epochs of
        1,954 steps); else the run is lengthened to ``ceil(min_steps / steps per
        epoch)`` epochs, with weight decay ``small_decay`` and noise ``small_noise`` on
        its batches (unless ``weight_decay`` and ``noise`` say otherwise, as they do on any
        run where they are given): on a few hundred points
        a longer run overfits without them (``benchmarks/README.md``, small data sets);
        with ``keep_best`` and ``validation`` it ends with the weights of the best
        validation loss.

        Arguments:
            n: training points, >= 1.
            validation: whether the fit has validation points.

        Returns:
            a :class:`Schedule`.

        Raises:
            ValueError: if ``n`` is not a positive integer.

        Example:
            >>> plan = TrainConfig().schedule(245)  # a 272-point file's training part
            >>> plan.epochs, plan.steps_per_epoch, plan.weight_decay, plan.noise
            (1000, 2, 2.0, 0.15)
        """
        n = check_int(n, "n")
        per_epoch = math.ceil(n / self.batch_size)
        epochs, note = self.epochs, None
        # Small data: the default's min_epochs would make fewer than min_steps steps.
        small_data = self.min_epochs * per_epoch < self.min_steps
        small = epochs is None and small_data
        if epochs is None:
            epochs = max(self.min_epochs, math.ceil(self.min_steps / per_epoch))
        elif small_data:
            steps = epochs * per_epoch
            note = (
                f"{epochs} epoch{'s' if epochs != 1 else ''} of {per_epoch} step"
                f"{'s' if per_epoch != 1 else ''} on {n} training points "
                f"{'are' if epochs != 1 else 'is'} "
                f"{steps} optimizer step{'s' if steps != 1 else ''}"
            )
            if steps < self.min_steps:
                note += (
                    f", short for data this small: the default (no epochs given) trains at "
                    f"least {self.min_steps} steps, with weight decay and noise"
                )
            elif self.weight_decay is None and self.noise is None:
                note += (
                    ", without the weight decay and noise that the default (no epochs "
                    "given) regularizes data this small with"
                )
            else:
                note = None  # regularized as asked
        decay = self.weight_decay
        if decay is None:
            decay = self.small_decay if small else 0.0
        noise = self.noise
        if noise is None:
            noise = self.small_noise if small else 0.0
        keep_best = small and validation and self.keep_best
        return Schedule(epochs, per_epoch, keep_best, float(decay), note, float(noise), small)

    def effective(self, n: int) -> dict[str, Any]:
        """The settings as a dict (``dataclasses.asdict``), less those that do not act on
        a fit on ``n`` training points: the small-data ones (``small_decay``,
        ``small_noise``, ``keep_best``) unless the run is lengthened (:meth:`schedule`).
        Two configs train alike on n points where these are equal (a run's cache and its
        resume compare them).

        Raises:
            ValueError: if ``n`` is not a positive integer.
        """
        settings = asdict(self)
        if not self.schedule(n).lengthened:
            for name in ("small_decay", "small_noise", "keep_best"):
                del settings[name]
        return settings

    def val_size_for(self, n: int) -> int:
        """How many validation points a fit on ``n`` training points uses per epoch.

        ``val_size``; on a run lengthened for small data (:meth:`schedule`) at most
        ``max(SMALL_DATA_VAL_SIZE, n)``. Such a run validates after each of its many short
        epochs, and registry data draw a validation part of 10,000 points whatever the
        training part's size, so validating all of them was nearly all of such a run's
        work (``benchmarks/README.md``, small data sets).

        Arguments:
            n: training points, >= 1.

        Returns:
            the number of validation points, the first ones of those given.

        Raises:
            ValueError: if ``n`` is not a positive integer.
        """
        if not self.schedule(n).lengthened:
            return self.val_size
        return min(self.val_size, max(SMALL_DATA_VAL_SIZE, n))


@dataclass(frozen=True)
class Schedule:
    """How long one fit runs: :meth:`TrainConfig.schedule`.

    Attributes:
        epochs: the epochs it runs (fewer only if it diverges).
        steps_per_epoch: optimizer steps per epoch, ``ceil(N / batch_size)``.
        keep_best: whether it ends with the weights of its best validation loss.
        weight_decay: the decoupled weight decay of its steps
            (:attr:`TrainConfig.weight_decay`).
        note: for epochs given on small data, that they make fewer steps than
            ``min_steps`` or train without the small-data regularization; else ``None``.
        noise: the standard deviation of the Gaussian noise added to its standardized
            training batches (:attr:`TrainConfig.noise`, else :attr:`TrainConfig.small_noise`
            on a lengthened run).
        lengthened: whether it was lengthened for small data.
    """

    epochs: int
    steps_per_epoch: int
    keep_best: bool
    weight_decay: float = 0.0
    note: str | None = None
    noise: float = 0.0
    lengthened: bool = False


def recipe(model_name: str, **given: Any) -> TrainConfig:
    """The training recipe of a registered type: the study's (TrainConfig's defaults)
    where the type does not depart from it
    (:attr:`~flowscope.models.ModelType.recipe`), then the fields ``given``.

    Raises:
        UnknownName: for a type that is not registered.
        ValueError: for a bad field (see :class:`TrainConfig`).
    """
    from .models import MODELS

    return TrainConfig(**{**MODELS.get(model_name).recipe, **given})


#: The training settings added since runs were first recorded, with the values that
#: reproduce how a run recorded without them trained: before noise regularization, a run
#: lengthened for small data kept its best validation epoch, with weight decay 2.
_BEFORE_NOISE = {"small_decay": 2.0, "small_noise": 0.0, "keep_best": True}


def upgrade_train(train: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded training settings (``config.json``'s ``"train"``) with the
    fields it lacks filled as it trained, so that resuming or retelling it gives the run
    it was."""
    if "small_noise" not in train:
        train = {**_BEFORE_NOISE, **train}
    return {"noise": None, **train}  # before noise could be given: the default
