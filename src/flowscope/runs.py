"""Run folders: config, weights (safetensors), metrics and resumable checkpoints.

A run folder holds:

- ``config.json``: model kind and arguments, data source, training config, seed, and the
  flowscope and torch versions;
- ``model.safetensors``: the weights, the standardization buffers among them;
- ``metrics.csv`` (one row per epoch) and ``batches.csv`` (the loss of every step);
- ``checkpoint.safetensors``: model, optimizer, scheduler and generator state after the
  last finished epoch, for ``--resume`` (tensors in the body, the rest as JSON in the
  safetensors metadata, so that one rename replaces the whole checkpoint).

Nothing is pickled: loading never executes code from a file. Every file is written to a
temporary name in the same folder and then renamed, so a run killed at any moment leaves
the previous version intact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from . import __version__
from .atomic import atomic_write
from .base import FlowModel, resolve_device
from .data import (
    DATASETS,
    SPLIT_FRACTIONS,
    Dataset,
    check_int,
    file_sha256,
    make_dataset,
    split,
    split_sizes,
)
from .defaults import HOLDOUT_POINTS, STUDY_DATA, STUDY_POINTS
from .errors import RunError, TrainingDiverged, UnusedLabels
from .models import MODELS, ModelType
from .recipe import recipe, upgrade_train
from .registry import UnknownName
from .train import Best, History, TrainConfig, TrainState, fit

__all__ = [
    "FORMAT_VERSION",
    "RunError",
    "RunInfo",
    "build_model",
    "input_files",
    "model_type_of",
    "recorded_model_args",
    "load_run",
    "run_progress",
    "read_info",
    "recipe",
    "save_run",
    "load_checkpoint",
    "checkpoint_saver",
    "check_out",
    "atomic_write",
    "weights_digest",
    "run_data",
    "file_rows_needed",
    "train_run",
]

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.safetensors"
# Files that make a folder a run folder: training never writes over them unasked.
RUN_FILES = ("config.json", "model.safetensors", "metrics.csv", "batches.csv", CHECKPOINT)


@dataclass
class RunInfo:
    """What ``config.json`` says of a run.

    Attributes:
        kind: the model class's family (``FlowModel.kind``, e.g. ``"nf"``, ``"fm"``).
        model: the model's constructor arguments.
        data: ``source``, ``n_points``, ``seed``, ``conditional``, ``class_names``,
            ``class_counts`` (the training points of each class; runs trained before it
            was recorded have none), ...
        train: the :class:`~flowscope.train.TrainConfig` as a dict.
        extra: anything else the writer stored: ``name``, the registered model type
            (:data:`~flowscope.models.MODELS`), versions, timings.
    """

    kind: str
    model: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "flowscope_version": __version__,
            "torch_version": torch.__version__,
            "kind": self.kind,
            "model": self.model,
            "data": self.data,
            "train": self.train,
            **self.extra,
        }


def build_model(name: str, args: dict[str, Any]) -> FlowModel:
    """A fresh model of the registered type ``name`` from its constructor arguments.

    Raises:
        RunError: for an unknown type or arguments it does not take.
    """
    try:
        return MODELS.get(name).build(**args)
    except UnknownName as err:
        raise RunError(str(err)) from None
    except ValueError as err:
        raise RunError(f"{name}: {err}") from None


def model_type_of(info: RunInfo) -> ModelType:
    """The registered type of a run's model (folders from before the registry name the
    family only: ``kind``).

    Raises:
        RunError: if this flowscope has no such type.
    """
    name = info.extra.get("name", info.kind)
    try:
        return MODELS.get(name)
    except UnknownName as err:
        raise RunError(f"{err} (the run was written by another flowscope version?)") from None


def recorded_model_args(info: RunInfo) -> dict[str, Any]:
    """The constructor arguments of a run's model, as today's version reads them: the
    recorded ones, with the defaults of arguments that did not exist when the folder was
    written (:attr:`~flowscope.models.ModelType.upgrade`)."""
    return model_type_of(info).recorded_args(info.model)


def _history_csv(history: History) -> tuple[str, str]:
    epochs = io.StringIO()
    keys: list[str] = []
    for row in history.epochs:
        keys += [k for k in row if k not in keys]
    w = csv.DictWriter(epochs, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history.epochs)
    batches = "step,loss\n" + "".join(f"{i + 1},{v!r}\n" for i, v in enumerate(history.batch_loss))
    return epochs.getvalue(), batches


def save_run(run_dir: str | Path, model: FlowModel, info: RunInfo, history: History | None) -> None:
    """Write config, weights and metrics of a trained model to ``run_dir`` (created if needed)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.safetensors", _save_tensors(state))
    atomic_write(run_dir / "config.json", json.dumps(info.to_json(), indent=2) + "\n")
    if history is not None:
        epochs, batches = _history_csv(history)
        atomic_write(run_dir / "metrics.csv", epochs)
        atomic_write(run_dir / "batches.csv", batches)


def read_info(run_dir: str | Path) -> RunInfo:
    """Read and check ``config.json`` of a run folder.

    Raises:
        RunError: if the folder or file is missing, unreadable, or of another format version.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder (train one with `flowscope train`)")
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: holds no model (no config.json); is this a run folder?")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION:
        got = raw.get("format") if isinstance(raw, dict) else None
        raise RunError(
            f"{path}: run format {got!r}, this flowscope ({__version__}) reads format "
            f"{FORMAT_VERSION}; retrain the model with this version"
        )
    try:
        known = {"format", "flowscope_version", "torch_version", "kind", "model", "data", "train"}
        return RunInfo(
            kind=raw["kind"],
            model=dict(raw["model"]),
            data=dict(raw["data"]),
            train=upgrade_train(dict(raw["train"])),
            extra={k: v for k, v in raw.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{path}: missing or malformed entry {err}") from None


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of tensors: their names, dtypes, shapes and bytes, in name order.

    Written into the header of every weights file and checkpoint flowscope saves
    (safetensors metadata ``sha256``) and checked on load, so that damaged bytes inside
    the tensors, which safetensors itself reads without complaint, are an error."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_tensors(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    """The safetensors bytes of ``tensors``, with their :func:`weights_digest` in the header."""
    return st_save(tensors, metadata={**(metadata or {}), "sha256": weights_digest(tensors)})


#: What to do about a damaged weights file, unless the caller knows better.
_REMEDY = "restore the file or retrain the model"


def _open_tensors(
    path: Path, what: str, remedy: str | None = _REMEDY
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of a safetensors file, checked against the digest
    of :func:`_save_tensors` (files written before it was recorded have none to check).

    Raises:
        RunError: for a file that cannot be read or whose tensors do not match the digest,
            with ``remedy`` (what to do; ``None``: nothing) after the problem.
    """
    then = f"; {remedy}" if remedy else ""
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise RunError(f"{path}: corrupted or truncated {what} ({err}){then}") from None
    if "sha256" in meta and meta["sha256"] != weights_digest(tensors):
        raise RunError(
            f"{path}: corrupted {what}: its tensors do not match the checksum written with "
            f"them{then}"
        )
    return tensors, meta


def _read_tensors(path: Path, remedy: str | None = _REMEDY) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (:func:`_open_tensors`), ``remedy`` after any
    problem, its absence included."""
    if not path.is_file():
        then = f"; {remedy}" if remedy else ""
        raise RunError(f"{path.parent}: holds no weights ({path.name} is missing){then}")
    return _open_tensors(path, "weights file", remedy)[0]


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FlowModel, RunInfo]:
    """Load the model of a run folder, in eval mode, onto ``device``.

    Returns:
        (model, info).

    Raises:
        RunError: naming what is wrong with the folder and what to do.
        ValueError: for a device that does not exist here (see
            :func:`~flowscope.base.resolve_device`).
    """
    device = resolve_device(device)
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    model = build_model(model_type_of(info).name, recorded_model_args(info))
    remedy = _REMEDY
    if (run_dir / CHECKPOINT).is_file():
        remedy = (
            f"restore the file, write it again from the run's checkpoint with "
            f"{_command(info, run_dir)} --resume`, or retrain the model"
        )
    tensors = _read_tensors(run_dir / "model.safetensors", remedy)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise RunError(
            f"{run_dir}: the weights do not match config.json ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape, e.g. {first!r}); "
            "the folder may come from another flowscope version: retrain it"
        )
    model.load_state_dict(tensors)
    if model.conditional:
        names = info.data.get("class_names")
        model.class_names = names if names and len(names) == model.num_classes else None
    progress = run_progress(run_dir)
    if progress is not None and progress[0] < progress[1]:
        stopped = f"{run_dir} is a partial run, stopped after epoch {progress[0]} of {progress[1]}"
        if "diverged" in info.extra:  # resuming would diverge again, bit for bit
            lr = float(info.train.get("lr", 1e-3))
            then = (
                f" when its training diverged ({info.extra['diverged']}): its model is that "
                "epoch's; train it again with the same options, --overwrite and a smaller "
                f"--lr (e.g. {lr / 2:g}) or another --seed"
            )
        else:
            then = (
                f": its model is that epoch's; finish it with {_command(info, run_dir)} --resume`"
            )
        warnings.warn(stopped + then, stacklevel=2)
    return model.to(device).eval(), info


def _command(info: RunInfo, run_dir: Path) -> str:
    """The start of the command that trains the run of ``run_dir`` (a backquote, the
    command, ``--out``), for a message to complete: ``flowscope train``, or
    ``flowscope reflow PARENT`` for a rectified flow."""
    if "parent" in info.extra:
        return f"`flowscope reflow {info.extra['parent'].get('run', 'PARENT')} --out {run_dir}"
    return f"`flowscope train {info.extra.get('name', info.kind)} --out {run_dir}"


def run_progress(run_dir: str | Path) -> tuple[int, int] | None:
    """(the epoch of the last checkpoint, the epochs the run was to train) of a run folder,
    from its checkpoint's header alone; ``None`` if it has no readable checkpoint or
    one written before the length was recorded. A run stopped before its end (killed,
    interrupted) has the first below the second."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
        done, planned = int(meta["epoch"]), int(meta.get("epochs", 0))
    except Exception:  # a damaged checkpoint is load_checkpoint's error, on --resume
        return None
    return (done, planned) if planned > 0 else None


def read_history(run_dir: str | Path) -> History:
    """The history saved in ``metrics.csv`` and ``batches.csv`` (empty if absent)."""
    run_dir = Path(run_dir)
    h = History()
    if (run_dir / "metrics.csv").is_file():
        with open(run_dir / "metrics.csv") as f:
            h.epochs = [
                {k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)
            ]
            for row in h.epochs:
                row["epoch"] = int(row["epoch"])
    if (run_dir / "batches.csv").is_file():
        with open(run_dir / "batches.csv") as f:
            h.batch_loss = [float(r["loss"]) for r in csv.DictReader(f)]
    return h


# -- resumable checkpoints --------------------------------------------------------------


#: A run writes its checkpoint and files after about this many of its epochs at most
#: (every epoch of a run of up to this many, and the last always): a run of many tiny
#: epochs would otherwise spend most of its time writing files.
CHECKPOINTS = 50


def checkpoint_saver(run_dir: str | Path, info: RunInfo) -> Callable[[FlowModel, TrainState], bool]:
    """An ``on_epoch_end`` callback for :func:`~flowscope.train.fit` that saves the run and
    a resumable checkpoint (each file atomically) after every epoch of a run of up to
    :data:`CHECKPOINTS` epochs; a longer run after every ``epochs // CHECKPOINTS``-th
    epoch and its last, so that a run killed at any moment loses at most that many
    epochs.

    The checkpoint is written first, as one file, so it is never out of step with itself;
    ``model.safetensors``, ``config.json`` and the metrics follow. The callback returns
    whether it wrote them after this epoch.
    """
    run_dir = Path(run_dir)

    def save(model: FlowModel, state: TrainState) -> bool:
        every = max(1, state.epochs // CHECKPOINTS)
        if state.epoch % every and state.epoch < state.epochs:
            return False
        tensors: dict[str, torch.Tensor] = {"generator": state.generator.clone()}
        for k, v in model.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        if state.best is not None:
            for k, v in state.best.weights.items():
                tensors[f"best.{k}"] = v.detach().cpu().contiguous()
        opt_state = state.optimizer["state"]
        meta_state: dict[str, dict[str, Any]] = {}
        for pid, entries in opt_state.items():
            meta_state[str(pid)] = {}
            for name, val in entries.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
                else:
                    meta_state[str(pid)][name] = val
        meta = {
            "epoch": state.epoch,
            "epochs": state.epochs,
            "best": None
            if state.best is None
            else {"epoch": state.best.epoch, "loss": state.best.loss},
            "param_groups": state.optimizer["param_groups"],
            "opt_scalars": meta_state,
            "scheduler": state.scheduler,
            "history": vars(state.history),  # its fields are plain values: no deep copy
        }
        atomic_write(run_dir / CHECKPOINT, _save_tensors(tensors, {"state": json.dumps(meta)}))
        save_run(run_dir, model, info, state.history)
        return True

    return save


def load_checkpoint(run_dir: str | Path, model: FlowModel) -> TrainState:
    """Load the resumable checkpoint of ``run_dir`` into ``model``; returns the state for
    :func:`~flowscope.train.fit`.

    Raises:
        RunError: if there is no checkpoint or it is corrupted.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{path.parent}: nothing to resume ({CHECKPOINT} is missing)")
    # The model (model.safetensors) is read without the checkpoint: only resuming needs it.
    remedy = (
        "the run's model (model.safetensors) is intact and still samples and evaluates; "
        "restore the file to resume the run, or train again into another --out"
        if _damaged_weights(path.parent) is None
        else "model.safetensors is damaged too: restore the files, or train the run again "
        "(--overwrite)"
    )
    tensors, header = _open_tensors(path, "checkpoint", remedy)
    try:
        meta = json.loads(header["state"])
    except (KeyError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: corrupted or truncated checkpoint ({err!r}); {remedy}") from None
    try:
        model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        opt_state: dict[int, dict[str, Any]] = {}
        for pid, scalars in meta["opt_scalars"].items():
            opt_state[int(pid)] = dict(scalars)
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        hist = History(**meta["history"])
        best = None
        if meta.get("best") is not None:
            weights = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
            best = Best(int(meta["best"]["epoch"]), float(meta["best"]["loss"]), weights)
        return TrainState(
            epoch=int(meta["epoch"]),
            optimizer={"state": opt_state, "param_groups": meta["param_groups"]},
            scheduler=meta["scheduler"],
            generator=tensors["generator"],
            history=hist,
            epochs=int(meta.get("epochs", 0)),
            best=best,
        )
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunError(f"{path}: checkpoint does not match the model ({err}); {remedy}") from None


def train_config(info: RunInfo) -> TrainConfig:
    """The :class:`~flowscope.train.TrainConfig` stored in a run's config."""
    return TrainConfig(**info.train)


# -- one training run, as the CLI and the report start it --------------------------------


def file_rows_needed() -> int:
    """The fewest rows a data file needs for a 2-point train part and non-empty
    validation and test parts under the split of :func:`run_data`."""
    n = 2
    while True:
        n_train, n_val, n_test = split_sizes(n, SPLIT_FRACTIONS)
        if n_train >= 2 and n_val >= 1 and n_test >= 1:
            return n
        n += 1


def run_data(info: RunInfo, part: str) -> Dataset:
    """Rebuild the ``train``, ``val`` or ``test`` part of a run's data from its config.

    Registry data (``olympic`` and the toy sets) draws each part with its own seed:
    ``seed``, ``seed + 1`` and ``seed + 2``; validation and test have ``holdout_points``
    points each. File data is split 90/5/5 with the run's seed
    (:func:`~flowscope.data.split`); the config holds the file's absolute path and its
    SHA-256, checked here, so that the parts are those the run was trained on.

    Raises:
        RunError: if the run's data file is missing or has changed since training.
        ValueError: for an unknown part or data source, or a file too small to give a
            train part of 2 points and non-empty validation and test parts (16 points).
    """
    d = info.data
    parts = ("train", "val", "test")
    if part not in parts:
        raise ValueError(f"part must be one of {parts}, got {part!r}")
    source, seed, cond = d["source"], int(d["seed"]), bool(d.get("conditional", False))
    if source == "olympic" or source in DATASETS:
        n = int(d["n_points"]) if part == "train" else int(d.get("holdout_points", HOLDOUT_POINTS))
        return make_dataset(source, n, conditional=cond, seed=seed + parts.index(part))
    if d.get("sha256") is not None:  # a file recorded by train_run
        path = Path(source)
        if not path.is_file():
            raise RunError(
                f"{source}: the run's data file is missing; put it back to evaluate or resume "
                "this run (moved, it is found again by training the run with --resume and "
                "--data naming the file where it is now)"
            )
        if file_sha256(path) != d["sha256"]:
            raise RunError(
                f"{source}: the data file has changed since the run was trained (its SHA-256 "
                "differs from the one in config.json), so its train, validation and test "
                "parts would differ; restore the file, or train a new run on it"
            )
    full = make_dataset(source, 0, conditional=cond, seed=seed)
    sizes = split_sizes(len(full), SPLIT_FRACTIONS)
    if sizes[0] < 2 or min(sizes) < 1:
        shares = "/".join(f"{round(100 * f)}" for f in SPLIT_FRACTIONS)
        raise ValueError(
            f"{source}: {len(full)} points split {shares} give {sizes[0]} train, {sizes[1]} "
            f"validation and {sizes[2]} test points; training needs at least 2 and the "
            f"other parts at least 1, so the file needs at least {file_rows_needed()} points"
        )
    x, y = split(full.x, full.labels, seed=seed)[parts.index(part)]
    return Dataset(x, y, full.source, full.class_names, full.columns)


def check_out(out: Path, overwrite: bool, resume: bool) -> Path:
    """``out`` if a run may be written (or resumed) there.

    Raises:
        ValueError: for both ``overwrite`` and ``resume``.
        RunError: naming what is in the way and what to pass.
    """
    if overwrite and resume:
        raise ValueError("pass either overwrite (start again) or resume (continue), not both")
    if not out.parent.is_dir():
        raise RunError(f"{out.parent}: folder does not exist; create it first")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a run folder; choose another output folder")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not (overwrite or resume):
        raise RunError(
            f"{out} already holds a run ({', '.join(held)}); pass --overwrite to replace it "
            "or --resume to continue it"
        )
    if resume and not out.exists():
        raise RunError(f"{out}: no such run folder to resume; train with no --resume to start one")
    if resume and not (out / CHECKPOINT).is_file():
        again = "--overwrite instead of --resume" if held else "no --resume"
        raise RunError(
            f"{out}: nothing to resume ({CHECKPOINT} is missing); train with {again} to "
            "start a new run there"
        )
    return out


def input_files(data: dict[str, Any], model: dict[str, Any]) -> dict[str, Path]:
    """The files a run reads, by what each is for: ``"data"`` (its data file; a registry
    name is none) and each model part that reads one (``"source"``, a rectified flow's
    ``"pairs"``), from a run's ``data`` and ``model`` records (:class:`RunInfo`) or, before
    training, the data's record (:func:`_source`) and the model's arguments."""
    files = {"data": Path(data["source"])} if "sha256" in data else {}
    for key, part in model.items():
        if isinstance(part, dict) and isinstance(part.get("path"), str):
            files[key] = Path(part["path"])
    return files


def _check_inputs_clear_of(out: Path, source: dict[str, Any], model_args: Any) -> None:
    """Refuse a file the run will read (:func:`input_files`) that is one of the files
    training writes in ``out`` (:data:`RUN_FILES`): it would be written over by the run
    it feeds.

    Raises:
        RunError: naming the file and what to do.
    """
    for what, path in input_files(source, dict(model_args or {})).items():
        where = path.resolve()
        if where.parent == out.resolve() and where.name in RUN_FILES:
            raise RunError(
                f"{path}: the {what} file has the name of a file training writes in the run "
                f"folder {out}, and would be written over; move it, or train into another "
                "--out"
            )


def _source(data: str) -> dict[str, Any]:
    """How a run records its data source: a registry name as it is, a file by its
    absolute path (so that the run works from any folder) and its SHA-256 (so that a
    changed file is noticed before its parts are rebuilt)."""
    if data != "olympic" and data not in DATASETS and Path(data).is_file():
        path = Path(data).resolve()
        return {"source": str(path), "sha256": file_sha256(path)}
    return {"source": data}


def _resume_state(out: Path, old: RunInfo, info: RunInfo, model: FlowModel, n: int) -> TrainState:
    """The checkpoint of ``out`` loaded into ``model``, if the run there was started
    with the same model type and settings (those that act on ``n`` training points:
    :meth:`~flowscope.train.TrainConfig.effective`).

    Raises:
        RunError: naming the other model type, or each setting that differs.
    """
    was = old.extra.get("name", old.kind)
    name = info.extra["name"]
    if old.data.get("sha256") not in (None, info.data.get("sha256")):
        if old.data["source"] == info.data["source"]:
            raise RunError(
                f"{info.data['source']}: the data file has changed since the run was trained "
                "(its SHA-256 differs from the one in config.json), so resuming would train "
                "on other points; restore the file, or pass --overwrite to train a new run "
                "on it"
            )
    if was != name:
        raise RunError(
            f"{out} holds a run of model {was}, not {name}: resume it as {was} "
            f"(flowscope train {was} --out {out} --resume), or train {name} in another folder"
        )
    config, was_config = train_config(info), train_config(old)
    now = {"model": name, **info.model, **info.data, **config.effective(n)}
    then = {"model": was, **recorded_model_args(old), **old.data, **was_config.effective(n)}
    if then.get("sha256") is not None and then.get("sha256") == now.get("sha256"):
        then["source"] = now["source"]  # the same file's bytes at another path (train_run)
    differ = [
        f"{k} {_show(then.get(k), k, was_config, n)} (now {_show(v, k, config, n)})"
        for k, v in now.items()
        if then.get(k) != v
    ]
    if differ:
        longer = (
            " (a run cannot be extended: its learning rate decays to 0 over the epochs it "
            "was started with)"
            if now.get("epochs") != then.get("epochs")
            else ""
        )
        raise RunError(
            f"{out}: the run was started with other settings: {'; '.join(differ)}; "
            "resume with the same settings (a setting not given keeps the run's own), or "
            f"pass --overwrite to start again{longer}"
        )
    return load_checkpoint(out, model)


def _show(value: Any, key: str = "", config: TrainConfig | None = None, n: int = 1) -> str:
    """A recorded value for a message: a part's config dict as ``beta(alpha=5.0)``; a
    setting left unset as ``not given``, with what ``config`` makes of it on ``n``
    training points for the epochs, weight decay and noise: ``not given (1,000 for these
    data)``."""
    if value is None:
        if config is None or key not in ("epochs", "weight_decay", "noise"):
            return "not given"
        plan = config.schedule(n)
        made = f"{plan.epochs:,}" if key == "epochs" else f"{getattr(plan, key):g}"
        return f"not given ({made} for these data)"
    if isinstance(value, dict) and "name" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "name")
        return f"{value['name']}({args})" if args else str(value["name"])
    return repr(value)


def train_run(
    model_name: str,
    out: str | Path,
    *,
    data: str | None = None,
    n_points: int | None = None,
    holdout_points: int | None = None,
    config: TrainConfig | None = None,
    model_args: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    on_epoch_end: Callable[[FlowModel, TrainState], None] | None = None,
    device: str | torch.device = "cpu",
    conditional: bool | None = None,
    parent: dict[str, Any] | None = None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[FlowModel, RunInfo, History]:
    """Train a registered model type (:data:`~flowscope.models.MODELS`: ``nf``, ``fm``,
    ``cfm``, ...) on a data source and save the run folder ``out``.

    The model is initialised from ``config.seed``; a checkpoint is written after every
    epoch (every few of a run of many tiny epochs: :func:`checkpoint_saver`), and the
    folder is complete (config, weights, metrics) after each one. With
    ``resume`` the run continues after the last checkpointed epoch, with the optimizer,
    scheduler and generator state, and ends with the same weights, bit for bit, as an
    uninterrupted run with the same settings; model arguments not given in
    ``model_args`` keep the run's recorded values.

    Arguments:
        data: ``"olympic"``, a toy set of :data:`~flowscope.data.DATASETS`, or a data file;
            a file is recorded by its absolute path and SHA-256 (see :func:`run_data`).
            ``None`` (as ``n_points`` and ``holdout_points``): the resumed run's own, else
            the study's (``"olympic"``, 250,000 and 10,000 points).
        config: the training settings; ``None`` is the type's recipe (:func:`recipe`),
            or the resumed run's settings.
        n_points: training points of registry data, >= 2 (a file gives all its rows).
        holdout_points: validation and test points each of registry data, >= 1.
        on_epoch_end: called like :func:`~flowscope.train.fit`'s callback, after the
            epoch's checkpoint is written (for logging, e.g. TensorBoard).
        device: where to train (the fused kernels run on the CPU only; elsewhere the
            trainer uses PyTorch operations). The folder's files are the same either way.
        conditional: train on the data's class labels, for a type that may choose
            (:attr:`~flowscope.models.ModelType.conditional_option`: ``nf``, ``nsf``);
            ``None`` is the type's default, or the resumed run's choice.
        parent: what the run was made from, recorded as ``parent`` in its config (a
            reflow run's parent run, :func:`flowscope.reflow.reflow_run`).
        initial_weights: a state dict of a model of the same type and sizes to start
            from instead of the seed's initialisation (a resumed run's checkpoint
            replaces it).

    Raises:
        RunError: if ``out`` holds run files and neither ``overwrite`` nor ``resume`` is
            set, ``resume`` finds no checkpoint or other settings, or ``out``'s parent
            folder does not exist.
        ValueError: for a bad data source or hyperparameter, a data file too small to
            split (see :func:`run_data`), or a ``conditional`` the type does not offer.
    """
    entry = MODELS.get(model_name)
    device = resolve_device(device)
    out = check_out(Path(out), overwrite, resume)
    old = read_info(out) if resume else None
    same = old is not None and old.extra.get("name", old.kind) == model_name
    if conditional is None and same:  # (a run of another type is refused below)
        conditional = bool(old.data.get("conditional", False))
    conditional = entry.is_conditional(conditional)
    if config is None:  # a resumed run continues with its own settings
        config = train_config(old) if same else recipe(model_name)
    if same:  # and its own data, unless told otherwise (and then refused below)
        data = old.data.get("source") if data is None else data
        n_points = old.data.get("n_points") if n_points is None else n_points
        if holdout_points is None:
            holdout_points = old.data.get("holdout_points")
    data = STUDY_DATA if data is None else data
    n_points = STUDY_POINTS if n_points is None else n_points
    holdout_points = HOLDOUT_POINTS if holdout_points is None else holdout_points
    if same and "sha256" in old.data and not Path(data).is_file():
        if Path(data).resolve() == Path(old.data["source"]):
            run_data(old, "train")  # says the file is missing, and what to do
    source = _source(data)
    _check_inputs_clear_of(out, source, model_args)
    same_bytes = same and "sha256" in source and source.get("sha256") == old.data.get("sha256")
    moved = same_bytes and source["source"] != old.data["source"]  # elsewhere now
    if same and not same_bytes and source["source"] != old.data.get("source"):
        raise RunError(
            f"{out}: the run was started on {old.data.get('source')}, not {data}; resume "
            "without --data (with the run's own), or pass --overwrite to train a new run on "
            f"{data}"
        )
    counts = {  # a file gives all its rows, split 90/5/5: no counts to record
        "n_points": None if "sha256" in source else check_int(n_points, "n_points", minimum=2),
        "holdout_points": None
        if "sha256" in source
        else check_int(holdout_points, "holdout_points"),
    }
    info = RunInfo(
        kind=entry.model.kind,
        model={},
        data={
            **source,
            **counts,
            "seed": config.seed,
            "conditional": conditional,
        },
        train=asdict(config),
        extra={"name": model_name, **({} if parent is None else {"parent": parent})},
    )
    try:
        train = run_data(info, "train")
    except UnusedLabels as err:
        raise UnusedLabels(f"{err}: {_conditional_ways(entry)}") from None
    val = run_data(info, "val")
    given = dict(model_args or {})
    if same:
        given = {**recorded_model_args(old), **given}  # what is not given continues
    args = {**given, "features": train.x.shape[1]}
    if conditional:
        args["num_classes"] = len(train.class_names or ()) or int(train.labels.max()) + 1
    info.data["class_names"] = list(train.class_names) if train.class_names else None
    if train.columns:
        info.data["columns"] = list(train.columns)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_model(model_name, args).to(device)
    if model.conditional and train.class_names:
        model.class_names = train.class_names
    if initial_weights is not None:
        model.load_state_dict({k: v.to(device) for k, v in initial_weights.items()})
    info.model = model.config()
    model.check_batch_size(config.batch_size)  # before the folder is made (fit checks too)
    state = None if old is None else _resume_state(out, old, info, model, len(train.x))
    if model.conditional:  # the classes' shares of the data, for samples of p(x)
        counts = torch.bincount(train.labels.cpu(), minlength=model.num_classes)
        info.data["class_counts"] = counts.tolist()
    if moved:  # (said once the settings are known to match)
        warnings.warn(
            f"{data} holds the same points as {old.data['source']}, the file the run "
            "recorded (the same SHA-256): resuming on it, and config.json names it from now on",
            UserWarning,
            stacklevel=2,
        )
    damaged = _damaged_weights(out) if resume else None
    created = not out.exists()
    out.mkdir(exist_ok=True)
    save_checkpoint = checkpoint_saver(out, info)
    # The last epoch of this run in the folder: a resumed run's checkpoint, then each saved.
    saved = [state.epoch] if state is not None else []

    def epoch_end(m: FlowModel, s: TrainState) -> None:
        if save_checkpoint(m, s):
            saved.append(s.epoch)
        if on_epoch_end is not None:
            on_epoch_end(m, s)

    try:
        history = fit(
            model,
            train.x,
            train.labels,
            x_val=val.x,
            labels_val=val.labels,
            config=config,
            progress=progress,
            on_epoch_end=epoch_end,
            state=state,
        )
    except TrainingDiverged as err:
        err.saved_epoch = saved[-1] if saved else None
        if saved:  # the folder holds this run's epochs: say why they stop there
            info.extra["diverged"] = err.problem
            atomic_write(out / "config.json", json.dumps(info.to_json(), indent=2) + "\n")
        elif created and not any(out.iterdir()):
            out.rmdir()  # (another run the folder held is left as it was)
        raise
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a training that failed before its first epoch leaves no folder
        raise
    info.extra["train_seconds"] = history.seconds
    save_run(out, model, info, history)
    if damaged is not None:
        warnings.warn(
            f"{out / 'model.safetensors'} was {damaged}: written again from the run's "
            "checkpoint (and the epochs trained after it)",
            stacklevel=2,
        )
    return model, info, history


def _conditional_ways(entry: ModelType) -> str:
    """How to train on a file's labels, for a message about type ``entry``: its own
    ``--conditional``, or the types that are conditional."""
    if entry.conditional_option:
        return f"`flowscope train {entry.name} --conditional` learns p(x | label)"
    always = " or ".join(e.name for e in MODELS if e.conditional)
    optional = " or ".join(e.name for e in MODELS if e.conditional_option)
    return f"{always}, or {optional} with --conditional ({entry.name} has no conditional form)"


def _damaged_weights(run_dir: Path) -> str | None:
    """What is wrong with the weights file of a run folder, ``missing`` or ``damaged
    (why)`` (unreadable, or not matching its checksum), or ``None`` if it reads."""
    path = run_dir / "model.safetensors"
    if not path.is_file():
        return "missing"
    try:
        _read_tensors(path, remedy=None)
    except RunError as err:
        return f"damaged ({str(err).removeprefix(f'{path}: ')})"
    return None
