"""Reflow: a flow-matching model trained on the (noise, sample) pairs of another.

Rectified flow (Liu, Gong, Liu 2022) straightens a flow by training again on its own
coupling: draw source points x0, push each through the trained model's ODE to x1, and
train flow matching on the fixed pairs (x0, x1) instead of independent ones. The new
model's paths cross less, so few Euler steps suffice; applied to its result again, it
gives the k-rectified flow.

:func:`reflow_run` is ``flowscope reflow RUN --out RUN2``: it draws the pairs
(:func:`draw_pairs`), writes them to ``RUN2/pairs.npz`` (the new run's data and its
:class:`~flowscope.matching.couplings.PairsCoupling`) and trains a model of the parent's
type and settings on them with :func:`~flowscope.runs.train_run`, recording the parent
in the run's config.

References:
    Liu, Gong, Liu. Flow Straight and Fast: Learning to Generate and Transfer Data with
    Rectified Flow. 2022, arXiv:2209.03003 (Algorithm 1, reflow).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .base import FlowModel
from .data import check_int, class_labels
from .matching import DEFAULT_DT, TIME_SAMPLERS, FlowMatching
from .models import MODELS
from .runs import (
    RunError,
    RunInfo,
    check_out,
    load_run,
    model_type_of,
    read_info,
    recorded_model_args,
    run_data,
    train_config,
    train_run,
    weights_digest,
)
from .train import History, TrainConfig

__all__ = [
    "PAIRS_FILE",
    "Pairs",
    "draw_pairs",
    "pairs_sampler",
    "reflow_model_args",
    "reflow_run",
    "write_pairs",
]

#: The pairs' file in a reflow run folder.
PAIRS_FILE = "pairs.npz"
#: Points integrated at once when drawing pairs (the solvers keep every state).
_CHUNK = 8192


@dataclass(frozen=True)
class Pairs:
    """Source points and the samples a flow carries them to.

    Attributes:
        x0: (N, D) the source points, in the model's standardized units.
        x1: (N, D) the samples, in data units.
        labels: (N,) the classes of a conditional model's samples, or ``None``.
    """

    x0: torch.Tensor
    x1: torch.Tensor
    labels: torch.Tensor | None


@torch.no_grad()
def draw_pairs(
    model: FlowModel,
    n: int,
    *,
    seed: int = 0,
    dt: float = DEFAULT_DT,
    solver: str = "euler",
    class_counts: list[int] | None = None,
) -> Pairs:
    """n source points of ``model`` and where its ODE takes them (the coupling of the
    model's flow), under ``torch.no_grad()``.

    Arguments:
        model: a flow-matching model (:class:`~flowscope.matching.FlowMatching` or a
            subclass).
        n: the number of pairs, >= 1.
        seed: of the source points (drawn on the CPU).
        dt, solver: the integration (default the study's Euler steps of 1e-3).
        class_counts: a conditional model's training points per class: its pairs take
            the classes in those shares (:func:`~flowscope.data.class_labels`); ``None``:
            balanced, ``arange(n) % num_classes``.

    Returns:
        :class:`Pairs`.

    Raises:
        TypeError: for a model that is not flow matching.
        ValueError: for a bad n, dt or solver, or a source that gives no samples.
    """
    if not isinstance(model, FlowMatching):
        raise TypeError(f"reflow needs a flow-matching model, got {type(model).__name__}")
    n = check_int(n, "n")
    gen = torch.Generator().manual_seed(seed)
    x0 = model.base_sample(n, gen)
    labels = None
    if model.num_classes is not None:
        labels = class_labels(n, class_counts or [1] * model.num_classes)
    x1 = torch.cat(
        [
            model.decode(x0[i : i + _CHUNK], _part(labels, i), dt=dt, solver=solver)
            for i in range(0, n, _CHUNK)
        ]
    )
    return Pairs(x0, x1, labels)


def _part(labels: torch.Tensor | None, start: int) -> torch.Tensor | None:
    return None if labels is None else labels[start : start + _CHUNK]


def write_pairs(path: str | Path, pairs: Pairs, model: FlowModel) -> None:
    """Write ``pairs`` and the standardization of ``model`` (the units of x0) to an
    ``.npz`` file, atomically: arrays ``x`` (the samples), ``labels`` (if any), ``x0``,
    ``loc`` and ``scale``, as :class:`~flowscope.matching.couplings.PairsCoupling` and
    :func:`~flowscope.data.load_points` read them."""
    arrays = {
        "x": pairs.x1.detach().cpu().float().numpy(),
        "x0": pairs.x0.detach().cpu().double().numpy(),
        "loc": model.standardization.loc.detach().cpu().double().numpy(),
        "scale": model.standardization.scale.detach().cpu().double().numpy(),
    }
    if pairs.labels is not None:
        arrays["labels"] = pairs.labels.cpu().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def _flow_matching_types() -> str:
    return ", ".join(e.name for e in MODELS if issubclass(e.model, FlowMatching))


def _parent(run: Path, device: str | torch.device) -> tuple[FlowModel, RunInfo]:
    """The parent run's model, if reflow can draw pairs from it.

    Raises:
        RunError: for a run that is not flow matching, or whose source gives no samples.
    """
    model, info = load_run(run, device)
    entry = model_type_of(info)
    if not isinstance(model, FlowMatching):
        raise RunError(
            f"{run} holds a {entry.title} ({entry.name}), not flow matching: reflow trains on "
            f"the pairs of a flow-matching model's ODE ({_flow_matching_types()})"
        )
    try:
        model.base_sample(2, torch.Generator().manual_seed(0))
    except (ValueError, OSError) as err:
        raise RunError(
            f"{run}: the model's source ({model.source.describe()}) gives no samples ({err}); "
            "reflow draws its noise from it"
        ) from None
    return model, info


def pairs_sampler(solver: str, dt: float) -> str:
    """How pairs were drawn, as a reflow run records it (``parent.sampler``), e.g.
    ``euler, dt=0.001``."""
    return f"{solver}, dt={dt:g}"


def reflow_model_args(
    parent: RunInfo,
    pairs_path: str | Path,
    times: Any = None,
    gaussian_skip: bool | None = None,
    *,
    warm_start: bool = False,
) -> dict[str, Any]:
    """The constructor arguments of the model :func:`reflow_run` trains on the pairs in
    ``pairs_path``: the parent's recorded ones, with the
    :class:`~flowscope.matching.couplings.PairsCoupling` of the file, rectified flow's
    time sampler (``times`` ``None``: the coupling's U[0, 1]) and no Gaussian skip
    (``gaussian_skip`` ``None``: off, or the parent's with ``warm_start``, whose weights
    were trained with it), not the parent's (see ``PairsCoupling``)."""
    args = recorded_model_args(parent)
    args["coupling"] = {"name": "pairs", "path": str(Path(pairs_path).resolve())}
    if times is None:
        args.pop("times", None)  # the pairs coupling's default, U[0, 1]
    else:
        args["times"] = times
    if gaussian_skip is None:
        gaussian_skip = bool(args.get("gaussian_skip")) if warm_start else False
    args["gaussian_skip"] = gaussian_skip
    return args


def reflow_run(
    parent: str | Path,
    out: str | Path,
    *,
    n_points: int | None = None,
    config: TrainConfig | None = None,
    dt: float = DEFAULT_DT,
    solver: str = "euler",
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    device: str | torch.device = "cpu",
    warm_start: bool = False,
    times: str | dict[str, Any] | None = None,
    gaussian_skip: bool | None = None,
) -> tuple[FlowModel, RunInfo, History]:
    """Train the rectified flow of a flow-matching run: ``flowscope reflow``.

    Draws ``n_points`` pairs from the parent's model with ``config.seed``
    (:func:`draw_pairs`), writes them to ``out/pairs.npz`` and trains a model of the
    parent's type with the parent's model arguments on them, with the
    :class:`~flowscope.matching.couplings.PairsCoupling` of the file and the parent's
    standardization; the data are split 90/5/5 into train, validation and test as any
    data file (so the run's test part is the parent's samples). The model trains with
    t ~ U[0, 1] and without the Gaussian skip unless ``times`` and ``gaussian_skip`` say
    otherwise (the pairs coupling's defaults, rectified flow's; the measurements are in
    ``benchmarks/README.md``, "Few-step sampling"); its model config records them. The
    run's config records ``parent``: the parent's folder, type, the sampler and seed of
    the pairs, their number, ``rectified``, k of the k-rectified flow (the parent's k + 1;
    a run trained on data is 1), and ``weights``, the digest of the parent's weights
    (:func:`~flowscope.runs.weights_digest`), which tells whether the parent has been
    trained again since. With ``resume`` the pairs already in ``out`` are kept, and the
    run's times and skip unless given.

    Arguments:
        parent: a run folder of a flow-matching type (``fm``, ``cfm``, ``meanflow``).
        out: the new run folder.
        n_points: pairs to draw, >= 16 (default: the parent's training points).
        config: the training settings (default: the parent's); trained without noise
            on the batches (``noise`` unset, ``small_noise`` 0), which would move the
            pairs' points.
        dt, solver: the integration that draws the pairs.
        overwrite, resume, progress, device: as :func:`~flowscope.runs.train_run`.
        warm_start: start from the parent's weights instead of a fresh initialisation
            (recorded as ``warm_start`` in ``parent``).
        times: the time sampler, of :data:`~flowscope.matching.TIME_SAMPLERS` (a name
            or a config dict, e.g. ``{"name": "beta", "alpha": 5.0}``); ``None`` is
            the :class:`~flowscope.matching.couplings.PairsCoupling`'s U[0, 1], rectified
            flow's (Liu et al. 2022, Algorithm 1), whatever the parent's was (fm's default
            is Beta(5, 1), which hardly trains the field at t = 0 that one Euler step
            reads).
        gaussian_skip: add the path's Gaussian velocity to the network's output (see
            :class:`~flowscope.matching.FlowMatching`); ``None`` is off, the pairs
            coupling's (the skip is the field of independent pairs, not of these), or the
            parent's with ``warm_start``.

    Returns:
        (model, info, history), as :func:`~flowscope.runs.train_run`.

    Raises:
        RunError: for a parent that is not a loadable flow-matching run or whose source
            gives no samples, or an ``out`` that holds a run (see
            :func:`~flowscope.runs.train_run`).
        ValueError: for a bad n_points, dt, solver or times, a gaussian_skip that is
            not a bool, or a ``config`` with noise.
    """
    parent, out = Path(parent), Path(out)
    if out.resolve() == parent.resolve():
        raise RunError(f"{out}: the new run folder must differ from the parent run's")
    check_out(out, overwrite, resume)
    if times is not None:
        TIME_SAMPLERS.build(times)  # a bad sampler fails before the pairs are drawn
    if gaussian_skip is not None and not isinstance(gaussian_skip, bool):
        raise ValueError(f"gaussian_skip must be True, False or None, got {gaussian_skip!r}")
    model, info = _parent(parent, device)
    # A reflow's pairs record their count; a parent trained on a data file records none:
    # the rows of its training part.
    trained_on = info.data.get("n_points") or info.extra.get("parent", {}).get("pairs")
    if n_points is not None:
        n = check_int(n_points, "n_points")
    elif trained_on is not None:
        n = int(trained_on)
    else:
        n = len(run_data(info, "train").x)
    # Fixed pairs are looked up by their points: no noise on them (FlowModel.exact_batches);
    # the parent's own noise (its recipe's, or one given to it) does not carry over.
    if config is not None and config.noise:
        raise ValueError(
            f"noise={config.noise:g}: a rectified flow trains on fixed pairs, which noise "
            "would move; leave noise unset"
        )
    config = replace(config or train_config(info), small_noise=0.0, noise=None)
    pairs_path = out / PAIRS_FILE
    entry = model_type_of(info)
    record: dict[str, Any] = {
        "run": str(parent.resolve()),
        "model": entry.name,
        "rectified": int(info.extra.get("parent", {}).get("rectified", 1)) + 1,
        "pairs": n,
        "sampler": pairs_sampler(solver, dt),
        "seed": config.seed,
        "warm_start": warm_start,
        "weights": weights_digest(model.state_dict()),
    }
    if resume and pairs_path.is_file():  # the pairs drawn before, as they were recorded
        was = read_info(out)
        record = was.extra.get("parent", record)
        n = int(record["pairs"])
        times = was.model.get("times") if times is None else times
        gaussian_skip = was.model.get("gaussian_skip") if gaussian_skip is None else gaussian_skip
    else:
        counts = info.data.get("class_counts")  # (the parent's data: its classes' shares)
        pairs = draw_pairs(model, n, seed=config.seed, dt=dt, solver=solver, class_counts=counts)
        out.mkdir(exist_ok=True)
        write_pairs(pairs_path, pairs, model)
    args = reflow_model_args(
        info, pairs_path, times, gaussian_skip, warm_start=bool(record.get("warm_start"))
    )
    return train_run(
        entry.name,
        out,
        data=str(pairs_path),
        n_points=n,
        holdout_points=int(info.data.get("holdout_points") or 10_000),
        config=config,
        model_args={k: v for k, v in args.items() if k not in ("features", "num_classes")},
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        device=device,
        conditional=bool(info.data.get("conditional", False)),
        parent=record,
        initial_weights=model.state_dict() if record.get("warm_start") else None,
    )
