"""Tests of flowscope.train: the one trainer of both model families."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from flowscope.data import olympic_rings
from flowscope.flows import NormalizingFlow
from flowscope.matching import FlowMatching
from flowscope.train import Schedule, TrainConfig, TrainingDiverged, fit

F64 = torch.float64


@pytest.fixture(scope="module")
def data():
    x = olympic_rings(600, seed=0).double()
    x_val = olympic_rings(1000, seed=1).double()
    return x, x_val


def small_nf(seed: int = 0) -> NormalizingFlow:
    torch.manual_seed(seed)
    return NormalizingFlow(2, couplings=4, hidden=8, linear_layers=3).double()


def small_fm(seed: int = 0, num_classes=None, gaussian_skip: bool = True) -> FlowMatching:
    torch.manual_seed(seed)
    fm = FlowMatching(2, num_classes=num_classes, hidden=32, layers=3, gaussian_skip=gaussian_skip)
    return fm.double()


CONFIG = TrainConfig(epochs=3, batch_size=64, lr=5e-3, seed=0)


def test_fit_lowers_the_validation_loss_of_a_normalizing_flow(data):
    x, x_val = data
    flow = small_nf()
    flow.standardization.fit(x)  # fit does the same; needed for the loss before training
    before = -flow.log_prob(x_val, standardized=True).mean().item()
    history = fit(flow, x, x_val=x_val, config=CONFIG)
    after = history.epochs[-1]["val_loss"]
    assert after < before - 0.2
    assert after == pytest.approx(-flow.log_prob(x_val, standardized=True).mean().item())


def test_fit_lowers_the_validation_loss_of_flow_matching(data):
    x, x_val = data
    fm = small_fm(gaussian_skip=False)
    fm.standardization.fit(x)
    y_val = fm.standardization(x_val)
    before = fm.validation_terms(y_val, None, torch.Generator().manual_seed(5))["loss"]
    history = fit(fm, x, x_val=x_val, config=TrainConfig(epochs=10, batch_size=64, lr=1e-2))
    after = fm.validation_terms(y_val, None, torch.Generator().manual_seed(5))["loss"]
    assert after < before - 0.3
    assert history.epochs[-1]["val_loss"] == pytest.approx(after, abs=0.3)  # other noise draw
    # With the Gaussian skip an untrained model already has the field of the data's first
    # two moments: its loss starts well below the plain model's.
    skip = small_fm()
    skip.standardization.fit(x)
    start = skip.validation_terms(y_val, None, torch.Generator().manual_seed(5))["loss"]
    assert start < before - 0.3


def test_history_rows_and_components(data):
    x, x_val = data
    flow = small_nf()
    history = fit(flow, x, x_val=x_val, config=CONFIG)
    steps = math.ceil(len(x) / CONFIG.batch_size)
    assert len(history.epochs) == CONFIG.epochs
    assert len(history.batch_loss) == CONFIG.epochs * steps
    for k, row in enumerate(history.epochs, start=1):
        assert row["epoch"] == k
        assert {"train_loss", "val_loss", "val_log_pz", "val_log_det", "lr", "seconds"} <= set(row)
        # Eq. 9: the validation loss is minus the mean of its two parts.
        assert row["val_loss"] == pytest.approx(-(row["val_log_pz"] + row["val_log_det"]))
        epoch_losses = history.batch_loss[(k - 1) * steps : k * steps]
        assert row["train_loss"] == pytest.approx(sum(epoch_losses) / steps)
    assert history.epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine decays to 0
    assert history.seconds > 0
    # fit stores the training set's standardization in the model.
    assert torch.allclose(flow.standardization.loc, x.mean(0))
    assert torch.allclose(flow.standardization.scale, x.std(0))


def test_no_validation_set_gives_no_val_columns(data):
    x, _ = data
    history = fit(small_nf(), x, config=TrainConfig(epochs=1, batch_size=128))
    assert len(history.epochs) == 1 and "val_loss" not in history.epochs[0]


@pytest.mark.parametrize("family", ["nf", "fm"])
def test_same_seed_same_losses_other_seed_other_losses(data, family):
    x, x_val = data
    make = small_nf if family == "nf" else small_fm
    cfg = TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=0)
    a = fit(make(), x, x_val=x_val, config=cfg)
    b = fit(make(), x, x_val=x_val, config=cfg)
    c = fit(make(), x, x_val=x_val, config=TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=1))
    assert a.batch_loss == b.batch_loss
    assert [r["val_loss"] for r in a.epochs] == [r["val_loss"] for r in b.epochs]
    assert a.batch_loss != c.batch_loss


def test_nan_loss_raises_naming_epoch_and_step(data):
    x, x_val = data
    flow = small_nf()
    calls = []

    def poison(model, state):
        calls.append(state.epoch)
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)

    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1\b"):
        fit(flow, x, x_val=x_val, config=CONFIG, on_epoch_end=poison)
    assert calls == [1]  # not called again after the divergence


def test_divergence_message_is_true_for_library_use(data):
    x, x_val = data
    flow = small_nf()

    def poison(model, state):
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)

    with pytest.raises(TrainingDiverged) as err:
        fit(flow, x, x_val=x_val, config=CONFIG, on_epoch_end=poison)
    message = str(err.value)
    assert (err.value.epoch, err.value.step) == (2, 1)
    assert "epoch 2, step 1 of 10" in message and "Lower the learning rate" in message
    # fit knows no command line and writes no checkpoint of its own.
    assert "--lr" not in message and "--seed" not in message
    assert "saved checkpoint" not in message and "on_epoch_end" in message


def test_validation_divergence_names_epoch_and_step(data):
    x, x_val = data
    x_val = x_val.clone()
    x_val[3] = 1e200  # a finite held-out point whose density underflows: its loss is inf
    with pytest.raises(TrainingDiverged) as err:
        fit(small_nf(), x, x_val=x_val, config=CONFIG)
    assert "validation loss became" in str(err.value) and "after epoch 1, step 10 of 10" in str(
        err.value
    )
    assert "--lr" not in str(err.value) and (err.value.epoch, err.value.step) == (1, 10)


def test_empty_training_or_validation_sets_are_refused(data):
    x, x_val = data
    with pytest.raises(ValueError, match="x_val holds no points"):
        fit(small_nf(), x, x_val=x_val[:0], config=CONFIG)
    with pytest.raises(ValueError, match="x holds no points"):
        fit(small_nf(), x[:0], config=CONFIG)


@pytest.mark.parametrize("name", ["epochs", "batch_size", "val_size"])
@pytest.mark.parametrize("bad", [True, 2.0])
def test_train_config_counts_must_be_integers(name, bad):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        TrainConfig(**{name: bad})


def test_nan_data_is_caught_before_training(data):
    # A NaN in one training point would make the standardization, and so every loss, NaN.
    x, _ = data
    x = x.clone()
    x[100, 0] = math.nan
    with pytest.raises(ValueError, match="row 100 is .nan"):
        fit(small_nf(), x, config=TrainConfig(epochs=1, batch_size=64))


def test_resume_matches_an_uninterrupted_run(data):
    x, x_val = data
    cfg = TrainConfig(epochs=2, batch_size=64, lr=5e-3)
    full = fit(small_fm(), x, x_val=x_val, config=cfg)
    saved = {}

    def keep(model, state):
        if state.epoch == 1:
            saved["model"] = copy.deepcopy(model.state_dict())
            saved["state"] = copy.deepcopy(state)

    fit(small_fm(), x, x_val=x_val, config=cfg, on_epoch_end=keep)
    model = small_fm(seed=123)
    model.load_state_dict(saved["model"])
    resumed = fit(model, x, x_val=x_val, config=cfg, state=saved["state"])
    assert resumed.batch_loss == full.batch_loss
    assert [r["val_loss"] for r in resumed.epochs] == [r["val_loss"] for r in full.epochs]


def test_conditional_training_uses_labels(data):
    x, y = olympic_rings(300, conditional=True, seed=0)
    fm = small_fm(num_classes=5)
    history = fit(fm, x.double(), y, config=TrainConfig(epochs=1, batch_size=100))
    assert len(history.batch_loss) == 3
    with pytest.raises(ValueError, match="label"):
        fit(small_fm(num_classes=5), x.double(), config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="unconditional"):
        fit(small_fm(), x.double(), y, config=TrainConfig(epochs=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"epochs": -1},
        {"epochs": 1.5},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": math.nan},
        {"lr": math.inf},
        {"val_size": 0},
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_train_config_rejects_bad_values(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_train_config_defaults_are_the_study_recipe():
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.lr) == (128, 1e-3)
    # On the study's 250,000 points: its 20 epochs of 1,954 steps, Adam without weight
    # decay, the last weights kept.
    assert cfg.schedule(250_000) == Schedule(20, 1954, keep_best=False, weight_decay=0.0)


def test_fit_trains_with_one_thread_and_restores_the_count():
    seen = []
    torch.set_num_threads(2)
    model = NormalizingFlow(couplings=1)
    original = model.validation_terms  # called after every epoch, within the training

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    model.validation_terms = spy
    try:
        x = torch.randn(64, 2)
        fit(model, x, x_val=x, config=TrainConfig(epochs=2, batch_size=32))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_adam_runs_in_c_under_autograd_too_and_matches_torchs(data, monkeypatch):
    """A model without a fused loss kernel (a class-conditional flow) gets autograd's
    gradients and Adam's update in C: the same run, to rounding in float64, as with
    torch.optim.Adam's step, which is refused here by FusedAdam.supports."""
    from flowscope import kernels

    x, y = olympic_rings(300, conditional=True, seed=0)
    config = TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=0)

    def conditional_nf():
        torch.manual_seed(0)
        return NormalizingFlow(2, couplings=3, hidden=8, num_classes=5).double()

    steps = []
    real_step = kernels.FusedAdam.step
    monkeypatch.setattr(kernels.FusedAdam, "step", lambda self: steps.append(1) or real_step(self))
    ours = conditional_nf()
    fit(ours, x.double(), y, config=config)
    assert len(steps) == 10  # every step of 2 epochs of 5 batches, the first one too
    monkeypatch.setattr(kernels.FusedAdam, "supports", staticmethod(lambda opt: "refused here"))
    theirs = conditional_nf()
    fit(theirs, x.double(), y, config=config)
    assert len(steps) == 10  # torch.optim.Adam stepped this one
    mine, torchs = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == torchs.keys()
    for name in mine:
        torch.testing.assert_close(mine[name], torchs[name], rtol=1e-10, atol=1e-12, msg=name)
