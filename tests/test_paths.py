"""Path metrics (straightness, normalized path energy) and W2 by function evaluations:
closed-form fields, every registered type, and flowscope eval --nfe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowscope import FlowMatching, NormalizingFlow
from flowscope.cli import main
from flowscope.data import DATASETS
from flowscope.metrics import path_metrics, ring_precision, w2_by_nfe, wasserstein2
from flowscope.models import MODELS
from flowscope.runs import load_run, run_data, train_run
from flowscope.train import TrainConfig

F64 = torch.float64
SCALE = torch.tensor([1.5, 0.7], dtype=F64)


def constant_field(c=(0.8, -0.4)) -> FlowMatching:
    """v(y, t) = c in standardized units: straight paths at constant speed."""
    fm = FlowMatching(hidden=8, layers=3, gaussian_skip=False).double()
    w, b = fm.field.pairs()[-1]
    with torch.no_grad():
        w.zero_()
        b.copy_(torch.tensor(c, dtype=F64))
        fm.standardization.loc.copy_(torch.tensor([0.5, -1.0], dtype=F64))
        fm.standardization.scale.copy_(SCALE)
    return fm.eval()


def test_a_constant_field_is_straight_and_its_energy_is_the_transport_cost():
    fm = constant_field()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # The data: exactly where the flow carries these source points, so that the optimal
    # transport between source and data is the flow itself (NPE = 0).
    x = fm.decode(fm.base_sample(300, g()), dt=1.0)
    pm = path_metrics(fm, x, generator=g(), steps=20)
    speed2 = float(((torch.tensor([0.8, -0.4], dtype=F64) * SCALE) ** 2).sum())
    assert pm.straightness == pytest.approx(0.0, abs=1e-20)
    assert pm.path_energy == pytest.approx(speed2, rel=1e-12)
    assert pm.w2_squared == pytest.approx(speed2, rel=1e-9)
    assert pm.npe == pytest.approx(0.0, abs=1e-8) and pm.n == 300 and pm.steps == 20


def test_a_curved_field_has_positive_straightness_and_energy_above_w2():
    # The Gaussian skip alone: v = (2t - 1) / (t^2 + (1 - t)^2) y, whose paths move in
    # towards the centre and back out to where they started (y_1 = y_0): a chord of 0
    # with a positive speed, so S > 0, and an energy above W2^2 to independent points.
    fm = FlowMatching(hidden=8, layers=3).double()
    w, b = fm.field.pairs()[-1]
    with torch.no_grad():
        w.zero_()
        b.zero_()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 2, generator=g, dtype=F64)
    pm = path_metrics(fm.eval(), x, generator=torch.Generator().manual_seed(2))
    assert pm.straightness > 0.1 and pm.path_energy > pm.w2_squared


def test_w2_by_nfe_rows_for_flow_matching_and_one_pass_for_a_flow():
    fm = constant_field()
    x = torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    rows = w2_by_nfe(fm, x, nfe=(1, 2, 8))
    assert [(r.solver, r.nfe) for r in rows[:3]] == [("euler", 1), ("euler", 2), ("euler", 8)]
    assert rows[3].solver == "dopri5" and rows[3].nfe >= 6  # at least one dopri5 step
    # Straight paths: one Euler step is exact, so every row gives the same samples.
    for r in rows:
        assert r.w2 == pytest.approx(rows[0].w2, rel=1e-9)
    out = fm.decode(fm.base_sample(200, torch.Generator().manual_seed(0)), dt=1.0)
    assert rows[0].w2 == pytest.approx(wasserstein2(out, x), rel=1e-12)
    flow = NormalizingFlow(couplings=2).double()
    one = w2_by_nfe(flow, x, nfe=(1, 2, 8))
    assert len(one) == 1 and one[0].solver == "one pass" and one[0].nfe == 1
    with pytest.raises(ValueError, match="one pass"):
        path_metrics(flow, x)


def test_w2_by_nfe_times_the_sampling_alone(monkeypatch):
    """Each row's seconds are the sampling's: the W2 computed after it is not counted."""
    import time

    from flowscope import metrics

    def slow_w2(a, b):
        time.sleep(1.0)
        return 0.0

    monkeypatch.setattr(metrics, "wasserstein2", slow_w2)
    x = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    flow = NormalizingFlow(couplings=2).double()
    rows = [*w2_by_nfe(flow, x), *w2_by_nfe(constant_field(), x, nfe=(1,), adaptive=False)]
    assert [r.solver for r in rows] == ["one pass", "euler"]
    assert all(0 < r.seconds < 1.0 for r in rows), [r.seconds for r in rows]


@pytest.mark.parametrize("entry", [e for e in MODELS if "dt" in e.sample_options])
def test_every_ode_type_has_path_metrics_per_class(entry):
    classes = 3 if entry.conditional else None
    fm = entry.build(features=2, num_classes=classes, **entry.small).eval()
    x = torch.randn(90, 2, generator=torch.Generator().manual_seed(0))
    labels = None if classes is None else torch.arange(90) % 3
    pm = path_metrics(fm, x, labels, steps=10)
    assert pm.straightness >= 0 and pm.path_energy > 0 and pm.w2_squared > 0
    assert len(w2_by_nfe(fm, x, labels, nfe=(1, 4), adaptive=False)) == 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nfe_runs")
    cfg = TrainConfig(epochs=1, batch_size=64)
    small = dict(n_points=400, holdout_points=200, config=cfg, progress=False)
    train_run("fm", root / "fm", data="moons", model_args={"hidden": 16, "layers": 3}, **small)
    args = {"hidden": 16, "layers": 3, "source": "circles", "coupling": "ot"}
    train_run("fm", root / "fm-circles", data="moons", model_args=args, **small)
    train_run("nf", root / "nf", data="moons", model_args={"couplings": 2}, **small)
    return root


def test_eval_nfe_prints_the_table_writes_json_and_plots(runs, capsys, tmp_path):
    plot = tmp_path / "nfe.png"
    args = ["eval", str(runs / "fm"), "-n", "100", "--nfe", "1,2,4", "--plot", str(plot)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "W2 to 100 test points by function evaluations" in out and "dopri5" in out
    assert "straightness" in out and "NPE" in out
    assert "Euler steps; squared data units, NPE a ratio): straightness " in out
    assert "each row draws its own 100 samples, so that a row and the W2 above differ" in out
    result = json.loads((runs / "fm" / "eval.json").read_text())
    assert [r["nfe"] for r in result["nfe_curve"][:3]] == [1, 2, 4]
    assert result["npe"] is not None and plot.stat().st_size > 1000


def test_eval_of_a_sample_only_source_has_no_nll_but_paths(runs, capsys):
    assert main(["eval", str(runs / "fm-circles"), "-n", "100", "--nfe", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "known only by samples" in out and "straightness" in out
    result = json.loads((runs / "fm-circles" / "eval.json").read_text())
    assert result["nll_data"] is None and result["w2"] > 0


def test_nfe_rows_on_the_rings_give_each_rows_share_in_a_band(tmp_path, capsys):
    cfg = TrainConfig(epochs=1, batch_size=64)
    small = dict(n_points=400, holdout_points=200, config=cfg, progress=False)
    train_run("fm", tmp_path / "fm", model_args={"hidden": 16, "layers": 3}, **small)
    assert main(["eval", str(tmp_path / "fm"), "-n", "100", "--nfe", "1,4"]) == 0
    assert "in a band" in capsys.readouterr().out
    result = json.loads((tmp_path / "fm" / "eval.json").read_text())
    model, info = load_run(tmp_path / "fm")
    x = run_data(info, "test").x[:100]
    for row in result["nfe_curve"]:
        if row["solver"] == "euler":  # the same samples again: their share in a band
            z = model.base_sample(100, torch.Generator().manual_seed(0))
            out = model.decode(z, dt=1 / row["nfe"], solver="euler")
            assert row["in_band"] == ring_precision(out).precision
    assert w2_by_nfe(model, x, nfe=(1,), adaptive=False)[0].in_band is None  # not asked


def test_eval_of_several_runs_puts_their_nfe_rows_side_by_side(runs, capsys, tmp_path):
    fm, nf = str(runs / "fm"), str(runs / "nf")
    plot = tmp_path / "both.png"
    assert main(["eval", fm, nf, "-n", "100", "--nfe", "1,4", "--plot", str(plot)]) == 0
    out, err = capsys.readouterr()
    # Progress on stderr, run by run, while the table waits for all of them.
    assert err.index(f"measuring {fm} (1 of 2)") < err.index(f"measuring {nf} (2 of 2)")
    assert err.count("done in") == 2
    assert f"== {fm}" in out and f"== {nf}" in out and plot.stat().st_size > 1000
    assert "W2 to 100 test points by sampler, side by side" in out
    table = out[out.index("side by side") :].splitlines()
    assert fm in table[1] and nf in table[1]
    by_row = {line.split("  ")[0]: line for line in table[3:] if line.strip()}
    results = [json.loads((runs / n / "eval.json").read_text()) for n in ("fm", "nf")]
    # Each run's own W2 in its column: fm's Euler rows, nf's one pass.
    assert f"{results[0]['nfe_curve'][1]['w2']:.4f}" in by_row["euler, 4 steps"]
    assert f"{results[1]['nfe_curve'][0]['w2']:.4f}" in by_row["one pass"]
    assert "NFE" in by_row["dopri5"]
    # One --json for several runs, a run named twice or a later run that is not there:
    # one line each, before any run is measured or its eval.json written again.
    written = (runs / "fm" / "eval.json").stat().st_mtime_ns
    for args, words in (
        ([fm, nf, "--json", str(tmp_path / "e.json")], "--json names one file"),
        ([fm, fm], "given twice"),
        ([fm, str(tmp_path / "nope")], "nope: no such run folder"),
    ):
        assert main(["eval", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert (runs / "fm" / "eval.json").stat().st_mtime_ns == written


def test_eval_nfe_of_a_flow_is_one_row(runs, capsys):
    assert main(["eval", str(runs / "nf"), "-n", "100", "--nfe", "1,2,4,8"]) == 0
    result = json.loads((runs / "nf" / "eval.json").read_text())
    assert [r["solver"] for r in result["nfe_curve"]] == ["one pass"]
    assert result["straightness"] is None


@pytest.mark.parametrize("value", ["0", "1,x", ""])
def test_bad_step_counts_are_one_line(runs, capsys, value):
    assert main(["eval", str(runs / "nf"), "--nfe", value]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positive integers" in err[0]


def test_cli_trains_from_a_source_with_ot_and_refuses_a_batch_of_one(tmp_path, capsys):
    pts = DATASETS["8gaussians"](100, np.random.default_rng(0))
    np.save(tmp_path / "src.npy", pts)
    common = ["--data", "moons", "--epochs", "1", "--n-points", "300", "--holdout-points", "200"]
    out = tmp_path / "r"
    code = main(
        [
            "train",
            "fm",
            "--source",
            str(tmp_path / "src.npy"),
            "--coupling",
            "ot",
            "--out",
            str(out),
            *common,
        ]
    )
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["source"]["name"] == "file" and cfg["coupling"]["name"] == "ot"
    capsys.readouterr()
    code = main(
        [
            "train",
            "fm",
            "--coupling",
            "ot",
            "--batch-size",
            "1",
            "--out",
            str(tmp_path / "b"),
            *common,
        ]
    )
    assert code != 0 and "batch size 1" in capsys.readouterr().err
    assert main(["train", "fm", "--coupling", "nope", "--out", str(tmp_path / "c")]) != 0
    assert "choose from 'independent', 'ot', 'class-ot'" in capsys.readouterr().err
