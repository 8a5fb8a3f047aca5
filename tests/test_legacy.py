"""Run folders written before the model registry (commit 44350cf) load and give the same
samples, latents and log-densities as that version computed (tests/fixtures/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowscope.runs import load_run, model_type_of

FIXTURES = Path(__file__).parent / "fixtures" / "runs_44350cf"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", ["nf", "fm", "cfm"])
def test_a_folder_of_commit_44350cf_gives_what_it_gave(name):
    model, info = load_run(FIXTURES / name)
    assert model_type_of(info).name == name
    want = EXPECTED["runs"][name]
    points = torch.tensor(EXPECTED["points"])
    g = torch.Generator().manual_seed(7)
    if name == "nf":
        samples = model.sample(6, generator=g)
        latents = model.encode(points)
        log_prob = model.log_prob(points)
    else:
        labels = torch.tensor([0, 1, 2, 3, 4]) if name == "cfm" else None
        sample_labels = torch.arange(6) % 5 if name == "cfm" else None
        samples = model.sample(6, labels=sample_labels, generator=g, dt=0.05)
        latents = model.encode(points, labels, dt=0.05)
        log_prob = model.log_prob(points, labels, steps=20)
    # Flow matching now integrates its Euler steps in C (the sampler's fast path): the
    # same float32 arithmetic in another order, so its samples and latents are equal to
    # rounding; the flow's samples are computed as before, exactly. The flow's latents
    # are exact on the AVX2 machine that wrote the fixture and a few ulps off on one with
    # AVX-512, where PyTorch's CPU kernels take wider vector code.
    f64 = dict(dtype=torch.float64)
    tol = 0 if name == "nf" else 1e-6
    torch.testing.assert_close(
        samples.double(), torch.tensor(want["samples"], **f64), rtol=tol, atol=tol
    )
    torch.testing.assert_close(
        latents.double(), torch.tensor(want["latents"], **f64), rtol=1e-6, atol=1e-6
    )
    # The flow's density was computed by its training kernel then and by PyTorch's layers
    # now: the same float32 arithmetic in another order, so equal to rounding.
    exact = name != "nf"
    torch.testing.assert_close(
        log_prob.double(),
        torch.tensor(want["log_prob"], **f64),
        rtol=0 if exact else 1e-6,
        atol=0 if exact else 1e-6,
    )


def test_a_conditional_folder_from_before_label_dropout_has_no_null_class():
    # Written before guidance: it loads as trained, without label dropout, and refuses a
    # guidance that needs the unconditional velocity it never learned.
    model, info = load_run(FIXTURES / "cfm")
    assert (
        "label_dropout" not in json.loads((FIXTURES / "cfm" / "config.json").read_text())["model"]
    )
    assert model.label_dropout == 0.0 and model.null_label is None
    assert model.field.embedding.num_embeddings == 5
    labels = torch.arange(6) % 5

    def draw(**options):
        return model.sample(6, labels=labels, generator=torch.Generator().manual_seed(7), **options)

    assert torch.equal(draw(dt=0.05, guidance=1.0), draw(dt=0.05))
    with pytest.raises(ValueError, match="label dropout"):
        draw(dt=0.05, guidance=2.0)
