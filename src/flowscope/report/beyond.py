"""The "Beyond the study" page: every model of the report side by side on the rings.

The models are those of :func:`.models.rows`: each registered type of
:data:`~flowscope.models.MODELS` and each variant it declares. The study's three come
from their stages; each other one is trained (or reused) by a stage of its own
(:func:`stages`), so a type joins the page by registering. One table gives what every
model scores on the same held-out points, one figure their samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .. import metrics
from ..base import one_thread
from ..data import RING_NAMES
from ..runs import run_data
from ..tables import count
from .measures import conditional_entropy
from .models import Row, evaluate, row, rows, train
from .presets import STUDY_MODELS
from .study import Study
from .text import num, pct, pm, sci

__all__ = ["PAGE", "Measured", "few_step_rows", "measure", "page", "stages", "training_stages"]

SAMPLE_POINTS = 1000  # the points of the timed sampling


@dataclass(frozen=True)
class Measured:
    """What the page shows of one model (data units unless said otherwise).

    Attributes:
        key, label: the model's name (:class:`~.models.Row`).
        conditional: whether it takes the rings' labels (its NLL is then -log p(x | ring)
            on the conditional data).
        study: whether it is one of the study's three models.
        trained: whether it was trained in this run (else reused).
        epochs, recipe_epochs, batch_size, lr: how it was trained, and the epochs of its
            recipe.
        train_seconds: the wall time of its training.
        nll_standardized, nll_data: held-out NLL, nats per point (``None``: infinite or
            none).
        per_class: whether ``nll_standardized`` is in each ring's own coordinates.
        w2, w2_floor, w2_floor_std: W2 of its samples to the test points, and the noise
            floor at that size.
        in_band: share of its samples in a ring's band.
        class_accuracy: share of its balanced samples in their own ring's band, or
            ``None``.
        solver, nfe: the sampler and its network evaluations per sample.
        sample_seconds, sample_points: the wall time of one draw of ``sample_points``
            points, on one thread.
    """

    key: str
    label: str
    conditional: bool
    study: bool
    trained: bool
    epochs: int
    recipe_epochs: int
    batch_size: int
    lr: float
    train_seconds: float
    nll_standardized: float | None
    nll_data: float | None
    per_class: bool
    w2: float
    w2_floor: float
    w2_floor_std: float
    in_band: float
    class_accuracy: float | None
    solver: str
    nfe: int
    sample_seconds: float
    sample_points: int


def training_stages() -> list[tuple[str, Callable[[Study], None]]]:
    """The training stage of each model the study's stages do not train, in the order of
    :func:`.models.rows` (a reflow variant after the model it learns from).

    Built when the report starts, from the registry as it is then."""
    extra = [r for r in rows() if r.key not in STUDY_MODELS]
    return [
        (f"train {r.label} ({r.entry.title})", functools.partial(train, key=r.key)) for r in extra
    ]


def measure(study: Study, r: Row) -> Measured:
    """The page's numbers of model ``r``, trained (or reused) by its stage."""
    ev, tr = evaluate(study, r.key), study.m["training"][r.key]
    cost, n = _sampling_cost(study, r.key)
    train_cfg = study.infos[r.key].train
    return Measured(
        key=r.key,
        label=r.label,
        conditional=r.conditional,
        study=r.key in STUDY_MODELS,
        trained=tr["trained_in_this_run"],
        epochs=tr["epochs"],
        recipe_epochs=r.recipe_epochs(),
        batch_size=int(train_cfg["batch_size"]),
        lr=float(train_cfg["lr"]),
        train_seconds=tr["seconds"],
        nll_standardized=ev["nll_standardized"],
        nll_data=ev["nll_data"],
        per_class=bool(ev["standardized_per_class"]),
        w2=ev["w2"],
        w2_floor=ev["w2_noise_floor"],
        w2_floor_std=ev["w2_noise_floor_std"],
        in_band=ev["ring_precision"],
        class_accuracy=ev["class_accuracy"],
        solver=cost.solver,
        nfe=cost.nfe,
        sample_seconds=cost.seconds,
        sample_points=n,
    )


def _sampling_cost(study: Study, key: str) -> tuple[metrics.NFEPoint, int]:
    """The sampler of model ``key``, its evaluations per sample and the wall time of one
    draw of :data:`SAMPLE_POINTS` points (:func:`~flowscope.metrics.w2_by_nfe`; an ODE
    integrates with Euler steps of the preset's Δt, as its samples everywhere in the
    report, unless its type or variant declares its own sampler: a mean flow's one step,
    a guidance scale)."""
    model, info = study.models[key], study.infos[key]
    test = run_data(info, "test")
    n = min(SAMPLE_POINTS, len(test.x))
    labels = test.labels[:n] if model.num_classes is not None else None
    sampling = row(key).sampling(study.preset.dt)
    steps = [round(1 / sampling["dt"])] if "dt" in sampling else [1]
    point = metrics.w2_by_nfe(
        model, test.x[:n], labels, nfe=steps, adaptive=False, guidance=sampling.get("guidance")
    )[0]
    return point, n


def page(study: Study) -> None:
    """The page: what the models are, the table, what it shows, their samples (on one
    thread)."""
    with one_thread():
        measured = [measure(study, r) for r in rows()]
        study.m["beyond"] = [asdict(m) for m in measured]
        doc = study.doc
        doc.section("Beyond the study", new_page=True)
        doc.question("beyond", "Beyond · Every model type on the same rings")
        doc.para(_intro(study, measured))
        _table(study, measured)
        doc.para(_findings(study, measured))
        _few_steps(study)
        _figure(study, measured)
        _coupling_paths(study)


#: The page's stage, after :func:`training_stages` (and the study's).
PAGE = ("Beyond the study: every model type on the rings", page)


def stages() -> list[tuple[str, Callable[[Study], None]]]:
    """:func:`training_stages`, then the page's."""
    return [*training_stages(), PAGE]


def _intro(study: Study, measured: Sequence[Measured]) -> str:
    """Which models the page holds and how the ones outside the study were trained."""
    p = study.preset
    others = [m for m in measured if not m.study]
    recipes: dict[str, list[str]] = {}  # one clause per recipe: the models that share it
    for m in others:
        how = f"{_epochs(m)}, batch {m.batch_size}, Adam at {sci(m.lr, 1)}"
        recipes.setdefault(how, []).append(m.label)
    variants = sorted({r.variant.title for r in rows() if r.variant is not None})
    reused = [m.label for m in others if not m.trained]
    return (
        "Every model type registered in flowscope, and the variants that types declare"
        + (f" (here: {', '.join(variants)})" if variants else "")
        + f", on the rings of the study: {p.n_points:,} training points drawn with seed "
        f"{study.seed} and the held-out test points above; the conditional models on the "
        f"conditional data, as CFM. {_names([m.label for m in measured if m.study])} are "
        "the study's models above. Each other model was trained by a stage of its own with "
        "its type's recipe: "
        + "; ".join(f"{_names(labels)}: {how}" for how, labels in recipes.items())
        + "."
        + (
            f" The report trains them for at most {count(p.beyond_epochs, 'epoch')}, to "
            "bound its time (the table gives this run's training times); benchmarks/ holds "
            "full-length runs."
            if any(m.epochs < m.recipe_epochs for m in others)
            else ""
        )
        + (
            f" {_capital(_names(reused))} {'was' if len(reused) == 1 else 'were'} reused from an "
            "earlier run with the same configuration."
            if reused
            else ""
        )
        + " A type registered in flowscope.models joins this table as one more row."
    )


def _capital(text: str) -> str:
    """``text`` with a capital first letter, to open a sentence."""
    return text[:1].upper() + text[1:]


def _names(labels: Sequence[str]) -> str:
    """``NF, FM and CFM``."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _epochs(m: Measured) -> str:
    """``10 of the recipe's 14 epochs``, or ``14 epochs``."""
    if m.epochs < m.recipe_epochs:
        return f"{m.epochs} of the recipe's {m.recipe_epochs} epochs"
    return count(m.epochs, "epoch")


def _table(study: Study, measured: Sequence[Measured]) -> None:
    """The table of every model, with the two entropy floors under it."""
    dm = study.m["data"]
    rows_ = [
        (
            m.label,
            num(m.nll_standardized) + ("*" if m.per_class else ""),
            num(m.nll_data),
            num(m.w2),
            pm(m.w2_floor, m.w2_floor_std),
            pct(m.in_band),
            "—" if m.class_accuracy is None else pct(m.class_accuracy),
            num(m.train_seconds, 1),
            num(1000 * m.sample_seconds, 1),
            f"{m.nfe:,}",
        )
        for m in measured
    ]
    dash = ("—",) * 7
    rows_ += [
        ("entropy (floor)", num(dm["entropy_standardized"]), num(dm["entropy_data_units"])) + dash,
        ("cond. entropy (floor)", "", num(conditional_entropy())) + dash,
    ]
    n_w2 = study.m["evaluation"][measured[0].key]["w2_points"]
    n_s = measured[0].sample_points
    study.doc.table(
        (
            "model",
            "NLL std.",
            "NLL data",
            "W2",
            "W2 floor",
            "in a band",
            "class acc.",
            "train (s)",
            "sample (ms)",
            "NFE",
        ),
        rows_,
        f"Table {_TABLE}. Every model on the rings. NLL: held-out, nats per point, in "
        "standardized (std.) and data units, on the test points never used in training; a "
        "conditional model's is "
        "−log p(x | ring) on the conditional data, lower than an unconditional one's by up "
        "to log 5 and to be read against the conditional entropy (cond.; * in each ring's "
        "own standardized coordinates); the entropies are the floors of Table 2. W2: exact "
        "2-Wasserstein distance between "
        f"{n_w2:,} samples and as many test points; its noise floor is W2 between two "
        "draws of the data (mean ± sd), as in Table 3. In a band: share of the samples in "
        "a ring's band; class accuracy: share of balanced samples in the band of the ring "
        "asked for (class acc.). Train: wall time of the recorded training (of the earlier run for "
        f"a reused model). Sample: wall time of one draw of {n_s:,} points on one thread. "
        "NFE: network evaluations per sample, 1 for a model that maps "
        f"in one pass (through all its layers), the Euler steps of Δt = {study.preset.dt:g} "
        "for an ODE (a mean flow: its own one step, with which its W2 and band share are "
        "measured too). Times are on this machine's CPU, shared with other jobs."
        + _variant_notes(study),
    )


def _variant_notes(study: Study) -> str:
    """What the caption says of the variants that are trained or sampled otherwise: a
    reflow's pairs, a guidance scale."""
    notes = []
    for r in rows():
        if r.parent is not None:
            drawn = study.infos[r.key].extra["parent"]
            notes.append(
                f" {r.label}: trained on {drawn['pairs']:,} (noise, sample) pairs of "
                f"{row(r.parent).label} ({drawn['sampler']}; reflow), measured on the same "
                "test points; its time leaves out the drawing of the pairs."
            )
        if "guidance" in r.sampler:
            model = study.models[r.key]
            notes.append(
                f" {r.label}: trained with label dropout p = {model.label_dropout:g} and "
                f"sampled with v_null + w (v_class − v_null) at w = {r.sampler['guidance']:g} "
                "(two evaluations per step); its NLL is the unguided density's (w = 1), as "
                "a guided field has no normalized density."
            )
    return "".join(notes)


_TABLE = 4  # the report's tables 1 to 3 are the overview's


def _findings(study: Study, measured: Sequence[Measured]) -> str:
    """What the table shows, chosen from its numbers."""
    dm = study.m["data"]
    parts = []
    plain = [m for m in measured if not m.conditional and m.nll_data is not None]
    if plain:
        best = min(plain, key=lambda m: m.nll_data)
        worst = max(plain, key=lambda m: m.nll_data)
        parts.append(
            f"Among the unconditional models {best.label} comes closest to the data's "
            f"entropy ({num(best.nll_data - dm['entropy_data_units'])} nats above it) and "
            f"{worst.label} stays furthest ({num(worst.nll_data - dm['entropy_data_units'])} "
            "above)."
        )
    cond = [m for m in measured if m.conditional and m.nll_data is not None]
    if cond:
        best = min(cond, key=lambda m: m.nll_data)
        acc = max(cond, key=lambda m: m.class_accuracy or 0.0)
        who = "also" if acc is best else f"{acc.label}"
        parts.append(
            f"Of the conditional ones {best.label} has the lowest conditional NLL "
            f"({num(best.nll_data - conditional_entropy())} nats above the conditional "
            f"entropy) and {who} the highest class accuracy ({pct(acc.class_accuracy)})."
        )
    within = [m.label for m in measured if m.w2 <= m.w2_floor + 2 * m.w2_floor_std]
    parts.append(
        f"{len(within)} of the {len(measured)} models score a W2 within two standard "
        "deviations of their noise floor"
        + (f" ({', '.join(within)})." if within and len(within) < len(measured) else ".")
    )
    parts.append(_speed_sentence(measured))
    return " ".join(parts)


def _speed_sentence(measured: Sequence[Measured]) -> str:
    """How much sampling costs: the fewest and most evaluations, and their times."""
    fast = min(measured, key=lambda m: (m.nfe, m.sample_seconds))
    slow = max(measured, key=lambda m: (m.nfe, m.sample_seconds))
    if fast.nfe == slow.nfe:
        return f"Every model samples with {fast.nfe:,} network evaluation(s) per point."
    return (
        f"Sampling {fast.sample_points:,} points takes {num(1000 * fast.sample_seconds, 1)} ms "
        f"with {fast.label} ({fast.nfe:,} evaluation per point) and "
        f"{num(1000 * slow.sample_seconds, 1)} ms with {slow.label} ({slow.nfe:,})."
    )


def _figure(study: Study, measured: Sequence[Measured]) -> None:
    """The samples of every model, side by side on shared axes."""
    p = study.preset
    panels = []
    for m in measured:
        model = study.models[m.key]
        labels = torch.arange(p.n_show) % len(RING_NAMES) if m.conditional else None
        x = model.sample(
            p.n_show, labels=labels, generator=study.gen(20), **row(m.key).sampling(p.dt)
        )
        panels.append((x, m.label))
    study.points_figure(
        "beyond_samples",
        panels,
        f"Beyond. {p.n_show:,} samples of each model (conditional ones: an equal share per "
        "ring); dashed red: the rings' centre lines.",
        ncols=4,
        rings=True,
        size=1.2,
    )


#: The Euler step counts of the few-step figure.
FEW_STEPS = (1, 4)


def few_step_rows() -> list[Row]:
    """The models of the few-step figure: each reflow variant after the model whose pairs
    it learns, then each type that declares its own sampler (a mean flow's one step)."""
    found = [r for r in rows() if r.parent is not None]
    found = [x for r in found for x in (row(r.parent), r)]
    found += [r for r in rows() if r.variant is None and r.entry.sampler]
    return list({r.key: r for r in found}.values())


def _few_steps(study: Study) -> None:
    """The samples of :func:`few_step_rows` with :data:`FEW_STEPS` Euler steps (with the
    rest of a model's own sampler, e.g. a guidance scale; a conditional model's an equal
    share per ring), each with its W2 to as many of the study's unconditional test points
    (none of those models: no figure)."""
    shown = few_step_rows()
    if not shown:
        return
    p = study.preset
    test = study.test[: p.n_show]  # the study's held-out points, the same for every model
    panels, names = [], []
    for r in shown:
        model = study.models[r.key]
        labels = None if model.num_classes is None else torch.arange(len(test)) % len(RING_NAMES)
        own = {k: v for k, v in r.sampler.items() if k != "dt"}  # its sampler, at k steps
        for k in FEW_STEPS:
            options = r.entry.sampling(**own, steps=k)
            x = model.sample(len(test), labels=labels, generator=study.gen(22), **options)
            w2 = metrics.wasserstein2(x, test)
            study.m.setdefault("few_steps", {}).setdefault(r.key, {})[str(k)] = w2
            panels.append((x, f"{r.label}\n{count(k, 'step')}: W2 {num(w2, 2)}"))
            names.append(f"{r.label} ({count(k, 'step')})")
    study.points_figure(
        "beyond_few_steps",
        panels,
        f"Beyond. {p.n_show:,} samples of "
        + _names([r.label for r in shown])
        + " with "
        + " and ".join(count(k, "Euler step") for k in FEW_STEPS)
        + " (a mean flow: steps of its average velocity), the same noise in each; W2 to as "
        "many test points (data units). " + _reflow_note(shown),
        names=names,
        ncols=len(panels),  # one row, under the table
        rings=True,
        size=0.6,
    )


def _reflow_note(shown: Sequence[Row]) -> str:
    """How the reflow models among ``shown`` were made."""
    made = [r for r in shown if r.parent is not None]
    return " ".join(
        f"{r.label} was trained on {row(r.parent).label}'s own (noise, sample) pairs "
        "(reflow), which straightens its paths."
        for r in made
    )


#: States drawn along each path of the coupling figure (t = 0, 1/50, ..., 1).
PATH_STATES = 50


def _coupling_paths(study: Study) -> None:
    """The paths of the same ten noise points under every variant that changes a model's
    coupling and under its type's default coupling (e.g. OT against independent pairs;
    none: no figure)."""
    coupled = [r for r in rows() if r.variant and "coupling" in r.variant.model_args]
    shown = [b for r in coupled for b in rows() if b.entry is r.entry and b.variant is None]
    shown = list({r.key: r for r in shown + coupled}.values())  # each base once, then the variants
    if not shown:
        return
    p = study.preset
    panels = []
    for r in shown:
        model = study.models[r.key]
        z = model.base_sample(10, study.gen(21))  # the same standardized noise for all
        times = [k / PATH_STATES for k in range(PATH_STATES + 1)]
        path = model.trajectory(z, times=times, **r.sampling(p.dt))
        title = f"{r.label}: {model.coupling.name} pairs"
        panels.append({"path": path, "times": times, "title": title, "markers": False})
    study.trajectory_figure(
        "beyond_coupling_paths",
        panels,
        "Beyond. The same ten noise points integrated from t = 0 (hollow circles) to t = 1 "
        "(crosses) by the model of each coupling, coloured by t (the same latents in every "
        "panel).",
        time_label="time t (0: noise, 1: data)",
    )
