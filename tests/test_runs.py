"""Run folders: atomic writes, no pickle, resumable checkpoints, no silent overwrite."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import flowscope
from flowscope.cli import main
from flowscope.evaluate import evaluate_run
from flowscope.matching import DEFAULT_CONDITIONAL_TIME_ALPHA
from flowscope.runs import (
    RUN_FILES,
    RunError,
    atomic_write,
    load_checkpoint,
    load_run,
    read_info,
    run_data,
    train_run,
)
from flowscope.train import TrainConfig

torch.set_num_threads(1)

TINY = dict(n_points=300, holdout_points=50)
CONFIG = TrainConfig(epochs=2, batch_size=64, seed=3)


class Interrupted(Exception):
    """Stands for a kill in the middle of training."""


def interrupt_after(epoch: int):
    def callback(model, state):
        if state.epoch == epoch:
            raise Interrupted

    return callback


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted two-epoch runs of nf and cfm."""
    root = tmp_path_factory.mktemp("runs")
    for name in ("nf", "cfm"):
        train_run(name, root / name, config=CONFIG, **TINY)
    return {name: root / name for name in ("nf", "cfm")}


def state(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_run(path)
    return model.state_dict()


def read_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- atomic writes ----------------------------------------------------------------------


def test_atomic_write_replaces_the_file(tmp_path):
    target = tmp_path / "weights.bin"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="killed"):
        atomic_write(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_atomic_write_keeps_old_file_when_write_fails_midway(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous weights")
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of the data, then fails like a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"x" * 10_000)
    assert target.read_bytes() == b"previous weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# -- no pickle --------------------------------------------------------------------------


def test_package_never_unpickles():
    src = Path(flowscope.__file__).parent
    pattern = re.compile(r"torch\.load\(|import pickle|allow_pickle\s*=\s*True|from pickle")
    offenders = [p.name for p in src.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_loading_runs_and_checkpoints_needs_no_pickle(runs, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    for path in runs.values():
        model, info = load_run(path)
        restored = load_checkpoint(path, model)
        assert restored.epoch == CONFIG.epochs
        assert (info.train["epochs"], info.train["seed"]) == (2, 3)


def test_run_folder_holds_only_safe_formats(runs):
    for path in runs.values():
        assert sorted(p.name for p in path.iterdir()) == sorted(RUN_FILES)
        config = json.loads((path / "config.json").read_text())
        assert config["format"] == 1
        assert config["torch_version"] == torch.__version__
        assert config["flowscope_version"] == flowscope.__version__
        for name in ("model.safetensors", "checkpoint.safetensors"):
            with safe_open(path / name, framework="pt") as f:
                assert len(list(f.keys())) > 0


def test_a_flow_matching_run_records_its_time_distribution(runs, tmp_path):
    src = runs["cfm"]
    model, info = load_run(src)
    assert info.model["times"] == {"name": "beta", "alpha": DEFAULT_CONDITIONAL_TIME_ALPHA}
    assert model.times.alpha == DEFAULT_CONDITIONAL_TIME_ALPHA != 1.0
    # A folder written before the time sampler was recorded (as time_alpha, then times)
    # was trained with the study's U[0, 1]; it loads as such (same weights), resuming it
    # continues with its own times, and resuming it with other times is refused.
    old = tmp_path / "old"
    old.mkdir()
    for f in src.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    config = json.loads((old / "config.json").read_text())
    del config["model"]["times"]
    (old / "config.json").write_text(json.dumps(config))
    loaded, _ = load_run(old)
    assert loaded.times.describe() == "U[0, 1]"
    assert torch.equal(loaded.field.theta, model.field.theta)
    default = {"times": {"name": "beta", "alpha": DEFAULT_CONDITIONAL_TIME_ALPHA}}
    with pytest.raises(RunError, match="times"):
        train_run("cfm", old, config=CONFIG, resume=True, model_args=default, **TINY)
    config["model"]["time_alpha"] = 5.0  # the record of the versions in between
    (old / "config.json").write_text(json.dumps(config))
    assert load_run(old)[0].times.describe() == "Beta(5, 1)"


def test_a_conditional_run_records_its_standardization_and_old_folders_load_global(runs, tmp_path):
    model, info = load_run(runs["cfm"])
    assert info.model["standardize"] == "class" and model.standardization.per_class
    train = run_data(info, "train")
    for k in range(model.num_classes):  # fitted on the run's own training points per ring
        assert torch.allclose(model.standardization.loc[k], train.x[train.labels == k].mean(0))
    # A folder written before `standardize` existed was standardized globally: its
    # buffers are (D,), and it loads as "global" with the same weights.
    old = tmp_path / "old"
    train_run("cfm", old, config=CONFIG, model_args={"standardize": "global"}, **TINY)
    config = json.loads((old / "config.json").read_text())
    del config["model"]["standardize"]
    (old / "config.json").write_text(json.dumps(config))
    loaded, _ = load_run(old)
    assert loaded.config()["standardize"] == "global"
    assert loaded.standardization.loc.shape == (2,)
    # Resuming it under the library's default (per class) is refused by name.
    with pytest.raises(RunError, match="standardize"):
        train_run(
            "cfm", old, config=CONFIG, resume=True, model_args={"standardize": "class"}, **TINY
        )


@pytest.mark.parametrize("name", ["fm", "cfm"])
def test_a_run_records_its_gaussian_skip_and_old_folders_load_without(tmp_path, name):
    model, info, _ = train_run(name, tmp_path / "new", config=CONFIG, **TINY)
    assert info.model["gaussian_skip"] is True and model.gaussian_skip
    assert load_run(tmp_path / "new")[0].gaussian_skip
    # A folder written before `gaussian_skip` existed holds a plain MLP: it loads without
    # the skip, with the same weights, and resuming it under the new default is refused.
    old = tmp_path / "old"
    train_run(name, old, config=CONFIG, model_args={"gaussian_skip": False}, **TINY)
    config = json.loads((old / "config.json").read_text())
    del config["model"]["gaussian_skip"]
    (old / "config.json").write_text(json.dumps(config))
    loaded, _ = load_run(old)
    assert loaded.config()["gaussian_skip"] is False and not loaded.gaussian_skip
    with pytest.raises(RunError, match="gaussian_skip"):
        train_run(name, old, config=CONFIG, resume=True, model_args={"gaussian_skip": True}, **TINY)


# -- resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nf", "cfm"])
def test_resume_matches_uninterrupted_run_bit_for_bit(runs, tmp_path, name):
    out = tmp_path / name
    with pytest.raises(Interrupted):
        train_run(name, out, config=CONFIG, on_epoch_end=interrupt_after(1), **TINY)
    assert load_checkpoint(out, load_run(out)[0]).epoch == 1
    with pytest.raises(RunError, match="already holds a run"):
        train_run(name, out, config=CONFIG, **TINY)
    # Resumed with nothing but the folder: its own settings and data (n_points 300 here).
    _, _, history = train_run(name, out, resume=True)
    assert [row["epoch"] for row in history.epochs] == [1, 2]
    a, b = state(runs[name]), state(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (out / "batches.csv").read_text() == (runs[name] / "batches.csv").read_text()


def test_a_checkpoint_write_killed_midway_keeps_the_previous_one(runs, tmp_path, monkeypatch):
    out = tmp_path / "nf"
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "checkpoint.safetensors" and "epoch 2" in replace.now:
            raise Interrupted
        real_replace(src, dst)

    replace.now = ""

    def mark(model, state):
        replace.now = f"epoch {state.epoch + 1}"

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Interrupted):
        train_run("nf", out, config=CONFIG, on_epoch_end=mark, **TINY)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out, load_run(out)[0]).epoch == 1
    train_run("nf", out, config=CONFIG, resume=True, **TINY)
    a, b = state(runs["nf"]), state(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_through_the_cli_uses_the_runs_settings(runs, tmp_path, capsys):
    out = tmp_path / "cfm"
    with pytest.raises(Interrupted):
        train_run("cfm", out, config=CONFIG, on_epoch_end=interrupt_after(1), **TINY)
    assert main(["train", "cfm", "--out", str(out), "--resume"]) == 0
    assert "resumed at epoch 2" in capsys.readouterr().out
    a, b = state(runs["cfm"]), state(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(runs, tmp_path, capsys):
    out = tmp_path / "nf"
    with pytest.raises(Interrupted):
        train_run("nf", out, config=CONFIG, on_epoch_end=interrupt_after(1), **TINY)
    before = read_bytes(out)
    assert main(["train", "nf", "--out", str(out), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowscope: error:") and err.count("\n") == 1
    assert "epochs 2 (now 3)" in err
    assert main(["train", "fm", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of model nf, not fm: resume it as nf" in err
    assert "--overwrite" not in err  # which would throw the other model's run away
    assert read_bytes(out) == before


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(RunError, match="new: no such run folder to resume; train with no --"):
        train_run("nf", tmp_path / "new", config=CONFIG, resume=True, **TINY)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="nothing to resume .*; train with no --resume to start"):
        train_run("nf", tmp_path / "empty", config=CONFIG, resume=True, **TINY)


def test_resume_on_other_data_names_the_runs_own(tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n" + "".join(f"{i % 7},{i % 5 + i / 50}\n" for i in range(60)))
    out = tmp_path / "run"
    assert main(["train", "fm", "--data", str(data), "--out", str(out), "--epochs", "1"]) == 0
    before = read_bytes(out)
    capsys.readouterr()
    for other in (["--data", "moons"], ["--data", "olympic", "--n-points", "500"]):
        assert main(["train", "fm", "--out", str(out), "--resume", *other]) == 2
        err = capsys.readouterr().err
        assert f"the run was started on {data}, not {other[1]}; resume without --data" in err
    assert read_bytes(out) == before


def test_resume_finds_a_moved_data_file_by_its_bytes(tmp_path, capsys):
    data = write_points(tmp_path / "pts.csv", 40)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    config = TrainConfig(epochs=2, batch_size=8, seed=0)
    train_run("nf", whole, data=str(data), config=config)
    with pytest.raises(Interrupted):
        train_run("nf", cut, data=str(data), config=config, on_epoch_end=interrupt_after(1))
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    data.rename(moved)
    assert main(["train", "nf", "--out", str(cut), "--resume"]) == 2
    assert "moved, it is found again by training the run with --resume and --data" in (
        capsys.readouterr().err
    )
    assert main(["train", "nf", "--out", str(cut), "--resume", "--data", str(moved)]) == 0
    assert f"{moved} holds the same points as {data}, the file the run recorded" in (
        capsys.readouterr().err
    )
    a, b = state(whole), state(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted
    assert read_info(cut).data["source"] == str(moved.resolve())  # found there from now on
    # Other bytes at the new path are other data, refused as before.
    write_points(moved, 40, seed=1)
    assert main(["train", "nf", "--out", str(cut), "--resume", "--data", str(moved)]) == 2
    assert "the data file has changed since the run was trained" in capsys.readouterr().err


def test_corrupted_checkpoint_is_a_run_error(runs, tmp_path):
    out = tmp_path / "nf"
    out.mkdir()
    for name in RUN_FILES:
        (out / name).write_bytes((runs["nf"] / name).read_bytes())
    data = (out / "checkpoint.safetensors").read_bytes()
    (out / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupted or truncated checkpoint") as err:
        load_checkpoint(out, load_run(out)[0])  # the model itself still loads
    assert "model (model.safetensors) is intact and still samples and evaluates; restore the" in (
        str(err.value)
    )
    assert "retrain the model" not in str(err.value)  # its model is fine
    flipped = bytearray(data)
    flipped[-200:-100] = bytes(100)  # the header is intact, the tensors' bytes are not
    (out / "checkpoint.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(RunError, match="restore the file to resume the run, or train again i"):
        model = load_run(out)[0]
        load_checkpoint(out, model)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # both damaged: no claim of a sound model
    with pytest.raises(RunError, match="model.safetensors is damaged too: restore the files"):
        load_checkpoint(out, model)


@pytest.mark.parametrize("part", ["data", "source"])
def test_training_never_writes_over_its_own_input_files(tmp_path, capsys, part):
    """A data or source file named as a run file inside --out would be overwritten by the
    run it feeds: refused, with --overwrite too, and the file is left as it was."""
    out = tmp_path / "run"
    out.mkdir()
    data = tmp_path / "data.csv"
    data.write_text("a,b\n" + "".join(f"{i % 7},{i % 5 + i / 50}\n" for i in range(60)))
    inside = out / "metrics.csv"
    inside.write_bytes(data.read_bytes())
    argv = ["train", "fm", "--out", str(out), "--overwrite", "--epochs", "1"]
    argv += (
        ["--data", str(inside)]
        if part == "data"
        else ["--data", str(data), "--source", str(inside)]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the {part} file has the name of a file training writes in the run folder" in err
    assert inside.read_bytes() == data.read_bytes() and sorted(p.name for p in out.iterdir()) == [
        "metrics.csv"
    ]


# -- no silent overwrite ----------------------------------------------------------------


def test_existing_run_is_not_overwritten_unless_asked(runs, tmp_path, capsys):
    out = tmp_path / "nf"
    out.mkdir()
    for name in RUN_FILES:
        (out / name).write_bytes((runs["nf"] / name).read_bytes())
    before = read_bytes(out)
    assert main(["train", "nf", "--out", str(out), "--n-points", "300", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowscope: error:") and "--overwrite" in err
    assert read_bytes(out) == before
    train_run("nf", out, config=TrainConfig(epochs=1, batch_size=64), overwrite=True, **TINY)
    assert read_info(out).train["epochs"] == 1
    assert read_bytes(out)["model.safetensors"] != before["model.safetensors"]


# -- data files: too small, moved, changed ----------------------------------------------


def write_points(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savetxt(path, rng.normal(size=(n, 2)), delimiter=",")
    return path


FILE_CONFIG = TrainConfig(epochs=1, batch_size=8, seed=0)


@pytest.mark.parametrize(
    "n, parts", [(9, "8 train, 0 validation and 1 test"), (15, "14 train, 1 validation and 0 test")]
)
def test_a_file_too_small_to_split_is_refused_before_training(tmp_path, n, parts):
    data = write_points(tmp_path / "small.csv", n)
    with pytest.raises(ValueError, match="small.csv") as err:
        train_run("nf", tmp_path / "run", data=str(data), config=FILE_CONFIG)
    assert f"{n} points split 90/5/5 give {parts} points" in str(err.value)
    assert "needs at least 16 points" in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["nf", "fm"])
def test_a_file_too_small_is_one_line_through_the_cli(tmp_path, capsys, model):
    # It used to fail as "validation loss became nan" (nf) or with a traceback (fm).
    data = write_points(tmp_path / "nine.csv", 9)
    out = tmp_path / model
    assert main(["train", model, "--data", str(data), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowscope: error: ") and err.count("\n") == 1
    assert "nine.csv: 9 points" in err and "at least 16 points" in err and "nan" not in err


def test_the_smallest_file_trains_and_evaluates(tmp_path):
    data = write_points(tmp_path / "sixteen.csv", 16)
    train_run("nf", tmp_path / "run", data=str(data), config=FILE_CONFIG)
    result = evaluate_run(tmp_path / "run", n=2)
    assert result["nll_points"] == 1 and math.isfinite(result["nll_standardized"])


def test_an_old_run_of_a_small_file_is_refused_by_eval(tmp_path):
    """A run folder written before the check (no hash, 12 points): eval used to divide by
    the zero points of its test part."""
    data = write_points(tmp_path / "sixteen.csv", 16)
    run = tmp_path / "run"
    train_run("nf", run, data=str(data), config=FILE_CONFIG)
    write_points(tmp_path / "twelve.csv", 12)
    config = json.loads((run / "config.json").read_text())
    config["data"]["source"] = str(tmp_path / "twelve.csv")
    del config["data"]["sha256"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"twelve.csv: 12 points .* 0 test points"):
        evaluate_run(run, n=2)


def test_a_file_run_records_the_absolute_path_and_hash(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    data = write_points(folder / "pts.csv", 40)
    monkeypatch.chdir(folder)
    run = tmp_path / "run"
    train_run("nf", run, data="pts.csv", config=FILE_CONFIG)  # a relative path
    info = read_info(run)
    assert info.data["source"] == str(data.resolve())
    assert info.data["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    # From another folder, the run still finds its data.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(run), "--n", "4"]) == 0
    assert "held-out NLL" in capsys.readouterr().out
    test = run_data(info, "test")
    assert len(test.x) == 2


def test_a_changed_or_missing_data_file_is_a_run_error(tmp_path):
    data = write_points(tmp_path / "pts.csv", 40)
    run = tmp_path / "run"
    train_run("nf", run, data=str(data), config=FILE_CONFIG)
    info = read_info(run)
    write_points(data, 40, seed=1)  # same size, other points
    with pytest.raises(RunError, match="pts.csv: the data file has changed since the run"):
        run_data(info, "test")
    with pytest.raises(RunError, match="has changed"):
        evaluate_run(run, n=2)
    data.unlink()
    with pytest.raises(RunError, match="pts.csv: the run's data file is missing"):
        run_data(info, "train")
