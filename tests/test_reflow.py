"""Reflow: the fixed pairs of a flow, the coupling that trains on them, the run that records
its parent, and the command's bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from flowscope.cli import main
from flowscope.matching import FlowMatching
from flowscope.matching.couplings import PairsCoupling
from flowscope.reflow import PAIRS_FILE, draw_pairs, reflow_run, write_pairs
from flowscope.runs import load_run, read_info, run_data, train_run
from flowscope.train import TrainConfig, fit

F64 = torch.float64
TINY = TrainConfig(epochs=1, batch_size=64)
SMALL = {"hidden": 16, "layers": 3}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A tiny one-epoch fm run on the moons."""
    out = tmp_path_factory.mktemp("reflow") / "fm"
    train_run(
        "fm", out, data="moons", n_points=400, holdout_points=50, config=TINY, model_args=SMALL
    )
    return out


def fm_with_pairs(tmp_path: Path, n: int = 64) -> tuple[FlowMatching, FlowMatching, Path]:
    torch.manual_seed(0)
    model = FlowMatching(**SMALL).double()
    with torch.no_grad():
        model.standardization.loc.copy_(torch.tensor([0.5, -1.0]))
        model.standardization.scale.copy_(torch.tensor([1.5, 0.7]))
    pairs = draw_pairs(model, n, seed=3, dt=0.05)
    path = tmp_path / PAIRS_FILE
    write_pairs(path, pairs, model)
    child = FlowMatching(**SMALL, coupling={"name": "pairs", "path": str(path)}).double()
    return model, child, path


def test_pairs_are_the_source_points_and_where_the_flow_takes_them(tmp_path):
    model, _, _ = fm_with_pairs(tmp_path)
    pairs = draw_pairs(model, 64, seed=3, dt=0.05)
    assert pairs.x0.shape == pairs.x1.shape == (64, 2) and pairs.labels is None
    torch.testing.assert_close(pairs.x0, model.base_sample(64, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(pairs.x1, model.decode(pairs.x0, dt=0.05))


def test_the_coupling_gives_each_data_point_its_own_source_point(tmp_path):
    model, child, path = fm_with_pairs(tmp_path)
    pairs = draw_pairs(model, 64, seed=3, dt=0.05)
    # The child keeps the parent's coordinates, also when the trainer would fit them.
    child.fit_standardization(torch.randn(100, 2, dtype=F64))
    torch.testing.assert_close(child.standardization.loc, model.standardization.loc)
    torch.testing.assert_close(child.standardization.scale, model.standardization.scale)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    y1 = child.standardization(pairs.x1[order])
    drawn = torch.randn(64, 2, dtype=F64)
    torch.testing.assert_close(child.coupling.pair(drawn, y1), pairs.x0[order], rtol=0, atol=0)


@pytest.mark.parametrize("explicit", [False, True])
def test_the_loss_on_pairs_is_the_plain_computation_in_float64(tmp_path, explicit):
    model, child, path = fm_with_pairs(tmp_path)
    if explicit:  # the independent coupling's defaults, given: Beta(5, 1) and the skip
        coupling = {"name": "pairs", "path": str(path)}
        times = {"name": "beta", "alpha": 5.0}
        child = FlowMatching(**SMALL, coupling=coupling, times=times, gaussian_skip=True)
        child = child.double()
    pairs = draw_pairs(model, 64, seed=3, dt=0.05)
    y1 = child.standardization(pairs.x1)
    loss = child.loss(y1, generator=torch.Generator().manual_seed(1), standardized=True)
    g = torch.Generator().manual_seed(1)
    torch.randn(64, 2, generator=g, dtype=F64)  # the drawn noise, which the pairs replace
    u = torch.rand(64, 1, generator=g, dtype=F64)
    # The pairs' defaults: U[0, 1] and no skip; else Beta(5, 1), by its inverse CDF.
    t = u ** (1 / 5) if explicit else u
    x_t = (1 - t) * pairs.x0 + t * y1  # Eq. 14 between each sample and its own noise
    v = child.field(x_t, t)
    if explicit:
        v = v + (2 * t - 1) / (t**2 + (1 - t) ** 2) * x_t  # the skip
    expected = ((v - (y1 - pairs.x0)) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_a_point_that_is_not_one_of_the_pairs_is_a_clear_error(tmp_path):
    _, child, _ = fm_with_pairs(tmp_path)
    with pytest.raises(ValueError, match="from every point of the pairs file"):
        child.coupling.pair(torch.zeros(2, 2, dtype=F64), torch.full((2, 2), 9.0, dtype=F64))


def test_a_changed_pairs_file_is_refused(tmp_path):
    _, child, path = fm_with_pairs(tmp_path)
    config = child.coupling.config()
    with np.load(path) as f:
        arrays = dict(f)
    arrays["x0"][0, 0] += 1.0
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="has changed since the model was made"):
        PairsCoupling(**{k: v for k, v in config.items() if k != "name"})


def test_reflow_records_its_parent_and_can_be_applied_again(parent, tmp_path):
    _, info, _ = reflow_run(parent, tmp_path / "rf2", n_points=200, config=TINY, dt=0.05)
    record = info.extra["parent"]
    assert record["run"] == str(parent.resolve()) and record["rectified"] == 2
    assert record["pairs"] == 200 and record["sampler"] == "euler, dt=0.05"
    assert read_info(tmp_path / "rf2").extra["parent"] == record
    rf2, _ = load_run(tmp_path / "rf2")
    fm, _ = load_run(parent)
    assert rf2.coupling.name == "pairs" and rf2.config()["hidden"] == 16
    torch.testing.assert_close(rf2.standardization.loc, fm.standardization.loc)
    _, info3, _ = reflow_run(tmp_path / "rf2", tmp_path / "rf3", n_points=100, config=TINY)
    assert info3.extra["parent"]["rectified"] == 3
    assert info3.model["coupling"]["path"] == str((tmp_path / "rf3" / PAIRS_FILE).resolve())


def test_reflow_through_the_command_line_and_resume(parent, tmp_path, capsys):
    out = tmp_path / "rf"
    argv = ["reflow", str(parent), "--out", str(out), "--n-points", "100", "--epochs", "2"]
    assert main([*argv, "--dt", "0.1", "--batch-size", "32"]) == 0
    assert "2-rectified fm" in capsys.readouterr().out
    pairs = (out / PAIRS_FILE).read_bytes()
    assert read_info(out).train["batch_size"] == 32 and read_info(out).train["epochs"] == 2
    assert main(["reflow", str(parent), "--out", str(out), "--resume"]) == 0
    assert "already complete" not in capsys.readouterr().err
    assert (out / PAIRS_FILE).read_bytes() == pairs  # resuming keeps the pairs
    assert read_info(out).extra["parent"]["sampler"] == "euler, dt=0.1"
    assert main(["sample", str(out), "-n", "5"]) == 0


def _one_error_line(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("flowscope: error: ") and err.count("\n") == 1, err
    return err


def test_reflow_of_a_run_that_is_not_flow_matching(tmp_path, capsys):
    train_run("nf", tmp_path / "nf", data="moons", n_points=300, config=TINY)
    err = _one_error_line(capsys, ["reflow", tmp_path / "nf", "--out", tmp_path / "rf"])
    assert "not flow matching" in err and "fm, cfm, meanflow" in err
    assert not (tmp_path / "rf").exists()


def test_reflow_of_a_run_whose_source_has_no_samples(tmp_path, capsys):
    src = tmp_path / "source.npy"
    np.save(src, np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    args = {**SMALL, "source": {"name": "file", "path": str(src)}}
    train_run("fm", tmp_path / "fm", data="moons", n_points=300, config=TINY, model_args=args)
    src.unlink()
    err = _one_error_line(capsys, ["reflow", tmp_path / "fm", "--out", tmp_path / "rf"])
    assert "source file" in err and "no such file" in err


def test_reflow_into_its_own_parent_is_refused(parent, capsys):
    err = _one_error_line(capsys, ["reflow", parent, "--out", parent, "--resume"])
    assert "must differ from the parent" in err


def test_a_warm_start_begins_at_the_parents_weights(parent, tmp_path):
    # With a learning rate of 1e-12 the weights cannot move away from where they began.
    still = TrainConfig(epochs=1, batch_size=64, lr=1e-12)
    args = dict(n_points=100, config=still, dt=0.1)
    warm, info, _ = reflow_run(parent, tmp_path / "warm", warm_start=True, **args)
    cold, _, _ = reflow_run(parent, tmp_path / "cold", **args)
    fm, _ = load_run(parent)
    assert info.extra["parent"]["warm_start"] is True
    torch.testing.assert_close(warm.field.theta, fm.field.theta, rtol=0, atol=1e-8)
    assert (cold.field.theta - fm.field.theta).abs().max() > 1e-3  # the seed's, untrained


def test_reflow_trains_with_uniform_times_and_no_skip_unless_told(parent, tmp_path):
    fm, info = load_run(parent)
    # The parent trained with fm's defaults, which the reflow does not inherit.
    assert info.model["times"] == {"name": "beta", "alpha": 5.0} and fm.gaussian_skip
    args = dict(n_points=100, config=TINY, dt=0.1)
    rf, rinfo, _ = reflow_run(parent, tmp_path / "rf", **args)
    assert rinfo.model["times"] == {"name": "uniform"} and rinfo.model["gaussian_skip"] is False
    assert rf.times.describe() == "U[0, 1]" and rf.gaussian_skip is False
    # Its field is the network alone: no Gaussian velocity added.
    y, t = torch.randn(5, 2), torch.rand(5, 1)
    torch.testing.assert_close(rf.velocity(y, t), rf.field(y, t), rtol=0, atol=0)
    # A warm start keeps the parent's skip (its weights are of the field with it).
    warm, _, _ = reflow_run(parent, tmp_path / "warm", warm_start=True, **args)
    assert warm.gaussian_skip is True and warm.times.describe() == "U[0, 1]"
    # Given, the sampler and the skip are the caller's, and a resume keeps them.
    beta = {"name": "beta", "alpha": 5.0}
    _, given, _ = reflow_run(parent, tmp_path / "given", times=beta, gaussian_skip=True, **args)
    assert given.model["times"] == beta and given.model["gaussian_skip"] is True
    _, again, _ = reflow_run(parent, tmp_path / "given", resume=True, **args)
    assert again.model["times"] == beta and again.model["gaussian_skip"] is True


def test_reflow_refuses_a_bad_sampler_or_skip_before_drawing_pairs(parent, tmp_path):
    with pytest.raises(ValueError, match="gaussian_skip must be True, False or None"):
        reflow_run(parent, tmp_path / "a", n_points=100, config=TINY, gaussian_skip=1)
    with pytest.raises(ValueError, match="alpha"):
        reflow_run(parent, tmp_path / "b", n_points=100, times={"name": "beta", "alpha": -1})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_reflow_command_sets_the_sampler_and_the_skip(parent, tmp_path, capsys):
    out = tmp_path / "rf"
    argv = ["reflow", str(parent), "--out", str(out), "--n-points", "100", "--dt", "0.1"]
    assert (
        main(
            [
                *argv,
                "--epochs",
                "2",
                "--time-alpha",
                "3",
                "--gaussian-skip",
                "--weight-decay",
                "0.3",
            ]
        )
        == 0
    )
    model = read_info(out).model
    assert model["times"] == {"name": "beta", "alpha": 3.0} and model["gaussian_skip"] is True
    assert read_info(out).train["weight_decay"] == 0.3 and read_info(out).train["noise"] is None
    assert main(["reflow", str(parent), "--out", str(out), "--resume"]) == 0
    model = read_info(out).model
    assert model["times"] == {"name": "beta", "alpha": 3.0} and model["gaussian_skip"] is True
    assert main([*argv, "--epochs", "1", "--time-alpha", "1", "--overwrite"]) == 0
    model = read_info(out).model
    assert model["times"] == {"name": "uniform"} and model["gaussian_skip"] is False
    capsys.readouterr()


def test_eval_of_a_rectified_flow_uses_its_parents_data(parent, tmp_path):
    from flowscope.evaluate import evaluate_run, format_table

    reflow_run(parent, tmp_path / "rf2", n_points=200, config=TINY, dt=0.05)
    reflow_run(tmp_path / "rf2", tmp_path / "rf3", n_points=100, config=TINY, dt=0.05)
    base = evaluate_run(parent, n=60, floor_pairs=0)
    for k in ("rf2", "rf3"):
        r = evaluate_run(tmp_path / k, n=60, floor_pairs=0)
        assert r["data"] == "moons" and r["data_run"] == str(parent.resolve())
        assert r["nll_points"] == base["nll_points"] == 50  # the parent's test points
        assert f"(the data of {parent.resolve()}, which it was rectified from)" in format_table(r)
    assert base["data_run"] is None and "rectified from" not in format_table(base)


def test_a_small_data_parent_reflows_without_noise_on_its_fixed_pairs(tmp_path):
    # 300 points are small data: the parent trains with noise on its batches, and its
    # reflow, on 300 fixed pairs looked up by their points, must train without.
    out = tmp_path / "fm"
    config = TrainConfig(batch_size=64, min_steps=150)  # 20 epochs of 5 steps: lengthened
    train_run(
        "fm", out, data="moons", n_points=300, holdout_points=50, config=config, model_args=SMALL
    )
    assert read_info(out).train["small_noise"] > 0
    _, info, history = reflow_run(out, tmp_path / "rf", dt=0.05)
    assert info.train["small_noise"] == 0 and history.lengthened and history.noise == 0
    # Nor does a noise given to the parent carry over; one given to the reflow is refused.
    noisy = replace(config, epochs=1, noise=0.2)
    train_run(
        "fm",
        tmp_path / "fm2",
        data="moons",
        n_points=300,
        holdout_points=50,
        config=noisy,
        model_args=SMALL,
    )
    _, info, history = reflow_run(tmp_path / "fm2", tmp_path / "rf2", dt=0.05)
    assert info.train["noise"] is None and history.noise == 0
    with pytest.raises(ValueError, match="noise=0.2: a rectified flow trains on fixed pairs"):
        reflow_run(tmp_path / "fm2", tmp_path / "rf3", dt=0.05, config=noisy)
    # The library refuses the noise on fixed pairs with what to do.
    _, child, _ = fm_with_pairs(tmp_path, n=64)
    x = torch.from_numpy(np.load(tmp_path / PAIRS_FILE)["x"])
    with pytest.raises(ValueError, match="pass a TrainConfig with noise=None and small_noise=0"):
        fit(child, x, config=TrainConfig(batch_size=16, min_steps=200), progress=False)


def test_a_parent_trained_on_a_data_file_reflows_on_as_many_pairs_as_its_training_rows(
    tmp_path, capsys
):
    # A file records no n_points: the default count is its training part's rows (this was
    # int(None), a traceback).
    rng = np.random.default_rng(0)
    data = tmp_path / "pts.csv"
    np.savetxt(data, rng.normal(size=(40, 2)), delimiter=",", header="a,b", comments="")
    out = tmp_path / "fm"
    train_run("fm", out, data=str(data), config=TINY, model_args=SMALL)
    rows = len(run_data(read_info(out), "train").x)
    argv = ["reflow", str(out), "--out", str(tmp_path / "rf"), "--epochs", "1", "--dt", "0.1"]
    assert main(argv) == 0
    assert read_info(tmp_path / "rf").extra["parent"]["pairs"] == rows == 36


def test_a_conditional_models_pairs_take_the_classes_in_the_parents_shares():
    torch.manual_seed(0)
    model = FlowMatching(num_classes=2, **SMALL)
    pairs = draw_pairs(model, 10, dt=0.25, class_counts=[270, 30])
    assert torch.bincount(pairs.labels).tolist() == [9, 1]  # balanced would be [5, 5]
    assert torch.bincount(draw_pairs(model, 10, dt=0.25).labels).tolist() == [5, 5]
