"""The report's "Beyond the study" page: its models follow the registry, each is trained
by a stage of its own and reused while its configuration is unchanged."""

from __future__ import annotations

import dataclasses
import io

import pytest

from flowscope.gaussian import Gaussian
from flowscope.models import MODELS, ModelType, Variant
from flowscope.report import PRESETS, beyond, models, num, pct
from flowscope.report.presets import STUDY_MODELS
from flowscope.report.study import Study, prepare_data

#: A type no other code knows of, with one declared variant that trains differently.
TOY = ModelType(
    "toy",
    Gaussian,
    "test Gaussian",
    variants=(Variant("twin", "twin", recipe={"batch_size": 64}),),
)
#: Smaller than the smoke preset: the page's mechanics, not its numbers.
TINY = dataclasses.replace(
    PRESETS["smoke"],
    name="tiny",
    n_points=600,
    holdout_points=300,
    n_show=200,
    n_quality=150,
    nll_steps=4,
    dt=0.05,
    entropy_points=20_000,
)


@pytest.fixture
def toy(monkeypatch):
    """``toy`` registered for the test only."""
    monkeypatch.setitem(MODELS._entries, "toy", TOY)
    return TOY


def test_rows_are_every_registered_type_and_its_variants(toy):
    rows = models.rows()
    expected = [
        e.name + suffix for e in MODELS for suffix in ("", *(f"-{v.name}" for v in e.variants))
    ]
    assert [r.key for r in rows] == expected
    assert expected[-2:] == ["toy", "toy-twin"]
    twin = models.row("toy-twin")
    assert (twin.label, twin.conditional) == ("twin TOY", False)
    assert twin.recipe().batch_size == 64 and models.row("toy").recipe().batch_size == 128
    # Each type with conditional_option declares its conditional form as a variant here.
    for e in MODELS:
        if e.conditional_option:
            assert models.row(f"{e.name}-conditional").conditional
    # The study's models come from their own stages; every other model has one.
    titles = [title for title, _ in beyond.stages()]
    own = [f"train {r.label} ({r.entry.title})" for r in rows if r.key not in STUDY_MODELS]
    assert titles[:-1] == own and "train twin TOY (test Gaussian)" in own
    with pytest.raises(KeyError, match="no report model 'nope'; the models are nf, "):
        models.row("nope")


def _run_stages(out, preset, *, page: bool = True) -> Study:
    """The report's training stages (and with ``page`` the data and the page)."""
    study = Study(out, preset, seed=0, retrain=False, log=io.StringIO())
    study.fig_dir.mkdir(parents=True, exist_ok=True)
    stages = [*models.STAGES, ("data", prepare_data), *beyond.stages()]
    for title, fn in stages:
        if page or title.startswith("train "):
            fn(study)
    return study


def _mtimes(out) -> dict[str, int]:
    return {
        d.name: (d / "model.safetensors").stat().st_mtime_ns for d in (out / "models").iterdir()
    }


@pytest.mark.slow
def test_beyond_page_lists_every_model_and_reuses_unchanged_ones(tmp_path, toy):
    out = tmp_path / "r"
    study = _run_stages(out, TINY)
    keys = [r.key for r in models.rows()]
    assert [m["key"] for m in study.m["beyond"]] == keys
    assert all(study.trained[k] for k in keys)
    # Models outside the study: their type's recipe, at most the preset's epochs.
    for m in study.m["beyond"]:
        r = models.row(m["key"])
        want = TINY.epochs if m["study"] else min(r.recipe_epochs(), TINY.beyond_epochs)
        assert (m["epochs"], m["batch_size"]) == (want, r.recipe().batch_size)
    assert study.m["beyond"][keys.index("toy-twin")]["batch_size"] == 64

    # One table row per model, the numbers measured in this run.
    (table,) = [b for b in study.doc.blocks if b.kind == "table" and "NFE" in b.header]
    by_label = {row[0]: row for row in table.rows}
    for m in study.m["beyond"]:
        cells = by_label[m["label"]]
        assert cells[2] == num(m["nll_data"]) and cells[5] == pct(m["in_band"])
        assert cells[-1] == f"{m['nfe']:,}"
        assert (cells[6] == "—") == (not m["conditional"])
    for m in study.m["beyond"]:  # 1 / dt: the preset's, or the type's own sampler's
        if m["solver"] == "euler":
            sampler = models.row(m["key"]).sampler
            per_step = 2 if "guidance" in sampler else 1  # the class's and the null's
            assert m["nfe"] == per_step * round(1 / sampler.get("dt", TINY.dt)), m["key"]
    assert {m["nfe"] for m in study.m["beyond"] if m["key"] == "fm"} == {round(1 / TINY.dt)}
    assert {m["nfe"] for m in study.m["beyond"] if m["key"] == "meanflow"} == {1}
    assert (out / "figures" / "beyond_samples.png").is_file()
    assert [b.kind for b in study.doc.blocks[:2]] == ["page", "h1"]  # a page of its own

    # The guided variant is measured at its scale: its samples are not the unguided ones.
    guided = [r for r in models.rows() if "guidance" in r.sampler]
    for r in guided:
        ev = study.m["evaluation"][r.key]
        assert f"guidance w={r.sampler['guidance']:g}" in ev["sampler"]
    # The reflow variant learns the pairs of its parent as trained in this run.
    for r in (r for r in models.rows() if r.parent is not None):
        drawn = study.infos[r.key].extra["parent"]
        assert drawn["weights"] == models.parent_digest(out / "models" / r.parent)
        assert drawn["rectified"] == 2 and drawn["pairs"] == TINY.n_points
    # The few-step figure: the base, its reflow and the mean flow at 1 and 4 steps.
    shown = [r.key for r in beyond.few_step_rows()]
    reflows = [r for r in models.rows() if r.parent is not None]
    own = [r.key for r in models.rows() if r.variant is None and r.entry.sampler]
    assert shown == [k for r in reflows for k in (r.parent, r.key)] + own
    assert {"fm", "fm-rectified", "meanflow"} <= set(shown)  # the registry's today
    assert set(study.m["few_steps"]) == set(shown)
    assert all(set(v) == {"1", "4"} for v in study.m["few_steps"].values())
    assert (out / "figures" / "beyond_few_steps.png").is_file()

    # Unchanged configurations: every model is reused, no weights are written.
    before = _mtimes(out)
    again = _run_stages(out, TINY, page=False)
    assert set(again.trained) == set(keys) and not any(again.trained.values())
    assert _mtimes(out) == before
    assert again.m["training"] == {
        k: {**v, "trained_in_this_run": False} for k, v in study.m["training"].items()
    }

    # A change that concerns only the models outside the study retrains those alone.
    changed = _run_stages(out, dataclasses.replace(TINY, beyond_epochs=2), page=False)
    assert {k for k, t in changed.trained.items() if t} == set(keys) - set(STUDY_MODELS)
    after = _mtimes(out)
    assert all((after[k] == before[k]) == (k in STUDY_MODELS) for k in keys)

    # A reflow variant is trained again when the model whose pairs it learns is.
    child = next(r for r in models.rows() if r.parent is not None)
    assert models.reusable(TINY, 0, child.key, out / "models" / child.key) is False  # epochs
    parent_only = dataclasses.replace(TINY, beyond_epochs=2, epochs=TINY.epochs + 1)
    assert models.reusable(parent_only, 0, child.key, out / "models" / child.key)
    retrained = _run_stages(out, parent_only, page=False)
    assert retrained.trained[child.parent] and retrained.trained[child.key]
    # ... and when its pairs would be drawn with another step.
    assert models.reusable(parent_only, 0, child.key, out / "models" / child.key)
    finer = dataclasses.replace(parent_only, dt=parent_only.dt / 2)
    assert not models.reusable(finer, 0, child.key, out / "models" / child.key)
