"""Tests of the report (end to end, smoke preset) and of its command line."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowscope.cli import main
from flowscope.report import PRESETS, beyond, models, num
from flowscope.report.models import rows
from flowscope.report.study import Study
from flowscope.report.text import pm

QUESTIONS = [f"NF Q{i}" for i in range(1, 6)] + [f"FM Q{i}" for i in range(1, 6)]
QUESTIONS += [f"CFM Q{i}" for i in range(1, 4)] + ["Bonus", "Beyond"]
MODELS = ("nf", "fm", "cfm")


def _pdf_pages(path: Path) -> int:
    """Page count: poppler's pdfinfo when installed, else the PDF's page objects."""
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
        return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    # reportlab writes page dictionaries uncompressed: one "/Type /Page" per page.
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", path.read_bytes()))


def _weights_mtimes(out: Path) -> dict[str, int]:
    """The weights' times of every report model (the study's and the others)."""
    return {
        d.name: (d / "model.safetensors").stat().st_mtime_ns for d in (out / "models").iterdir()
    }


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
class _Stop(Exception):
    """Ends a command whose library call a test has replaced."""

    @classmethod
    def stop(cls):
        raise cls


def test_smoke_report_end_to_end_reuse_and_retrain(tmp_path, capsys, one_thread, monkeypatch):
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
    # Self-contained: every src/href is inline data or an in-page anchor, but for the
    # links to the models' explorer pages written beside it (themselves offline pages).
    assert not re.search(r"""\b(?:src|href)\s*=\s*["'](?!data:|#|explore_\w+\.html")""", html)
    for name in ("nf", "fm", "cfm"):
        assert f'href="explore_{name}.html"' in html
        assert (out / f"explore_{name}.html").is_file()
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) >= 14
    assert html.count('src="data:image/png;base64,') == len(figures)
    for q in QUESTIONS:
        assert f">{q} ·" in html, q

    m = json.loads((out / "metrics.json").read_text())
    assert m["pdf_pages"] == pages
    # "Beyond the study": a row for every model of the registry, each trained once.
    keys = [r.key for r in rows()]
    assert [b["key"] for b in m["beyond"]] == keys and set(_weights_mtimes(out)) == set(keys)
    assert all(m["training"][k]["trained_in_this_run"] for k in keys)
    for b in m["beyond"]:
        assert f"<td>{b['label']}</td><td>{num(b['nll_standardized'])}" in html
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

    # One W2 noise floor per sample size (and data), the same wherever it is quoted.
    smoke = PRESETS["smoke"]
    floors = {(f["n"], f["conditional"]): f for f in m["w2_noise_floors"]}
    assert set(floors) == {(smoke.n_show, False), (smoke.n_quality, False), (smoke.n_quality, True)}
    for f in floors.values():
        assert len(f["values"]) == 5 and f["mean"] == pytest.approx(np.mean(f["values"]))
        assert f["std"] == pytest.approx(np.std(f["values"], ddof=1)) and f["std"] > 0
    shown = floors[(smoke.n_show, False)]
    for key in ("nf_q2", "fm_q2", "fm_q4"):
        assert (m[key]["w2_noise_floor"], m[key]["w2_noise_floor_std"]) == (
            shown["mean"],
            shown["std"],
        )
    assert html.count(pm(shown["mean"], shown["std"])) >= 3  # NF Q2, FM Q2, FM Q4
    for name in MODELS:
        f = floors[(ev[name]["w2_points"], name == "cfm")]
        assert (ev[name]["w2_noise_floor"], ev[name]["w2_noise_floor_std"]) == (f["mean"], f["std"])
        assert pm(f["mean"], f["std"]) in html  # Table 3
    assert "a value below a single draw's floor is noise" in html

    # Table 3 defines its class accuracy and says which samples it counts.
    n_cfm = ev["cfm"]["n"]
    assert f"Class accuracy (CFM only): share of the CFM's {n_cfm:,} samples" in html
    assert f"Table 3's {100 * ev['cfm']['class_accuracy']:.1f}% comes from {n_cfm:,}" in html
    # The CFM's conditional NLL is shown, labelled, with its own floor.
    assert "CFM: −log p(x | ring)" in html and num(ev["cfm"]["nll_standardized"]) in html
    # Table 2 has the Gaussian-mixture baselines of the same training points beside them.
    assert "Gaussian mixture baseline" in html and num(ev["nf"]["gmm_nll_data"]) in html
    assert "CFM baseline: a mixture per ring" in html and len(ev["cfm"]["gmm_components"]) == 5
    assert num(m["data"]["conditional_entropy_data_units"]) in html
    # Ring centre lines are drawn dashed, and the captions say so.
    assert "dotted" not in html and html.count("dashed red: the") == 3  # NF Q2, FM Q4, Beyond
    # A landing point equal to the target is written as exact, not as "error 0".
    trivial = bonus[-1]
    assert trivial["exact"] == (trivial["error"] == 0.0)
    if trivial["exact"]:
        assert "<td>0 (exact in float32)</td>" in html and "<td>0</td>" not in html

    # A second run with the same config reuses the saved models: the training stages of a
    # study of the same folder train nothing (the pages after them are the first run's,
    # whose 30 s a second whole report would repeat).
    before = _weights_mtimes(out)
    again = Study(out, PRESETS["smoke"], seed=0, retrain=False, log=io.StringIO())
    for _, stage in (*models.STAGES, *beyond.training_stages()):
        stage(again)
    assert _weights_mtimes(out) == before
    assert set(again.trained) == set(before) and not any(again.trained.values())
    assert not any(t["trained_in_this_run"] for t in again.m["training"].values())
    assert again.m["training"]["nf"]["seconds"] == m["training"]["nf"]["seconds"]

    # --retrain trains them again: the training stages of a study told to retrain (the
    # pages after them are the runs' above), and the command line passes the flag on.
    study = Study(out, PRESETS["smoke"], seed=0, retrain=True, log=io.StringIO())
    for _, stage in (*models.STAGES, *beyond.training_stages()):
        stage(study)
    after = _weights_mtimes(out)
    assert all(after[n] != before[n] for n in before)
    assert set(study.trained) == set(before) and all(study.trained.values())
    asked = {}
    monkeypatch.setattr(
        "flowscope.report.build.build_report", lambda *a, **kw: asked.update(kw) or _Stop.stop()
    )
    with pytest.raises(_Stop):
        main(["report", "--preset", "smoke", "--out", str(out), "--retrain"])
    assert asked["retrain"] is True


def test_report_rejects_unknown_preset(tmp_path, capsys):
    assert main(["report", "--preset", "huge", "--out", str(tmp_path / "r")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_report_without_reportlab_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from flowscope.errors import MissingDependency
    from flowscope.report import build_report

    monkeypatch.setitem(sys.modules, "reportlab", None)  # makes `import reportlab` fail
    assert main(["report", "--preset", "smoke", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "flowscope: error: flowscope report needs reportlab for the PDF: "
        "pip install 'flowscope[report]'\n"
    )
    with pytest.raises(MissingDependency):  # the library's error is no command-line class
        build_report(tmp_path / "r", preset="smoke")
    assert not (tmp_path / "r").exists()


def test_zoom_note_names_what_lies_outside_the_frame():
    from flowscope.report.study import zoom_note

    frame = ((-2.0, 6.0), (-3.0, 3.0))
    # (T, N, 2): A stays inside, B leaves and ends outside, C is never inside
    path = np.array([[[0.0, 0.0], [2.0, 2.5], [9.0, 0.0]], [[0.5, 0.0], [2.0, 7.0], [9.0, 1.0]]])
    marks = [[0.0, 1.0], [1.0, 1.0], [7.1, 28.4]]
    panel = {"path": path, "annotate": ["A", "B", "C"], "overlay": [(marks, "NF latent")]}
    note = zoom_note(panel, frame)
    assert note.endswith(
        "Outside the left frame: part of the path of B with its end at (2.0, 7.0); the path "
        "of C with its end at (9.0, 1.0); the NF latent of C at (7.1, 28.4)."
    )
    assert "Right: the whole extent" in note
    assert zoom_note({"path": path[:, :1]}, frame) == ""  # all inside: nothing to say


def test_report_seed_must_be_a_non_negative_integer(tmp_path, capsys):
    from flowscope.report import build_report

    assert main(["report", "--seed", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "argument --seed: must be a non-negative integer" in capsys.readouterr().err
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            build_report(tmp_path / "r", preset="smoke", seed=bad)
    assert not (tmp_path / "r").exists()


def test_the_report_tests_band_membership_as_the_metrics_do():
    """One band test: a point rounding puts just outside an edge is inside for the
    report's probe check and for every metric; a point further out is outside for all."""
    from flowscope.data import RING_CENTERS, RING_THICKNESS, nearest_ring, ring_distance
    from flowscope.metrics import class_accuracy, ring_coverage, ring_precision
    from flowscope.report.measures import band_area, locate

    cx, cy = RING_CENTERS[1]  # blue, id 1; straight left of it no other ring is near
    for gap, inside in ((5e-7, True), (5e-6, False)):
        point = (cx - 1 - RING_THICKNESS / 2 - gap, cy)
        found, ring, dist = locate(point)
        assert (found, ring) == (inside, 1)
        assert dist == pytest.approx(RING_THICKNESS / 2 + gap, abs=1e-12)
        x = torch.tensor([point], dtype=torch.float64)
        assert ring_precision(x).precision == float(inside)
        assert class_accuracy(x, torch.tensor([1])).overall == float(inside)
        assert (ring_coverage(x) > 0) == inside
        assert int(nearest_ring(x)[0][0]) == 1
    # The area of the bands is the exact set's (tolerance 0): the Monte Carlo share of
    # box points within w/2 of a centre line, as before.
    area = band_area(20_000, seed=3)
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(20_000, 2, generator=gen, dtype=torch.float64)
    pts = torch.stack([-1 + 6 * u[:, 0], -2 + 3 * u[:, 1]], dim=1)
    share = float((ring_distance(pts).min(dim=1).values <= RING_THICKNESS / 2).double().mean())
    assert area == pytest.approx(share * 18, rel=1e-12)


def test_outside_note_gives_each_panels_share_outside_the_frame():
    from flowscope.report.study import outside_note

    frame = ((0.0, 1.0), (0.0, 1.0))
    inside = np.full((4, 2), 0.5)
    some = np.array([[0.5, 0.5], [2.0, 0.5], [0.5, -1.0], [0.2, 0.2]])
    note = outside_note([(inside, "t = 0"), (some, "t = 1")], frame)
    assert note == "Outside the frame (not shown): 50.0% of “t = 1”."
    assert outside_note([(inside, "t = 0")], frame) == ""


def test_conditional_entropy_is_the_mean_of_minus_log_density():
    """H(x | ring) = E[log(2 pi w r)], r uniform in [R - w/2, R + w/2], checked by Monte
    Carlo on the conditional data's own sampler (float64)."""
    from flowscope.data import RING_CENTERS, olympic_rings
    from flowscope.report.measures import conditional_entropy

    x, labels = olympic_rings(200_000, conditional=True, seed=5)
    r = torch.linalg.norm(
        x.double() - torch.tensor(RING_CENTERS, dtype=torch.float64)[labels], dim=1
    )
    mc = float(torch.log(2 * math.pi * 0.25 * r).mean())
    assert conditional_entropy() == pytest.approx(mc, abs=2e-4)
    assert conditional_entropy() < math.log(2 * math.pi * 0.25)  # E[log r] < log E[r] = 0


def test_text_helpers():
    from flowscope.report.text import balanced

    assert pm(0.18612, 0.0061) == "0.186 ± 0.006"
    assert balanced(2000, 5) == "400" and balanced(2002, 5) == "400 or 401"
    assert torch.bincount(torch.arange(2002) % 5).tolist() == [401, 401, 400, 400, 400]


def test_bonus_writes_an_exact_landing_as_exact():
    from flowscope.report.bonus import away, error_text, exact
    from flowscope.steer import Steered

    target = torch.tensor([[4.0, 5.0]])

    def landed(x, error):
        z = torch.zeros(1, 2)
        return Steered("m", torch.tensor([x]), error, z, 0.0, z[None], torch.zeros(1), 1)

    hit, near = landed([4.0, 5.0], 0.0), landed([4.0, 5.0001], 1e-4)
    assert exact(hit, target) and not exact(near, target)
    assert error_text(hit, target) == "0 (exact in float32)"
    assert away(hit, target) == "exactly on the target (0 in float32)"
    assert error_text(near, target, short=True) == "0.0001"
    assert away(near, target) == "1.0×10<sup>−4</sup> away"


def test_overview_names_the_time_distribution_of_each_model():
    from flowscope.report.overview import _time_sentence

    assert "uniformly, as the study's Algorithm 1 does" in _time_sentence(1.0, 1.0)
    five = _time_sentence(5.0, 5.0)
    assert "Beta(5, 1), density 5 t<sup>4</sup>" in five and "near the data" in five
    assert "near the noise" in _time_sentence(0.5, 0.5)
    both = _time_sentence(5.0, 7.0)
    assert "Beta(5, 1) and CFM from Beta(7, 1)" in both and "near the data" in both
    mixed = _time_sentence(5.0, 1.0)
    assert "Beta(5, 1) and CFM from Beta(1, 1)" in mixed and "near the data" not in mixed


def test_overview_says_which_velocities_have_the_gaussian_skip():
    from flowscope.report.overview import _skip_sentence

    assert _skip_sentence(False, False) == ""
    assert "Both velocities were the network's output plus" in _skip_sentence(True, True)
    assert _skip_sentence(True, False).startswith(" FM's velocity was")
    assert _skip_sentence(False, True).startswith(" CFM's velocity was")
