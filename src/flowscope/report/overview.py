"""The overview section: how the models were trained, their held-out likelihood against
the data's entropy, and the quality of their samples (Tables 1 to 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..data import OLYMPIC_BOX, RING_NAMES, RING_RADIUS, RING_THICKNESS
from ..models import MODELS
from ..standardize import Standardization
from .measures import conditional_entropy
from .models import evaluate
from .presets import STUDY_MODELS
from .study import Study
from .text import balanced, num, pct, pm, sci

__all__ = ["STAGES", "overview"]


def overview(study: Study) -> None:
    """The Overview section: Tables 1 to 3 (training, held-out NLL, sample quality)."""
    ev = _evaluate(study)
    study.doc.section("Overview")
    study.doc.para(_setup_paragraph(study))
    _training_table(study)
    floors = _nll_table(study, ev)
    study.doc.para(_floor_paragraph(study.m["data"], floors))
    _quality_table(study, ev)


def _evaluate(study: Study) -> dict[str, dict[str, Any]]:
    """The evaluation of each study model (:func:`~.models.evaluate`)."""
    return {name: evaluate(study, name) for name in STUDY_MODELS}


def _band_radii() -> tuple[float, float]:
    """The inner and outer radius of a ring's band, data units."""
    return RING_RADIUS - RING_THICKNESS / 2, RING_RADIUS + RING_THICKNESS / 2


def _setup_paragraph(study: Study) -> str:
    """The models, the two data sets and the training recipe, as the section opens."""
    p = study.preset
    x0, x1, y0, y1 = OLYMPIC_BOX
    r0, r1 = _band_radii()
    times = _time_sentence(_alpha(study.models["fm"]), _alpha(study.models["cfm"]))
    nf_cfg, fm_cfg = study.models["nf"].config(), study.models["fm"].config()
    train = study.infos["nf"].train
    return (
        "flowscope trained the three models of the study on points of the Olympic rings "
        f"(radius {RING_RADIUS:g}, band width {RING_THICKNESS:g}): a <b>normalizing flow"
        f"</b> (NF) of {nf_cfg['couplings']} affine couplings with permutations between "
        "them, trained by maximum likelihood (Eq. 9), an unconditional <b>flow-matching</b> "
        "model (FM) and a class-conditional one (CFM), whose velocity networks "
        f"({fm_cfg['layers']} linear layers, width {fm_cfg['hidden']}) were fitted to the "
        "linear-path objective (Eq. 16). NF and FM were trained on "
        "the unconditional data: uniform over the union of the five bands, drawn in the "
        f"box x ∈ [{num(x0, 0)}, {num(x1, 0)}], y ∈ [{num(y0, 0)}, {num(y1, 0)}], which "
        "cuts the tops and bottoms of the outer rings flat. CFM was trained on the "
        "conditional data: an equal share of points per ring, radius uniform in "
        f"[{num(r0)}, {num(r1)}] and angle uniform, full rings, each point labelled with "
        f"its ring. All three used Adam at {sci(train['lr'], 1)} with cosine decay and batches "
        f"of {train['batch_size']} points, on {p.n_points:,} points for {p.epochs} epochs. "
        "Flow-matching "
        f"samples integrate Eq. 17 with Euler steps of Δt = {p.dt:g} unless a section says "
        f"otherwise. Likelihoods are in nats per point. {times}"
        + _skip_sentence(study.models["fm"].gaussian_skip, study.models["cfm"].gaussian_skip)
        + (
            " CFM standardized each ring's points by that ring's own mean and standard "
            "deviation, so its noise starts around the ring's centre (CFM Q1); NF and FM "
            "standardized all points together."
            if study.models["cfm"].standardization.per_class
            else ""
        )
    )


def _training_table(study: Study) -> None:
    """Table 1: parameters, steps, time and last validation loss of each model."""
    tr = study.m["training"]
    rows = []
    for name in STUDY_MODELS:
        t = tr[name]
        rows.append(
            (
                name.upper(),
                f"{t['parameters']:,}",
                f"{t['epochs']}",
                f"{t['steps']:,}",
                num(t["seconds"], 1),
                num(t["ms_per_step"], 2),
                num(t["final_val_loss"]),
                "trained now" if t["trained_in_this_run"] else "reused (same config)",
            )
        )
    study.doc.table(
        (
            "model",
            "parameters",
            "epochs",
            "steps",
            "training time (s)",
            "ms / step",
            "last val. loss",
            "this run",
        ),
        rows,
        "Table 1. Training. The validation loss is Eq. 9 for the NF (nats per "
        "standardized point) and Eq. 16 for FM and CFM, on the held-out validation set"
        + (
            "; CFM's is in each ring's own standardized units, so it does not compare with FM's."
            if study.models["cfm"].standardization.per_class
            else "."
        ),
    )


@dataclass(frozen=True)
class _Floors:
    """How far the held-out NLLs lie above their entropy floors, nats per point.

    Attributes:
        gap: NF's and FM's standardized NLL minus the data's entropy, by model name.
        gap_cfm: CFM's conditional NLL minus the conditional entropy, data units.
        h_cond: the conditional data's entropy given the ring, data units.
    """

    gap: dict[str, float]
    gap_cfm: float
    h_cond: float


def _nll_table(study: Study, ev: dict[str, dict[str, Any]]) -> _Floors:
    """Table 2: held-out NLL of each model against its floor; leaves the conditional
    entropy in ``metrics.json``'s ``data``."""
    dm = study.m["data"]
    # evaluate_run reports an infinite NLL (a point of zero density) as None.
    nll = {k: ev[k]["nll_standardized"] for k in ("nf", "fm")}
    nll = {k: math.inf if v is None else v for k, v in nll.items()}
    gap = {k: nll[k] - dm["entropy_standardized"] for k in ("nf", "fm")}
    rows = [
        (
            MODELS.get(k).title.capitalize() + f" ({k.upper()})",
            num(ev[k]["nll_standardized"]),
            num(gap[k]),
            num(ev[k]["nll_data"]),
            ev[k]["nll_method"],
        )
        for k in ("nf", "fm")
    ]
    rows += _baseline_row("Gaussian mixture baseline", ev["nf"], dm["entropy_standardized"])
    rows.append(
        (
            "data entropy (floor)",
            num(dm["entropy_standardized"]),
            num(0.0),
            num(dm["entropy_data_units"]),
            f"log of the bands' area, {dm['band_area']:.3f} (Monte Carlo)",
        )
    )
    # CFM: -log p(x | c) with the true ring c, against the conditional data's entropy.
    e, h_cond = ev["cfm"], conditional_entropy()
    cs = study.models["cfm"].standardization
    # Balanced classes: the standardized floor shifts by the classes' mean log|det|.
    ld_cfm = float(
        cs.log_abs_det(torch.arange(len(cs.loc)) if cs.per_class else None).double().mean()
    )
    h_cond_std = h_cond + ld_cfm
    gap_cfm = math.inf if e["nll_data"] is None else e["nll_data"] - h_cond
    dm.update(conditional_entropy_data_units=h_cond, conditional_entropy_standardized=h_cond_std)
    r0, r1 = _band_radii()
    rows += [
        (
            "CFM: −log p(x | ring)",
            num(e["nll_standardized"]),
            num(gap_cfm),
            num(e["nll_data"]),
            e["nll_method"],
        ),
        *_baseline_row("CFM baseline: a mixture per ring", e, h_cond_std),
        (
            "conditional entropy (CFM floor)",
            num(h_cond_std),
            num(0.0),
            num(h_cond),
            f"E[log(2π w r)], r uniform in [{num(r0)}, {num(r1)}]",
        ),
    ]
    study.doc.table(
        ("model", "NLL, standardized", "above floor", "NLL, data units", "how"),
        rows,
        _nll_caption(ev, dm, cs, ld_cfm),
    )
    return _Floors(gap=gap, gap_cfm=gap_cfm, h_cond=h_cond)


def _baseline_row(title: str, e: dict[str, Any], floor_standardized: float) -> list[tuple]:
    """Table 2's row of the Gaussian mixture fitted to a model's training points (BIC),
    from its :func:`~flowscope.evaluate.evaluate_run` result (none without one)."""
    if e.get("gmm_nll_data") is None:
        return []
    comps = "/".join(map(str, e["gmm_components"]))
    return [
        (
            title,
            num(e["gmm_nll_standardized"]),
            num(e["gmm_nll_standardized"] - floor_standardized),
            num(e["gmm_nll_data"]),
            f"scikit-learn, {comps} components by BIC, on {e['gmm_train_points']:,} of the "
            "same training points",
        )
    ]


def _nll_caption(
    ev: dict[str, dict[str, Any]], dm: dict[str, Any], cs: Standardization, ld_cfm: float
) -> str:
    """Table 2's caption: the units, and why the CFM rows are another quantity."""
    return (
        f"Table 2. Held-out negative log-likelihood on {ev['nf']['nll_points']:,} test "
        "points never used in training (nats per point; lower is better). Standardized "
        "units are those of the training losses; data units add "
        f"log σ<sub>1</sub> + log σ<sub>2</sub> = {num(sum(math.log(v) for v in dm['std']))}"
        f", with σ = ({num(dm['std'][0])}, {num(dm['std'][1])}) the data's standard "
        "deviations. The CFM rows are a different quantity: the conditional density of "
        f"each of the CFM's own {ev['cfm']['nll_points']:,} test points given its true ring, "
        "on the conditional data (full rings, equal share per ring; the CFM's own "
        + (
            "standardization, each ring's own: σ ≈ "
            f"({num(float(cs.scale[:, 0].double().mean()))}, "
            f"{num(float(cs.scale[:, 1].double().mean()))}), so its data units add "
            f"{num(-ld_cfm)}). "
            if cs.per_class
            else "standardization). "
        )
        + "Knowing the ring removes up to log 5 = "
        f"{num(math.log(len(RING_NAMES)), 2)} nats and the data differ, so they are not "
        "comparable with the NF and FM rows; their floor is the conditional data's "
        "entropy given the ring. The baseline rows are Gaussian mixtures (full "
        "covariances) fitted to the models' own training points, their number of "
        "components chosen by BIC among 1 to 10 (one mixture per ring for the CFM): a "
        "model above its baseline has not earned its keep."
    )


def _floor_paragraph(dm: dict[str, Any], floors: _Floors) -> str:
    """Which model comes closer to the entropy floor of Table 2."""
    gap = floors.gap
    better = "NF" if gap["nf"] < gap["fm"] else "FM"
    other = "FM" if better == "NF" else "NF"
    return (
        "Because the data are uniform on the bands, no density can score below their "
        f"differential entropy, log(area) = {num(dm['entropy_data_units'])} nats in data "
        f"units or {num(dm['entropy_standardized'])} nats per standardized point. The "
        f"{better} comes closer to this floor ({num(gap[better.lower()])} nats above it) "
        f"than the {other} ({num(gap[other.lower()])} nats above it). The CFM's "
        f"conditional NLL lies {num(floors.gap_cfm)} nats above its own floor, "
        f"H(x | ring) = {num(floors.h_cond)} nats in data units."
    )


def _quality_table(study: Study, ev: dict[str, dict[str, Any]]) -> None:
    """Table 3: W2 against its noise floor, the ring metrics and the round trip."""
    rows = []
    for k in STUDY_MODELS:
        e = ev[k]
        rows.append(
            (
                k.upper(),
                num(e["w2"]),
                pm(e["w2_noise_floor"], e["w2_noise_floor_std"]),
                pct(e["ring_precision"]),
                num(e["ring_mean_offset"]),
                pct(e["ring_coverage"]),
                pct(e["class_accuracy"]) if e.get("class_accuracy") is not None else "—",
                sci(e["round_trip_mean"]),
            )
        )
    n_cfm = ev["cfm"]["n"]
    study.doc.table(
        (
            "model",
            "W2",
            "W2 noise floor",
            "in a band",
            "offset of the rest",
            "coverage",
            "class accuracy",
            "round-trip error",
        ),
        rows,
        f"Table 3. Sample quality, {ev['nf']['w2_points']:,} samples per model (CFM: each "
        "of the class of the test point it is compared with). W2: exact 2-Wasserstein "
        "distance to as many test points, in "
        "data units; its noise floor is W2 between two independent draws of as many "
        "points of the data itself, mean ± sd over "
        f"{ev['nf']['w2_noise_floor_pairs']} pairs (CFM: of the conditional data it was "
        "trained on). In a band: share of samples inside a ring's band; offset: mean "
        "distance of the others to the nearest band (data units); coverage: share of the "
        "5 × 36 (ring, angle) cells that received a sample. Class accuracy (CFM only): "
        f"share of the CFM's {n_cfm:,} samples ({balanced(n_cfm, len(RING_NAMES))} "
        "generated for each ring) that lie in the band of the ring they were generated "
        "for (CFM Q3 measures it again on other samples). Round trip: mean distance "
        "between a test point and its image after inverse then forward (FM, CFM: "
        f"Euler, Δt = {study.preset.dt:g}).",
    )


STAGES = (("overview: held-out NLL and sample quality", overview),)


def _skip_sentence(fm_skip: bool, cfm_skip: bool) -> str:
    """How the flow-matching velocities were built: the network alone or with the skip."""
    if not (fm_skip or cfm_skip):
        return ""
    who = (
        "Both velocities were"
        if fm_skip and cfm_skip
        else ("FM's velocity was" if fm_skip else "CFM's velocity was")
    )
    return (
        f" {who} the network's output plus (2t − 1) / (t<sup>2</sup> + (1 − t)<sup>2</sup>) "
        "y<sub>t</sub>, the exact velocity field (Eq. 13) of Gaussian data with the "
        "standardized points' mean and variance, so that the network learns only the rest "
        "(a skip term; the study's network is the network alone)."
    )


def _alpha(model: Any) -> float:
    """The a of a model's Beta(a, 1) training times (1 for uniform times)."""
    return float(getattr(model.times, "alpha", 1.0))


def _time_sentence(fm_alpha: float, cfm_alpha: float) -> str:
    """Where on the path (t = 0 noise, t = 1 data) the flow-matching models were trained."""
    path = "the path time t of each training example (0: noise, 1: data)"
    if fm_alpha != cfm_alpha:
        late = fm_alpha > 1 and cfm_alpha > 1
        return (
            f"FM drew {path} from Beta({fm_alpha:g}, 1) and CFM from Beta({cfm_alpha:g}, 1); "
            "Beta(1, 1) is the uniform t of the study's Algorithm 1"
            + (
                ". Both train towards the same velocity field as with uniform t, but spend "
                "most of the training near the data, which lowered FM's held-out NLL and "
                "raised CFM's class accuracy in flowscope's benchmarks "
                "(benchmarks/README.md)."
                if late
                else "."
            )
        )
    a = fm_alpha
    if a == 1:
        return f"FM and CFM drew {path} uniformly, as the study's Algorithm 1 does."
    where = "the data" if a > 1 else "the noise"
    return (
        f"FM and CFM drew {path} from Beta({a:g}, 1), density {a:g} t<sup>{a - 1:g}</sup>, "
        "rather than uniformly as the study's Algorithm 1 does: both train towards the same "
        f"velocity field, but this spends most of the training near {where}"
        + (", which lowered the held-out NLL in flowscope's benchmarks." if a > 1 else ".")
    )
