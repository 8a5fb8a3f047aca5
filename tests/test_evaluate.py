import json
import math

import numpy as np
import pytest
import torch

import flowscope.evaluate
from flowscope.cli import main
from flowscope.data import DATASETS, RING_NAMES
from flowscope.evaluate import data_draw, evaluate_run, format_table, noise_floor
from flowscope.metrics import heldout_nll, w2_noise_floor, wasserstein2
from flowscope.runs import load_run, run_data, train_run
from flowscope.train import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    cfg = TrainConfig(epochs=1, batch_size=64)
    for name in ("nf", "cfm"):
        train_run(name, root / name, n_points=300, holdout_points=200, config=cfg, progress=False)
    pts = DATASETS["moons"](600, np.random.default_rng(0))
    np.savetxt(root / "moons.csv", pts, delimiter=",")
    train_run("nf", root / "file", data=str(root / "moons.csv"), config=cfg, progress=False)
    return root


def test_eval_prints_a_table_and_writes_json(runs, capsys):
    run = runs / "nf"
    assert main(["eval", str(run), "--n", "150", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for line in ("held-out NLL, standardized", "W2 noise floor", "ring coverage", "round trip"):
        assert line in out
    result = json.loads((run / "eval.json").read_text())
    assert result["n"] == 150 and result["w2_points"] == 150 and result["nll_points"] == 200
    # The JSON holds the metrics' own numbers for the run's test part and seeded samples.
    model, info = load_run(run)
    test = run_data(info, "test")
    nll = heldout_nll(model, test.x)
    assert result["nll_standardized"] == pytest.approx(nll.standardized, rel=1e-12)
    assert result["nll_data"] == pytest.approx(nll.data, rel=1e-12)
    samples = model.sample(150, generator=torch.Generator().manual_seed(3))
    assert result["w2"] == pytest.approx(wasserstein2(samples, test.x[:150]), rel=1e-12)
    assert 0 < result["w2_noise_floor"] and 0 <= result["ring_precision"] <= 1
    assert result["round_trip_max"] < 1e-4 and result["class_accuracy"] is None
    assert result["standardized_per_class"] is False
    assert "in the model's standardized coordinates" in out
    assert "; compare models here" in out and "given the class" not in out
    assert "test points to the latent and back; exact but for rounding)" in out


def test_eval_noise_floor_is_the_mean_and_spread_over_pairs_of_draws(runs):
    result = evaluate_run(runs / "nf", n=120, seed=2, floor_pairs=3)
    # pairs of fresh draws of the run's data, seeds from data seed + 3 + 2 * pairs * seed
    draw = data_draw("olympic")
    values = [w2_noise_floor(draw, 120, seed=3 + 12 + 2 * k) for k in range(3)]
    assert result["w2_noise_floor"] == pytest.approx(np.mean(values), rel=1e-12)
    assert result["w2_noise_floor_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (result["w2_noise_floor_pairs"], result["w2_noise_floor_points"]) == (3, 120)
    skipped = evaluate_run(runs / "nf", n=120, seed=2, floor_pairs=0)
    assert skipped["w2_noise_floor"] is None and skipped["w2_noise_floor_pairs"] == 0
    assert skipped["w2"] == result["w2"]  # the samples do not depend on the floor


def test_noise_floor_draws_independent_pairs():
    calls = []

    def draw(n, seed):
        calls.append(seed)
        return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 2)))

    floor = noise_floor(draw, 50, seed=7, pairs=4)
    assert calls == [7, 8, 9, 10, 11, 12, 13, 14]  # no draw is used twice
    expected = [wasserstein2(draw(50, 7 + 2 * k), draw(50, 8 + 2 * k)) for k in range(4)]
    assert floor.values == pytest.approx(expected, rel=1e-12)
    assert floor.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert floor.std == pytest.approx(np.std(expected, ddof=1), rel=1e-12)
    assert noise_floor(draw, 50, seed=7, pairs=1).std == 0.0
    with pytest.raises(ValueError, match="pairs must be a positive integer"):
        noise_floor(draw, 50, seed=7, pairs=0)


def test_eval_accepts_short_n_and_states_its_defaults(runs, tmp_path, capsys):
    path = tmp_path / "e.json"
    assert main(["eval", str(runs / "nf"), "-n", "60", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["n"] == 60
    assert "mean ± sd over 5 pairs of 60-point draws" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "-n N, --n N" in out
    for default in ("(default 2000)", "(default 0)", "(default 5)", "RUN_DIR/eval.json"):
        assert default in out
    assert "example:" in out and "flowscope eval " in out.split("example:")[1]


def test_eval_of_a_conditional_run_reports_class_accuracy(runs, tmp_path, capsys):
    path = tmp_path / "cfm.json"
    assert main(["eval", str(runs / "cfm"), "--n", "100", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "class accuracy" in out
    # flow matching's round trip is off by its ODE steps' error, and says so
    assert "to the latent and back; the error of the ODE's steps, euler, dt=0.001, both" in out
    # The CFM standardizes per ring: its standardized NLL is flagged as not comparable.
    assert "each class standardized by its own mean and sd" in out
    # Its NLL is -log p(x | class): the table says it compares with conditional models only.
    assert "held-out NLL, data units, given the class" in out
    assert "compare conditional models here, not with unconditional ones" in out
    result = json.loads(path.read_text())
    assert result["standardized_per_class"] is True
    model, info = load_run(runs / "cfm")
    test = run_data(info, "test")
    nll = heldout_nll(model, test.x, test.labels)
    assert result["nll_data"] == pytest.approx(nll.data, rel=1e-12)
    per = [result[f"class_accuracy_{name}"] for name in RING_NAMES]
    # The samples take the first 100 test points' classes: the overall share weighs each
    # ring's by its count there.
    counts = torch.bincount(test.labels[:100], minlength=5).tolist()
    assert result["class_accuracy"] == pytest.approx(
        sum(a * c for a, c in zip(per, counts, strict=True)) / 100
    )
    assert result["conditional"] and result["sampler"] == "euler, dt=0.001"
    assert result["nll_method"] == "rk4, 100 steps, exact divergence"
    assert not (runs / "cfm" / "eval.json").exists()


def test_eval_of_file_data_splits_the_test_part_for_the_floor(runs):
    result = evaluate_run(runs / "file", n=100, seed=1)
    assert result["w2_points"] == 30  # 5% of 600 points
    assert result["w2_noise_floor_points"] == 15 and result["w2_noise_floor"] > 0
    # pairs of disjoint halves of the shuffled test part, one shuffle per pair
    _, info = load_run(runs / "file")
    test = run_data(info, "test").x
    gen = torch.Generator().manual_seed(1)
    values = []
    for _ in range(result["w2_noise_floor_pairs"]):
        x = test[torch.randperm(len(test), generator=gen)]
        values.append(wasserstein2(x[:15], x[15:30]))
    assert result["w2_noise_floor"] == pytest.approx(np.mean(values), rel=1e-12)
    assert result["ring_precision"] is None and result["ring_coverage"] is None
    assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in result.values())
    assert evaluate_run(runs / "file", n=100, seed=1)["w2"] == result["w2"]
    # W2 alone uses the samples: no more are drawn than it compares, and the table says so
    assert (result["n"], result["n_asked"]) == (30, 100)
    head = format_table(result).splitlines()[0]
    assert ", 30 samples (seed 1," in head
    assert head.endswith("(-n 100 asked, but W2 compares as many samples as test points, 30)")


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "{root}/missing"], "no such run folder"),
        (["eval", "{root}/nf", "--n", "1"], "argument -n/--n: must be an integer >= 2, got '1'"),
        (["eval", "{root}/nf", "-n", "0"], "argument -n/--n: must be an integer >= 2, got '0'"),
        (["eval", "{root}/nf", "--seed", "-1"], "argument --seed: must be a non-negative integer"),
        (["eval", "{root}/nf", "--json", "{root}/no/dir/e.json"], "does not exist"),
    ],
)
def test_eval_errors_are_one_line(runs, capsys, args, words):
    assert main([a.format(root=runs) for a in args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowscope: error:") and words in err[0]


def test_eval_checks_n_and_seed_before_loading(tmp_path):
    for kwargs, words in (
        ({"n": 100.0}, "n must be an integer >= 2"),
        ({"n": True}, "n must be an integer >= 2"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ):
        with pytest.raises(ValueError, match=words):
            evaluate_run(tmp_path / "missing", **kwargs)


def test_eval_of_a_diverged_model_is_an_error_that_says_so(runs, tmp_path):
    """NaN weights give NaN samples: evaluating them is an error naming the cause, not a
    table of n/a (the metrics' own handling of NaN samples is tested in test_metrics)."""
    from flowscope.errors import NonFiniteOutput
    from flowscope.runs import read_history, save_run

    model, info = load_run(runs / "nf")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    save_run(tmp_path / "nan", model, info, read_history(runs / "nf"))
    with pytest.raises(NonFiniteOutput, match="50 of 50 samples are not finite"):
        evaluate_run(tmp_path / "nan", n=50)


def test_the_baseline_says_when_it_was_fitted_to_a_subsample():
    from flowscope.evaluate import _fitted_to

    assert _fitted_to(240, 240) == "the same 240 training points"
    assert (
        _fitted_to(5000, 20000) == "5000 of the model's 20,000 training points (a random subsample)"
    )


def test_eval_samples_a_type_with_its_own_sampler_unless_told(tmp_path):
    from flowscope.models import MODELS

    entry = MODELS.get("meanflow")
    cfg = TrainConfig(epochs=1, batch_size=64)
    train_run(
        "meanflow", tmp_path / "mf", n_points=300, holdout_points=60, config=cfg,
        model_args=dict(entry.small), progress=False,
    )  # fmt: skip
    kw = dict(n=40, floor_pairs=0, baseline=False)
    own = evaluate_run(tmp_path / "mf", **kw)
    assert own["sampler"] == f"euler, dt={entry.sampler['dt']:g}"  # its one step
    told = evaluate_run(tmp_path / "mf", dt=0.1, **kw)
    assert told["sampler"] == "euler, dt=0.1" and told["w2"] != own["w2"]


def test_a_conditional_models_samples_mix_the_classes_as_the_test_points_do(tmp_path):
    # 90% of the rows in one class, 10% in another ten units away: balanced samples would
    # put half of them at the rare class and W2 would measure the mixing, not the model.
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.1).astype(int)
    x = rng.normal(size=(400, 2)) * 0.5 + 10.0 * labels[:, None]
    data = tmp_path / "unbalanced.csv"
    data.write_text(
        "".join(f"{a!r},{b!r},{c}\n" for (a, b), c in zip(x.tolist(), labels, strict=True))
    )
    out = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=64)
    train_run("cfm", out, data=str(data), config=config, model_args={"hidden": 16})
    result = evaluate_run(out, n=20, floor_pairs=0, baseline=False, seed=3)
    model, info = load_run(out)
    test = run_data(info, "test")
    gen = torch.Generator().manual_seed(3)
    samples = model.sample(20, labels=test.labels[:20], generator=gen, dt=1e-3)
    assert result["w2"] == pytest.approx(wasserstein2(samples, test.x[:20]), rel=1e-6)
    assert 0 < int(test.labels[:20].sum()) < 10  # the test part is unbalanced too
    # The noise floor's halves hold each class in the same number (they were random
    # halves, whose mixing of the classes made the floor 5x a class-matched W2's).
    result = evaluate_run(out, n=20, floor_pairs=2, baseline=False, seed=3)
    k = result["w2_noise_floor_points"]
    perm = torch.Generator().manual_seed(3)  # as eval draws them: one generator, 2 pairs
    orders = [torch.randperm(20, generator=perm) for _ in range(2)]
    halves, kk = flowscope.evaluate._stratified(orders, test.labels, 10)
    assert kk == k
    for h in halves:
        a, b = test.labels[h[:k]], test.labels[h[k : 2 * k]]
        assert torch.equal(torch.bincount(a, minlength=2), torch.bincount(b, minlength=2))
    w2 = [wasserstein2(test.x[h[:k]], test.x[h[k : 2 * k]]) for h in halves]
    assert result["w2_noise_floor"] == pytest.approx(float(np.mean(w2)), rel=1e-9)


def test_the_table_keeps_its_width_for_data_of_a_large_scale():
    from flowscope.evaluate import _fmt

    assert _fmt(85172592933234606080.0) == "8.517e+19"  # was 85172592933234606080.0000
    assert _fmt(1234.56789) == "1234.5679" and _fmt(None) == "n/a"
    assert _fmt(2.5e-3, ".2e") == "2.50e-03"
