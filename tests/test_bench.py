"""``flowscope bench`` runs and prints its table; the benchmark's reference is the same math."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

import flowscope
from flowscope import NormalizingFlow, olympic_rings
from flowscope.cli import main
from flowscope.reference import ReferenceFlow, copy_from_flowscope


def test_bench_prints_a_table(tmp_path, capsys):
    argv = ["bench", "--steps", "2", "--rounds", "2", "--quiet", "--out", str(tmp_path)]
    assert main([*argv, "--only", "flowscope-nf,reference-nf,flowscope-fm"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"(\S+)\s+([\d.]+)\s+([\d.]+)-([\d.]+)\s+(\S+)\s+(\d+) s\s+([\d.]+)\s+([\d.]+)$", line
        )
        if m:
            rows[m.group(1)] = m.groups()[1:]
    assert set(rows) == {"flowscope-nf", "reference-nf", "flowscope-fm"}
    assert rows["flowscope-nf"][3] == "1.00x" and rows["flowscope-fm"][3] == "1.00x"
    assert float(rows["reference-nf"][0]) > 0
    saved = json.loads((tmp_path / "speed.json").read_text())
    names = [t["name"] for t in saved["timings"]]
    assert names == ["flowscope-nf", "reference-nf", "flowscope-fm"]
    for t in saved["timings"]:
        assert len(t["ms_rounds"]) == 2
        # The projection is the median step time over 20 epochs of 1954 steps.
        assert t["projected_s"] == pytest.approx(t["ms_per_step"] * 1954 * 20 / 1e3)
        # The arithmetic of a step: 6 FLOPs per weight and point, 128 points.
        model = {"nf": flowscope.NormalizingFlow(), "fm": flowscope.FlowMatching()}[t["family"]]
        weights = sum(p.numel() for p in model.parameters())
        assert t["mflop"] == pytest.approx(6 * weights * 128 / 1e6)
        assert t["gflops"] == pytest.approx(t["mflop"] / t["ms_per_step"])
    assert "flowscope bench --steps 2" in (tmp_path / "speed.md").read_text()


def test_bench_rejects_an_unknown_contender(capsys):
    assert main(["bench", "--only", "flowscope-nf,jax"]) == 2
    err = capsys.readouterr().err
    assert "unknown contender 'jax'" in err and "zuko-nf" in err


def test_reference_is_the_same_math_as_flowscope():
    """Loss and gradients of the benchmark's eager reference equal flowscope's, float64."""
    torch.manual_seed(0)
    flow = NormalizingFlow(log_scale_bound=None).double()  # the study's plain recipe
    with torch.no_grad():
        flow.theta.add_(0.3 * torch.randn_like(flow.theta))  # not only the initialisation
    ref = copy_from_flowscope(ReferenceFlow().double(), flow)
    x = olympic_rings(256, seed=0).double()
    y = (x - x.mean(0)) / x.std(0)
    loss = flow.loss(y, standardized=True)
    loss.backward()
    ref_loss = ref.loss(y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    flat = []
    for c in ref.couplings:
        nets = [
            [m for m in net if isinstance(m, torch.nn.Linear)] for net in (c.log_s_net, c.b_net)
        ]
        for a, b in zip(*nets, strict=True):
            flat.append(torch.stack([a.weight.grad.T, b.weight.grad.T]).reshape(-1))
            flat.append(torch.stack([a.bias.grad, b.bias.grad]).reshape(-1))
    torch.testing.assert_close(flow.theta.grad, torch.cat(flat), rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in ref.parameters()) == flow.theta.numel()


def test_bench_skips_a_missing_library(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "zuko", None)  # makes `import zuko` fail
    argv = ["bench", "--steps", "1", "--rounds", "1", "--quiet", "--only"]
    assert main([*argv, "zuko-nf,flowscope-gaussian"]) == 0
    out = capsys.readouterr().out
    assert "skipped zuko-nf" in out and "flowscope[bench]" in out
    assert not re.search(r"^zuko-nf\s+[\d.]+", out, re.MULTILINE)
    assert re.search(r"^flowscope-gaussian\s+[\d.]+", out, re.MULTILINE)
    # Nothing left to time: an error with the reason, not an empty table.
    assert main([*argv, "zuko-nf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowscope: error: no contender could run (zuko-nf: ")
    assert "flowscope[bench]" in err


def test_format_table_is_the_shared_text_table(monkeypatch):
    from flowscope import bench, tables

    result = bench.BenchResult(
        machine={"kernels": {"nf": True}, "cores": 2, "torch": "x", "torch_threads": 1},
        settings={
            "steps": 2,
            "rounds": 2,
            "batch_size": 128,
            "kernel_first_load_s": 0.5,
            "steps_per_epoch": 1954,
            "epochs": 20,
        },
        timings=[
            bench.Timing("flowscope-nf", "nf", 0.52, [0.5, 0.6], 1.0, 20.3, 5.6, 10.77),
            bench.Timing("reference-nf", "nf", 12.25, [12.0, 13.5], 23.56, 478.7, 5.6, 0.457),
        ],
    )
    calls = []

    def recording_text_table(rows, align, **kwargs):
        calls.append((rows, align))
        return tables.text_table(rows, align, **kwargs)

    monkeypatch.setattr(bench, "text_table", recording_text_table)
    text = bench.format_table(result)
    assert len(calls) == 1 and calls[0][1] == "lrrrrrr"
    rows, align = calls[0]
    assert tables.text_table(rows, align) in text
    assert rows[0] == [
        "contender",
        "ms/step",
        "range",
        "vs flowscope",
        "20 epochs (proj.)",
        "MFLOP/step",
        "GFLOP/s",
    ]
    assert rows[2] == ["reference-nf", "12.25", "12.00-13.50", "23.56x", "479 s", "5.6", "0.5"]


def test_run_bench_counts_must_be_integers(capsys):
    from flowscope.bench import run_bench

    for name in ("steps", "rounds", "threads"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 2.0"):
            run_bench(**{name: 2.0})
    assert main(["bench", "--steps", "0"]) == 2
    assert "argument --steps: must be a positive integer, got '0'" in capsys.readouterr().err


def test_count_is_singular_for_one_only():
    from flowscope.tables import count

    assert count(1, "sample") == "1 sample"
    assert count(0, "point") == "0 points"
    assert count(1000, "sample") == "1,000 samples"
