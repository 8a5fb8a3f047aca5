"""The report's models: the study's three and every other registered type, trained with
the preset's recipe or reused, and evaluated once.

The report's models are the :data:`~flowscope.models.MODELS` registry's: one per
registered type and one per :class:`~flowscope.models.Variant` a type declares
(:func:`rows`). The study's three (``STUDY_MODELS``) train with the study's recipe for
the preset's epochs; every other one with its type's recipe, at most the preset's
``beyond_epochs`` epochs (:func:`requested`).

A model is reused when ``out/models/KEY`` holds a finished run whose saved configuration
(data, model, training) equals the requested one; otherwise it is trained again
(:func:`~flowscope.runs.train_run`). Either way its training numbers go to
``metrics.json`` under ``training``, and :func:`evaluate` puts its evaluation under
``evaluation``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..data import RING_NAMES
from ..evaluate import evaluate_run
from ..models import MODELS, ModelType, Variant
from ..reflow import PAIRS_FILE, pairs_sampler, reflow_model_args, reflow_run
from ..runs import (
    RunError,
    build_model,
    load_run,
    read_history,
    read_info,
    recipe,
    recorded_model_args,
    train_config,
    train_run,
    weights_digest,
)
from ..train import TrainConfig
from .presets import STUDY_MODELS, Preset
from .study import Study

__all__ = ["STAGES", "Row", "evaluate", "requested", "reusable", "row", "rows", "train"]


@dataclass(frozen=True)
class Row:
    """One model of the report: a registered type, or one of its declared variants.

    Attributes:
        entry: the registered type.
        variant: the variant, or ``None`` for the type's default.
    """

    entry: ModelType
    variant: Variant | None = None

    @property
    def key(self) -> str:
        """The model's name in the report: its run folder ``models/KEY`` and its key in
        ``metrics.json`` (``nsf``, ``nsf-conditional``)."""
        return self.entry.name + (f"-{self.variant.name}" if self.variant else "")

    @property
    def label(self) -> str:
        """The model in a table: ``NSF``, ``class-conditional NSF``, ``Gaussian`` (a
        short name is an acronym; a longer one gives way to the type's title)."""
        name = self.entry.name
        short = name.upper() if len(name) <= 4 else self.entry.title.capitalize()
        return f"{self.variant.title} {short}" if self.variant else short

    @property
    def conditional(self) -> bool:
        """Whether the model is trained on (and takes) the rings' labels."""
        return self.entry.is_conditional(self.variant.conditional if self.variant else None)

    @property
    def model_args(self) -> dict[str, Any]:
        """Constructor arguments beyond the type's defaults."""
        return dict(self.variant.model_args) if self.variant else {}

    @property
    def sampler(self) -> dict[str, Any]:
        """The sampler options it is measured and shown with: the type's
        (:attr:`~flowscope.models.ModelType.sampler`), then the variant's."""
        return {**self.entry.sampler, **(self.variant.sampler if self.variant else {})}

    @property
    def parent(self) -> str | None:
        """The key of the model whose pairs it is trained on (a reflow variant: the type's
        default model), or ``None``: it is trained on the data."""
        return self.entry.name if self.variant is not None and self.variant.reflow else None

    def sampling(self, dt: float) -> dict[str, Any]:
        """The options of its sampler (:meth:`~flowscope.models.ModelType.sampling`): its
        own (:attr:`sampler`) where it has them, else Euler steps of ``dt``."""
        return self.entry.sampling(**{"dt": dt, **self.sampler})

    def recipe(self) -> TrainConfig:
        """The training recipe: the type's, then the variant's departures from it."""
        return recipe(self.entry.name, **(self.variant.recipe if self.variant else {}))

    def recipe_epochs(self) -> int:
        """The epochs of the recipe on the report's data, which are large: its ``epochs``,
        or its ``min_epochs`` where it leaves them to the data's size."""
        full = self.recipe()
        return full.epochs if full.epochs is not None else full.min_epochs


def rows() -> list[Row]:
    """Every model of the report, in registration order: each registered type, followed
    by the variants it declares. A type joins by registering."""
    return [Row(entry, variant) for entry in MODELS for variant in (None, *entry.variants)]


def row(key: str) -> Row:
    """The model named ``key`` (see :attr:`Row.key`).

    Raises:
        KeyError: naming the keys there are.
    """
    found = {r.key: r for r in rows()}
    if key not in found:
        raise KeyError(f"no report model {key!r}; the models are {', '.join(found)}")
    return found[key]


def requested(
    preset: Preset, seed: int, key: str
) -> tuple[dict[str, Any], dict[str, Any], TrainConfig]:
    """The data, model and training configurations of model ``key`` under ``preset``:
    the study's models train with the study's recipe for the preset's epochs, the others
    with their own recipe (:meth:`Row.recipe`) for at most ``preset.beyond_epochs``."""
    p, r = preset, row(key)
    if key in STUDY_MODELS:
        config = TrainConfig(epochs=p.epochs, seed=seed)
    else:
        config = replace(r.recipe(), epochs=min(r.recipe_epochs(), p.beyond_epochs), seed=seed)
    data = {
        "source": "olympic",
        "n_points": p.n_points,
        "holdout_points": p.holdout_points,
        "seed": seed,
        "conditional": r.conditional,
    }
    model_args: dict[str, Any] = {**r.model_args, "features": 2}
    if r.conditional:
        model_args["num_classes"] = len(RING_NAMES)
    return data, build_model(r.entry.name, model_args).config(), config


def reusable(preset: Preset, seed: int, key: str, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run with exactly the requested config."""
    if not (run_dir / "model.safetensors").is_file():
        return False
    try:
        info = read_info(run_dir)
    except RunError:
        return False
    data, model_cfg, config = requested(preset, seed, key)
    history = read_history(run_dir)
    r = row(key)
    if r.parent is not None:  # trained on the pairs of the parent as it is now
        drawn = info.extra.get("parent", {})
        same_data = (
            drawn.get("pairs") == data["n_points"]
            and drawn.get("sampler") == pairs_sampler("euler", preset.dt)  # as _reflow draws
            and drawn.get("weights") == parent_digest(run_dir.parent / r.parent)
        )
        if not same_data:
            return False
        # What a reflow of the parent would train now (the pairs file is the run's own).
        parent_info = read_info(run_dir.parent / r.parent)
        args = reflow_model_args(parent_info, run_dir / PAIRS_FILE)
        model_cfg = build_model(r.entry.name, args).config()
    else:
        # (the class names and counts are what the data give, not settings)
        derived = ("class_names", "class_counts")
        same_data = {k: v for k, v in info.data.items() if k not in derived} == data
    return (
        info.extra.get("name", info.kind) == r.entry.name
        and same_data
        and recorded_model_args(info) == model_cfg
        and train_config(info).effective(data["n_points"]) == config.effective(data["n_points"])
        and len(history.epochs) == config.epochs
        and "train_seconds" in info.extra
    )


def parent_digest(run_dir: Path) -> str | None:
    """The digest of the weights in ``run_dir`` (:func:`~flowscope.runs.weights_digest`),
    as a reflow of it records it; ``None`` where it holds no loadable run."""
    try:
        return weights_digest(load_run(run_dir)[0].state_dict())
    except RunError:
        return None


def train(study: Study, key: str) -> None:
    """The stage that trains (or reuses) model ``key`` and records its training numbers."""
    run_dir = study.out / "models" / key
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if not study.retrain and reusable(study.preset, study.seed, key, run_dir):
        model, info = load_run(run_dir)
        history = read_history(run_dir)
        study.trained[key] = False
        study.say(f"    reusing {run_dir} (same configuration)")
    else:
        model, info, history = (_reflow if row(key).parent else _train_on_data)(study, key)
        study.trained[key] = True
        if history.fast_path_note:
            study.say(f"    note: trained with PyTorch operations: {history.fast_path_note}")
    study.models[key], study.infos[key], study.histories[key] = model, info, history
    steps = len(history.batch_loss)
    secs = float(info.extra.get("train_seconds", history.seconds))
    study.m.setdefault("training", {})[key] = {
        "seconds": secs,
        "epochs": len(history.epochs),
        "steps": steps,
        "ms_per_step": 1000 * secs / max(1, steps),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_val_loss": history.epochs[-1].get("val_loss"),
        "trained_in_this_run": study.trained[key],
    }


def _train_on_data(study: Study, key: str):
    """Train model ``key`` on the report's rings with its recipe."""
    r = row(key)
    data, _, config = requested(study.preset, study.seed, key)
    return train_run(
        r.entry.name,
        study.out / "models" / key,
        data="olympic",
        n_points=data["n_points"],
        holdout_points=data["holdout_points"],
        config=config,
        model_args=r.model_args,
        overwrite=True,
        progress=None,
        conditional=r.conditional,
    )


def _reflow(study: Study, key: str):
    """Train model ``key`` by reflow (:func:`~flowscope.reflow.reflow_run`) on as many
    pairs of its parent, trained by an earlier stage, as the data have points, drawn
    with the preset's Euler steps, with its recipe."""
    r = row(key)
    data, _, config = requested(study.preset, study.seed, key)
    return reflow_run(
        study.out / "models" / r.parent,
        study.out / "models" / key,
        n_points=data["n_points"],
        config=config,
        dt=study.preset.dt,
        overwrite=True,
        progress=None,
    )


def evaluate(study: Study, key: str) -> dict[str, Any]:
    """:func:`~flowscope.evaluate.evaluate_run` of model ``key`` (once per run; left in
    ``metrics.json`` under ``evaluation``), with the study's W2 noise floor of its data
    (:func:`~.study.prepare_data`), computed once per size."""
    done = study.m.setdefault("evaluation", {})
    if key in done:
        return done[key]
    p = study.preset
    ev = evaluate_run(
        study.out / "models" / key,
        n=p.n_quality,
        seed=study.seed,
        **row(key).sampling(p.dt),  # the type's or the variant's sampler, if it has one
        nll_kwargs={"steps": p.nll_steps},
        floor_pairs=0,
    )
    f = study.floor(ev["w2_points"], conditional=ev["conditional"])
    ev.update(
        w2_noise_floor=f.mean,
        w2_noise_floor_std=f.std,
        w2_noise_floor_pairs=len(f.values),
        w2_noise_floor_points=f.n,
    )
    done[key] = ev
    return ev


STAGES = tuple(
    (f"train {n.upper()} ({MODELS.get(n).title})", functools.partial(train, key=n))
    for n in STUDY_MODELS
)
