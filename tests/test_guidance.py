"""Classifier-free guidance (matching/guidance.py): label dropout to a learned null class,
the guided velocity v_null + w (v_class - v_null) in float64, its samplers, its refusals,
and run folders with and without a null class."""

from __future__ import annotations

import math

import pytest
import torch

from flowscope import FlowMatching, olympic_rings
from flowscope.data import RING_CENTERS
from flowscope.matching import DEFAULT_CONDITIONAL_TIME_ALPHA, integrate, time_grid
from flowscope.matching.guidance import check_guidance
from flowscope.metrics import class_coverage
from flowscope.models import MODELS
from flowscope.runs import load_run, train_run
from flowscope.train import TrainConfig

F64 = torch.float64


def guided_model(classes=3, dropout=0.2, skip=True) -> FlowMatching:
    """A float64 model with a null class and weights large enough that the flow bends."""
    torch.manual_seed(0)
    fm = FlowMatching(
        num_classes=classes, hidden=16, layers=3, label_dropout=dropout, gaussian_skip=skip
    ).double()
    with torch.no_grad():
        fm.field.theta.mul_(2.0)
        fm.field.embedding.weight.mul_(3.0)
    return fm


def plain_guided(fm, labels, w):
    """v_null + w (v_class - v_null) written out with the model's differentiable velocity."""
    null = torch.full_like(labels, fm.num_classes)

    def v(y, t):
        v_null = fm.velocity(y, t, null)
        return v_null + w * (fm.velocity(y, t, labels) - v_null)

    return v


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("skip", [False, True])
def test_the_guided_velocity_is_v_null_plus_w_times_the_difference(w, skip):
    fm = guided_model(skip=skip)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(40, 2, generator=g, dtype=F64)
    labels = torch.arange(40) % 3
    with torch.no_grad():
        for t in (0.0, 0.3, 0.97):
            got = fm.ode_velocity(labels, w)(y, torch.tensor(t, dtype=F64))
            want = plain_guided(fm, labels, w)(y, t)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # w = 1 is the conditional field and w = 0 the null class's, not a blend of them.
    if w in (0.0, 1.0):
        own = labels if w == 1 else torch.full_like(labels, 3)
        with torch.no_grad():
            torch.testing.assert_close(
                fm.ode_velocity(labels, w)(y, torch.tensor(0.3, dtype=F64)),
                fm.velocity(y, 0.3, own),
                rtol=1e-12,
                atol=1e-12,
            )


@pytest.mark.parametrize("w", [0.0, 1.5, 3.0])
@pytest.mark.parametrize("solver", ["euler", "rk4"])
def test_guided_sampling_integrates_the_guided_field(w, solver):
    # By the sampler's Euler kernel where it runs (one step at a time for 0 < w != 1), or
    # PyTorch's: the same numbers as integrating the written-out field.
    fm = guided_model()
    labels = torch.arange(30) % 3
    x = fm.sample(
        30,
        labels=labels,
        generator=torch.Generator().manual_seed(2),
        dt=0.05,
        solver=solver,
        guidance=w,
    )
    z = fm.base_sample(30, torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1 = integrate(plain_guided(fm, labels, w), z, time_grid(0.05), solver)[-1]
    torch.testing.assert_close(x, fm.standardization.inverse(y1, labels), rtol=1e-10, atol=1e-10)
    # The guided flow is an ODE like any other: encode runs it back, trajectory records it.
    back = fm.encode(x, labels, dt=0.05, solver=solver, guidance=w)
    with torch.no_grad():
        y0 = integrate(plain_guided(fm, labels, w), y1, time_grid(0.05, 1.0, 0.0), solver)[-1]
    torch.testing.assert_close(back, y0, rtol=1e-10, atol=1e-10)
    if solver == "rk4":  # fourth order: back to the noise up to the steps' small error
        assert (back - z).abs().max() < 1e-3
    path = fm.trajectory(z, labels=labels, dt=0.05, solver=solver, guidance=w)
    torch.testing.assert_close(path[-1], x, rtol=1e-10, atol=1e-10)


def test_guidance_one_is_the_conditional_model_and_changes_nothing():
    fm = guided_model()
    labels = torch.arange(12) % 3

    def draw(**kw):
        return fm.sample(12, labels=labels, generator=torch.Generator().manual_seed(3), **kw)

    assert torch.equal(draw(dt=0.1, guidance=1), draw(dt=0.1))
    assert not torch.allclose(draw(dt=0.1, guidance=2), draw(dt=0.1))
    x = torch.randn(5, 2, dtype=F64)
    lp = fm.log_prob(x, torch.arange(5) % 3, steps=10)
    assert torch.equal(fm.log_prob(x, torch.arange(5) % 3, steps=10, guidance=1.0), lp)


def test_label_dropout_replaces_a_share_p_of_the_labels_by_the_null_class():
    p, n = 0.25, 20_000
    fm = FlowMatching(num_classes=4, hidden=8, layers=2, label_dropout=p)
    plain = FlowMatching(
        num_classes=4, hidden=8, layers=2, standardize="global", times=fm.config()["times"]
    )
    x1 = torch.randn(n, 2)
    labels = torch.arange(n) % 4
    b = fm.training_batch(x1, labels, torch.Generator().manual_seed(0))
    dropped = b.labels == 4
    assert abs(float(dropped.double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(b.labels[~dropped], labels[~dropped])
    # The mask is drawn after the noise and the times, which stay those of the plain model.
    ref = plain.training_batch(x1, labels, torch.Generator().manual_seed(0))
    assert torch.equal(b.x0, ref.x0) and torch.equal(b.t, ref.t)
    assert torch.equal(ref.labels, labels)
    # The null class is one more embedding row; the config records the probability.
    assert fm.field.embedding.num_embeddings == 5 and fm.null_label == 4
    assert plain.field.embedding.num_embeddings == 4 and plain.null_label is None
    assert fm.config()["label_dropout"] == p and fm.config()["standardize"] == "global"
    assert "p = 0.25" in fm.describe_loss()


def test_label_dropout_trains_with_the_conditional_models_times_or_those_given():
    fm = FlowMatching(num_classes=4, hidden=8, layers=2, label_dropout=0.1)
    plain = FlowMatching(num_classes=4, hidden=8, layers=2)
    assert fm.config()["times"] == {"name": "beta", "alpha": DEFAULT_CONDITIONAL_TIME_ALPHA}
    assert plain.config()["times"] == fm.config()["times"]
    # Beta(12, 1), the guidance benchmark's: the batches' times have mean a / (a + 1).
    n, a = 20_000, 12.0
    sharp = FlowMatching(
        num_classes=4, hidden=8, layers=2, label_dropout=0.1, times={"name": "beta", "alpha": a}
    )
    t = sharp.training_batch(torch.randn(n, 2), torch.arange(n) % 4).t
    sd = math.sqrt(a / ((a + 1) ** 2 * (a + 2)) / n)
    assert abs(float(t.double().mean()) - a / (a + 1)) < 5 * sd
    # Times given explicitly are the caller's; an OT coupling keeps its own default.
    given = FlowMatching(num_classes=4, hidden=8, layers=2, label_dropout=0.1, times="uniform")
    assert given.config()["times"] == {"name": "uniform"}
    for name in ("ot", "class-ot"):
        kept = FlowMatching(num_classes=4, hidden=8, layers=2, coupling=name)
        with_null = FlowMatching(
            num_classes=4, hidden=8, layers=2, coupling=name, label_dropout=0.1
        )
        assert with_null.config()["times"] == kept.config()["times"]


@pytest.mark.parametrize("w", [-1, -1e-9, math.nan, math.inf, -math.inf, "two", True, [2.0]])
def test_a_bad_guidance_scale_is_a_clear_error(w):
    fm = guided_model()
    with pytest.raises(ValueError, match="finite number >= 0"):
        fm.sample(3, labels=0, guidance=w)
    with pytest.raises(ValueError, match="finite number >= 0"):
        check_guidance(w)


def test_guidance_the_model_cannot_take_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="unconditional"):
        FlowMatching(hidden=8, layers=2).sample(3, guidance=1.0)
    without = FlowMatching(num_classes=3, hidden=8, layers=2)
    without.sample(3, labels=0, guidance=1.0, dt=0.5)  # the plain conditional model
    with pytest.raises(ValueError, match="label dropout"):
        without.sample(3, labels=0, guidance=2.0)
    with pytest.raises(ValueError, match="label dropout"):
        without.sample(3, labels=0, guidance=0.0)
    with pytest.raises(ValueError, match="no log-density with guidance w = 2"):
        guided_model().log_prob(torch.zeros(2, 2, dtype=F64), 0, guidance=2.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"label_dropout": 1.0}, r"\[0, 1\)"),
        ({"label_dropout": -0.1}, r"\[0, 1\)"),
        ({"label_dropout": math.nan}, r"\[0, 1\)"),
        ({"label_dropout": 0.1, "num_classes": None}, "num_classes"),
        ({"label_dropout": 0.1, "standardize": "class"}, "standardize='global'"),
    ],
)
def test_bad_label_dropout_is_a_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        FlowMatching(**{"num_classes": 3, "hidden": 8, "layers": 2, **args})


def test_every_type_that_takes_guidance_is_conditional_and_refuses_it_without_a_null_class():
    steered = [e for e in MODELS if e.takes("guidance")]
    assert steered  # cfm
    for entry in steered:
        assert entry.conditional
        model = entry.build(num_classes=3, **entry.small)
        with pytest.raises(ValueError, match="label dropout"):
            model.sample(2, labels=0, **entry.sampling(guidance=2.0))
        guided = entry.build(num_classes=3, label_dropout=0.1, **entry.small)
        assert guided.sample(2, labels=0, **entry.sampling(guidance=2.0, steps=2)).shape == (2, 2)
    for entry in MODELS:
        if not entry.takes("guidance"):
            assert entry.sampling(guidance=2.0) == {}


@pytest.mark.parametrize("entry", [e for e in MODELS if e.takes("steps")], ids=lambda e: e.name)
def test_k_steps_are_k_euler_steps_for_every_type_with_steps(entry, monkeypatch):
    model = entry.build(**entry.small, **({"num_classes": 3} if entry.conditional else {}))
    labels = 1 if entry.conditional else None
    for k in (1, 3, 4):
        options = entry.sampling(steps=k)
        a = model.sample(5, labels=labels, generator=torch.Generator().manual_seed(0), **options)
        z = model.base_sample(5, torch.Generator().manual_seed(0))
        b = model.decode(z, labels, dt=1.0 / k, solver="euler")
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert len(time_grid(options.get("dt", 1.0 / k))) == k + 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            entry.sampling(steps=bad)
    with pytest.raises(ValueError, match="not both"):
        entry.sampling(steps=2, dt=0.5)


def test_class_coverage_counts_each_rings_own_bins():
    x, y = olympic_rings(5000, conditional=True, seed=0)
    assert class_coverage(x, y).per_class == (1.0,) * 5
    # The samples of class 0 kept only in the upper half of ring 0: half its bins.
    keep = (y != 0) | (x[:, 1] > RING_CENTERS[0][1])
    cov = class_coverage(x[keep], y[keep])
    assert cov.per_class[0] == pytest.approx(0.5, abs=1 / 36)
    assert cov.per_class[1:] == (1.0,) * 4
    assert cov.overall == pytest.approx((4 + cov.per_class[0]) / 5)
    # Points labelled for another ring than the one they lie on reach none of its bins.
    assert class_coverage(x, (y + 1) % 5).overall < 0.5


def test_a_run_trained_with_label_dropout_saves_loads_and_guides(tmp_path):
    config = TrainConfig(epochs=1, batch_size=64)
    model, info, history = train_run(
        "cfm",
        tmp_path / "cfg",
        n_points=400,
        holdout_points=50,
        config=config,
        model_args={"label_dropout": 0.1},
    )
    assert info.model["label_dropout"] == 0.1 and info.model["standardize"] == "global"
    loaded, _ = load_run(tmp_path / "cfg")
    assert loaded.null_label == 5

    def draw(m):
        return m.sample(
            20, labels=2, generator=torch.Generator().manual_seed(0), dt=0.1, guidance=3
        )

    assert torch.equal(draw(model), draw(loaded))


def test_evaluation_and_the_nfe_rows_measure_the_guided_samples(tmp_path):
    from flowscope import metrics
    from flowscope.evaluate import evaluate_run

    train_run(
        "cfm",
        tmp_path / "cfg",
        n_points=400,
        holdout_points=60,
        config=TrainConfig(epochs=1, batch_size=64),
        model_args={"label_dropout": 0.1, "hidden": 16, "layers": 3},
    )
    kw = dict(n=60, dt=0.1, floor_pairs=0, baseline=False)
    plain = evaluate_run(tmp_path / "cfg", **kw)
    guided = evaluate_run(tmp_path / "cfg", guidance=3.0, **kw)
    assert guided["sampler"] == "euler, dt=0.1, guidance w=3" and "guidance" not in plain["sampler"]
    assert guided["w2"] != plain["w2"]  # other samples
    assert guided["nll_data"] == plain["nll_data"]  # the unguided density, both times
    with pytest.raises(ValueError, match="guidance"):
        evaluate_run(tmp_path / "cfg", guidance=-1.0, **kw)

    model, info = load_run(tmp_path / "cfg")
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(40) % 5
    rows = metrics.w2_by_nfe(model, x, labels, nfe=[1, 4], guidance=3.0)
    unguided = metrics.w2_by_nfe(model, x, labels, nfe=[1, 4])
    # A guided step evaluates the network for the class and for the null class.
    assert [r.nfe for r in rows[:2]] == [2, 8] and [r.nfe for r in unguided[:2]] == [1, 4]
    assert rows[-1].solver == "dopri5" and rows[-1].nfe % 2 == 0
    assert rows[0].w2 != unguided[0].w2


def test_guidance_in_the_evaluation_of_a_model_without_a_velocity_is_refused(tmp_path):
    from flowscope import metrics
    from flowscope.evaluate import evaluate_run

    model, _, _ = train_run(
        "nf",
        tmp_path / "nf",
        n_points=300,
        holdout_points=40,
        config=TrainConfig(epochs=1, batch_size=64),
        model_args={"couplings": 2},
    )
    with pytest.raises(ValueError, match="guidance steers"):
        evaluate_run(tmp_path / "nf", guidance=2.0, n=20, floor_pairs=0, baseline=False)
    with pytest.raises(ValueError, match="guidance steers an ODE"):
        metrics.w2_by_nfe(model, torch.zeros(5, 2), guidance=2.0)
