"""The model commands of the CLI: train, reflow, sample, log-prob, invert.

Every command checks its options, output paths and the run folder before any long work,
writes its files atomically (:func:`~flowscope.runs.atomic_write`), and reports bad input
as one line through :func:`~flowscope.cli.main`. Coordinates the user gives or gets are in
data units; a latent z is in the base distribution's units (N(0, I), standardized).

Sampler options (``--dt``, ``--steps``, ``--solver``) given for a model type that does not
take them (:attr:`~flowscope.models.ModelType.sample_options`) are ignored with a note on
stderr: a flow maps in one pass, so there is no step to choose, and the same command line
then works for every run folder. ``--guidance`` is refused instead: a model it cannot
steer would give samples of another distribution than the one asked for. The model types
and their ``train`` options come from :data:`~flowscope.models.MODELS`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import textwrap
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import defaults
from ..errors import TrainingDiverged
from ..matching.solvers import DEFAULT_DT, SOLVERS
from ..models import MODELS, Option
from ..recipe import TrainConfig, recipe
from ..tables import count
from . import CommandError, add_command, int_type, run_folder, text_table

if TYPE_CHECKING:
    import torch

# The parsers read plain-Python declarations only; the handlers import PyTorch, numpy and
# the run folders' module (flowscope.runs) when they run.

__all__ = ["add_commands"]


# -- option types: argparse names the flag in the message -------------------------------


_positive_int = int_type(1)
_seed = int_type(0)  # numpy's generators refuse negative seeds


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value + 0.0  # -0 is 0


def _step(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give a step in (0, 1], e.g. --dt 0.01"
        )
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(
            f"the step must be in (0, 1] (the flow runs over t in [0, 1]), got {text!r}"
        )
    return value


def point_type(text: str) -> tuple[float, float]:
    """An argparse ``type``: ``X,Y`` -> (x, y), two finite numbers."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"expected X,Y (two numbers and a comma, e.g. --point=-1.5,0.2), got {text!r}"
        )
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers X,Y") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"{text!r}: coordinates must be finite")
    return x, y


# -- checks and helpers shared by the commands ------------------------------------------


def output_path(path: str | None, flag: str) -> Path | None:
    """Check an output path before any work: its folder exists, it is not a folder, and
    it is not one of a run folder's own files (:data:`~flowscope.runs.RUN_FILES`), which
    writing there would destroy."""
    if path is None:
        return None
    from ..runs import RUN_FILES

    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{flag} {p}: is a folder; give a file name")
    if not p.parent.is_dir():
        raise CommandError(f"{flag} {p}: folder {p.parent} does not exist; create it first")
    own = (*RUN_FILES, EVAL_JSON) if flag != "--json" else RUN_FILES  # eval's own file
    if p.name in own and (p.parent / "config.json").is_file():
        raise CommandError(
            f"{flag} {p}: is a file of the run folder {p.parent}, which writing there would "
            "destroy; give another file name"
        )
    return p


def distinct_outputs(inputs: dict[str, Any] | None = None, **paths: Path | None) -> None:
    """Refuse, before any work, two outputs of one command that name the same file
    (``-o a.png --plot a.png`` would replace the one with the other) and an output that
    names one of the command's inputs (``--points in.csv -o in.csv``; the file a run was
    trained on, which the run then could no longer be evaluated or resumed from).

    Arguments:
        inputs: what each input is, in words, to its path (``None`` where there is none).
        paths: the outputs; keys are the flags with ``_`` for ``-`` and a leading ``o``
            for ``-o``.
    """
    read = {Path(p).resolve(): what for what, p in (inputs or {}).items() if p is not None}
    seen: dict[Path, str] = {}
    for key, p in paths.items():
        if p is None:
            continue
        flag = "-o" if key == "o" else "--" + key.replace("_", "-")
        where = p.resolve()
        if where in seen:
            raise CommandError(
                f"{seen[where]} and {flag} both name {p}; give each output its own file"
            )
        if where in read:
            raise CommandError(
                f"{flag} {p}: is {read[where]}, which writing there would destroy; give "
                "another file name"
            )
        seen[where] = flag


def run_input_files(run: str | Path) -> dict[str, Path]:
    """The files a run folder reads (:func:`~flowscope.runs.input_files`: its data file,
    a ``--source`` file, a rectified flow's pairs), each checked by its SHA-256 whenever
    the run is loaded, keyed by what each is, in words. Empty for an unreadable folder:
    the command that loads the run says what is wrong with it."""
    from ..errors import RunError
    from ..runs import input_files, read_info

    try:
        info = read_info(run)
    except RunError:
        return {}
    return {
        (
            f"the data file the run {run} was trained on"
            if key == "data"
            else f"the {key} file the model in {run} reads"
        ): path
        for key, path in input_files(info.data, info.model).items()
    }


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The files a command on a run reads: its ``--points`` file and the run's own."""
    return {"the --points file this command reads": getattr(args, "points", None)} | (
        run_input_files(args.run)
    )


def plot_path(path: str | None) -> Path | None:
    p = output_path(path, "--plot")
    if p is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        kinds = FigureCanvasAgg.get_supported_filetypes()
        if p.suffix.lower().lstrip(".") not in kinds:
            raise CommandError(
                f"--plot {p}: unknown image type {p.suffix!r}; use one of "
                + ", ".join(f".{k}" for k in sorted(kinds))
            )
    return p


def _class_names(model: Any) -> list[str]:
    return list(model.class_names or [str(i) for i in range(model.num_classes)])


def _known_classes(model: Any) -> str:
    names = _class_names(model)
    return ", ".join(str(i) if n == str(i) else f"{i} {n}" for i, n in enumerate(names))


def _label_id(value: str, model: Any, run: str) -> int:
    """A class id from a name (any case) or an id, for the model of ``run``."""
    if model.num_classes is None:
        raise CommandError(f"--label {value!r}: the model in {run} is unconditional; drop --label")
    try:
        return model.class_id(value)
    except ValueError:
        raise CommandError(
            f"--label {value!r}: unknown class; the model in {run} knows "
            f"{_known_classes(model)} (a name or an id)"
        ) from None


def _check_columns(points: str, info: Any, run: str) -> None:
    """Refuse a points file whose header names the run's two columns in the other order:
    the columns are read by position, so its points would be read transposed; a note for
    other names than the run's."""
    import warnings

    from ..data import column_names

    names, trained = column_names(points), info.data.get("columns")
    if not names or not trained:
        return
    have, want = [n.strip().lower() for n in names], [n.strip().lower() for n in trained]
    if have != want and sorted(have) == sorted(want):
        raise CommandError(
            f"{points}: the header names the columns {', '.join(names)}, and the model in "
            f"{run} was trained on {', '.join(trained)}; the columns are read by position, "
            "so swap the two columns"
        )
    if have != want:
        warnings.warn(
            f"{points}: the header names the columns {', '.join(names)}, and the model in {run} "
            f"was trained on {', '.join(trained)}; the columns are read by position, as "
            f"{names[0]} = {trained[0]} and {names[1]} = {trained[1]}",
            UserWarning,
            stacklevel=2,
        )


def _points(args: argparse.Namespace, model: Any, info: Any) -> tuple[torch.Tensor, Any]:
    """The points (N, 2) in data units and the labels (N,) or ``None`` the model needs."""
    import torch

    from ..data import load_points

    wider = "" if model.dtype == torch.float64 else "; --float64 reads it"
    if args.points is not None:
        try:
            x, file_labels = load_points(args.points, model.dtype)
        except ValueError as err:
            beyond = "beyond float32's range" in str(err)  # load_points's words for it
            raise CommandError(f"{err}{wider if beyond else ''}") from None
        _check_columns(args.points, info, args.run)
    else:
        x, file_labels = torch.tensor(args.point, dtype=model.dtype), None
        big = ~torch.isfinite(x).all(dim=1)
        if big.any():
            row = args.point[int(big.nonzero()[0, 0])]
            raise CommandError(
                f"--point {row[0]:g},{row[1]:g}: beyond {_dtype_name(model.dtype)}'s range "
                f"(|value| <= {torch.finfo(model.dtype).max:.4g}){wider}"
            )
    if model.num_classes is None:
        if file_labels is not None:
            raise CommandError(
                f"{args.points}: has a third column (labels), but the model in {args.run} is "
                "unconditional; give two columns x,y"
            )
        if args.label is not None:
            raise CommandError(
                f"--label {args.label!r}: the model in {args.run} is unconditional; drop --label"
            )
        return x, None
    if args.label is not None:
        if file_labels is not None:
            raise CommandError(
                f"{args.points} has a label column and --label is given; use one of the two"
            )
        return x, torch.full((len(x),), _label_id(args.label, model, args.run))
    if file_labels is None:
        raise CommandError(
            f"the model in {args.run} is conditional: give --label NAME_OR_ID or a third "
            f"column of class ids or names in --points (classes: {_known_classes(model)})"
        )
    if isinstance(file_labels, list):  # class names
        ids = {}
        for row, name in enumerate(file_labels):
            if name not in ids:
                try:
                    ids[name] = model.class_id(name)
                except ValueError:
                    raise CommandError(
                        f"{args.points}: row {row + 1}: {name!r} is not a class of the model "
                        f"in {args.run} ({_known_classes(model)})"
                    ) from None
        return x, torch.tensor([ids[name] for name in file_labels])
    bad = file_labels >= model.num_classes
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise CommandError(
            f"{args.points}: row {row + 1}: label {int(file_labels[row])} is not a class of "
            f"the model in {args.run} ({_known_classes(model)})"
        )
    return x, file_labels


def _check_far(values: torch.Tensor, x: torch.Tensor, what: str, run: str) -> None:
    """Refuse non-finite outputs (N, K) of finite points x (N, D): from a point far outside
    the data the model's arithmetic overflows (say which and how far), otherwise
    the model itself is broken (:func:`~flowscope.errors.check_finite`)."""
    import torch

    from ..errors import check_finite

    bad = ~torch.isfinite(values).reshape(len(values), -1).all(dim=1)
    if not bad.any():
        return
    row = int(bad.nonzero()[0, 0])
    # A model that maps some of the points, or points this far, is working: the far ones
    # overflow its float32 arithmetic. Otherwise its weights are broken.
    if not bad.all() or float(x[row].abs().max()) > 1e6:
        point = ", ".join(f"{v:.6g}" for v in x[row].tolist())
        raise CommandError(
            f"point ({point}): the {what} overflows {_dtype_name(x.dtype)} ({int(bad.sum())} "
            f"of {len(x)} "
            "points are too far from the data for the model's arithmetic); give points "
            "nearer the data"
        )
    check_finite(values, f"{what}s", run)


def _dtype_name(dtype: Any) -> str:
    """``float32`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The run's model on ``--device``, in float64 with ``--float64``, and its RunInfo."""
    import torch

    from .. import runs

    if getattr(args, "float64", False) and str(args.device).startswith("mps"):
        raise CommandError("--float64: mps computes in float32 only; use --device cpu or cuda")
    model, info = runs.load_run(args.run, args.device)
    if getattr(args, "float64", False):
        model = model.to(torch.float64)
    return model, info


def _axes(info: Any) -> list[str]:
    """The names of the two coordinates: the training file's header, else x and y."""
    names = info.data.get("columns")
    return list(names) if names and len(names) == 2 else ["x", "y"]


def _likelihood_options(args: argparse.Namespace, info: Any) -> dict[str, Any]:
    """``--divergence`` and ``--probes`` for a model type that takes them (the others
    compute their density exactly, in one pass: a note names what is ignored)."""
    import torch

    from ..runs import model_type_of

    entry = model_type_of(info)
    if args.probes is not None and args.divergence != "hutchinson":
        raise CommandError("--probes needs --divergence hutchinson (the exact one has none)")
    given = {"divergence": args.divergence, "probes": args.probes}
    ignored = [
        f"--{k}" for k, v in given.items() if v is not None and k not in entry.likelihood_options
    ]
    if ignored:
        print(
            f"flowscope: note: {' and '.join(ignored)} ignored: a {entry.title} computes its "
            "density exactly in one pass",
            file=sys.stderr,
        )
    options = {k: v for k, v in given.items() if v is not None and k in entry.likelihood_options}
    if options.get("divergence") == "hutchinson":
        options["generator"] = torch.Generator().manual_seed(args.seed)
    return options


def _guidance_for(args: argparse.Namespace, entry: Any, model: Any) -> float | None:
    """``--guidance`` as given, if the run's model type takes one.

    Raises:
        CommandError: for ``--guidance`` on a model that guidance cannot steer.
    """
    guidance = getattr(args, "guidance", None)
    if guidance is not None and not entry.takes("guidance"):
        why = "is unconditional" if model.num_classes is None else f"is a {entry.title}"
        steered = ", ".join(e.name for e in MODELS if e.takes("guidance"))
        raise CommandError(
            f"--guidance {guidance:g}: the model in {args.run} {why}; guidance steers a "
            f"{steered} model trained with --label-dropout towards a class (drop --guidance)"
        )
    return guidance


def _sample_options(args: argparse.Namespace, model: Any, info: Any) -> dict[str, Any]:
    """The sampler options given (``--dt``, ``--steps``, ``--solver``, ``--guidance``) that
    the run's model type takes; a note on stderr names the step options it does not (a
    flow maps in one pass).

    Raises:
        CommandError: for ``--guidance`` on a model that guidance cannot steer.
    """
    from ..runs import model_type_of

    entry = model_type_of(info)
    guidance = _guidance_for(args, entry, model)
    steps = {"dt": args.dt, "steps": args.steps, "solver": args.solver}
    ignored = [f"--{k}" for k, v in steps.items() if v is not None and not entry.takes(k)]
    if ignored:
        print(
            f"flowscope: note: {' and '.join(ignored)} ignored: a {entry.title} maps in one "
            "pass, without ODE steps",
            file=sys.stderr,
        )
    return entry.sampling(**steps, guidance=guidance)


def _model_args(args: argparse.Namespace) -> dict[str, Any]:
    """The constructor arguments that the model options on the command line set.

    Raises:
        CommandError: for an option the chosen type does not have, or two options that
            set the same argument differently.
    """
    entry = MODELS.get(args.model)
    mine = {o.flag for o in entry.options}
    model_args: dict[str, Any] = {}
    for option in _all_options():
        value = getattr(args, option.dest)
        if value is None:
            continue
        if option.flag not in mine:
            have = [e.name for e in MODELS if option.flag in {o.flag for o in e.options}]
            names = " and ".join([", ".join(have[:-1]), have[-1]] if len(have) > 2 else have)
            raise CommandError(f"{option.flag} applies to {names}, not to {args.model}")
        for key, v in option.to_args(value).items():
            if isinstance(v, dict) and isinstance(model_args.get(key), dict):
                merged = {**model_args[key], **v}
                clash = [k for k in v if k in model_args[key] and model_args[key][k] != v[k]]
                if clash:
                    raise CommandError(
                        f"{option.flag} and another option set the {key} differently "
                        f"({model_args[key]} and {v}); give one of them"
                    )
                v = merged
            model_args[key] = v
    return model_args


def _all_options() -> list[Option]:
    """Every registered type's model options, each flag once, in registration order."""
    seen: dict[str, Option] = {}
    for entry in MODELS:
        for option in entry.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())


def _option_type(parse: Any) -> Any:
    """An argparse ``type`` from an :class:`~flowscope.models.Option`'s parser."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _label_column(header: list[str], columns: list[Any], info: Any, labels: Any) -> None:
    """Append the label column to an output's ``header`` and ``columns``: the class names
    for a run trained on a data file whose label column held names (its outputs read as
    that file does), else the ids (the registry's data sets give ids, named or not).
    Nothing for ``labels`` None."""
    if labels is None:
        return
    header.append("label")
    ids = labels.cpu().numpy()
    names = info.data.get("class_names") if "sha256" in info.data else None
    columns.append(ids if not names else [names[i] for i in ids])


def _table(header: list[str], columns: list[Any]) -> tuple[str, str]:
    """The same values as CSV text and as an aligned table. The CSV gives each number
    in the fewest digits that read back to it in its column's dtype (float32: 3.6, not
    3.5999999; float64: all 17 digits where they are needed); a column of names (a list
    of str) as they are, quoted where a name holds a comma or a quote."""
    import csv
    import io

    import numpy as np

    def text(c: Any) -> list[str]:
        if isinstance(c, list):
            return list(c)
        if c.dtype.kind in "iu":
            return [str(int(v)) for v in c]
        if c.dtype == np.float32:
            return [str(v) for v in c]  # numpy's shortest round-trip text of a float32
        return [repr(float(v)) for v in c]  # Python's, of a float64

    texts = [text(c) for c in columns]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *zip(*texts, strict=True)])
    csv_text = buf.getvalue()
    shown = [
        t if isinstance(c, list) or c.dtype.kind in "iu" else [f"{float(v):.6g}" for v in c]
        for c, t in zip(columns, texts, strict=True)
    ]
    rows = [list(row) for row in zip(*shown, strict=True)]
    table = text_table([header, *rows], align="r" * len(header), min_width=10)
    return csv_text, table + "\n"


def _write(path: Path, text: str | bytes, what: str) -> None:
    from ..atomic import atomic_write

    atomic_write(path, text)
    print(f"wrote {what} to {path}", file=sys.stderr)


# -- train ------------------------------------------------------------------------------

TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "seed", "weight_decay", "noise")
#: The file ``flowscope eval`` writes in a run folder unless told otherwise.
EVAL_JSON = defaults.EVAL_FILE
DATA_FILES = defaults.DATA_SUFFIXES


def _train_defaults(model: str | None = None) -> dict[str, Any]:
    """The recipe of model type ``model`` (the study's, TrainConfig's defaults, where the
    type does not depart from it; :func:`~flowscope.recipe.recipe`) and the defaults of
    train_run (:mod:`flowscope.defaults`): one source of truth. ``None``: the study's
    recipe."""
    config = TrainConfig() if model is None else recipe(model)
    return {
        "data": defaults.STUDY_DATA,
        "n_points": defaults.STUDY_POINTS,
        "holdout_points": defaults.HOLDOUT_POINTS,
        **asdict(config),
    }


def _conditional(args: argparse.Namespace, model_args: dict[str, Any]) -> bool | None:
    """``--conditional``/``--no-conditional`` for the chosen type (``None``: not given, the
    type's default or, resuming, the run's).

    Raises:
        CommandError: for a type that cannot choose, or ``--standardize`` on a model
            trained without labels.
    """
    entry = MODELS.get(args.model)
    if args.conditional is not None:
        try:
            entry.is_conditional(args.conditional)
        except ValueError as err:
            flag = "--conditional" if args.conditional else "--no-conditional"
            raise CommandError(f"{flag}: {err}") from None
    if "standardize" in model_args and not (args.conditional or entry.conditional):
        if not args.resume:
            raise CommandError(
                f"--standardize chooses how a conditional {args.model} standardizes its "
                "classes; add --conditional (and labelled --data), or drop --standardize"
            )
    return args.conditional


#: How the help names a recipe's fields (``min_epochs``: the epochs a run of the study's
#: size trains; small data train longer).
_RECIPE_WORDS = {
    "min_epochs": "epochs",
    "batch_size": "batch size",
    "lr": "lr",
    "small_decay": "small-data weight decay",
    "small_noise": "small-data noise",
}


def _recipes() -> str:
    """The types whose training recipe departs from the study's, in words."""
    parts = []
    for entry in MODELS:
        if entry.recipe:
            own = ", ".join(f"{_RECIPE_WORDS.get(k, k)} {v:g}" for k, v in entry.recipe.items())
            parts.append(f"{entry.name} trains with its own ({own})")
    return ("; " + "; ".join(parts)) if parts else ""


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CommandError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard"
        ) from None
    return SummaryWriter


class _TensorBoard:
    """Epoch metrics and batch losses as TensorBoard scalars in ``RUN_DIR/tensorboard``."""

    def __init__(self, writer_class: type, log_dir: Path):
        self.writer_class, self.log_dir, self.writer = writer_class, log_dir, None

    def __call__(self, model: Any, state: Any) -> None:
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.log_dir))
        row = state.history.epochs[-1]
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, state.epoch)
        losses = state.history.batch_loss
        per_epoch = len(losses) // state.epoch
        for step in range(len(losses) - per_epoch, len(losses)):
            self.writer.add_scalar("batch/loss", losses[step], step + 1)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _train(args: argparse.Namespace) -> int:
    from .. import runs

    if args.folds is not None:
        for flag in ("resume", "tensorboard"):
            if getattr(args, flag):
                raise CommandError(
                    f"--folds cross-validates from scratch: drop --{flag} (or --folds)"
                )
    elif args.fold_seed is not None:
        raise CommandError("--fold-seed is the seed of --folds' split: give --folds K too")
    writer_class = _summary_writer() if args.tensorboard else None
    out = Path(args.out or f"runs/{args.model}" + ("-cv" if args.folds else ""))
    if not out.parent.exists() and args.folds is None:  # as `mkdir -p` (cross_validate's own)
        try:
            out.parent.mkdir(parents=True)
        except OSError as err:
            raise CommandError(
                f"--out {out}: cannot create {out.parent} ({err.strerror})"
            ) from None
    settings = _train_defaults(args.model)
    model_args = _model_args(args)
    conditional = _conditional(args, model_args)
    if args.resume and (out / "config.json").is_file():
        # Options not given on the command line continue with the run's own settings
        # (train_run does the same for the model's arguments).
        info = runs.read_info(out)
        settings.update(info.train)
        settings.update({k: info.data[k] for k in ("n_points", "holdout_points") if k in info.data})
        settings["data"] = info.data.get("source", settings["data"])
    data = args.data or settings["data"]
    counts = ("n_points", "holdout_points")
    for flag in counts:
        if getattr(args, flag) is not None and Path(data).suffix.lower() in DATA_FILES:
            print(
                f"flowscope: note: --{flag.replace('_', '-')} ignored: the file {data} gives "
                "all its rows (split 90/5/5)",
                file=sys.stderr,
            )
            setattr(args, flag, None)
    given = {k: getattr(args, k) for k in ("data", *counts, *TRAIN_OPTIONS)}
    settings.update({k: v for k, v in given.items() if v is not None})
    config = TrainConfig(**{f.name: settings[f.name] for f in fields(TrainConfig)})
    if config.noise is not None and config.noise > 1:
        print(
            f"flowscope: note: --noise {config.noise:g} is more than the data's own spread "
            "(1 in standardized units): the model will learn mostly the noise",
            file=sys.stderr,
        )

    if args.folds is not None:
        return _cross_validate(args, out, settings["data"], config, model_args, conditional)

    done: list[int] = []
    tensorboard = None if writer_class is None else _TensorBoard(writer_class, out / "tensorboard")

    def on_epoch_end(model: Any, state: Any) -> None:
        done.append(state.epoch)
        if tensorboard is not None:
            tensorboard(model, state)

    t0, started = time.perf_counter(), time.time()
    try:
        model, _, history = runs.train_run(
            args.model,
            out,
            data=settings["data"],
            n_points=settings["n_points"],
            holdout_points=settings["holdout_points"],
            config=config,
            model_args=model_args,
            overwrite=args.overwrite,
            resume=args.resume,
            on_epoch_end=on_epoch_end,
            device=args.device,
            conditional=conditional,
        )
    except KeyboardInterrupt:
        hint = "no epoch finished; nothing was saved"
        if (out / runs.CHECKPOINT).is_file():
            hint = (
                f"the last checkpoint is saved; continue with "
                f"`flowscope train {args.model} --out {out} --resume`"
            )
        print(f"flowscope: interrupted; {hint}", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        # fit's message is for library use; say what the command line wrote and can do.
        if err.saved_epoch is not None:
            kept = f"{out} keeps epoch {err.saved_epoch} (resuming would diverge again)"
        else:
            kept = "no epoch was saved" + (
                f"; {out} still holds the run it held" if (out / "config.json").is_file() else ""
            )
        raise CommandError(
            f"{err.problem}; {kept}. Train again with a smaller --lr or another --seed "
            "(--overwrite replaces the run)"
        ) from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    seconds = time.perf_counter() - t0
    last = history.epochs[-1] if history.epochs else {}
    if args.resume and not done:
        print(
            f"nothing to resume: {out} has finished its {len(history.epochs)} "
            f"epoch{'s' if len(history.epochs) != 1 else ''} "
            f"(validation loss {last.get('val_loss', math.nan):.4f}); measure it with "
            f"`flowscope eval {out}`, or train it again with --overwrite"
        )
        return 0
    stale = out / EVAL_JSON
    if stale.is_file() and stale.stat().st_mtime < started:
        stale.unlink()
        print(
            f"flowscope: note: removed {stale}: it measured the weights this training "
            f"replaced; measure the new ones with `flowscope eval {out}`",
            file=sys.stderr,
        )
    start = f" (resumed at epoch {done[0]})" if args.resume else ""
    # Flow matching's loss depends on where t is drawn and on the coordinates: not a
    # likelihood to compare runs by.
    per_class = ", each class standardized on its own" if model.standardization.per_class else ""
    loss = model.describe_loss()
    if loss:
        note = f" ({loss}{per_class}; compare models with `flowscope eval`)"
    else:  # the negative log-likelihood of the standardized validation points
        where = "each class's" if per_class else "the model's"
        note = f" nats/point (NLL in {where} standardized coordinates)"
    epochs = len(history.epochs)
    parts = [f"weight decay {history.weight_decay:g}"] if history.weight_decay else []
    if history.noise:
        parts.append(f"noise {history.noise:g} (standardized units) on its batches")
    regularized = f"with {' and '.join(parts)}" if parts else "without weight decay or noise"
    kept = ""
    if history.lengthened:  # a run lengthened for small data
        kept = f"; lengthened to at least {config.min_steps:,} steps for data this small, "
        kept += regularized
        if history.best_epoch is not None:
            kept += f"; kept epoch {history.best_epoch}, the best validation"
            last = history.epochs[history.best_epoch - 1]
    elif parts:  # given on a run of its own length
        kept = f"; {regularized}"
    # The command's wall time, with drawing the data and writing the run; the epochs
    # alone are config.json's train_seconds (a resumed run's include the earlier ones).
    took = f"{seconds:.1f} s"
    if not args.resume:
        took += f" ({history.seconds:.1f} s of it in the epochs)"
    print(
        f"trained {args.model} on {settings['data']} for {epochs} "
        f"epoch{'s' if epochs != 1 else ''}{start} in "
        f"{took}{kept}; validation loss {last.get('val_loss', math.nan):.4f}{note}\n"
        f"run saved to {out}"
    )
    if history.length_note:
        print(f"flowscope: note: {history.length_note}", file=sys.stderr)
    if history.fast_path_note:
        print(
            f"flowscope: note: trained with PyTorch operations, not the fused kernel: "
            f"{history.fast_path_note}",
            file=sys.stderr,
        )
    return 0


def _cross_validate(
    args: argparse.Namespace, out: Path, data: str, config: Any, model_args: Any, conditional: Any
) -> int:
    """``train MODEL --data FILE --folds K``: :func:`flowscope.crossval.cross_validate`,
    a line per fold on stderr, then the totals against the mixture."""
    from ..crossval import CV_JSON, cross_validate
    from ..evaluate import baseline_verdict

    if not args.data:  # (cross_validate refuses a registry name given)
        raise CommandError("--folds cross-validates a data file: give --data FILE")
    t0, seed = time.perf_counter(), args.fold_seed or 0

    def on_fold(k: int, fold: Any) -> None:
        print(
            f"fold {k} of {args.folds}: held-out NLL {float(fold.nll.mean()):.4f}, mixture "
            f"{float(fold.baseline.mean()):.4f} nats/point on {count(len(fold.nll), 'row')} "
            f"(trained in {fold.seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    try:
        cv = cross_validate(
            args.model,
            data,
            out,
            folds=args.folds,
            seed=seed,
            config=config,
            model_args=model_args,
            conditional=conditional,
            overwrite=args.overwrite,
            device=args.device,
            progress=None,
            on_fold=on_fold,
        )
    except KeyboardInterrupt:
        print(
            f"flowscope: interrupted; nothing of this cross-validation was kept ({out} is as "
            "it was)",
            file=sys.stderr,
        )
        return 130
    if cv.folds[0].length_note:
        print(f"flowscope: note: each fold's run: {cv.folds[0].length_note}", file=sys.stderr)
    s = cv.summary()
    given = "-log p(x | class)" if cv.conditional else "-log p(x)"
    rows = [
        ("", "held-out NLL", ""),
        (
            args.model,
            _mean_sem(s["nll"], s["nll_sem"]),
            f"nats/point ({given}, data units) ± standard error",
        ),
        (
            "Gaussian mixture",
            _mean_sem(s["baseline"], s["baseline_sem"]),
            "scikit-learn, components by BIC, fitted to each fold's run's training points",
        ),
    ]
    verdict = "no verdict: an NLL is infinite"
    if s["difference"] is not None:
        verdict = baseline_verdict(-s["difference"], s["difference_sem"], s["points"], "row")
    off = ""
    if s["difference_off"] is not None:
        off = (
            f"\n{count(s['collapsed_points'], 'row')} lie on components of the mixture "
            "collapsed onto repeated values (a spread at scikit-learn's covariance floor, "
            "where a density can be made as high as wished); on the other "
            f"{s['points_off']:,}: "
            + baseline_verdict(
                -s["difference_off"], s["difference_off_sem"], s["points_off"], "row"
            )
        )
    by_fold = ""
    if s["fold_differences"] is not None:
        shown = ", ".join(f"{-d:+.4f}" for d in s["fold_differences"])
        lead = -statistics.fmean(s["fold_differences"])
        error = "standard error over the folds"
        by_fold = (
            f"\nfold by fold, the model's lead ({shown}): "
            + baseline_verdict(lead, s["fold_difference_sem"], args.folds, "fold", error)
            + " (t over the folds is coarse where the rows' is optimistic: "
            "flowscope.crossval says why)"
        )
    print(
        f"cross-validated {args.model} on {data} in {args.folds} folds (seed "
        f"{seed}): every one of its {s['points']:,} rows held out once, "
        f"{time.perf_counter() - t0:.1f} s\n"
        + text_table(rows, align="lrl")
        + f"\nagainst the mixture, paired over the rows: {verdict}{off}{by_fold}\n"
        f"wrote {out / CV_JSON}; the folds' runs are {out}/fold-1 ... fold-{args.folds}"
    )
    return 0


def _mean_sem(mean: float | None, sem: float | None) -> str:
    if mean is None:
        return "inf"
    return f"{mean:.4f}" + ("" if sem is None else f" ± {sem:.4f}")


# -- reflow -----------------------------------------------------------------------------


def _reflow(args: argparse.Namespace) -> int:
    from ..reflow import reflow_run
    from ..runs import read_info

    out = Path(args.out)
    # The recipe: the resumed run's, else the parent's, then the options given.
    was = out if args.resume and (out / "config.json").is_file() else Path(args.run)
    recorded = read_info(was)
    given = {k: v for k in TRAIN_OPTIONS if (v := getattr(args, k, None)) is not None}
    config = TrainConfig(**{**recorded.train, "noise": None, **given})  # no noise on pairs
    n_points = args.n_points
    if n_points is None and "parent" in recorded.extra:  # resuming: the pairs it was drawn with
        n_points = int(recorded.extra["parent"]["pairs"])
    # The time sampler and the skip: the options given, else the resumed run's, else
    # reflow_run's defaults (U[0, 1]; no skip, or the parent's with --warm-start).
    times, a = None, args.time_alpha
    if a is not None:
        times = {"name": "uniform"} if a == 1 else {"name": "beta", "alpha": a}
    t0 = time.perf_counter()
    fresh = not (args.resume and (out / "config.json").is_file())
    if fresh and sys.stderr.isatty():  # drawing takes a while; progress, as training's bar
        how_many = f"{n_points:,} pairs" if n_points else "its pairs"
        print(f"drawing {how_many} from {args.run}'s model, then training...", file=sys.stderr)
    _, info, history = reflow_run(
        args.run,
        out,
        n_points=n_points,
        config=config,
        dt=DEFAULT_DT if args.dt is None else args.dt,
        solver=args.solver or "euler",
        overwrite=args.overwrite,
        resume=args.resume,
        device=args.device,
        warm_start=args.warm_start,
        times=times,
        gaussian_skip=args.gaussian_skip,
    )
    parent = info.extra["parent"]
    last = history.epochs[-1] if history.epochs else {}
    print(
        f"trained the {parent['rectified']}-rectified {info.extra['name']} of {args.run} on "
        f"{parent['pairs']:,} pairs ({parent['sampler']}) for {len(history.epochs)} "
        f"epoch{'s' if len(history.epochs) != 1 else ''} in {time.perf_counter() - t0:.1f} s; "
        f"validation loss {last.get('val_loss', math.nan):.4f}\nrun saved to {out}"
    )
    return 0


# -- sample -----------------------------------------------------------------------------


def _sample(args: argparse.Namespace) -> int:
    import torch

    from .. import runs
    from ..errors import check_finite

    out, plot = output_path(args.output, "-o"), plot_path(args.plot)
    distinct_outputs(_inputs(args), o=out, plot=plot)
    model, info = runs.load_run(args.run, args.device)
    options = _sample_options(args, model, info)
    n = args.n
    labels = None
    if args.label is not None:
        labels = torch.full((n,), _label_id(args.label, model, args.run))
    elif model.num_classes is not None:  # in the training data's shares: samples of p(x)
        from ..data import class_labels

        counts = info.data.get("class_counts") or [1] * model.num_classes  # (older runs)
        labels = class_labels(n, counts)
    gen = torch.Generator().manual_seed(args.seed)
    x = model.sample(n, labels=labels, generator=gen, **options)
    check_finite(x, "samples", args.run)
    pts = x.cpu().numpy()
    header, columns = _axes(info), [pts[:, 0], pts[:, 1]]
    _label_column(header, columns, info, labels)
    csv, _ = _table(header, columns)
    if out is not None:
        _write(out, csv, count(n, "sample"))
    elif plot is None:
        sys.stdout.write(csv)
    if plot is not None:
        from .. import plots

        names = _class_names(model) if labels is not None else []
        fig = plots.class_scatter(
            [(pts, labels, _sample_title(n, args, model, options))],
            class_names=names,
            size=max(0.5, min(8.0, 4000 / n)),
            alpha=0.7,
            rasterized=False,  # every point a shape in SVG or PDF, as asked for
            # all points, none on the frame's edge, whatever the axes' scales
            frame=plots.limits([pts], pad=0.0, quantile=1.0, rings=False, margin=0.03),
            axis_names=_axes(info),
        )
        plots.save(fig, plot, write=runs.atomic_write)
        print(f"wrote the plot to {plot}", file=sys.stderr)
    return 0


def _sample_title(n: int, args: argparse.Namespace, model: Any, options: dict) -> str:
    """What the plot shows: e.g. ``1,000 samples of blue from runs/cfg (guidance w = 2,
    4 euler steps)``: the class and the sampler options given, in lines of at most 50
    characters."""
    what = count(n, "sample")
    if args.label is not None:
        what += f" of {_class_names(model)[_label_id(args.label, model, args.run)]}"
    how = []
    if options.get("guidance") is not None:
        how.append(f"guidance w = {options['guidance']:g}")
    solver = options.get("solver", "euler")  # the command line's names
    if "dt" in options or "steps" in options:  # a flow maps in one pass: no steps
        if args.steps is not None:
            how.append(f"{args.steps} {solver} step{'s' if args.steps != 1 else ''}")
        else:
            how.append(f"{solver} steps of {args.dt:g}")
    elif "solver" in options:
        how.append(solver)
    title = f"{what} from {args.run}" + (f" ({', '.join(how)})" if how else "")
    return textwrap.fill(title, 50, break_long_words=False, break_on_hyphens=False)


# -- log-prob ---------------------------------------------------------------------------


def _log_prob(args: argparse.Namespace) -> int:
    import torch

    from .. import runs

    out = output_path(args.output, "-o")
    distinct_outputs(_inputs(args), o=out)
    model, info = _load(args)
    x, labels = _points(args, model, info)
    options = _likelihood_options(args, info)
    guidance = _guidance_for(args, runs.model_type_of(info), model)
    if guidance is not None:  # 1 is the model's own density; any other w: the reason
        options["guidance"] = guidance
    # One solve: the data-unit density differs from the standardized one by the log|det|
    # of the standardization (per class for a model standardized per class).
    lp_std = model.log_prob(x, labels, standardized=True, **options)
    lp = lp_std + model.standardization.log_abs_det(labels)
    _check_far(torch.where(lp == -math.inf, 0.0, lp)[:, None], x, "log-density", args.run)
    low = int((lp == -math.inf).sum())
    if low:
        print(
            f"flowscope: note: {low} of {len(x)} log-densities are -inf: their magnitude "
            f"leaves {_dtype_name(model.dtype)}'s range (about "
            f"{torch.finfo(model.dtype).max:.2g}; points far from the data)"
            + ("" if args.float64 else "; --float64 computes it"),
            file=sys.stderr,
        )
    pts = x.cpu().numpy()
    header, columns = _axes(info), [pts[:, 0], pts[:, 1]]
    _label_column(header, columns, info, labels)
    header += ["log_prob", "log_prob_standardized"]
    columns += [lp.cpu().numpy(), lp_std.cpu().numpy()]
    csv, table = _table(header, columns)
    if out is not None:
        _write(out, csv, f"the log-densities of {count(len(x), 'point')}")
    else:
        sys.stdout.write(table)
    return 0


# -- invert -----------------------------------------------------------------------------


def _invert(args: argparse.Namespace) -> int:
    import numpy as np

    out, traj_out = output_path(args.output, "-o"), output_path(args.trajectory, "--trajectory")
    distinct_outputs(_inputs(args), o=out, trajectory=traj_out)
    model, info = _load(args)
    options = _sample_options(args, model, info)
    x, labels = _points(args, model, info)
    z = model.encode(x, labels, **options)
    _check_far(z, x, "latent", args.run)
    if model.exact_inverse:
        _note_round_trip(model, x, z, labels, args.float64)
    path = None
    if traj_out is not None:
        path = model.trajectory(x, labels=labels, inverse=True, **options)
    pts, lat = x.cpu().numpy(), z.cpu().numpy()
    header, columns = _axes(info), [pts[:, 0], pts[:, 1]]
    _label_column(header, columns, info, labels)
    header += ["z1", "z2"]
    columns += [lat[:, 0], lat[:, 1]]
    csv, table = _table(header, columns)
    if out is not None:
        _write(out, csv, f"the latents of {count(len(x), 'point')}")
    else:
        sys.stdout.write(table)
    if path is not None:
        steps, n = path.shape[:2]
        flat = path.cpu().numpy().reshape(-1, 2)  # (steps * N, 2), step-major
        traj_csv, _ = _table(
            ["step", "point", "x", "y"],
            [np.repeat(np.arange(steps), n), np.tile(np.arange(n), steps), flat[:, 0], flat[:, 1]],
        )
        _write(
            traj_out, traj_csv, f"the trajectory ({count(steps, 'state')} of {count(n, 'point')})"
        )
    return 0


def _note_round_trip(model: Any, x: Any, z: Any, labels: Any, float64: bool) -> None:
    """Say so when latents z of points x do not decode back to them (off by more than
    1e-4 (1 + |x|)): where a flow squeezes space by more than the dtype resolves (empty
    space, far from the data or inside a hole of it), its latents cannot carry the points
    back, however exact the inverse's formula."""
    back = model.decode(z, labels)
    err = (back - x).abs().amax(dim=1)
    off = err > 1e-4 * (1 + x.abs().amax(dim=1))
    if not off.any():
        return
    dtype = _dtype_name(model.dtype)
    advice = "" if float64 else "; --float64 computes in double precision"
    rows = off.nonzero()[:, 0].tolist()
    named = ", ".join("(" + ", ".join(f"{v:.6g}" for v in x[r].tolist()) + ")" for r in rows[:3])
    if len(rows) > 3:
        named += f" and {len(rows) - 3} more"
    print(
        f"flowscope: note: {int(off.sum())} of {len(x)} points, {named}, do not come back "
        "from their "
        f"{dtype} latents (decoding them is off by up to {float(err[off].max()):.3g} data "
        "units): "
        f"the flow squeezes the space around them (empty space, far from the data or in a "
        f"hole of it) more than {dtype} resolves{advice}",
        file=sys.stderr,
    )


# -- the parsers ------------------------------------------------------------------------


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", metavar="RUN_DIR", type=run_folder, help="a run folder written by `flowscope train`"
    )
    add_device(p)


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where the model computes (the kernels run on the CPU only)."""
    p.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="where the model computes: cpu (default), cuda, cuda:N or mps; the fused "
        "training kernels run on the CPU only",
    )


def _device(text: str) -> str:
    if text == "cpu":  # the default, always there: argparse checks it on every command line
        return text
    from ..base import resolve_device

    try:
        resolve_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _add_points(p: argparse.ArgumentParser) -> None:
    _add_run(p)
    p.add_argument(
        "--float64",
        action="store_true",
        help="compute in double precision (the model is trained in float32): for points "
        "far from the data, where float32's latents and densities lose their digits",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--points",
        metavar="FILE",
        help=".csv/.npy/.npz with columns x,y (and, for a conditional model, a class id)",
    )
    src.add_argument(
        "--point",
        metavar="X,Y",
        type=point_type,
        action="append",
        help="one point in data units; repeat for more (write --point=-1,0 for a negative X)",
    )
    p.add_argument(
        "--label",
        metavar="NAME_OR_ID",
        help="class of every point, for a conditional model (e.g. blue or 1)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write CSV here instead of a table")


def _add_flow_options(p: argparse.ArgumentParser) -> None:
    step = p.add_mutually_exclusive_group()
    step.add_argument(
        "--dt",
        type=_step,
        help=f"ODE step in (0, 1] for flow matching (default {DEFAULT_DT}); a flow ignores it",
    )
    step.add_argument(
        "--steps",
        type=_positive_int,
        metavar="K",
        help="K fixed steps over t in [0, 1] for flow matching (dt = 1/K; Euler unless "
        "--solver says otherwise), e.g. --steps 4 for few-step sampling; a flow ignores it",
    )
    p.add_argument(
        "--solver",
        choices=SOLVERS,
        help="ODE solver for flow matching (default euler); a flow ignores it",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``reflow``, ``sample``, ``log-prob`` and ``invert`` to the
    ``flowscope`` parser."""
    _add_train(sub)
    _add_reflow(sub)
    _add_sample(sub)
    _add_log_prob(sub)
    _add_invert(sub)


_TRAIN_EXAMPLES = (
    "flowscope train nf --epochs 7 --out runs/nf",
    "flowscope train nsf --out runs/nsf   # a neural spline flow, with its own recipe",
    "flowscope train nsf --conditional --out runs/nsf-rings   # log p(x | ring)",
    "flowscope train fm --time-alpha 1 --no-gaussian-skip --out runs/fm-plain"
    "   # the study's network and uniform t",
    "flowscope train cfm --standardize global --out runs/cfm-global",
    "flowscope train cfm --data points.csv --out runs/mine   # rows x,y,label",
    "flowscope train nf --data points.csv --folds 5   # every row held out once, against a mixture",
)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``flowscope train MODEL``: the recipe's options, then every registered type's;
    ``flowscope train MODEL --help`` shows that type's alone (:class:`_TrainHelp`)."""
    d = _train_defaults()
    p = add_command(
        sub,
        "train",
        "Train a model and save a run folder. Defaults: the study's recipe (Adam, lr "
        f"{d['lr']:g} with cosine decay, batches of {d['batch_size']}, {d['n_points']:,} "
        f"{d['data']} points, {d['min_epochs']} epochs; small data sets train at least "
        f"{d['min_steps']:,} steps, with weight decay and noise on their batches){_recipes()}. "
        "`flowscope train MODEL --help` shows that type's options alone.",
        "\n  ".join(_TRAIN_EXAMPLES),
        _train,
        add_help=False,
    )
    _fill_train(p, None)


class _TrainHelp(argparse.Action):
    """``-h``/``--help`` of ``train``: after ``train MODEL`` (argparse has read the type by
    then), the help of that type alone, with its recipe's defaults; else every type's."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        name = getattr(namespace, "model", None)
        if name in MODELS.names():
            parser = _train_parser(name, parser.prog)
        parser.print_help()
        parser.exit()


def _train_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """The help-only parser of ``flowscope train NAME``."""
    from . import _formatter

    entry = MODELS.get(name)
    d = _train_defaults(name)
    own = "its own recipe" if entry.recipe else "the study's recipe"
    noise = f" and noise {d['small_noise']:g} (standardized units) on their batches"
    noise = noise if d["small_noise"] else ""
    examples = [e for e in _TRAIN_EXAMPLES if e.startswith(f"flowscope train {name} ")]
    examples = examples or [f"flowscope train {name} --out runs/{name}"]
    p = argparse.ArgumentParser(
        prog=prog,
        add_help=False,
        description=f"Train a model of type {name} ({entry.title}) and save a run folder. "
        f"Defaults: {own} "
        f"(Adam, lr {d['lr']:g} with cosine decay, batches of {d['batch_size']}, "
        f"{d['n_points']:,} {d['data']} points, {d['min_epochs']} epochs; small data sets "
        f"train at least {d['min_steps']:,} steps, with weight decay {d['small_decay']:g}"
        f"{noise}).",
        epilog="example:\n  " + "\n  ".join(examples),
        formatter_class=_formatter,
    )
    _fill_train(p, name)
    return p


def _fill_train(p: argparse.ArgumentParser, name: str | None) -> None:
    """The arguments of ``train``: every type's (``name`` None) or type ``name``'s alone,
    with its recipe's defaults in their help."""
    p.add_argument(
        "-h",
        "--help",
        action=_TrainHelp,
        help="show this help message and exit (after MODEL: that type's options alone)",
    )
    entries = list(MODELS) if name is None else [MODELS.get(name)]
    p.add_argument(
        "model",
        choices=MODELS.names(),
        help="the model type: " + "; ".join(f"{e.name}, {e.title}" for e in MODELS),
    )
    _add_recipe_options(p, _train_defaults(name), one=name is not None)
    optional = [e.name for e in entries if e.conditional_option]
    if optional:
        p.add_argument(
            "--conditional",
            action=argparse.BooleanOptionalAction,
            help=("" if name is not None else f"{', '.join(optional)}: ")
            + "condition on the data's class labels (--data "
            "olympic gives the rings'; a file its third column), so that log-prob and "
            "sample take a --label; default off (resuming: the run's choice)",
        )
    _add_model_options(p, None if name is None else entries[0])
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/MODEL)")
    add_device(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run; options not given keep the run's values",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files to RUN_DIR/tensorboard (needs tensorboard)",
    )
    p.add_argument(
        "--folds",
        type=int_type(2),
        metavar="K",
        help="cross-validate on a --data file instead of training one run: K runs, each "
        "trained on all rows but one fold's and scored on that fold, beside the Gaussian "
        "mixture fitted to the same training points, so that every row is held out once "
        "(a small file's own test part is 5%% of it); writes RUN_DIR/fold-1 ... fold-K "
        "and RUN_DIR/cv.json (default RUN_DIR runs/MODEL-cv)",
    )
    p.add_argument(
        "--fold-seed",
        type=_seed,
        metavar="SEED",
        help="with --folds: the seed of the rows' split into folds (default 0)",
    )


def _add_recipe_options(
    p: argparse.ArgumentParser, d: dict[str, Any], data: bool = True, one: bool = True
) -> None:
    """The data and training options of ``train``, with the defaults ``d`` in their help
    (``data=False``: without ``--data`` and ``--noise``, for ``reflow``, whose data are
    its pairs; ``one=False``: ``d`` is the study's recipe in the help of every type)."""
    if data:
        _add_data_option(p, d)
    epochs = f"default {d['epochs']}"
    if "min_epochs" in d:
        epochs = (
            f"exactly this many (default {d['min_epochs']}, or as many more as make "
            f"{d['min_steps']:,} steps on small data, which are then regularized by "
            "weight decay and noise)"
        )
    p.add_argument("--epochs", type=_positive_int, help=epochs)
    p.add_argument("--batch-size", type=_positive_int, help=f"default {d['batch_size']}")
    p.add_argument("--lr", type=_positive_float, help=f"Adam's learning rate (default {d['lr']})")
    # One type's own values, or (every type's help) the study's and the departures.
    own = "" if one else " (the shared recipe's; the types with their own are named above)"
    decay = (
        f"default none, or {d['small_decay']:g} on a run lengthened for small data{own}"
        if "small_decay" in d
        else "default the parent's"
    )
    p.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        metavar="W",
        help=f"decoupled weight decay (AdamW's) on every step, >= 0; {decay}",
    )
    if data:  # (reflow's fixed pairs take no noise)
        p.add_argument(
            "--noise",
            type=_non_negative_float,
            metavar="SD",
            help="standard deviation of Gaussian noise added afresh to every training "
            "batch, in standardized units, >= 0 (noise regularization); default none, or "
            f"{d['small_noise']:g} on a run lengthened for small data{own}",
        )
    p.add_argument(
        "--n-points",
        type=int_type(2),
        help=f"training points drawn, >= 2 (default {d['n_points']})",
    )
    if data:
        p.add_argument(
            "--holdout-points",
            type=int_type(1),
            metavar="N",
            help="validation points and test points (N each) drawn of registry data, >= 1 "
            f"(default {defaults.HOLDOUT_POINTS}; a file is split 90/5/5); the test part "
            "is what `flowscope eval` scores",
        )
    p.add_argument(
        "--seed", type=_seed, help=f"initialisation and shuffling, >= 0 (default {d['seed']})"
    )


def _add_data_option(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    p.add_argument(
        "--data",
        help=f"olympic, moons, 8gaussians, checkerboard, 2spirals, pinwheel, circles, "
        "swissroll, or a .csv/.npy/.npz file: columns x, y and, for a conditional model "
        "(cfm, or --conditional), a label: class ids 0, 1, ... or names (numbered in "
        "sorted order); a csv may have a header; at least 16 rows, split 90/5/5 into train, "
        f"validation and test (default {d['data']})",
    )


def _add_reflow(sub: argparse._SubParsersAction) -> None:
    """``flowscope reflow RUN_DIR --out RUN_DIR2``."""
    p = add_command(
        sub,
        "reflow",
        "Train the rectified flow of a flow-matching run (Liu et al. 2022, "
        "arXiv:2209.03003): draw (noise, sample) pairs by integrating its model, then train "
        "a model of its type and settings on those pairs (OUT/pairs.npz), with t ~ U[0, 1] and "
        "no Gaussian skip; apply it again for the k-rectified flow. Training options not "
        "given keep the parent's.",
        "flowscope reflow runs/fm --out runs/fm-2rf --epochs 10 --n-points 100000",
        _reflow,
    )
    _add_run(p)
    p.add_argument("--out", metavar="RUN_DIR", required=True, help="the new run folder")
    d = {k: "the parent's" for k in ("epochs", "batch_size", "lr", "seed")}
    _add_recipe_options(p, {**d, "n_points": "the parent's training points"}, data=False)
    p.add_argument(
        "--dt",
        type=_step,
        help=f"ODE step of the integration that draws the pairs (default {DEFAULT_DT})",
    )
    p.add_argument(
        "--solver", choices=SOLVERS, help="ODE solver that draws the pairs (default euler)"
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="start from the parent's weights instead of a fresh initialisation",
    )
    p.add_argument(
        "--time-alpha",
        type=_positive_float,
        metavar="A",
        help="draw the training times t from Beta(A, 1), density A t^(A-1) (default 1: "
        "U[0, 1], rectified flow's, whatever the parent's sampler; fm's default A = 5 trains "
        "mostly near the data and hardly at t = 0, where one Euler step reads the field)",
    )
    p.add_argument(
        "--gaussian-skip",
        action=argparse.BooleanOptionalAction,
        help="add the exact field of Gaussian data under independent pairs to the network "
        "(default off: the pairs are not independent; with --warm-start the parent's, so "
        "that its weights give its field)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted reflow run with its pairs; options not given keep the "
        "run's values",
    )


def _add_model_options(p: argparse.ArgumentParser, entry: Any = None) -> None:
    """Every registered type's model options, each flag once, its help naming the types;
    or (``entry``) that type's alone."""
    for option in _all_options() if entry is None else entry.options:
        have = [e.name for e in MODELS if option in e.options]
        named = "" if entry is not None else f"{', '.join(have)}: "
        kwargs: dict[str, Any] = {
            "help": named + option.help_for(None if entry is None else entry.name)
        }
        if option.parse is None:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=_option_type(option.parse), metavar=option.metavar)
            if option.const is not None:
                kwargs.update(nargs="?", const=option.const)
            if option.choices is not None:
                kwargs.update(choices=option.choices, metavar=None)
        p.add_argument(option.flag, **kwargs)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    """``flowscope sample RUN_DIR``."""
    p = add_command(
        sub,
        "sample",
        "Draw points from a trained model; write them as CSV (x,y[,label]) and/or a plot.",
        "flowscope sample runs/cfm -n 1000 --label blue --plot blue.png\n"
        "  flowscope sample runs/cfg --label blue --guidance 2   # trained with --label-dropout\n"
        "  flowscope sample runs/fm --steps 4   # four Euler steps",
        _sample,
    )
    _add_run(p)
    p.add_argument("-n", type=_positive_int, default=1000, help="number of points (default 1000)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the noise, >= 0 (default 0)")
    _add_flow_options(p)
    p.add_argument(
        "--label",
        metavar="NAME_OR_ID",
        help="class to draw from a conditional model (default: every class, in its share of "
        "the training points, so that the samples are of p(x); runs trained before the "
        "shares were recorded: balanced)",
    )
    p.add_argument(
        "--guidance",
        type=_option_type(_guidance),
        metavar="W",
        help="classifier-free guidance scale W >= 0 for a cfm trained with --label-dropout: "
        "the velocity is v_null + W (v_class - v_null); 1: the conditional model (the "
        "default), 0: the unconditional one, > 1: samples pushed further into their class",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="CSV file (default: stdout unless --plot is given)"
    )
    p.add_argument("--plot", metavar="IMAGE", help="scatter plot, e.g. samples.png")


def _guidance(text: str) -> float:
    from ..matching.guidance import check_guidance  # PyTorch: only when --guidance is given

    return check_guidance(text)


def _add_log_prob(sub: argparse._SubParsersAction) -> None:
    """``flowscope log-prob RUN_DIR``."""
    p = add_command(
        sub,
        "log-prob",
        "Log-density of points in nats, in data units and in the model's standardized space "
        "(flow matching: rk4 with 100 steps, exact divergence unless asked). A density "
        "can exceed 1 (log p > 0) where the points are concentrated: it is per unit area, "
        "not a probability.",
        "flowscope log-prob runs/nf --point 0,1 --point=-1,0.5",
        _log_prob,
    )
    _add_points(p)
    p.add_argument(
        "--divergence",
        choices=("exact", "hutchinson"),
        help="flow matching: the divergence along the ODE, exact (default; in 2D only twice "
        "the cost) or Hutchinson's one-pass estimate, unbiased but off by a random error per "
        "point that changes from call to call (--seed fixes it)",
    )
    p.add_argument(
        "--probes",
        type=int_type(1),
        metavar="K",
        help="with --divergence hutchinson: average K estimates per point (the error falls "
        "as 1/sqrt(K); default 1)",
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of Hutchinson's probes, >= 0 (default 0)"
    )
    p.add_argument(
        "--guidance",
        type=_option_type(_guidance),
        metavar="W",
        help="for a cfm trained with --label-dropout: only 1, the conditional model's own "
        "density; a guided field (W != 1) is not the velocity of a probability path the "
        "model learned, so it has no normalized density and is refused with that reason",
    )


def _add_invert(sub: argparse._SubParsersAction) -> None:
    """``flowscope invert RUN_DIR``."""
    p = add_command(
        sub,
        "invert",
        "Map points to their latents z (N(0, I) units): a flow's inverse, or flow matching "
        "run backwards from t = 1 to 0.",
        "flowscope invert runs/fm --point 2,1 --trajectory path.csv",
        _invert,
    )
    _add_points(p)
    _add_flow_options(p)
    p.add_argument(
        "--trajectory",
        metavar="FILE",
        help="CSV of the path in data units, columns step,point,x,y (a flow: one step per "
        "coupling; flow matching: one per ODE step)",
    )
