"""The three models of the study: trained with the preset's recipe, or reused.

A model is reused when ``out/models/NAME`` holds a finished run whose saved configuration
(data, model, training) equals the requested one; otherwise it is trained again
(:func:`~flowscope.runs.train_run`). Either way its training numbers go to
``metrics.json`` under ``training``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..data import RING_NAMES
from ..models import MODELS
from ..runs import (
    RunError,
    build_model,
    load_run,
    read_history,
    read_info,
    recorded_model_args,
    train_run,
)
from ..train import TrainConfig
from .presets import STUDY_MODELS, Preset
from .study import Study

__all__ = ["STAGES", "requested", "reusable", "train"]


def requested(
    preset: Preset, seed: int, name: str
) -> tuple[dict[str, Any], dict[str, Any], TrainConfig]:
    """The data, model and training configurations of model ``name`` under ``preset``."""
    p = preset
    config = TrainConfig(epochs=p.epochs, seed=seed)
    conditional = MODELS.get(name).conditional
    data = {
        "source": "olympic",
        "n_points": p.n_points,
        "holdout_points": p.holdout_points,
        "seed": seed,
        "conditional": conditional,
    }
    model_args: dict[str, Any] = {"features": 2}
    if conditional:
        model_args["num_classes"] = len(RING_NAMES)
    return data, build_model(name, model_args).config(), config


def reusable(preset: Preset, seed: int, name: str, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run with exactly the requested config."""
    if not (run_dir / "model.safetensors").is_file():
        return False
    try:
        info = read_info(run_dir)
    except RunError:
        return False
    data, model_cfg, config = requested(preset, seed, name)
    saved_data = {k: v for k, v in info.data.items() if k != "class_names"}
    history = read_history(run_dir)
    return (
        info.extra.get("name", info.kind) == name
        and saved_data == data
        and recorded_model_args(info) == model_cfg
        and info.train == asdict(config)
        and len(history.epochs) == config.epochs
        and "train_seconds" in info.extra
    )


def train(study: Study, name: str) -> None:
    """The stage that trains (or reuses) model ``name`` and records its training numbers."""
    run_dir = study.out / "models" / name
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if not study.retrain and reusable(study.preset, study.seed, name, run_dir):
        model, info = load_run(run_dir)
        history = read_history(run_dir)
        study.trained[name] = False
        study.say(f"    reusing {run_dir} (same configuration)")
    else:
        data, _, config = requested(study.preset, study.seed, name)
        model, info, history = train_run(
            name,
            run_dir,
            data="olympic",
            n_points=data["n_points"],
            holdout_points=data["holdout_points"],
            config=config,
            overwrite=True,
            progress=None,
        )
        study.trained[name] = True
        if history.fast_path_note:
            study.say(f"    note: trained with PyTorch operations: {history.fast_path_note}")
    study.models[name], study.infos[name], study.histories[name] = model, info, history
    steps = len(history.batch_loss)
    secs = float(info.extra.get("train_seconds", history.seconds))
    study.m.setdefault("training", {})[name] = {
        "seconds": secs,
        "epochs": len(history.epochs),
        "steps": steps,
        "ms_per_step": 1000 * secs / max(1, steps),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_val_loss": history.epochs[-1].get("val_loss"),
        "trained_in_this_run": study.trained[name],
    }


STAGES = tuple(
    (f"train {n.upper()} ({MODELS.get(n).title})", functools.partial(train, name=n))
    for n in STUDY_MODELS
)
