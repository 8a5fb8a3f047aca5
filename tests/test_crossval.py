"""Cross-validation on a data file (flowscope.crossval, `flowscope train --folds`): every row
held out once, each fold's scores against its own model and mixture, the folder's files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from flowscope.baseline import mixture_baseline
from flowscope.cli import main
from flowscope.crossval import CV_JSON, cross_validate, fold_indices
from flowscope.data import load_points
from flowscope.errors import RunError
from flowscope.runs import load_run, read_info, run_data
from flowscope.train import TrainConfig

TINY = TrainConfig(epochs=1, batch_size=16)


def write_blobs(path, n=48, names=None, seed=0):
    """n rows of two blobs (x ten times y's scale), with a label column of ``names``
    (two class names, alternating) if given."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * [10.0, 1.0] + np.where(np.arange(n) % 2, 20.0, -20.0)[:, None]
    rows = [
        f"{a!r},{b!r}" + (f",{names[i % 2]}" if names else "")
        for i, (a, b) in enumerate(x.tolist())
    ]
    path.write_text(("u,v,kind\n" if names else "u,v\n") + "\n".join(rows) + "\n")
    return path, x


def test_fold_indices_cover_every_row_once():
    index = fold_indices(47, 5, seed=3)
    assert sorted(np.concatenate(index).tolist()) == list(range(47))
    assert {len(i) for i in index} == {9, 10}
    assert all(np.array_equal(a, b) for a, b in zip(index, fold_indices(47, 5, 3), strict=True))
    with pytest.raises(ValueError, match="give at most 4 folds"):
        fold_indices(4, 5)


def test_each_fold_is_scored_by_its_own_model_and_mixture(tmp_path):
    data, x = write_blobs(tmp_path / "blobs.csv")
    out = tmp_path / "cv"
    cv = cross_validate("nf", data, out, folds=2, config=TINY, model_args={"couplings": 2})
    assert sorted(np.concatenate([f.test_index for f in cv.folds]).tolist()) == list(range(48))
    for k, fold in enumerate(cv.folds, 1):
        # The fold's training file holds exactly the other rows, digit for digit.
        rows, labels = load_points(out / f"fold-{k}.csv", torch.float64)
        rest = np.setdiff1d(np.arange(48), fold.test_index)
        assert labels is None and np.array_equal(rows.numpy(), x[rest])
        model, info = load_run(out / f"fold-{k}")
        assert info.data["columns"] == ["u", "v"]  # the file's header carried over
        held = torch.tensor(x[fold.test_index], dtype=torch.float32)
        expected = -model.log_prob(held).double().detach()
        assert torch.allclose(fold.nll, expected, rtol=0, atol=1e-5)
        own = run_data(read_info(out / f"fold-{k}"), "train").x
        assert torch.equal(fold.baseline, mixture_baseline(own, held).points)
    s = cv.summary()
    nll = torch.cat([f.nll for f in cv.folds])
    diff = nll - torch.cat([f.baseline for f in cv.folds])
    assert s["nll"] == pytest.approx(float(nll.mean()), abs=1e-12) and s["points"] == 48
    assert s["difference"] == pytest.approx(float(diff.mean()), abs=1e-12)
    assert s["difference_sem"] == pytest.approx(float(diff.std()) / math.sqrt(48), rel=1e-12)
    saved = json.loads((out / CV_JSON).read_text())
    assert saved["difference"] == pytest.approx(s["difference"]) and saved["folds"] == 2
    assert [len(f["nll"]) for f in saved["per_fold"]] == [len(f.test_index) for f in cv.folds]


def test_a_conditional_model_is_scored_by_class_names(tmp_path):
    data, x = write_blobs(tmp_path / "named.csv", names=["west", "east"])
    cv = cross_validate("cfm", data, tmp_path / "cv", folds=2, config=TINY)
    assert cv.conditional
    names = ["west" if i % 2 == 0 else "east" for i in range(48)]
    for fold in cv.folds:
        model, _ = load_run(fold.run)
        assert model.class_names == ("east", "west")  # sorted, as the runs number them
        held = torch.tensor(x[fold.test_index], dtype=torch.float32)
        labels = [names[i] for i in fold.test_index]
        expected = -model.log_prob(held, labels).double().detach()
        assert torch.allclose(fold.nll, expected, rtol=0, atol=1e-4)


def test_bad_folders_and_data_are_refused_and_a_failure_leaves_nothing(tmp_path):
    data, _ = write_blobs(tmp_path / "blobs.csv")
    out = tmp_path / "cv"
    cross_validate("gaussian", data, out, folds=2, config=TINY)
    with pytest.raises(
        RunError, match="already holds a cross-validation; pass overwrite .--overwrite."
    ):
        cross_validate("gaussian", data, out, folds=2, config=TINY)
    cross_validate("gaussian", data, out, folds=3, config=TINY, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fold-1", "fold-2", "fold-3"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        RunError, match=r"holds files that are not a cross-validation's \(notes.txt\)"
    ):
        cross_validate("gaussian", data, out, folds=2, config=TINY, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="registry data are drawn afresh"):
        cross_validate("nf", "moons", tmp_path / "m", folds=2)
    small, _ = write_blobs(tmp_path / "small.csv", n=20)
    for k in (2, 40):  # too few for any folds: said first
        with pytest.raises(ValueError, match="20 rows are too few to cross-validate.*32 rows"):
            cross_validate("nf", small, tmp_path / "s", folds=k)
    # A class whose rows all fall in one fold's test part: its model would not know it.
    lone = tmp_path / "lone.csv"
    lone.write_text(data.read_text().replace("\n", ",a\n").replace("u,v,a", "u,v,kind"))
    lines = lone.read_text().splitlines()
    lone.write_text("\n".join([*lines[:-1], lines[-1][:-1] + "b"]) + "\n")
    with pytest.raises(ValueError, match="every row of class 'b' falls in fold"):
        cross_validate("cfm", lone, tmp_path / "l", folds=2)
    assert not (tmp_path / "l").exists()
    # Training that fails (labels for an unconditional type) removes the folder it made.
    named, _ = write_blobs(tmp_path / "named.csv", names=["a", "b"])
    with pytest.raises(ValueError, match="conditional"):
        cross_validate("nf", named, tmp_path / "failed", folds=2, config=TINY)
    assert not (tmp_path / "failed").exists()


def test_train_folds_prints_the_verdict_and_refuses_what_does_not_apply(tmp_path, capsys):
    data, _ = write_blobs(tmp_path / "blobs.csv")
    out = tmp_path / "cv"
    argv = ["train", "gaussian", "--data", str(data), "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--folds", "2", "--fold-seed", "4"]) == 0
    printed, err = capsys.readouterr()
    assert "cross-validated gaussian on" in printed and "in 2 folds (seed 4)" in printed
    assert "every one of its 48 rows held out once" in printed
    assert "against the mixture, paired over the rows: the model is" in printed
    assert "fold 1 of 2: held-out NLL" in err and "fold 2 of 2: held-out NLL" in err
    assert "note: each fold's run: 1 epoch of" in err  # as a single run's
    saved = json.loads((out / CV_JSON).read_text())
    assert saved["seed"] == 4 and saved["model"] == "gaussian"
    # eval of a fold's run points to the cross-validation, not to cross-validating it.
    assert main(["eval", str(out / "fold-1"), "-n", "10", "--floor-pairs", "1"]) == 0
    err = capsys.readouterr().err
    assert f"it is a fold of the cross-validation in {out}, whose cv.json" in err
    assert "--folds 5" not in err
    for extra, message in (
        (["--folds", "2", "--resume"], "drop --resume"),
        (["--fold-seed", "2"], "give --folds K too"),
    ):
        assert main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "nf", "--data", "moons", "--folds", "2"]) == 2
    assert "train one run with more holdout points instead" in capsys.readouterr().err


def test_rows_on_collapsed_mixture_components_are_counted_and_left_out_apart(tmp_path, capsys):
    # A quarter of the rows at exactly u = 4.0 (a coded duration): the mixture spikes there.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 2)) + np.where(np.arange(160) % 2, 4.0, -4.0)[:, None]
    x[:40, 0] = 4.0
    data = tmp_path / "spiked.csv"
    data.write_text("u,v\n" + "".join(f"{a!r},{b!r}\n" for a, b in x.tolist()))
    out = tmp_path / "cv"
    argv = ["train", "gaussian", "--data", str(data), "--folds", "2", "--out", str(out)]
    assert main([*argv, "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / CV_JSON).read_text())
    on = np.concatenate([f["on_collapsed"] for f in saved["per_fold"]])
    rows = np.concatenate([f["test_rows"] for f in saved["per_fold"]])
    assert saved["collapsed_points"] == int(on.sum()) > 0
    assert set(rows[on].tolist()) <= set(range(40))  # only rows at the spike
    diff = np.concatenate([np.subtract(f["nll"], f["baseline"]) for f in saved["per_fold"]])
    assert saved["difference_off"] == pytest.approx(float(diff[~on].mean()), abs=1e-12)
    assert saved["points_off"] == int((~on).sum())
    assert f"{int(on.sum())} rows lie on components of the mixture collapsed" in printed
    assert f"on the other {int((~on).sum())}: the model is" in printed


def read_tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_users_files_are_never_deleted_and_a_failed_run_puts_the_old_one_back(
    tmp_path, monkeypatch
):
    data, _ = write_blobs(tmp_path / "blobs.csv")
    # Files of the user's named like a cross-validation's, without its cv.json: refused.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "fold-1.csv").write_text("1,2\n")
    (mine / "fold-2").mkdir()
    (mine / "fold-2" / "notes.txt").write_text("mine")
    before = read_tree(mine)
    for overwrite in (False, True):
        with pytest.raises(RunError, match=r"not a cross-validation's \(fold-1.csv, fold-2\)"):
            cross_validate("gaussian", data, mine, folds=2, config=TINY, overwrite=overwrite)
    assert read_tree(mine) == before
    # A cross-validation's folder with a file of the user's in a fold: refused, named.
    out = tmp_path / "cv"
    cross_validate("gaussian", data, out, folds=2, config=TINY)
    (out / "fold-2" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"\(fold-2/notes.txt\)"):
        cross_validate("gaussian", data, out, folds=2, config=TINY, overwrite=True)
    (out / "fold-2" / "notes.txt").unlink()
    # The data file inside the folder would be written over: refused.
    inside = out / "fold-1.csv"
    with pytest.raises(RunError, match="the data file lies in .*cv, which the cross-valid"):
        cross_validate("gaussian", inside, out, folds=2, config=TINY, overwrite=True)
    # A replacement that fails after its first fold, or is interrupted, leaves the
    # earlier cross-validation as it was.
    before = read_tree(out)

    def stop(k, fold):
        raise KeyboardInterrupt

    for on_fold in (stop, lambda k, f: (_ for _ in ()).throw(ValueError("late"))):
        with pytest.raises((KeyboardInterrupt, ValueError)):
            cross_validate(
                "gaussian", data, out, folds=3, config=TINY, overwrite=True, on_fold=on_fold
            )
        assert read_tree(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cv.previous")]
    # A link to it, or the working folder itself, is refused rather than half replaced.
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(RunError, match="link: is a symbolic link; give the folder it points"):
        cross_validate("gaussian", data, tmp_path / "link", folds=2, config=TINY, overwrite=True)
    monkeypatch.chdir(out)
    with pytest.raises(RunError, match="is the working folder or holds it"):
        cross_validate("gaussian", data, ".", folds=2, config=TINY, overwrite=True)
    monkeypatch.chdir(tmp_path)
    assert read_tree(out) == before
    # Interrupted in a new folder: nothing is left.
    with pytest.raises(KeyboardInterrupt):
        cross_validate("gaussian", data, tmp_path / "new", folds=2, config=TINY, on_fold=stop)
    assert not (tmp_path / "new").exists()


def test_a_conditional_model_is_scored_by_class_ids(tmp_path):
    data, x = write_blobs(tmp_path / "ids.csv", names=["0", "1"])
    cv = cross_validate("cfm", data, tmp_path / "cv", folds=2, config=TINY)
    for fold in cv.folds:
        model, _ = load_run(fold.run)
        held = torch.tensor(x[fold.test_index], dtype=torch.float32)
        ids = torch.tensor([i % 2 for i in fold.test_index])
        expected = -model.log_prob(held, ids).double().detach()
        assert torch.allclose(fold.nll, expected, rtol=0, atol=1e-4)
    s = cv.summary()
    per_fold = [float((f.nll - f.baseline).mean()) for f in cv.folds]
    assert s["fold_differences"] == pytest.approx(per_fold, abs=1e-12)
    assert s["fold_difference_sem"] == pytest.approx(abs(per_fold[0] - per_fold[1]) / 2)


def test_train_folds_errors_say_what_to_give(tmp_path, capsys, monkeypatch):
    import flowscope.crossval

    assert main(["train", "nf", "--folds", "2"]) == 2
    assert "--folds cross-validates a data file: give --data FILE" in capsys.readouterr().err
    assert main(["train", "nf", "--fold-seed", "0"]) == 2
    assert "give --folds K too" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowscope.crossval, "cross_validate", interrupted)
    data, _ = write_blobs(tmp_path / "blobs.csv")
    assert main(["train", "nf", "--data", str(data), "--folds", "2"]) == 130
    assert "nothing of this cross-validation was kept" in capsys.readouterr().err


def test_a_failure_in_an_empty_folder_keeps_the_folder_and_stale_names_are_stepped_over(
    tmp_path,
):
    import os

    data, _ = write_blobs(tmp_path / "blobs.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino

    def stop(k, fold):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cross_validate("gaussian", data, empty, folds=2, config=TINY, on_fold=stop)
    assert empty.stat().st_ino == inode and not any(empty.iterdir())  # the same folder, empty
    # A stale aside of an earlier crash (same PID) is stepped over, not written into.
    out = tmp_path / "cv"
    cross_validate("gaussian", data, out, folds=2, config=TINY)
    stale = tmp_path / f".cv.previous-{os.getpid()}"
    stale.mkdir()
    (stale / "old.txt").write_text("kept")
    before = read_tree(out)
    with pytest.raises(KeyboardInterrupt):
        cross_validate("gaussian", data, out, folds=2, config=TINY, overwrite=True, on_fold=stop)
    assert read_tree(out) == before and (stale / "old.txt").read_text() == "kept"
    # `sub/..` names the folder above sub: moved aside and back by its full name.
    cv = cross_validate(
        "gaussian", data, out / "fold-1" / "..", folds=2, config=TINY, overwrite=True
    )
    assert (out / CV_JSON).is_file() and len(cv.folds) == 2
