"""The normalizing-flow section of the report: the study's section 3.3, NF Q1 to Q5.

Validation loss and its two parts, three samplings, the distribution after selected
layers, trajectories through the layers, and the inverse trajectories and log-densities
of five probe points.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import metrics, plots
from ..base import standard_normal_log_prob
from ..data import RING_NAMES, RING_THICKNESS
from .measures import (
    as_numpy,
    axis_aligned_share,
    fifth_shares,
    locate,
    step_lengths,
    straightness,
)
from .presets import NORMAL_ENTROPY_2D, PROBE_POINTS
from .study import Study
from .text import num, pair, pct

__all__ = ["STAGES"]


def q1(study: Study) -> None:
    """NF Q1: the validation loss per epoch and its two parts (Eq. 9)."""
    doc, h = study.doc, study.histories["nf"].epochs
    doc.section("Normalizing flow")
    doc.question("nf-q1", "NF Q1 · Validation loss and its two parts")
    first, last = h[0], h[-1]
    d_pz = -(last["val_log_pz"] - first["val_log_pz"])
    d_det = -(last["val_log_det"] - first["val_log_det"])
    m = {
        "epochs": len(h),
        "val_loss": [r["val_loss"] for r in h],
        "minus_log_pz": [-r["val_log_pz"] for r in h],
        "minus_log_det": [-r["val_log_det"] for r in h],
        "change_minus_log_pz": d_pz,
        "change_minus_log_det": d_det,
        "normal_entropy": NORMAL_ENTROPY_2D,
        "best_log_det_part": study.h_std - NORMAL_ENTROPY_2D,
        "validation_points": study.val_n,
    }
    study.m["nf_q1"] = m
    study.figure(
        "nf_q1_loss",
        plots.loss_curves(h, title="NF validation loss per epoch"),
        "NF Q1. Validation loss (Eq. 9) after each epoch and its two parts, each with the "
        "sign it has in the loss, so that the two coloured lines add up to the black one.",
    )
    mover = "log-det" if abs(d_det) > abs(d_pz) else "log p<sub>z</sub>"
    doc.para(
        f"On {study.val_n:,} validation points the loss went from {num(first['val_loss'])} "
        f"after epoch 1 to {num(last['val_loss'])} after epoch {len(h)} (nats per "
        "standardized point). In the last epoch the −E[log p<sub>z</sub>(φ<sup>−1</sup>(x))] "
        f"part was {num(-last['val_log_pz'])} and the −E[log |det ∂φ<sup>−1</sup>/∂x|] part "
        f"{num(-last['val_log_det'])}. If φ<sup>−1</sup> mapped the data exactly onto "
        "N(0, I), the first part would equal the entropy of a 2D standard normal, "
        f"log 2π + 1 = {num(NORMAL_ENTROPY_2D)}; as the total cannot go below the data's "
        f"entropy ({num(study.h_std)}), the volume part can at best reach "
        f"{num(study.h_std - NORMAL_ENTROPY_2D)}: the inverse flow must stretch the thin "
        "bands to fill the Gaussian, and stretching (a positive log-det) is rewarded. "
        f"Between the first and last epoch the log p<sub>z</sub> part changed by "
        f"{num(d_pz)} and the log-det part by {num(d_det)}, so the {mover} term carried "
        "most of the change."
    )


def q2(study: Study) -> None:
    """NF Q2: three samplings with different seeds, their ring metrics and W2."""
    doc, p, nf = study.doc, study.preset, study.models["nf"]
    doc.question("nf-q2", f"NF Q2 · Three samplings of {p.n_show:,} points")
    panels, rows = [], []
    ref = study.test[: p.n_show]
    floor = study.floor(len(ref))
    for i in range(3):
        seed = 1000 * study.seed + 20 + i
        x = nf.sample(p.n_show, generator=torch.Generator().manual_seed(seed))
        q = metrics.sample_quality(x, ref)
        rows.append({"generator_seed": seed, **q})
        panels.append((x, f"seed {seed}: {pct(q['ring_precision'], 0)} in a band"))
    study.m["nf_q2"] = {
        "samplings": rows,
        "w2_noise_floor": floor.mean,
        "w2_noise_floor_std": floor.std,
        "n": p.n_show,
    }
    study.points_figure(
        "nf_q2_samples",
        panels,
        "NF Q2. Samples of the normalizing flow for three seeds of the latent noise; "
        "dashed red: the rings' centre lines, for reference.",
        names=[f"seed {r['generator_seed']}" for r in rows],
        ncols=3,
        rings=True,
        suptitle=f"NF: {p.n_show} samples with three generator seeds",
    )
    prec = [r["ring_precision"] for r in rows]
    w2 = [r["w2"] for r in rows]
    near = sum(v <= floor.mean + 2 * floor.std for v in w2)
    verdict = {
        0: "all three lie more than twice its spread above it: the samples differ from "
        "the data measurably",
        len(w2): "all three lie within twice its spread of it (or below it): W2 cannot "
        "tell these samples from the data at this size, although the share in a band can",
    }.get(
        near,
        f"{near} of the three lie within twice its spread of it (or below it), "
        f"{len(w2) - near} above: W2 barely separates these samples from the data at "
        "this size",
    )
    doc.para(
        f"Share of the {p.n_show:,} points inside a ring's band: "
        + ", ".join(pct(v) for v in prec)
        + "; mean distance of the others to the nearest band: "
        + ", ".join(num(r["ring_mean_offset"]) for r in rows)
        + " data units; W2 to as many held-out points: "
        + ", ".join(num(v) for v in w2)
        + f". W2 at this size has a noise floor of about {study.floor_text(len(ref))} "
        f"(W2 between two independent draws of {len(ref):,} points of the data itself, "
        f"mean ± sd over {len(floor.values)} pairs): even a perfect model scores about "
        "this much, so a value below a single draw's floor is noise. Here "
        f"{verdict}. The spread between seeds, {pct(max(prec) - min(prec))} in the "
        "share, is the sampling noise of these numbers at this size. A flow is a "
        "continuous bijection of the plane, so its density is positive everywhere, "
        "between and inside the rings too: it can make that density small, never zero."
    )


def q3(study: Study) -> None:
    """NF Q3: the same latents after selected couplings; leaves ``study.nf_path``."""
    doc, nf = study.doc, study.models["nf"]
    doc.question("nf-q3", "NF Q3 · The distribution after selected layers")
    path = as_numpy(nf.trajectory(study.z_show))  # (L + 1, N, 2)
    L = path.shape[0] - 1
    layers = sorted({int(round(v)) for v in np.linspace(0, L, 6)})
    prec = {k: metrics.ring_precision(path[k]).precision for k in layers}
    study.nf_path = path
    m = {
        "layers": layers,
        "ring_precision": {str(k): v for k, v in prec.items()},
        "axis_aligned_share": axis_aligned_share(path),
        "fifth_shares": fifth_shares(path) if L % 5 == 0 else None,
        "straightness": straightness(path),
        "n": path.shape[1],
    }
    study.m["nf_q3"] = m
    panels = [
        (path[k], "input z" if k == 0 else f"after coupling {k}" + (" (output)" * (k == L)))
        for k in layers
    ]
    study.points_figure(
        "nf_q3_layers",
        panels,
        f"NF Q3. The same latent points after {', '.join(map(str, layers[:2]))}, …, {L} "
        "couplings. Every state is shown "
        "in data units (passed through the model's fixed destandardization) and in the "
        "output's coordinate order, so all panels share axes.",
        ncols=3,
        suptitle=f"NF: {path.shape[1]} points through the {L} couplings",
    )
    seq = ", ".join(f"{pct(prec[k], 0)} (layer {k})" for k in layers)
    doc.para(
        f"Share of the points inside a ring's band: {seq}. Each coupling rescales and "
        "shifts one coordinate given the other (Eq. 3) and the permutation swaps their "
        "roles, so a layer moves every point parallel to one axis: "
        f"{pct(m['axis_aligned_share'])} of the {L * path.shape[1]:,} single-layer moves "
        "leave one coordinate unchanged. The layers are not ordered in time: each is a "
        "separate function, and nothing asks the intermediate clouds to resemble anything."
    )


def q4(study: Study) -> None:
    """NF Q4: ten trajectories through the layers and how the movement splits over them."""
    doc = study.doc
    doc.question("nf-q4", "NF Q4 · Trajectories of 10 points through the layers")
    path = study.nf_path[:, :10]
    L = path.shape[0] - 1
    times = np.linspace(0, 1, L + 1)
    steps = step_lengths(study.nf_path)  # (L, N)
    share = steps.sum(axis=1) / steps.sum()
    m = {
        "straightness_10": straightness(path),
        "straightness_all": study.m["nf_q3"]["straightness"],
        "layer_shares": share.tolist(),
        "largest_layer": int(share.argmax()) + 1,
        "axis_aligned_share_10": axis_aligned_share(path),
    }
    study.m["nf_q4"] = m
    study.trajectory_figure(
        "nf_q4_trajectories",
        [{"path": path, "times": times, "title": "NF: 10 samples, layer by layer"}],
        "NF Q4. Ten latent points (hollow circles) and their states after each coupling, "
        "coloured by t = k/15; crosses: the samples. Grey: held-out data.",
        time_label="t = k / 15 after k couplings",
    )
    doc.para(
        "The paths are staircases of axis-parallel jumps of very different lengths: the "
        f"layers' shares of the total movement range from {pct(share.min())} to "
        f"{pct(share.max())} (coupling {m['largest_layer']} moves the points most). The "
        "straightness of a path, its start-to-end distance over its length (1 for a "
        f"straight line), averages {num(m['straightness_10'], 2)} for these ten points and "
        f"{num(m['straightness_all'], 2)} over all {study.nf_path.shape[1]} points of Q3."
    )


def q5(study: Study) -> None:
    """NF Q5: the inverse trajectories and log-densities of the probe points; leaves
    ``study.nf_probe_z``."""
    doc, nf = study.doc, study.models["nf"]
    doc.question("nf-q5", "NF Q5 · Inverse trajectories and log p(x) of 5 points")
    path = as_numpy(nf.trajectory(study.probes, inverse=True))
    info, rows, z = _probe_densities(study)
    _q5_summary(study, info)
    study.nf_probe_z = z
    _q5_figure_and_table(study, path, rows)
    doc.para(_q5_paragraph(study.m["nf_q5"]))


def _probe_densities(
    study: Study,
) -> tuple[list[dict[str, Any]], list[tuple[str, ...]], torch.Tensor]:
    """Where each probe point lies and its log-density by both terms of Eq. 9 (and FM's):
    the records for ``metrics.json``, the table's rows and the latents (5, 2)."""
    nf, fm, p = study.models["nf"], study.models["fm"], study.preset
    x = study.probes
    with torch.no_grad():
        z, log_det = nf.inverse(x)
    log_pz = standard_normal_log_prob(z)
    lp = nf.log_prob(x)
    lp_fm = fm.log_prob(x, steps=p.nll_steps)
    rows, info = [], []
    for i, (name, xy) in enumerate(PROBE_POINTS):
        inside, ring, dist = locate(xy)
        info.append(
            {
                "name": name,
                "x": list(xy),
                "inside": inside,
                "nearest_ring": RING_NAMES[ring],
                "distance_to_centre_line": dist,
                "log_p_nf": float(lp[i]),
                "log_pz": float(log_pz[i]),
                "log_det": float(log_det[i]),
                "z_norm": float(z[i].norm()),
                "log_p_fm": float(lp_fm[i]),
            }
        )
        where = (
            f"on the {RING_NAMES[ring]} ring"
            if inside
            else f"{num(dist - RING_THICKNESS / 2, 2)} off the {RING_NAMES[ring]} band"
        )
        rows.append(
            (
                name,
                pair(xy),
                where,
                num(float(lp[i]), 2),
                num(float(log_pz[i]), 2),
                num(float(log_det[i]), 2),
                num(float(z[i].norm()), 2),
                num(float(lp_fm[i]), 2),
            )
        )
    return info, rows, z


def _q5_summary(study: Study, info: list[dict[str, Any]]) -> None:
    """How much more likely the points on the rings are than those off them, and through
    which term; ``metrics.json``'s ``nf_q5``."""
    area = study.m["data"]["band_area"]
    ins = [r for r in info if r["inside"]]
    outs = [r for r in info if not r["inside"]]
    mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    separated = min(r["log_p_nf"] for r in ins) > max(r["log_p_nf"] for r in outs)
    study.m["nf_q5"] = {
        "points": info,
        "uniform_log_density": -math.log(area),
        "mean_gap": mean(ins, "log_p_nf") - mean(outs, "log_p_nf"),
        "gap_from_log_pz": mean(ins, "log_pz") - mean(outs, "log_pz"),
        "gap_from_log_det": mean(ins, "log_det") - mean(outs, "log_det"),
        "inside_all_more_likely": separated,
        "mean_z_norm_inside": mean(ins, "z_norm"),
        "mean_z_norm_outside": mean(outs, "z_norm"),
    }


def _q5_figure_and_table(study: Study, path: np.ndarray, rows: list[tuple[str, ...]]) -> None:
    """The inverse paths (L + 1, 5, 2) of the probe points and their table."""
    study.trajectory_figure(
        "nf_q5_inverse",
        [
            {
                "path": path,
                "times": np.linspace(1, 0, path.shape[0]),
                "title": "NF: inverse process of 5 points",
                "annotate": [n for n, _ in PROBE_POINTS],
            }
        ],
        "NF Q5. φ<sup>−1</sup> applied layer by layer to A, B, C (on the rings) and D, E "
        "(off them), from the data (hollow circle, t = 1) to the latent (cross, t = 0), "
        "shown in data units.",
        time_label="t (1: data, 0: latent), k / 15",
        panel_height=3.0,
        zoom=True,
    )
    study.doc.table(
        (
            "point",
            "x (data units)",
            "where",
            "log p(x)",
            "log p<sub>z</sub>(z)",
            "log |det|",
            "|z|",
            "FM log p(x)",
        ),  # fmt: skip
        rows,
        "NF Q5. log p(x) = log p<sub>z</sub>(z) + log |det ∂φ<sup>−1</sup>/∂x| in nats, "
        "data units (z in standardized units); last column: the FM model's exact "
        f"log-density of the same point (RK4, {study.preset.nll_steps} steps), for comparison.",
    )


def _q5_paragraph(m: dict[str, Any]) -> str:
    """Why the points on the rings are more likely, from the summary ``m`` of NF Q5."""
    gap, gap_pz, gap_det = m["mean_gap"], m["gap_from_log_pz"], m["gap_from_log_det"]
    verdict = (
        "All three points on the rings are more likely than both points off them"
        if m["inside_all_more_likely"]
        else "The ordering is not clean in this run: not every point on the rings beats "
        "every point off them"
    )
    main = "the latent density" if abs(gap_pz) > abs(gap_det) else "the volume change"
    far = "farther from" if gap_pz > 0 else "closer to"
    return (
        f"{verdict}; on average the inside points have log p(x) higher by {num(gap, 2)} "
        f"nats, a density ratio of about e<sup>{num(gap, 1)}</sup>. A perfect model would "
        f"give log p = −log(area) = {num(m['uniform_log_density'], 2)} on every point of the "
        "bands and −∞ elsewhere. The reason is the objective: maximum likelihood raises the "
        "density where the training points are, and since the density integrates to 1, "
        "mass given to the bands is taken from everywhere else. In the flow this happens "
        f"through both terms of the change of variables: of the gap, {num(gap_pz, 2)} "
        f"nats come from log p<sub>z</sub> (the outside points land {far} the origin of "
        f"the latent space: mean |z| {num(m['mean_z_norm_outside'], 2)} against "
        f"{num(m['mean_z_norm_inside'], 2)}) and "
        f"{num(gap_det, 2)} from the log-det (how much φ<sup>−1</sup> stretches a "
        f"neighbourhood of the point), so {main} dominates here."
    )


STAGES = (
    ("NF Q1: validation loss", q1),
    ("NF Q2: three samplings", q2),
    ("NF Q3: points after selected layers", q3),
    ("NF Q4: trajectories through the layers", q4),
    ("NF Q5: inverse trajectories and log p(x)", q5),
)
