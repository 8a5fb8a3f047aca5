"""Tests of the report (end to end, smoke preset), its steering methods and its figures."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from flowscope import FlowMatching, NormalizingFlow, plots, steer
from flowscope.cli import main
from flowscope.report import PRESETS, num

QUESTIONS = [f"NF Q{i}" for i in range(1, 6)] + [f"FM Q{i}" for i in range(1, 6)]
QUESTIONS += [f"CFM Q{i}" for i in range(1, 4)] + ["Bonus"]
MODELS = ("nf", "fm", "cfm")


def _pdf_pages(path: Path) -> int:
    """Page count: poppler's pdfinfo when installed, else the PDF's page objects."""
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
        return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    # reportlab writes page dictionaries uncompressed: one "/Type /Page" per page.
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", path.read_bytes()))


def _weights_mtimes(out: Path) -> dict[str, int]:
    return {m: (out / "models" / m / "model.safetensors").stat().st_mtime_ns for m in MODELS}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_smoke_report_end_to_end_reuse_and_retrain(tmp_path, capsys, one_thread):
    out = tmp_path / "olympic"
    assert main(["report", "--preset", "smoke", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    stage_lines = [ln for ln in captured.err.splitlines() if ln.startswith("flowscope report [")]
    assert len(stage_lines) >= 20  # a line per stage on stderr
    assert str(out / "report.pdf") in captured.out  # the path of the report at the end
    assert "train NF" in captured.out  # and the time of each stage

    pdf = out / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = _pdf_pages(pdf)
    assert 1 <= pages <= 12

    html = (out / "report.html").read_text(encoding="utf-8")
    # Self-contained: every src/href is inline data or an in-page anchor.
    assert not re.search(r"""\b(?:src|href)\s*=\s*["'](?!data:|#)""", html)
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) >= 14
    assert html.count('src="data:image/png;base64,') == len(figures)
    for q in QUESTIONS:
        assert f">{q} ·" in html, q

    m = json.loads((out / "metrics.json").read_text())
    assert m["pdf_pages"] == pages
    for name in MODELS:
        assert m["training"][name]["seconds"] > 0
        assert m["training"][name]["trained_in_this_run"] is True
        assert m["training"][name]["epochs"] == PRESETS["smoke"].epochs
    ev = m["evaluation"]
    for name in ("nf", "fm"):
        assert math.isfinite(ev[name]["nll_standardized"])
        # the numbers the text quotes are the stored ones
        assert num(ev[name]["nll_standardized"]) in html
    # The Olympic data's entropy, 1.562 nats per standardized point (Monte Carlo + the
    # smoke model's standardization fitted on 3,000 points).
    assert abs(m["data"]["entropy_standardized"] - 1.562) < 0.05
    assert num(m["data"]["entropy_standardized"]) in html
    assert [r["dt"] for r in m["fm_q4"]["rows"]] == [0.002, 0.02, 0.05, 0.1, 0.2]
    bonus = m["bonus"]["methods"]
    assert len(bonus) >= 2 and all(math.isfinite(b["error"]) for b in bonus)
    # The trivial guided sampler lands on the target whatever the model.
    assert bonus[-1]["error"] < 1e-3
    rt = m["fm_q5"]["round_trip"]
    assert rt["NF float64"]["mean"] < 1e-9 < rt["FM Euler Δt=0.1"]["mean"]
    assert len(m["cfm_q2"]["points"]) == 5
    assert set(m["timings_seconds"]) >= {"write report.pdf", "write report.html"}

    # A second run with the same config reuses the saved models.
    before = _weights_mtimes(out)
    assert main(["report", "--preset", "smoke", "--out", str(out)]) == 0
    capsys.readouterr()
    assert _weights_mtimes(out) == before
    m2 = json.loads((out / "metrics.json").read_text())
    assert not any(m2["training"][n]["trained_in_this_run"] for n in MODELS)
    assert m2["training"]["nf"]["seconds"] == m["training"]["nf"]["seconds"]

    # --retrain trains them again.
    assert main(["report", "--preset", "smoke", "--out", str(out), "--retrain"]) == 0
    capsys.readouterr()
    after = _weights_mtimes(out)
    assert all(after[n] != before[n] for n in MODELS)
    m3 = json.loads((out / "metrics.json").read_text())
    assert all(m3["training"][n]["trained_in_this_run"] for n in MODELS)


def test_report_rejects_unknown_preset(tmp_path, capsys):
    assert main(["report", "--preset", "huge", "--out", str(tmp_path / "r")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# -- steering --------------------------------------------------------------------------------


def _constant_field_model(shift: tuple[float, float]) -> FlowMatching:
    """A flow-matching model whose velocity is the constant ``shift`` (standardized units):
    every solver integrates it exactly, x = z + shift."""
    fm = FlowMatching(hidden=8, layers=2).double()
    weight, bias = fm.field.pairs()[-1]
    with torch.no_grad():
        weight.zero_()
        bias.copy_(torch.tensor(shift, dtype=torch.float64))
    return fm


def test_reverse_start_is_exact_for_a_constant_field():
    fm = _constant_field_model((0.3, -0.7))
    target = torch.tensor([[4.0, 5.0]], dtype=torch.float64)
    res = steer.reverse_start(fm, target, dt=0.1)
    assert res.error < 1e-12
    torch.testing.assert_close(res.z, target - torch.tensor([[0.3, -0.7]], dtype=torch.float64))
    assert res.path.shape == (11, 1, 2)
    torch.testing.assert_close(res.path[0], res.z)
    assert res.evaluations == 20


def test_optimize_start_reaches_the_target_and_stops_at_tol():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=16, layers=3).double()
    target = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    res = steer.optimize_start(fm, target, z_init=z0, dt=0.1, steps=400, lr=0.2, tol=1e-4)
    assert res.error < 1e-4
    assert res.details["steps_taken"] < 400  # stopped early, at tol
    assert res.details["errors"][0] > 1.0  # it did move
    # the reported landing point is what the ordinary sampler makes of the found z
    torch.testing.assert_close(fm(res.z, dt=0.1), res.x)
    assert all(p.requires_grad for p in fm.parameters())  # the model is left as it was


def test_nearest_sample_returns_the_closest_of_its_draws():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=8, layers=2)
    target = torch.tensor([[0.5, 0.5]])
    res = steer.nearest_sample(
        fm, target, n=300, dt=0.25, generator=torch.Generator().manual_seed(1)
    )
    z_all = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    best = (fm(z_all, dt=0.25) - target).norm(dim=1).min()
    assert res.error == pytest.approx(float(best), abs=1e-6)


def test_guided_sample_weights():
    torch.manual_seed(0)
    fm = FlowMatching(hidden=8, layers=2)
    target = torch.tensor([[4.0, 5.0]])
    z = torch.zeros(1, 2)
    free = steer.guided_sample(fm, target, weight=0.0, z=z, dt=0.05)
    torch.testing.assert_close(free.x, fm(z, dt=0.05))  # w = 0 is the plain sampler
    full = steer.guided_sample(fm, target, weight=1.0, z=z, dt=0.05)
    assert full.error < 1e-4
    half = steer.guided_sample(fm, target, weight=0.5, z=z, dt=0.05)
    assert full.error < half.error < free.error


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda fm: steer.guided_sample(fm, [[4.0, 5.0]], weight=1.5), ValueError),
        (lambda fm: steer.reverse_start(fm, [[4.0, 5.0], [1.0, 1.0]]), ValueError),
        (lambda fm: steer.optimize_start(fm, [[4.0, 5.0]], steps=0), ValueError),
        (lambda fm: steer.optimize_start(fm, [[4.0, 5.0]], lr=-1.0), ValueError),
        (lambda fm: steer.reverse_start(NormalizingFlow(couplings=1), [[4.0, 5.0]]), TypeError),
    ],
)
def test_steering_rejects_bad_input(call, error):
    with pytest.raises(error):
        call(FlowMatching(hidden=8, layers=2))


# -- figures -------------------------------------------------------------------------------


def test_point_panels_have_equal_aspect_titles_and_data_labels():
    pts = np.random.default_rng(0).normal(size=(50, 2))
    fig = plots.point_panels([(pts, "a"), (pts + 1, "b")], ncols=2)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    assert all(ax.get_aspect() == 1.0 for ax in axes)
    assert "data units" in axes[0].get_xlabel() and "data units" in axes[0].get_ylabel()


def test_trajectory_panels_colour_by_time_with_a_colour_bar(tmp_path):
    path = np.cumsum(np.random.default_rng(0).normal(size=(16, 3, 2)), axis=0)
    fig = plots.trajectory_panels(
        [{"path": path, "times": np.linspace(0, 1, 16), "title": "paths"}], time_label="t"
    )
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "t" in labels  # the colour bar
    out = plots.save(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
