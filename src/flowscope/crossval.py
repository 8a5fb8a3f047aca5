"""K-fold cross-validation of a model type on a data file, against the Gaussian mixture.

A data file of a few hundred points leaves a run a test part of a dozen (its 5%): too few
to tell two models apart. Cross-validation holds every row out once: the file's rows are
split into K folds by a seeded permutation; for each fold, a run is trained on the other
folds exactly as ``flowscope train MODEL --data FILE`` trains on a file (its own 90/5/5
split into train, validation and test), and the held-out fold is scored by the run's
model and by the baseline ``flowscope eval`` prints, a BIC-chosen Gaussian mixture fitted
to the same training points (:func:`~flowscope.baseline.mixture_baseline`).

Two standard errors of the model's lead over the mixture are given: paired over all N
rows (Student's t on N - 1 degrees of freedom), which treats the rows as independent
although the rows of a fold share one model and the folds share training rows, so that
it is optimistic; and over the K folds' mean differences (t on K - 1), which is coarse.
No unbiased estimator of a K-fold estimate's variance exists (Bengio and Grandvalet,
JMLR 5, 2004); read the two together.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .baseline import mixture_baseline
from .data import load_points, make_dataset
from .data.checks import check_int
from .data.files import column_names, file_sha256
from .defaults import CV_FILE, DATA_SUFFIXES, EVAL_FILE, EXPLORE_FILE
from .errors import RunError
from .metrics import heldout_nll, standard_error

__all__ = ["CV_JSON", "CrossValidation", "Fold", "cross_validate", "fold_indices"]

#: The file :func:`cross_validate` writes in its folder.
CV_JSON = CV_FILE
#: The names of a fold's training file and run folder.
_FOLD = re.compile(r"fold-[1-9][0-9]*(\.csv)?")


def fold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """The rows of each of ``folds`` folds of n rows.

    Arguments:
        n: the rows, >= 0.
        folds: K, >= 2 and <= n.
        seed: of the permutation (numpy's ``default_rng``).

    Returns:
        K disjoint int arrays that cover range(n), of sizes that differ by at most one.

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
        components: the number of the mixture's components (one per class for a
            conditional model).
        run: the fold's run folder.
        seconds: wall time of the fold's training.
        on_collapsed: (M,) bool, the held-out rows on a component of the mixture that
            collapsed onto repeated values (:class:`~flowscope.baseline.MixtureBaseline`):
            its score there measures scikit-learn's covariance floor, not the data.
        length_note: what the run's training lacked for its data
            (:attr:`~flowscope.train.History.length_note`), or ``None``.
    """

    test_index: np.ndarray
    nll: torch.Tensor
    baseline: torch.Tensor
    components: tuple[int, ...]
    run: Path
    seconds: float
    on_collapsed: torch.Tensor
    length_note: str | None = None


@dataclass
class CrossValidation:
    """The folds of :func:`cross_validate` and their totals over every row of the file
    (each held out once): NLLs in nats per point, data units.

    Attributes:
        model: the model type's name.
        data: the data file's path.
        sha256: the data file's SHA-256.
        seed: the seed of the folds.
        conditional: whether the NLLs are class-conditional, -log p(x | class).
        folds: one :class:`Fold` each.
    """

    model: str
    data: str
    sha256: str
    seed: int
    conditional: bool
    folds: list[Fold] = field(default_factory=list)

    def _all(self, key: str) -> torch.Tensor:
        return torch.cat([getattr(f, key) for f in self.folds])

    def summary(self) -> dict[str, Any]:
        """The totals, a dict of plain values (``None`` where an NLL is infinite, or a
        standard error has too few values):

        - ``nll``, ``nll_sem``, ``baseline``, ``baseline_sem``: the mean over the N rows
          and its standard error;
        - ``difference``: the model's NLL less the mixture's (negative: the model is
          better), with ``difference_sem`` paired over the rows;
        - ``fold_differences``: each fold's mean difference, and
          ``fold_difference_sem`` their standard deviation over sqrt(K);
        - ``collapsed_points``: the rows on the mixture's collapsed components;
          ``difference_off``, ``difference_off_sem`` and ``points_off``: the paired
          comparison on the other rows (``None`` without any collapsed row);
        - ``points`` N, ``folds`` K, ``seconds`` (of all the training).
        """
        nll, base = self._all("nll"), self._all("baseline")
        on = self._all("on_collapsed")
        diff = nll - base
        finite = bool(torch.isfinite(diff).all())
        per_fold = [float((f.nll - f.baseline).mean()) for f in self.folds]
        off = diff[~on]
        some = bool(on.any()) and len(off) > 0
        return {
            "nll": float(nll.mean()) if finite else None,
            "nll_sem": standard_error(nll),
            "baseline": float(base.mean()),
            "baseline_sem": standard_error(base),
            "difference": float(diff.mean()) if finite else None,
            "difference_sem": standard_error(diff),
            "fold_differences": per_fold if finite else None,
            "fold_difference_sem": statistics.stdev(per_fold) / math.sqrt(len(per_fold))
            if finite and len(per_fold) > 1
            else None,
            "points": len(diff),
            "folds": len(self.folds),
            "seconds": math.fsum(f.seconds for f in self.folds),
            "collapsed_points": int(on.sum()),
            "difference_off": float(off.mean()) if some and finite else None,
            "difference_off_sem": standard_error(off) if some else None,
            "points_off": len(off) if some else None,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, as plain values (per-row NLLs in fold order, ``None`` for an
        infinite one)."""
        return {
            "model": self.model,
            "data": self.data,
            "sha256": self.sha256,
            "seed": self.seed,
            "conditional": self.conditional,
            **self.summary(),
            "per_fold": [
                {
                    "run": str(f.run),
                    "test_rows": f.test_index.tolist(),
                    "nll": [v if math.isfinite(v) else None for v in f.nll.tolist()],
                    "baseline": f.baseline.tolist(),
                    "components": list(f.components),
                    "on_collapsed": f.on_collapsed.tolist(),
                    "seconds": f.seconds,
                }
                for f in self.folds
            ],
        }


def _csv_text(header: list[str], x: np.ndarray, labels: list[str] | None) -> str:
    """Rows of x (N, 2) float64 in Python's shortest round-trip digits, and labels as
    text, under ``header``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, (a, b) in enumerate(x.tolist()):
        w.writerow([repr(a), repr(b)] + ([] if labels is None else [labels[i]]))
    return buf.getvalue()


def _foreign(out: Path) -> list[str]:
    """What in the folder ``out`` is not a cross-validation's (all of it without a
    :data:`CV_JSON`): a cross-validation holds its :data:`CV_JSON`, ``fold-K.csv`` files
    and ``fold-K`` run folders that hold a run's files only (those training writes, and
    eval's and explore's)."""
    from .runs import RUN_FILES

    held = sorted(out.iterdir())
    if not (out / CV_JSON).is_file():
        return [p.name for p in held]
    run_files = {*RUN_FILES, EVAL_FILE, EXPLORE_FILE}
    bad = []
    for path in held:
        if path.name == CV_JSON:
            continue
        if path.is_symlink() or not _FOLD.fullmatch(path.name):
            bad.append(path.name)
        elif path.name.endswith(".csv"):
            if not path.is_file():
                bad.append(path.name)
        elif not path.is_dir():
            bad.append(path.name)
        else:
            bad += [
                f"{path.name}/{q.name}"
                for q in sorted(path.iterdir())
                if q.name not in run_files or not q.is_file() or q.is_symlink()
            ]
    return bad


def _clear_out(out: Path, overwrite: bool) -> Path | None:
    """Check that ``out`` may take a cross-validation, and move an earlier one aside
    (returned: it is put back if this one fails, else removed).

    Raises:
        RunError: for a file in the way, a folder that holds other files than a
            cross-validation's, or one without ``overwrite``.
    """
    if out.is_symlink():
        raise RunError(f"{out}: is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: is a file, not a folder; give another out folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    foreign = _foreign(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunError(
            f"{out} holds files that are not a cross-validation's ({shown}); give an empty "
            "or new out folder"
        )
    if not overwrite:
        raise RunError(
            f"{out} already holds a cross-validation; pass overwrite (--overwrite) to replace it"
        )
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise RunError(
            f"{out} is the working folder or holds it: replace it from outside it (cd ..)"
        )
    aside = _unused(out, "previous")
    out.rename(aside)
    return aside


def _unused(out: Path, what: str) -> Path:
    """A name beside ``out`` that nothing holds: ``.OUT.WHAT-PID[-K]``."""
    for k in range(1000):
        path = out.with_name(f".{out.name}.{what}-{os.getpid()}" + (f"-{k}" if k else ""))
        if not path.exists() and not path.is_symlink():
            return path
    raise RunError(f"{out.parent}: no free name beside {out.name} to move it aside")


def _roll_back(out: Path, aside: Path | None, existed: bool) -> None:
    """Undo a failed :func:`cross_validate` in ``out``: put back the earlier
    cross-validation moved ``aside`` before removing what this call wrote, and leave a
    folder that was there (empty) in place, emptied of this call's files alone."""
    if aside is not None:
        trash = _unused(out, "failed")
        if out.exists():
            out.rename(trash)
        try:
            aside.rename(out)
        except OSError as err:
            raise RunError(
                f"{out}: the earlier cross-validation could not be put back ({err}); it is "
                f"in {aside}"
            ) from None
        shutil.rmtree(trash, ignore_errors=True)
    elif existed:
        for path in out.iterdir() if out.is_dir() else ():
            if path.name != CV_JSON and not _FOLD.fullmatch(path.name):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    else:
        shutil.rmtree(out, ignore_errors=True)


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

    The folder is written whole or not at all: on any error, or an interrupt, what this
    call wrote is removed and an earlier cross-validation it was to replace is put back.

    Arguments:
        model_name: a registered type (:data:`~flowscope.models.MODELS`).
        data: a ``.csv``/``.npy``/``.npz`` file (:func:`~flowscope.data.load_points`),
            outside ``out``.
        out: the folder; it must be new, empty, or (with ``overwrite``) an earlier
            cross-validation's, holding nothing else.
        folds: K >= 2; each fold's training part needs the rows a run's file needs
            (:func:`~flowscope.runs.file_rows_needed`).
        seed: of the folds' permutation (the runs use ``config``'s seed).
        config, model_args, conditional, device, progress: as
            :func:`~flowscope.runs.train_run`.
        on_fold: called with the fold's number (1-based) and its :class:`Fold` after
            each, for progress.

    Returns:
        the :class:`CrossValidation`.

    Raises:
        ValueError: for a registry name instead of a file, too few rows for ``folds``, a
            class whose rows all fall in one fold's test part, or data the runs refuse
            (a label column for an unconditional model, none for a conditional one;
            a fold's run that fails says which fold).
        RunError: for an ``out`` that may not be written (:func:`_clear_out`), or the
            data file inside it.

    References:
        Bengio and Grandvalet. No Unbiased Estimator of the Variance of K-Fold
        Cross-Validation. JMLR 5, 2004.
    """
    from .models import MODELS
    from .runs import file_rows_needed, load_run, read_info, run_data, train_run

    path = Path(data)
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise ValueError(
            f"{data}: cross-validation splits a data file (.csv, .npy or .npz); registry "
            "data are drawn afresh, so train one run with more holdout points instead "
            "(holdout_points; flowscope train's --holdout-points)"
        )
    out = Path(out)
    if not out.is_symlink():  # (a link is refused by _clear_out)
        out = Path(os.path.abspath(out))  # `sub/..`, `.`: a name to move aside by
    if path.resolve().is_relative_to(out.resolve()):
        raise RunError(
            f"{data}: the data file lies in {out}, which the cross-validation writes; move "
            "the file or give another out folder"
        )
    wants_labels = MODELS.get(model_name).is_conditional(conditional)
    make_dataset(str(path), 0, conditional=wants_labels)  # the file's errors name it
    x, labels = load_points(path, torch.float64)
    n, folds = len(x), check_int(folds, "folds", minimum=2)
    needed = file_rows_needed()
    if n - math.ceil(n / 2) < needed:  # 2 folds leave a run the fewest rows
        raise ValueError(
            f"{data}: {n} rows are too few to cross-validate: each fold's run needs at "
            f"least {needed} training rows (it splits its file 90/5/5), so even 2 folds "
            f"need {2 * needed} rows"
        )
    if folds > n:
        raise ValueError(f"{data}: {folds} folds of {n} rows: give at most {n} (a row each)")
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
    result = CrossValidation(
        model_name, str(path.resolve()), file_sha256(path), seed, bool(wants_labels)
    )
    existed = out.is_dir() and not any(out.iterdir())  # empty: left in place on failure
    aside = _clear_out(out, overwrite)  # (refusals before any change; nothing after its move)
    try:
        out.mkdir(parents=True, exist_ok=existed)
        for k, test in enumerate(index, 1):
            train_rows = np.setdiff1d(np.arange(n), test)
            fold_csv = out / f"fold-{k}.csv"
            rows = None if text is None else [text[i] for i in train_rows]
            atomic_write(fold_csv, _csv_text(header, x[train_rows].numpy(), rows))
            run = out / f"fold-{k}"
            t0 = time.perf_counter()
            try:
                _, _, history = train_run(
                    model_name,
                    run,
                    data=str(fold_csv),
                    config=config,
                    model_args=model_args,
                    conditional=conditional,
                    device=device,
                    progress=progress,
                )
            except RunError as err:
                raise RunError(f"fold {k} of {folds}: {err}") from None
            except ValueError as err:
                raise ValueError(f"fold {k} of {folds}: {err}") from None
            seconds = time.perf_counter() - t0
            model, _ = load_run(run)
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
                test,
                nll.double(),
                base.points,
                base.components,
                run,
                seconds,
                base.on_collapsed,
                history.length_note,
            )
            result.folds.append(fold)
            if on_fold is not None:
                on_fold(k, fold)
        atomic_write(out / CV_JSON, json.dumps(result.to_json(), indent=2) + "\n")
    except BaseException:
        _roll_back(out, aside, existed)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return result
