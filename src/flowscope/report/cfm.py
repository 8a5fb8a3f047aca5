"""The conditional flow-matching section of the report: the study's section 4.3, CFM Q1
to Q3.

The training input coloured by class, one sample per class with the check that it ends
in its own ring's band, and conditional samples with their class accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics, plots
from ..data import BAND_TOLERANCE, RING_NAMES, RING_THICKNESS, in_band, nearest_ring, ring_distance
from ..runs import run_data
from .measures import as_numpy
from .study import Study
from .text import balanced, num, pair, pct

__all__ = ["STAGES"]


def q1(study: Study) -> None:
    """CFM Q1: the training input coloured by class, and where the condition enters."""
    doc, p = study.doc, study.preset
    doc.section("Conditional flow matching")
    doc.question("cfm-q1", "CFM Q1 · The training input, coloured by class")
    train = run_data(study.infos["cfm"], "train")
    n = min(len(train.x), max(p.n_show, 3000))
    counts = torch.bincount(train.labels, minlength=len(RING_NAMES)).tolist()
    study.m["cfm_q1"] = {"class_counts": counts, "shown": n}
    fig = plots.class_scatter(
        [(train.x[:n], train.labels[:n], f"CFM training input ({n:,} of {len(train.x):,})")],
        size=1.5,
    )
    study.figure(
        "cfm_q1_input",
        fig,
        "CFM Q1. Training points coloured by their ring (class).",
    )
    doc.para(
        "The training set holds "
        + ", ".join(f"{c:,} {name}" for c, name in zip(counts, RING_NAMES, strict=True))
        + " points. The condition enters the <b>objective, Eq. 16</b>: the network becomes "
        "v(y<sub>t</sub>, t, c) and is regressed onto x<sub>1</sub> − x<sub>0</sub> with c "
        "the class of x<sub>1</sub>; the sampler (Eq. 17) then uses v(y, t, c) for the "
        "class asked for. In flowscope the class goes through an nn.Embedding (5 classes, "
        "16 numbers each) whose vector is concatenated with (y, t) at the input of the "
        "first fully connected layer, which mixes the three. "
        + _prior_sentence(study.models["cfm"])
    )


def _prior_sentence(cfm) -> str:
    """Where the noise x0 of Eq. 14 lives for this model, in data units."""
    s = cfm.standardization
    if not s.per_class:
        return (
            "All points were standardized together, so the noise x<sub>0</sub> of Eq. 14 "
            "is the same N(0, I) for every class."
        )
    loc = s.loc.double()
    return (
        "The class also enters the <b>noise x<sub>0</sub> of Eq. 14</b>: each class was "
        "standardized by its own mean and standard deviation, so x<sub>0</sub> ~ N(0, I) "
        "in those coordinates is, in data units, a Gaussian around the class's mean (for "
        f"the {RING_NAMES[0]} ring ({num(float(loc[0, 0]))}, {num(float(loc[0, 1]))}), "
        "its centre), and the network only has to shape each ring rather than also carry "
        "it across the plane (a class-conditional prior, Issachar et al. 2025). The "
        "study standardizes all points together; in flowscope's quality benchmark this "
        "choice raised the class accuracy of Q3 and lowered the conditional NLL on each "
        "of 5 training seeds (benchmarks/README.md)."
    )


def q2(study: Study) -> None:
    """CFM Q2: one sample per class, checked to end in its own ring's band."""
    doc, p, cfm = study.doc, study.preset, study.models["cfm"]
    doc.question("cfm-q2", "CFM Q2 · One point per class")
    k = len(RING_NAMES)
    labels = torch.arange(k)
    z = torch.randn(k, 2, generator=study.gen(5))
    times = np.linspace(0, 1, 101)
    path = as_numpy(cfm.trajectory(z, dt=p.dt, times=times.tolist(), labels=labels))
    end = path[-1]
    ends = torch.from_numpy(end)  # (K, 2)
    d, inside, (nearest_ids, _) = ring_distance(ends), in_band(ends), nearest_ring(ends)
    rows, info = [], []
    for c in range(k):
        own = float(d[c, c])
        nearest = int(nearest_ids[c])
        ok = bool(inside[c, c])
        info.append(
            {
                "class": RING_NAMES[c],
                "end": end[c].tolist(),
                "distance_to_own_centre_line": own,
                "nearest_ring": RING_NAMES[nearest],
                "in_own_band": ok,
            }
        )
        rows.append(
            (
                RING_NAMES[c],
                pair(end[c]),
                num(own),
                RING_NAMES[nearest],
                "yes" if ok else "no",
            )
        )
        study.say(
            f"    CFM Q2 check: class {RING_NAMES[c]:6s} ends at ({end[c, 0]:.3f}, "
            f"{end[c, 1]:.3f}), {own:.3f} from its ring's centre line: "
            + ("in its band" if ok else "NOT in its band")
        )
    hits = sum(r["in_own_band"] for r in info)
    study.m["cfm_q2"] = {"points": info, "in_own_band": hits}
    bg = run_data(study.infos["cfm"], "test")
    fig = plots.class_trajectories(
        path,
        labels,
        times,
        title="CFM: one sample per class",
        background=bg.x[: p.background],
        background_labels=bg.labels[: p.background],
    )
    study.figure(
        "cfm_q2_trajectories",
        fig,
        "CFM Q2. One noise point per class integrated to t = 1, each path in its class's "
        "colour; faint: held-out points of each class."
        + (
            " Each path starts from noise drawn around its own ring's centre (standard "
            f"deviation ≈ {num(float(cfm.standardization.scale.double().mean()), 2)} per "
            "axis, the ring's own standardization, Q1), so the paths are short: the flow "
            "spreads the noise into the ring rather than carrying it across the plane. A "
            "path may first move towards the centre: y<sub>t</sub> = t x<sub>1</sub> + "
            "(1 − t) x<sub>0</sub> averages two independent points, so the cloud is "
            "narrowest at t = 0.5 (1/√2 of its spread at t = 0 and t = 1), and noise that "
            "starts far out moves in before it moves to the ring."
            if cfm.standardization.per_class
            else ""
        ),
    )
    doc.table(
        ("class", "end point", "distance to own centre line", "nearest ring", "in own band"),
        rows,
        "CFM Q2. The check (also printed while the report runs): a point is in its band "
        f"when it is within {RING_THICKNESS / 2:g} data units of its ring's centre line "
        f"(plus {BAND_TOLERANCE:g} for the float32 rounding of points, as in every ring "
        "metric).",
    )
    doc.para(
        f"{hits} of the {k} points end inside the band of their own ring"
        + (
            "."
            if hits == k
            else "; the others are listed above with their distance to the centre line."
        )
    )


def q3(study: Study) -> None:
    """CFM Q3: conditional samples and their class accuracy."""
    doc, p, cfm = study.doc, study.preset, study.models["cfm"]
    doc.question("cfm-q3", f"CFM Q3 · {p.cfm_samples:,} conditional samples")
    k = len(RING_NAMES)
    labels = torch.arange(p.cfm_samples) % k
    x = cfm.sample(p.cfm_samples, dt=p.dt, labels=labels, generator=study.gen(6))
    acc = metrics.class_accuracy(x, labels)
    prec = metrics.ring_precision(x)
    nearest_own = float((nearest_ring(x.double())[0] == labels).double().mean())
    study.m["cfm_q3"] = {
        "n": p.cfm_samples,
        "class_accuracy": dict(zip(RING_NAMES, acc.per_class, strict=True)),
        "overall": acc.overall,
        "ring_precision": prec.precision,
        "nearest_ring_is_own": nearest_own,
    }
    fig = plots.class_scatter(
        [(x, labels, f"CFM: {p.cfm_samples:,} samples, {p.cfm_samples // k} per class")],
        size=1.5,
    )
    study.figure(
        "cfm_q3_samples",
        fig,
        f"CFM Q3. Samples of the conditional model (Euler, Δt = {p.dt:g}), each coloured "
        "by the class it was generated for.",
    )
    worst = int(np.argmin(acc.per_class))
    table3 = study.m["evaluation"]["cfm"]
    doc.para(
        f"Class accuracy, the share of samples that lie in the band of the ring they were "
        f"generated for, is {pct(acc.overall)} on these {p.cfm_samples:,} samples "
        f"({balanced(p.cfm_samples, k)} per ring; Table 3's {pct(table3['class_accuracy'])} "
        f"comes from {table3['n']:,} other samples of the same model). Per class: "
        + ", ".join(f"{name} {pct(v)}" for name, v in zip(RING_NAMES, acc.per_class, strict=True))
        + f" (lowest: {RING_NAMES[worst]}); {pct(prec.precision)} lie in some band and "
        f"{pct(nearest_own)} are closer to their own ring's centre line than to any other. "
        + (
            "Each class's samples form its own ring, including where rings overlap: "
            "there the class, not the position, decides which ring a point belongs to."
            if acc.overall >= 0.8
            else "The classes are placed by the condition, but at this stage of training "
            "many samples miss the thin bands."
        )
    )


STAGES = (
    ("CFM Q1: training input", q1),
    ("CFM Q2: one point per class", q2),
    ("CFM Q3: conditional samples", q3),
)
