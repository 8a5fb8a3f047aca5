"""Small data sets: long enough training, the best epoch kept, fewer run-file writes, the
note on short runs and the Gaussian-mixture baseline."""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import flowscope.evaluate
import flowscope.metrics
import flowscope.runs
import flowscope.train
from flowscope.baseline import mixture_baseline, most_components
from flowscope.cli import main
from flowscope.errors import MissingDependency, UnusedLabels
from flowscope.evaluate import evaluate_run
from flowscope.flows import NormalizingFlow
from flowscope.recipe import SMALL_DATA_NOISE, SMALL_DATA_VAL_SIZE, recipe, upgrade_train
from flowscope.runs import CHECKPOINT, load_checkpoint, load_run, run_data, train_run
from flowscope.train import SMALL_DATA_DECAY, Schedule, TrainConfig, fit

torch.set_num_threads(1)


def two_blobs(n: int, seed: int) -> torch.Tensor:
    """n points of two unit Gaussians at (-4, 0) and (4, 0), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x[:, 0] += torch.where(torch.arange(n) % 2 == 0, -4.0, 4.0)
    return x


def write_points(path, x) -> str:
    np.savetxt(path, np.asarray(x), delimiter=",", header="a,b", comments="")
    return str(path)


# -- how long a run lasts -----------------------------------------------------------------


def test_the_schedule_lengthens_only_runs_short_for_their_data():
    cfg = TrainConfig()
    # 245 points (a 272-point file's train part) used to get 20 epochs of 2 steps.
    small = cfg.schedule(245)
    want = Schedule(1000, 2, False, SMALL_DATA_DECAY, noise=SMALL_DATA_NOISE, lengthened=True)
    assert small == want
    assert small.epochs * small.steps_per_epoch >= cfg.min_steps
    # Early stopping only when asked for, and only with validation points to choose by.
    assert TrainConfig(keep_best=True).schedule(245).keep_best is True
    assert TrainConfig(keep_best=True).schedule(245, validation=False).keep_best is False
    assert TrainConfig(keep_best=True).schedule(250_000).keep_best is False  # not lengthened
    # A type's recipe sets its own regularization of small data, and only of small data.
    nf = recipe("nf")
    assert (nf.schedule(245).weight_decay, nf.schedule(245).noise) == (0.5, 0.1)
    assert (nf.schedule(250_000).weight_decay, nf.schedule(250_000).noise) == (0.0, 0.0)
    # Given epochs are run exactly, with a note when they are few for the data.
    given = TrainConfig(epochs=20).schedule(245)
    assert (given.epochs, given.keep_best, given.weight_decay, given.noise) == (20, False, 0, 0)
    assert given.lengthened is False
    assert given.note.startswith("20 epochs of 2 steps on 245 training points are 40 ")
    assert given.note.endswith(
        "short for data this small: the default (no epochs given) trains at least 2000 "
        "steps, with weight decay and noise"
    )
    one = TrainConfig(epochs=1, batch_size=512).schedule(245).note
    assert one.startswith("1 epoch of 1 step on 245 training points is 1 optimizer step,")
    # Enough given epochs are not short, but say what they lack.
    more = TrainConfig(epochs=1500).schedule(245)
    assert (more.weight_decay, more.noise) == (0.0, 0.0)
    assert more.note == (
        "1500 epochs of 2 steps on 245 training points are 3000 optimizer steps, without "
        "the weight decay and noise that the default (no epochs given) regularizes data "
        "this small with"
    )
    assert TrainConfig(epochs=20).schedule(250_000).note is None
    assert TrainConfig(epochs=1).schedule(250_000).note is None  # 1,954 steps, not small
    assert TrainConfig(weight_decay=0.0).schedule(245).weight_decay == 0.0
    # A noise given acts on any run; on given epochs of small data the note then says
    # nothing of what they lack (unless they are short).
    assert TrainConfig(noise=0.2).schedule(250_000).noise == 0.2
    assert TrainConfig(noise=0.0).schedule(245).noise == 0.0  # lengthened, without noise
    asked = TrainConfig(epochs=1500, noise=0.1, weight_decay=0.5).schedule(245)
    assert (asked.noise, asked.weight_decay, asked.note) == (0.1, 0.5, None)
    assert TrainConfig(epochs=20, noise=0.1).schedule(245).note.endswith("weight decay and noise")


def test_a_run_lengthened_for_small_data_validates_on_fewer_of_many_points(monkeypatch):
    cfg = TrainConfig()
    assert cfg.val_size_for(250_000) == cfg.val_size  # the study's 20 epochs
    assert cfg.val_size_for(10) == SMALL_DATA_VAL_SIZE  # 2000 epochs of one step
    assert cfg.val_size_for(5000) == 5000  # 50 epochs of 40 steps: lengthened
    assert TrainConfig(epochs=3).val_size_for(10) == cfg.val_size  # as given: not
    # The fit scores every epoch on that many of the validation points, the first ones,
    # with their labels, and records the number; a resumed run keeps the recorded one.
    seen = []
    model = NormalizingFlow(couplings=2, hidden=4, num_classes=2)
    terms = model.validation_terms
    monkeypatch.setattr(
        model, "validation_terms", lambda y, lb, g: seen.append((y.clone(), lb)) or terms(y, lb, g)
    )
    x, x_val = two_blobs(40, seed=0).float(), two_blobs(3000, seed=1).float()
    labels, labels_val = torch.arange(40) % 2, (torch.arange(3000) // 7) % 2
    config = TrainConfig(min_steps=60, batch_size=20)  # 30 epochs of 2 steps: lengthened
    states = []
    run = functools.partial(
        fit, model, x, labels, x_val=x_val, labels_val=labels_val, config=config, progress=False
    )
    history = run(on_epoch_end=lambda m, st: states.append(st))
    assert history.val_points == SMALL_DATA_VAL_SIZE
    assert {len(y) for y, _ in seen} == {SMALL_DATA_VAL_SIZE}
    first = slice(0, SMALL_DATA_VAL_SIZE)
    torch.testing.assert_close(seen[0][0], model.standardization(x_val[first], labels_val[first]))
    assert torch.equal(seen[0][1], labels_val[first])
    for recorded, used in ((SMALL_DATA_VAL_SIZE, SMALL_DATA_VAL_SIZE), (None, 3000)):
        seen.clear()
        state = states[10]
        state.history.val_points = recorded  # None: a checkpoint written before it was kept
        run(state=state)
        assert {len(y) for y, _ in seen} == {used}


@pytest.mark.parametrize("name", ["weight_decay", "noise", "small_decay", "small_noise"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "0.1"])
def test_decay_and_noise_must_be_numbers_at_least_0(name, bad):
    with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
        TrainConfig(**{name: bad})


def test_small_decay_and_noise_may_not_be_none_and_keep_best_is_a_bool():
    with pytest.raises(ValueError, match="small_noise must be a number >= 0, got None"):
        TrainConfig(small_noise=None)
    with pytest.raises(ValueError, match="keep_best must be True or False, got 1"):
        TrainConfig(keep_best=1)


def test_a_lengthened_run_jitters_its_training_batches_and_not_its_validation(monkeypatch):
    # Points far apart in standardized units: each batch row is its nearest training
    # point plus the noise, so the residuals are the noise itself.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 10
    seen = []
    call = flowscope.train._Stepper.__call__
    monkeypatch.setattr(
        flowscope.train._Stepper,
        "__call__",
        lambda self, y, lb, gen: seen.append(y) or call(self, y, lb, gen),
    )
    for noise in (0.0, 0.02):
        seen.clear()
        torch.manual_seed(0)
        flow = NormalizingFlow(couplings=2, hidden=4, linear_layers=3).double()
        cfg = TrainConfig(batch_size=8, min_steps=400, small_noise=noise)
        history = fit(flow, x, x_val=x[:4], config=cfg, progress=False)
        assert history.lengthened and history.best_epoch is None
        y = flow.standardization(x)
        rows = torch.cat(seen)
        nearest = torch.cdist(rows, y).argmin(dim=1)
        residual = rows - y[nearest]
        if noise == 0:
            assert torch.equal(residual, torch.zeros_like(residual))
        else:
            assert residual.std().item() == pytest.approx(noise, rel=0.1)
            assert residual.mean(0).abs().max().item() < 0.1 * noise
        # The validation points were scored as they are, and the model ends with the
        # weights of its last epoch, which the last validation loss measured.
        now = -flow.log_prob(x[:4], standardized=True).mean().item()
        assert now == pytest.approx(history.epochs[-1]["val_loss"], abs=1e-9)


def test_given_decay_and_noise_train_as_the_lengthened_default_does(tmp_path, capsys):
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    args = dict(data=data, model_args={"couplings": 2}, progress=False)
    small = TrainConfig(batch_size=8, min_epochs=1, min_steps=30)  # lengthened to 10 epochs
    _, _, lengthened = train_run("nf", tmp_path / "a", config=small, **args)
    given = replace(small, epochs=10, weight_decay=SMALL_DATA_DECAY, noise=SMALL_DATA_NOISE)
    _, _, asked = train_run("nf", tmp_path / "b", config=given, **args)
    assert asked.batch_loss == lengthened.batch_loss and not asked.lengthened
    # On the command line: the options reach the config, and the summary names them.
    argv = ["train", "nf", "--data", data, "--couplings", "2", "--batch-size", "8"]
    assert (
        main(
            [
                *argv,
                "--epochs",
                "3",
                "--weight-decay",
                "0.25",
                "--noise",
                "0.05",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "; with weight decay 0.25 and noise 0.05 (standardized units) on its batches;" in out
    train = json.loads((tmp_path / "c" / "config.json").read_text())["train"]
    assert (train["weight_decay"], train["noise"]) == (0.25, 0.05)


def test_a_run_recorded_before_the_noise_resumes_as_it_trained():
    old = {"epochs": None, "batch_size": 128, "weight_decay": None}
    cfg = TrainConfig(**upgrade_train(old))
    assert cfg.schedule(245) == Schedule(1000, 2, True, 2.0, noise=0.0, lengthened=True)
    before = {**old, "small_decay": 0.5, "small_noise": 0.1, "keep_best": False}
    assert upgrade_train(before) == {**before, "noise": None}  # before noise could be given
    now = {**before, "noise": 0.3}
    assert upgrade_train(now) == now


def test_a_tiny_data_set_trains_min_steps_and_with_keep_best_ends_with_its_best_epoch():
    x, x_val = two_blobs(40, 0), two_blobs(20, 1)
    torch.manual_seed(0)
    flow = NormalizingFlow(couplings=3, hidden=16, linear_layers=3).double()
    cfg = TrainConfig(
        batch_size=16, lr=2e-2, min_epochs=2, min_steps=150, weight_decay=0.0, keep_best=True
    )
    history = fit(flow, x, x_val=x_val, config=cfg, progress=False)
    assert len(history.batch_loss) == 150 and len(history.epochs) == 50
    val = [row["val_loss"] for row in history.epochs]
    best = int(np.argmin(val)) + 1
    assert history.best_epoch == best < len(val)  # this run overfits: its best is earlier
    # The model holds that epoch's weights, not the last ones.
    now = -flow.log_prob(x_val, standardized=True).mean().item()
    assert now == pytest.approx(val[best - 1], abs=1e-9)
    assert now < val[-1] - 1e-6


def test_weight_decay_pulls_the_flow_towards_the_identity():
    x = two_blobs(64, 0)
    norms = []
    for decay in (0.0, 5.0):
        torch.manual_seed(0)
        flow = NormalizingFlow(couplings=2, hidden=8, linear_layers=3).double()
        cfg = TrainConfig(epochs=5, batch_size=16, lr=1e-2, weight_decay=decay)
        fit(flow, x, config=cfg, progress=False)
        norms.append(sum(float(p.detach().norm()) ** 2 for p in flow.parameters()))
    assert norms[1] < 0.8 * norms[0]


# -- run files: fewer writes, resume still bit for bit -------------------------------------


class Interrupted(Exception):
    """Stands for a kill in the middle of training."""


def train_killed(out, epoch: int, **args) -> None:
    """Train nf into ``out`` and kill the run at the end of ``epoch``."""

    def kill(model, state):
        if state.epoch == epoch:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_run("nf", out, on_epoch_end=kill, **args)


SMALL_RUN = TrainConfig(batch_size=8, min_epochs=1, min_steps=312, seed=2)


@pytest.mark.parametrize("keep_best", [False, True])
def test_a_run_of_many_tiny_epochs_writes_fewer_checkpoints_and_resumes_bit_for_bit(
    tmp_path, monkeypatch, keep_best
):
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))  # 18 train: 3 steps an epoch
    config = replace(SMALL_RUN, keep_best=keep_best)
    args = dict(data=data, config=config, model_args={"couplings": 2}, progress=False)
    writes = []
    real = flowscope.runs.atomic_write

    def counting(path, payload):
        writes.append(path.name)
        real(path, payload)

    monkeypatch.setattr(flowscope.runs, "atomic_write", counting)
    _, _, full = train_run("nf", tmp_path / "full", **args)
    monkeypatch.setattr(flowscope.runs, "atomic_write", real)
    assert len(full.epochs) == 104 and full.lengthened
    assert (full.best_epoch is not None) == keep_best
    # Every 104 // 50 = 2nd epoch and the last, not all 104.
    assert writes.count(CHECKPOINT) == 52

    out = tmp_path / "killed"
    train_killed(out, 51, **args)
    with pytest.warns(UserWarning, match="partial run, stopped after epoch 50 of 104"):
        killed = load_run(out)[0]
    assert load_checkpoint(out, killed).epoch == 50  # epoch 51 was not written
    _, _, resumed = train_run("nf", out, resume=True, **args)
    assert resumed.best_epoch == full.best_epoch and resumed.batch_loss == full.batch_loss
    a, b = load_run(tmp_path / "full")[0].state_dict(), load_run(out)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_partial_run_says_so_when_loaded_and_a_finished_one_does_not(tmp_path, capsys):
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    config = TrainConfig(epochs=6, batch_size=8)
    args = dict(data=data, config=config, model_args={"couplings": 2}, progress=False)

    out = tmp_path / "killed"
    train_killed(out, 4, **args)
    assert flowscope.runs.run_progress(out) == (4, 6)  # its checkpoint came first
    with pytest.warns(UserWarning, match=r"killed is a partial run, stopped after epoch 4 of 6"):
        load_run(out)
    assert main(["sample", str(out), "-n", "5", "-o", str(tmp_path / "s.csv")]) == 0
    assert f"finish it with `flowscope train nf --out {out} --resume`" in capsys.readouterr().err
    train_run("nf", out, resume=True, **args)
    assert flowscope.runs.run_progress(out) == (6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_run(out)
    assert flowscope.runs.run_progress(tmp_path) is None  # no checkpoint


def test_resuming_with_other_epochs_says_what_the_unset_ones_made(tmp_path):
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    args = dict(data=data, model_args={"couplings": 2}, progress=False)
    config = TrainConfig(batch_size=8, min_epochs=1, min_steps=30)  # lengthened to 10 epochs
    train_run("nf", tmp_path / "nf", config=config, **args)
    again = replace(config, epochs=3, weight_decay=0.5, noise=0.3)
    with pytest.raises(flowscope.runs.RunError) as err:
        train_run("nf", tmp_path / "nf", config=again, resume=True, **args)
    assert "epochs not given (10 for these data) (now 3)" in str(err.value)
    assert f"weight_decay not given ({SMALL_DATA_DECAY:g} for these data) (now 0.5)" in str(
        err.value
    )
    assert f"noise not given ({SMALL_DATA_NOISE:g} for these data) (now 0.3)" in str(err.value)
    assert "None" not in str(err.value) and "keeps the run's own" in str(err.value)
    assert "a run cannot be extended: its learning rate decays to 0" in str(err.value)


def test_resuming_a_run_whose_data_file_is_missing_or_changed_says_so(tmp_path, capsys):
    data = tmp_path / "small.csv"
    write_points(data, two_blobs(20, 0))
    out = tmp_path / "nf"
    argv = ["train", "nf", "--data", str(data), "--out", str(out), "--couplings", "2"]
    assert main([*argv, "--epochs", "2", "--batch-size", "8"]) == 0
    capsys.readouterr()
    data.rename(tmp_path / "moved.csv")
    assert main(["train", "nf", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the run's data file is missing; put it back to evaluate or resume" in err
    write_points(data, two_blobs(21, 0))  # one row more
    assert main(["train", "nf", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the data file has changed since the run was trained" in err and "sha256" not in err
    # Without a checkpoint, the way out is --overwrite, not a plain train that is refused.
    (out / CHECKPOINT).unlink()
    assert main(["train", "nf", "--out", str(out), "--resume"]) == 2
    assert "train with --overwrite instead of --resume to start" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_resuming_a_run_with_damaged_weights_writes_them_again_and_says_so(tmp_path, damage):
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    args = dict(data=data, config=TrainConfig(epochs=2, batch_size=8), progress=False)
    out = tmp_path / "nf"
    train_run("nf", out, model_args={"couplings": 2}, **args)
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    if damage == "flip":  # bytes inside the tensors, not the header: safetensors reads them
        bad = bytearray(good)
        bad[-200:-100] = bytes(b ^ 0xFF for b in bad[-200:-100])
        weights.write_bytes(bytes(bad))
    else:
        weights.unlink()
    with pytest.raises(flowscope.runs.RunError) as err:
        load_run(out)
    assert f"write it again from the run's checkpoint with `flowscope train nf --out {out} " in (
        str(err.value)
    )
    with pytest.warns(UserWarning, match=r"model.safetensors was (damaged|missing).*: written"):
        train_run("nf", out, resume=True, **args)
    assert weights.read_bytes() == good
    with warnings.catch_warnings():  # and a sound file is not rewritten with a note
        warnings.simplefilter("error")
        train_run("nf", out, resume=True, **args)


def test_the_settings_that_act_leave_out_the_small_data_ones_on_other_runs():
    fields = {"small_decay", "small_noise", "keep_best"}
    assert fields <= set(TrainConfig().effective(245))  # lengthened: they act
    assert not fields & set(TrainConfig(epochs=3).effective(245))  # given epochs: not
    assert TrainConfig(small_noise=0.0).effective(250_000) == TrainConfig().effective(250_000)
    assert TrainConfig(small_noise=0.0).effective(245) != TrainConfig().effective(245)


def test_a_run_recorded_before_the_noise_resumes_with_a_fresh_config(tmp_path):
    # A run given its epochs, killed, its config.json as an older flowscope wrote it
    # (without the small-data fields): resuming it with today's config of the same
    # epochs continues it, since those fields do not act on it.
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    args = dict(data=data, model_args={"couplings": 2}, progress=False)
    out = tmp_path / "old"
    train_killed(out, 2, config=TrainConfig(epochs=5, batch_size=8), **args)
    path = out / "config.json"
    raw = json.loads(path.read_text())
    for name in ("small_decay", "small_noise", "keep_best"):
        del raw["train"][name]
    path.write_text(json.dumps(raw))
    train_run("nf", out, resume=True, config=TrainConfig(epochs=5, batch_size=8), **args)
    assert flowscope.runs.run_progress(out) == (5, 5)


def test_training_again_removes_the_eval_json_of_the_weights_it_replaces(tmp_path, capsys):
    data = write_points(tmp_path / "small.csv", two_blobs(40, 0))
    out = tmp_path / "run"
    argv = ["train", "nf", "--data", data, "--out", str(out), "--epochs", "2", "--couplings", "2"]
    assert main(argv) == 0
    assert main(["eval", str(out), "-n", "20"]) == 0
    assert (out / "eval.json").is_file()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "eval.json").exists()
    assert f"removed {out / 'eval.json'}: it measured the weights" in capsys.readouterr().err
    # A training that fails before it starts leaves the file alone.
    assert main(["eval", str(out), "-n", "20"]) == 0
    assert main(argv) == 2  # the folder holds a run: neither --overwrite nor --resume
    assert (out / "eval.json").is_file()


def test_train_says_when_a_run_is_short_for_its_data(tmp_path, capsys):
    data = write_points(tmp_path / "small.csv", two_blobs(40, 0))
    out = tmp_path / "run"
    argv = ["train", "nf", "--data", data, "--out", str(out), "--epochs", "2", "--couplings", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "flowscope: note: 2 epochs of 1 step on 36 training points are 2 optimizer steps" in err
    assert "short for data this small" in err


def test_train_says_how_a_run_was_lengthened_for_its_data(tmp_path, capsys):
    data = write_points(tmp_path / "small.csv", two_blobs(40, 0))
    argv = ["train", "nf", "--data", data, "--out", str(tmp_path / "run"), "--couplings", "2"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    nf = recipe("nf")
    decay = f"with weight decay {nf.small_decay:g} and noise {nf.small_noise:g} (standardized"
    want = f"lengthened to at least 2,000 steps for data this small, {decay}"
    assert want in out and "kept epoch" not in out
    # A run given its epochs is not lengthened, and does not say so.
    assert main([*argv, "--overwrite", "--epochs", "2"]) == 0
    assert "lengthened" not in capsys.readouterr().out


# -- the Gaussian-mixture baseline ----------------------------------------------------------


def test_the_mixture_baseline_finds_two_blobs_and_their_entropy():
    b = mixture_baseline(two_blobs(400, 0), two_blobs(4000, 1))
    # Two unit Gaussians far apart: log 2 + log(2 pi e) nats per point.
    assert b.components == (2,)
    assert b.nll_data == pytest.approx(math.log(2) + math.log(2 * math.pi * math.e), abs=0.05)
    one = mixture_baseline(two_blobs(400, 0), two_blobs(4000, 1), max_components=1)
    assert one.components == (1,) and one.nll_data > b.nll_data + 0.5


def test_the_mixture_baseline_has_no_more_parameters_than_points():
    # Ten points of two far blobs: a component per point would have the highest
    # likelihood and BIC; the mixture stays a single Gaussian, whose NLL is modest.
    x, test = two_blobs(10, 0), two_blobs(4000, 1)
    b = mixture_baseline(x, test)
    one = mixture_baseline(x, test, max_components=1)
    assert b.components == (1,) and b.nll_data == pytest.approx(one.nll_data)
    assert b.nll_data < 10
    assert mixture_baseline(two_blobs(12, 0), test).components[0] <= 2  # (12 + 1) // 6
    assert [most_components(n, 2) for n in (1, 10, 11, 59, 60, 1000)] == [1, 1, 2, 10, 10, 10]
    assert most_components(100, 3) == 100 // 10  # 3 means, 6 covariances and a weight


def spiked(n: int, seed: int) -> torch.Tensor:
    """Two blobs, a quarter of whose points have their first coordinate recorded as
    exactly 4.0 (as a duration coded "long")."""
    x = two_blobs(n, seed)
    x[: n // 4, 0] = 4.0
    return x


@pytest.mark.parametrize("scale", [1.0, 0.1, 30.0])  # the floor is in data units
def test_the_mixture_baseline_says_which_test_points_lie_on_a_collapsed_component(scale):
    train, test = spiked(400, 0) * scale, spiked(400, 1) * scale
    b = mixture_baseline(train, test)
    assert b.collapsed_components >= 1
    # The test points at exactly 4.0 lie on the spike, and others only within a hair of it.
    assert int((test[:, 0] == 4.0 * scale).sum()) == 100
    near = int(((test[:, 0] - 4.0 * scale).abs() < 0.005).sum())  # 5 sds of the floor
    assert 100 <= b.collapsed_test_points <= near < 115
    # Where nothing repeats, nothing collapses.
    plain = mixture_baseline(two_blobs(400, 0), two_blobs(400, 1))
    assert (plain.collapsed_components, plain.collapsed_test_points) == (0, 0)


def test_eval_says_when_the_baseline_scores_on_a_collapsed_component(tmp_path):
    from flowscope.evaluate import format_table

    r = {"nll_data": 4.0, "gmm_nll_data": 3.0, "gmm_nll_standardized": 2.0, "nll_points": 30}
    r.update(gmm_components=[3], gmm_train_points=300, gmm_model_train_points=300)
    rows = flowscope.evaluate._baseline_rows(r)
    assert len(rows) == 2
    rows = flowscope.evaluate._baseline_rows(
        {**r, "gmm_collapsed_components": 1, "gmm_collapsed_test_points": 7}
    )
    assert rows[2][:2] == ("  test points on collapsed components", "7")
    assert rows[2][2].startswith("test points on 1 component of the mixture collapsed onto")
    assert rows[2][2].endswith("the mixture's score on them measures that floor, not the data")
    # A collapsed component no test point lies on changes no score: no row.
    none_on = {**r, "gmm_collapsed_components": 1, "gmm_collapsed_test_points": 0}
    assert len(flowscope.evaluate._baseline_rows(none_on)) == 2
    # And through evaluate_run, into eval.json.
    assert (
        main(
            [
                "train",
                "nf",
                "--data",
                write_points(tmp_path / "spiked.csv", spiked(400, 0)),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "1",
                "--couplings",
                "2",
            ]
        )
        == 0
    )
    result = evaluate_run(tmp_path / "run", n=50, floor_pairs=0)
    assert result["gmm_collapsed_components"] >= 1 and result["gmm_collapsed_test_points"] >= 1
    assert "test points on collapsed components" in format_table(result)


def test_the_mixture_baseline_scores_each_test_point_in_the_order_given():
    train, test = spiked(400, 0), spiked(400, 1)
    labels_train, labels_test = (train[:, 1] > 0).long(), (test[:, 1] > 0).long()
    b = mixture_baseline(train, test, labels_train, labels_test, max_components=4)
    assert b.points.shape == (400,) and b.points.dtype == torch.float64
    assert float(b.points.mean()) == pytest.approx(b.nll_data, rel=1e-12)
    # Class by class, the values are those of that class's mixture alone.
    for c in (0, 1):
        alone = mixture_baseline(train[labels_train == c], test[labels_test == c], max_components=4)
        assert torch.equal(b.points[labels_test == c], alone.points)
        assert torch.equal(b.on_collapsed[labels_test == c], alone.on_collapsed)
    assert int(b.on_collapsed.sum()) == b.collapsed_test_points > 0
    assert bool((test[b.on_collapsed, 0] - 4.0).abs().max() < 0.005)  # all on the spike


def test_the_held_out_nll_has_each_points_value_and_a_standard_error():
    torch.manual_seed(0)
    flow = NormalizingFlow(couplings=2).double()
    flow.standardization.fit(two_blobs(200, 0) * 3)
    x = two_blobs(50, 1) * 3
    nll = flowscope.metrics.heldout_nll(flow, x, batch_size=16)  # 4 batches
    expected = -flow.log_prob(x).detach()  # data units
    assert torch.allclose(nll.points, expected, rtol=0, atol=1e-12)
    assert nll.data == pytest.approx(float(expected.mean()), abs=1e-12)
    assert nll.sem == pytest.approx(float(expected.std()) / math.sqrt(50), rel=1e-12)
    # Standardized per class, each point's shift is its own class's.
    torch.manual_seed(0)
    cond = NormalizingFlow(couplings=2, num_classes=2, standardize="class").double()
    labels = (x[:, 0] > 0).long()
    xc = x * torch.where(labels[:, None] == 1, torch.tensor([1.0, 20.0]), torch.tensor([1.0, 1.0]))
    cond.standardization.fit(xc, labels)  # class 1 twenty times as spread along y
    per_class = flowscope.metrics.heldout_nll(cond, xc, labels, batch_size=16)
    expected = -cond.log_prob(xc, labels).detach()
    assert torch.allclose(per_class.points, expected, rtol=0, atol=1e-12)
    assert per_class.data == pytest.approx(float(expected.mean()), abs=1e-12)
    shift = cond.standardization.log_abs_det(labels)
    assert float(shift.max() - shift.min()) > 2  # log 20 apart: a mean shift would show
    assert flowscope.metrics.standard_error(expected[:1]) is None  # one point: no spread
    assert flowscope.metrics.standard_error(torch.tensor([1.0, math.inf])) is None


def test_eval_gives_standard_errors_and_says_when_the_test_points_are_too_few(file_run):
    with pytest.warns(UserWarning, match=r"its test part has only 10 points, so the held-out") as w:
        result = evaluate_run(file_run, n=50, floor_pairs=2)
    note = str(w[0].message)
    assert "W2 between 10-point sets (and its noise floor, from 5-point draws) ranks no" in note
    assert note.endswith(
        "(flowscope.evaluate.paired_nll), or cross-validate over the whole file "
        "(flowscope.crossval)"
    )
    model, info = load_run(file_run)
    train, test = run_data(info, "train"), run_data(info, "test")
    nll = flowscope.metrics.heldout_nll(model, test.x)
    gap = mixture_baseline(train.x, test.x).points - nll.points
    assert result["nll_sem"] == pytest.approx(float(nll.points.std()) / math.sqrt(10))
    assert result["gmm_gap_sem"] == pytest.approx(float(gap.std()) / math.sqrt(10))
    # The verdict weighs the gap against its paired standard error.
    r = {"nll_data": 4.0, "gmm_nll_data": 4.1, "gmm_nll_standardized": 2.0, "nll_points": 10_000}
    r.update(gmm_components=[3], gmm_train_points=300, gmm_model_train_points=300)
    close = flowscope.evaluate._baseline_rows({**r, "gmm_gap_sem": 0.06})[0][2]
    assert "0.1000 ± 0.0600 nats/point (paired standard error) better, inside the 95% " in close
    assert "interval of ± 0.1176 around no difference (Student's t on 9999 degrees of " in close
    assert "freedom): these test points do not tell the two apart" in close
    apart = flowscope.evaluate._baseline_rows({**r, "gmm_gap_sem": 0.04})[0][2]
    assert apart.endswith("the model is 0.1000 ± 0.0400 nats/point (paired standard error) better")
    # On 3 points the interval is t's (4.30 standard errors), not the normal's 1.96.
    three = flowscope.evaluate._baseline_rows({**r, "gmm_gap_sem": 0.04, "nll_points": 3})[0][2]
    assert "95% interval of ± 0.1721 around no difference (Student's t on 2 degrees" in three
    one = flowscope.evaluate._baseline_rows({**r, "gmm_gap_sem": None, "nll_points": 1})[0][2]
    assert one.endswith(
        "the model is 0.1000 nats/point better on 1 test point: too few to tell the two apart"
    )


def test_eval_of_enough_test_points_says_nothing_of_their_number(tmp_path):
    out = tmp_path / "nf"
    cfg = TrainConfig(epochs=1)
    train_run("nf", out, data="moons", n_points=200, holdout_points=100, config=cfg, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_run(out, n=100, floor_pairs=0, baseline=False)
    assert result["nll_points"] == 100 and result["nll_sem"] > 0
    # Drawn data get more test points by asking for them.
    few = tmp_path / "few"
    train_run("nf", few, data="moons", n_points=200, holdout_points=50, config=cfg, progress=False)
    with pytest.warns(UserWarning, match="only 50 points") as caught:
        evaluate_run(few, n=100, floor_pairs=0, baseline=False)
    assert str(caught[0].message).endswith("or train with more --holdout-points")


def test_the_mixture_baseline_needs_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.mixture", None)  # import fails
    with pytest.raises(MissingDependency, match="pip install scikit-learn"):
        mixture_baseline(two_blobs(20, 0), two_blobs(20, 1))


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    data = write_points(root / "blobs.csv", two_blobs(200, 0).numpy() * [1.0, 30.0])
    cfg = TrainConfig(epochs=1, batch_size=64)
    train_run("nf", root / "nf", data=data, config=cfg, progress=False)
    return root / "nf"


def test_eval_prints_and_records_the_mixture_baseline(file_run, capsys):
    assert main(["eval", str(file_run), "--n", "50"]) == 0
    out = capsys.readouterr().out
    assert "Gaussian mixture baseline, data units" in out and "by BIC" in out
    assert "(paired standard error) WORSE: the mixture fits these data better" in out
    result = json.loads((file_run / "eval.json").read_text())
    model, info = load_run(file_run)
    train, test = run_data(info, "train"), run_data(info, "test")
    b = mixture_baseline(train.x, test.x, standardization=model.standardization)
    assert result["gmm_nll_data"] == pytest.approx(b.nll_data, rel=1e-12)
    assert result["gmm_components"] == list(b.components) and len(b.components) == 1
    assert result["gmm_train_points"] == 180
    # The same units as the model's: the standardized values differ by the same log|det|.
    shift = result["nll_standardized"] - result["nll_data"]
    assert result["gmm_nll_standardized"] - result["gmm_nll_data"] == pytest.approx(shift)
    assert abs(shift) > 1  # the second column's scale of 30


def test_eval_without_the_baseline_records_none(file_run):
    result = evaluate_run(file_run, n=20, baseline=False, floor_pairs=0)
    assert result["gmm_nll_data"] is None and result["gmm_components"] is None


def test_sample_plot_frames_every_point_off_the_edge_on_axes_of_any_scale(
    file_run, tmp_path, monkeypatch
):
    import flowscope.plots

    seen = {}
    real = flowscope.plots.class_scatter

    def spy(panels, **kwargs):
        seen["points"], seen["frame"] = panels[0][0], kwargs["frame"]
        return real(panels, **kwargs)

    monkeypatch.setattr(flowscope.plots, "class_scatter", spy)
    plot = tmp_path / "s.png"
    assert main(["sample", str(file_run), "-n", "500", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0
    pts = seen["points"]
    for axis, (lo, hi) in enumerate(seen["frame"]):  # scales 1 and 30 (file_run's data)
        span = pts[:, axis].max() - pts[:, axis].min()
        assert lo < pts[:, axis].min() - 0.02 * span and hi > pts[:, axis].max() + 0.02 * span
        assert hi - lo < 1.1 * span  # and no wider than a few percent either side
    # One point has no span: its frame is a unit about it (matplotlib warned of equal limits).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["sample", str(file_run), "-n", "1", "--plot", str(plot)]) == 0
    (x0, x1), (y0, y1) = seen["frame"]
    assert x0 < seen["points"][0, 0] < x1 and y0 < seen["points"][0, 1] < y1


@pytest.mark.parametrize("model", ["nf", "fm"])
def test_a_labelled_file_for_an_unconditional_model_names_the_types_way(tmp_path, model):
    x = two_blobs(40, 0).numpy()
    path = tmp_path / "labelled.csv"
    np.savetxt(path, np.c_[x, x[:, 0] > 0], delimiter=",", header="a,b,label", comments="")
    with pytest.raises(UnusedLabels) as err:
        train_run(model, tmp_path / "run", data=str(path), progress=False)
    assert isinstance(err.value, ValueError) and not (tmp_path / "run").exists()
    if model == "nf":  # nf may condition on them
        assert str(err.value).endswith("`flowscope train nf --conditional` learns p(x | label)")
    else:
        assert str(err.value).endswith(" with --conditional (fm has no conditional form)")
        assert "a conditional model: cfm, or nf" in str(err.value)


def test_weight_decay_may_not_flip_the_weights_and_the_summary_names_no_regularization(
    tmp_path, capsys
):
    # AdamW scales each weight by 1 - lr * decay per step: at or past 1 the weights flip.
    with pytest.raises(ValueError, match=r"weight_decay=1000 with lr=0.001: each step scales"):
        TrainConfig(weight_decay=1000.0)
    with pytest.raises(ValueError, match="give a small_decay below 100"):
        TrainConfig(small_decay=200.0, lr=0.01)
    TrainConfig(weight_decay=999.0)  # 1 - 0.999 > 0: allowed
    data = write_points(tmp_path / "small.csv", two_blobs(20, 0))
    argv = ["train", "nf", "--data", data, "--couplings", "2", "--batch-size", "8"]
    assert (
        main(
            [
                *argv,
                "--out",
                str(tmp_path / "a"),
                "--weight-decay",
                "-0",
                "--noise",
                "0",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "weight decay" not in out and "noise" not in out  # nothing to name on such a run
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["weight_decay"] == 0
    assert (
        str(json.loads((tmp_path / "a" / "config.json").read_text())["train"]["weight_decay"])
        == "0.0"
    )
    assert main([*argv, "--out", str(tmp_path / "b"), "--noise", "3", "--epochs", "1"]) == 0
    assert "--noise 3 is more than the data's own spread" in capsys.readouterr().err


def test_eval_pairs_runs_on_the_same_test_points(file_run, tmp_path, capsys):
    from flowscope.evaluate import format_paired, paired_nll

    data = load_run(file_run)[1].data["source"]
    other = tmp_path / "nf2"
    cfg = TrainConfig(epochs=2, batch_size=64)  # the same seed: the same split of the file
    train_run("nf", other, data=data, config=cfg, model_args={"couplings": 2}, progress=False)
    assert main(["eval", str(other), "-n", "20", "--floor-pairs", "1"]) == 0
    hint = f"`flowscope eval {other} OTHER_RUN` compares this model with another run's"
    assert hint in capsys.readouterr().err  # one run on few test points: how to pair it
    assert main(["eval", str(file_run), str(other), "-n", "20", "--floor-pairs", "1"]) == 0
    out, err = capsys.readouterr()
    assert "OTHER_RUN" not in err  # the command pairs them already
    a, b = (json.loads((r / "eval.json").read_text()) for r in (file_run, other))
    test = run_data(load_run(file_run)[1], "test")
    nll_a = flowscope.metrics.heldout_nll(load_run(file_run)[0], test.x).points
    diff = flowscope.metrics.heldout_nll(load_run(other)[0], test.x).points - nll_a
    assert a["nll_per_point"] == pytest.approx(nll_a.tolist())  # eval.json keeps them
    p = paired_nll(a, b)
    assert p["difference"] == pytest.approx(float(diff.mean()), abs=1e-9)
    assert p["sem"] == pytest.approx(float(diff.std()) / math.sqrt(len(diff)), rel=1e-9)
    assert p["points"] == 10 and p["reach"] == pytest.approx(2.2622 * p["sem"], rel=1e-4)
    assert f"held-out NLL against {file_run}, paired on the same 10 test points" in out
    assert f"{other}  {p['difference']:+.4f} ± {p['sem']:.4f}" in out
    # Other test points, or a conditional model beside an unconditional one: no pairing.
    assert paired_nll(a, {**b, "test_sha256": "0" * 64}) is None
    assert paired_nll(a, {**b, "conditional": True}) is None
    assert "n/a  measured on other test points" in format_paired(
        [a, {**b, "test_sha256": "0" * 64}]
    )
    assert "n/a  one is conditional" in format_paired([a, {**b, "conditional": True}])
    # The same NLL on every point (the same model, or the same data in another file) is a
    # tie, not "better" (it was: an interval of 0 around 0 holds nothing).
    tie = format_paired([a, {**a, "run": "copy"}])
    assert "copy  +0.0000 ± 0.0000  identical NLLs on every test point" in tie


def test_the_mixture_of_the_same_training_points_is_fitted_once(monkeypatch):
    import flowscope.baseline as baseline

    calls = []
    real = baseline.fit_mixture
    monkeypatch.setattr(baseline, "fit_mixture", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(baseline, "_FITS", baseline.OrderedDict())  # an empty cache
    train = two_blobs(200, 0)
    first = mixture_baseline(train, two_blobs(50, 1), max_components=3)
    again = mixture_baseline(train, two_blobs(50, 1), max_components=3)
    other = mixture_baseline(train, two_blobs(60, 2), max_components=3)  # other test points
    assert len(calls) == 1 and torch.equal(first.points, again.points) and other.test_points == 60
    mixture_baseline(train * 2, two_blobs(50, 1), max_components=3)  # other training points
    mixture_baseline(train, two_blobs(50, 1), max_components=2)  # other settings
    assert len(calls) == 3


def test_a_class_of_one_or_two_training_points_counts_as_collapsed():
    # Fitted to 1 or 2 points, a class's mixture is held up along some axis by the
    # covariance floor alone: its score of that class's test points (millions of nats
    # in a trial's cross-validation) measures the floor, as a coded duration's does.
    g = torch.Generator().manual_seed(0)
    common = torch.randn(100, 2, generator=g, dtype=torch.float64)
    rare = torch.tensor([[5.0, 5.0], [5.5, 4.0]], dtype=torch.float64)
    x_train = torch.cat([common, rare])
    labels_train = torch.tensor([0] * 100 + [1, 1])
    x_test = torch.cat([torch.randn(10, 2, generator=g, dtype=torch.float64), rare + 0.3])
    labels_test = torch.tensor([0] * 10 + [1, 1])
    b = mixture_baseline(x_train, x_test, labels_train, labels_test)
    assert b.on_collapsed.tolist() == [False] * 10 + [True, True]
    assert b.collapsed_components == 1 and float(b.points[10:].min()) > 100
    # A tight class of many points is its own spread: not collapsed (std 0.002 in data of
    # std 1, a variance 4x the covariance floor).
    tight = torch.randn(200, 2, generator=g, dtype=torch.float64) * 0.002 + 5
    x_train = torch.cat([common, tight])
    labels_train = torch.tensor([0] * 100 + [1] * 200)
    b = mixture_baseline(
        x_train, tight[:20] + 0.001, labels_train, torch.ones(20, dtype=torch.long)
    )
    assert b.collapsed_components == 0 and not b.on_collapsed.any()
