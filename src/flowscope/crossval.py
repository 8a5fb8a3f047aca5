"""K-fold cross-validation of a model type on a data file, against the Gaussian mixture.

A data file of a few hundred points leaves a run a test part of a dozen (its 5%): too few
to tell two models apart. Cross-validation holds every point out once: the file's rows
are split into K folds by a seeded permutation; for each fold, a run is trained on the
other folds exactly as ``flowscope train MODEL --data FILE`` trains on a file (its own
90/5/5 split into train, validation and test), and the held-out fold is scored by the
run's model and by the baseline ``flowscope eval`` prints, a BIC-chosen Gaussian mixture
fitted to the same training points (:func:`~flowscope.baseline.mixture_baseline`). The
comparison is paired over all N points, with Student's t on N - 1 degrees of freedom.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .baseline import mixture_baseline
from .data import load_points
from .data.checks import check_int
from .data.files import column_names
from .errors import RunError
from .metrics import heldout_nll, standard_error

__all__ = ["CV_JSON", "CrossValidation", "Fold", "cross_validate", "fold_indices"]

#: The file :func:`cross_validate` writes in its folder.
CV_JSON = "cv.json"
#: The fewest rows a fold's training file may have: a run splits its file 90/5/5 and
#: needs a validation and a test point (:func:`flowscope.runs.train_run`).
MIN_TRAIN_ROWS = 16
#: The names of a fold's training file and run folder.
_FOLD = re.compile(r"fold-[1-9][0-9]*(\.csv)?")


def fold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` disjoint sets of row indices covering range(n), from a permutation seeded
    by ``seed`` (numpy's ``default_rng``); their sizes differ by at most one.

    Raises:
        ValueError: for ``folds`` < 2 or more folds than rows.
    """
    n, folds = check_int(n, "n", minimum=0), check_int(folds, "folds", minimum=2)
    if folds > n:
        raise ValueError(f"{folds} folds of {n} rows: give at most {n} folds")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


@dataclass
class Fold:
    """One fold: its held-out rows and how the model and the mixture scored them.

    Attributes:
        test_index: (M,) the rows of the file held out (0-based, in the file's order of
            data rows).
        nll: (M,) float64, -log p(x) of each held-out row under the fold's model, nats,
            data units.
        baseline: (M,) float64, the same under the mixture fitted to the run's training
            points.
        components: the mixture's components (one per class for a conditional model).
        run: the fold's run folder.
        seconds: wall time of the fold's training.
        on_collapsed: (M,) bool, the held-out rows on a component of the mixture that
            collapsed onto repeated values (:class:`~flowscope.baseline.MixtureBaseline`):
            its score there measures scikit-learn's covariance floor, not the data.
    """

    test_index: np.ndarray
    nll: torch.Tensor
    baseline: torch.Tensor
    components: tuple[int, ...]
    run: Path
    seconds: float
    on_collapsed: torch.Tensor


@dataclass
class CrossValidation:
    """The folds of :func:`cross_validate` and their totals over every row of the file
    (each held out once): NLLs in nats per point, data units.

    Attributes:
        model: the model type's name.
        data: the data file's path.
        seed: the seed of the folds.
        folds: one :class:`Fold` each.
        conditional: whether the NLLs are class-conditional, -log p(x | class).
    """

    model: str
    data: str
    seed: int
    conditional: bool
    folds: list[Fold] = field(default_factory=list)

    def _all(self, key: str) -> torch.Tensor:
        return torch.cat([getattr(f, key) for f in self.folds])

    @property
    def points(self) -> int:
        return sum(len(f.test_index) for f in self.folds)

    def summary(self) -> dict[str, Any]:
        """``nll``, ``nll_sem``, ``baseline``, ``baseline_sem``; ``difference`` (the model's
        NLL less the mixture's: negative is better) with its paired ``difference_sem``;
        ``points`` N, ``folds``, ``seconds`` (of all the training); ``collapsed_points``,
        the rows on the mixture's collapsed components, and ``difference_off``,
        ``difference_off_sem`` and ``points_off``, the same comparison on the other rows
        (``None`` without any). A value is ``None`` where an NLL is infinite."""
        nll, base = self._all("nll"), self._all("baseline")
        on = self._all("on_collapsed")
        diff = nll - base
        finite = bool(torch.isfinite(diff).all())
        off = diff[~on]
        some = bool(on.any()) and len(off) > 0
        return {
            "nll": float(nll.mean()) if finite else None,
            "nll_sem": standard_error(nll),
            "baseline": float(base.mean()),
            "baseline_sem": standard_error(base),
            "difference": float(diff.mean()) if finite else None,
            "difference_sem": standard_error(diff),
            "points": len(diff),
            "folds": len(self.folds),
            "seconds": math.fsum(f.seconds for f in self.folds),
            "collapsed_points": int(on.sum()),
            "difference_off": float(off.mean()) if some and finite else None,
            "difference_off_sem": standard_error(off) if some else None,
            "points_off": len(off) if some else None,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, as plain values (per-row NLLs in fold order)."""
        return {
            "model": self.model,
            "data": self.data,
            "seed": self.seed,
            "conditional": self.conditional,
            **self.summary(),
            "per_fold": [
                {
                    "run": str(f.run),
                    "test_rows": f.test_index.tolist(),
                    "nll": _finite_or_none(f.nll),
                    "baseline": f.baseline.tolist(),
                    "nll_mean": float(f.nll.mean()) if bool(torch.isfinite(f.nll).all()) else None,
                    "baseline_mean": float(f.baseline.mean()),
                    "components": list(f.components),
                    "on_collapsed": f.on_collapsed.tolist(),
                    "seconds": f.seconds,
                }
                for f in self.folds
            ],
        }


def _finite_or_none(values: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _csv_text(header: list[str], x: np.ndarray, labels: list[str] | None) -> str:
    """Rows of x (N, 2) float64 in Python's shortest round-trip digits, and labels as
    text, under ``header``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, (a, b) in enumerate(x.tolist()):
        w.writerow([repr(a), repr(b)] + ([] if labels is None else [labels[i]]))
    return buf.getvalue()


def _prepare_folder(out: Path, overwrite: bool) -> bool:
    """Make ``out`` ready; returns whether this call created it (to remove on failure).

    Raises:
        RunError: for a folder that holds other files than a cross-validation's, or a
            cross-validation's without ``overwrite``.
    """
    if not out.exists():
        out.mkdir(parents=True)
        return True
    if not out.is_dir():
        raise RunError(f"{out}: is a file, not a folder; give another --out")
    held = sorted(p.name for p in out.iterdir())
    others = [name for name in held if name != CV_JSON and not _FOLD.fullmatch(name)]
    if others:
        raise RunError(
            f"{out} holds other files than a cross-validation's ({', '.join(others[:3])}); "
            "give an empty or new --out"
        )
    if held and not overwrite:
        raise RunError(f"{out} already holds a cross-validation; pass --overwrite to replace it")
    for name in held:  # a cross-validation's own files only (checked above)
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return False


def cross_validate(
    model_name: str,
    data: str | Path,
    out: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    config: Any = None,
    model_args: dict[str, Any] | None = None,
    conditional: bool | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool | None = False,
    on_fold: Callable[[int, Fold], None] | None = None,
) -> CrossValidation:
    """Cross-validate model type ``model_name`` on the data file ``data`` in ``folds``
    folds (see the module's text), writing into the folder ``out``: each fold's training
    rows (``fold-K.csv``, with the file's header and labels), its run (``fold-K/``, a run
    folder as ``flowscope train`` writes) and the results (:data:`CV_JSON`).

    Arguments:
        model_name: a registered type (:data:`~flowscope.models.MODELS`).
        data: a ``.csv``/``.npy``/``.npz`` file (:func:`~flowscope.data.load_points`).
        out: the folder; it must be new, empty, or (with ``overwrite``) an earlier
            cross-validation's.
        folds: K >= 2; each fold's training part needs at least 16 rows.
        seed: of the folds' permutation (the runs use ``config``'s seed).
        config, model_args, conditional, device, progress: as
            :func:`~flowscope.runs.train_run`.
        on_fold: called with the fold's number (1-based) and its :class:`Fold` after
            each, for progress.

    Returns:
        the :class:`CrossValidation`.

    Raises:
        ValueError: for a registry name instead of a file, too few rows for ``folds``, or
            a class whose rows all fall in one fold's test part.
        RunError: for an ``out`` that holds other files.
        As :func:`~flowscope.runs.train_run` for the data and the settings; on any error
        a folder this call created is removed.
    """
    from .runs import load_run, read_info, run_data, train_run

    path = Path(data)
    if path.suffix.lower() not in (".csv", ".npy", ".npz"):
        raise ValueError(
            f"{data}: cross-validation splits a data file (.csv, .npy or .npz); registry "
            "data are drawn afresh, so more test points are a --holdout-points away"
        )
    x, labels = load_points(path, torch.float64)
    n, folds = len(x), check_int(folds, "folds", minimum=2)
    if folds > n:
        raise ValueError(f"{data}: {folds} folds of {n} rows: give at most {n} (a row each)")
    smallest = n - math.ceil(n / folds)  # the training rows of the largest fold's run
    if smallest < MIN_TRAIN_ROWS:
        fewer = (
            "give fewer folds"
            if n - math.ceil(n / 2) >= MIN_TRAIN_ROWS
            else f"even 2 folds need {2 * MIN_TRAIN_ROWS} rows"
        )
        raise ValueError(
            f"{data}: {n} rows in {folds} folds leave {smallest} training rows to a fold; a "
            f"run needs at least {MIN_TRAIN_ROWS} (it splits its file 90/5/5): {fewer}"
        )
    index = fold_indices(n, folds, seed)
    text = None
    if labels is not None:
        text = list(labels) if isinstance(labels, list) else [str(v) for v in labels.tolist()]
        for k, test in enumerate(index, 1):
            rest = {text[i].lower() for i in np.setdiff1d(np.arange(n), test)}
            lone = sorted({text[i] for i in test if text[i].lower() not in rest})
            if lone:
                raise ValueError(
                    f"{data}: every row of class {lone[0]!r} falls in fold {k}'s test part, "
                    "so its model would not know the class; give fewer folds or more rows "
                    "of that class"
                )
    names = column_names(path) or ("x", "y")
    header = [*names, "label"] if text is not None else list(names)
    out = Path(out)
    created = _prepare_folder(out, overwrite)
    result = None
    try:
        for k, test in enumerate(index, 1):
            train_rows = np.setdiff1d(np.arange(n), test)
            fold_csv = out / f"fold-{k}.csv"
            rows = None if text is None else [text[i] for i in train_rows]
            atomic_write(fold_csv, _csv_text(header, x[train_rows].numpy(), rows))
            run = out / f"fold-{k}"
            t0 = time.perf_counter()
            train_run(
                model_name,
                run,
                data=str(fold_csv),
                config=config,
                model_args=model_args,
                conditional=conditional,
                device=device,
                progress=progress,
            )
            seconds = time.perf_counter() - t0
            model, info = load_run(run)
            if result is None:
                result = CrossValidation(
                    model_name, str(path.resolve()), seed, bool(info.data.get("conditional"))
                )
            x_test = x[test].to(model.dtype)
            own = run_data(read_info(run), "train")
            if result.conditional:
                ids = torch.tensor([model.class_id(text[i]) for i in test])
                nll = heldout_nll(model, x_test, ids).points
                base = mixture_baseline(own.x, x_test, own.labels, ids)
            else:
                nll = heldout_nll(model, x_test).points
                base = mixture_baseline(own.x, x_test)
            fold = Fold(
                test, nll.double(), base.points, base.components, run, seconds, base.on_collapsed
            )
            result.folds.append(fold)
            if on_fold is not None:
                on_fold(k, fold)
        atomic_write(out / CV_JSON, json.dumps(result.to_json(), indent=2) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return result
