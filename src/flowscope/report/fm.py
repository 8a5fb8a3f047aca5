"""The flow-matching section of the report: the study's section 4.3, FM Q1 to Q5.

The loss over the training batches, the distribution along the flow, trajectories
compared with the normalizing flow's, the effect of the Euler step, and reversing the
flow (latents, round-trip errors of both families).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import metrics, plots
from .measures import (
    as_numpy,
    axis_aligned_share,
    fifth_shares,
    fifth_turning,
    straightness,
    successive_cosine,
)
from .presets import DTS, FM_TIMES, PROBE_POINTS
from .study import Study
from .text import num, pair, pct, sci

__all__ = ["STAGES"]


def q1(study: Study) -> None:
    """FM Q1: the Eq. 16 loss of every training batch."""
    doc, h = study.doc, study.histories["fm"]
    doc.section("Flow matching")
    doc.question("fm-q1", "FM Q1 · Loss over the training batches")
    losses = np.asarray(h.batch_loss)
    spe = len(losses) // max(1, len(h.epochs))
    k = min(100, len(losses))
    last = losses[-spe:]
    m = {
        "steps": len(losses),
        "steps_per_epoch": spe,
        "first_100_mean": float(losses[:k].mean()),
        "last_epoch_mean": float(last.mean()),
        "last_epoch_std": float(last.std()),
        "val_loss_first": h.epochs[0]["val_loss"],
        "val_loss_last": h.epochs[-1]["val_loss"],
    }
    study.m["fm_q1"] = m
    fig = plots.batch_loss(h.batch_loss, spe, title="FM training loss per batch")
    study.figure(
        "fm_q1_batch_loss",
        fig,
        "FM Q1. The Eq. 16 loss of every training batch (standardized units) and its running mean.",
    )
    doc.para(
        f"Over {len(losses):,} batches the loss fell from {num(m['first_100_mean'])} (mean "
        f"of the first {k}) to {num(m['last_epoch_mean'])} (mean of the last epoch), and "
        f"the validation loss (same time distribution) from {num(m['val_loss_first'])} to "
        f"{num(m['val_loss_last'])}. "
        f"It stays noisy (standard deviation {num(m['last_epoch_std'])} within the last "
        "epoch) and far from 0, because every batch draws new times (from "
        f"{study.models['fm'].times.describe()}) and noise, and the "
        "target x<sub>1</sub> − x<sub>0</sub> is random given (y<sub>t</sub>, t): the best "
        "field predicts its mean, and the loss keeps its variance."
    )


def q2(study: Study) -> None:
    """FM Q2: the distribution at six times, against the interpolation it was fitted to;
    leaves ``study.fm_path`` and ``study.fm_times``."""
    doc, p, fm = study.doc, study.preset, study.models["fm"]
    doc.question("fm-q2", "FM Q2 · The distribution at t = 0, 0.2, …, 1")
    times = np.linspace(0, 1, 101)
    path = as_numpy(fm.trajectory(study.z_show, dt=p.dt, times=times.tolist()))
    study.fm_path, study.fm_times = path, times
    idx = [int(round(t * 100)) for t in FM_TIMES]
    prec = [metrics.ring_precision(path[i]).precision for i in idx]
    # The path the model was fitted to: y_t = t x1 + (1 - t) x0, drawn afresh.
    ref = study.test[: path.shape[1]]
    noise = fm.standardization.inverse(
        torch.randn(path.shape[1], 2, generator=study.gen(9), dtype=ref.dtype)
    )
    w2_path = [metrics.wasserstein2(path[i], t * ref + (1 - t) * noise) for i, t in
               zip(idx, FM_TIMES, strict=True)]  # fmt: skip
    floor = study.floor(path.shape[1])
    fm_share = fifth_shares(path)
    nf_share = study.m["nf_q3"]["fifth_shares"]
    turn = fifth_turning(path)
    m = {
        "times": list(FM_TIMES),
        "ring_precision": prec,
        "w2_to_interpolation": w2_path,
        "w2_noise_floor": floor.mean,
        "w2_noise_floor_std": floor.std,
        "fifth_shares": fm_share,
        "nf_fifth_shares": nf_share,
        "fifth_velocity_change": turn,
        "straightness": straightness(path),
        "axis_aligned_share": axis_aligned_share(path),
    }
    study.m["fm_q2"] = m
    panels = [(path[i], f"t = {t:g}") for i, t in zip(idx, FM_TIMES, strict=True)]
    study.points_figure(
        "fm_q2_times",
        panels,
        "FM Q2. The same latent points as NF Q3, integrated with Euler steps of "
        f"Δt = {p.dt:g} and shown at six times (data units).",
        ncols=3,
        suptitle=f"FM: {path.shape[1]} points along the flow",
    )
    spread_fm = max(fm_share) - min(fm_share)
    text = (
        "The intermediate clouds of flow matching have a prescribed meaning: the model was "
        "fitted to the path y<sub>t</sub> = t x<sub>1</sub> + (1 − t) x<sub>0</sub>, so "
        "at time t the cloud should look like the data shrunk by t towards its mean and "
        "blurred by Gaussian noise of 1 − t times its spread. Measured: the W2 "
        "distance between the cloud and a fresh draw of that mixture is "
        + ", ".join(f"{num(w, 2)} (t = {t:g})" for w, t in zip(w2_path, FM_TIMES, strict=True))
        + f", against a noise floor of {study.floor_text(path.shape[1])} at this size "
        "(two independent draws of the data itself, NF Q2). Only "
        f"at t = 1 do the points reach the bands ({pct(prec[-1], 0)} of them inside "
        f"one, against {pct(prec[0], 0)} of the noise at t = 0 that happens to lie in a "
        "band). "
    )
    if nf_share is not None:
        spread_nf = max(nf_share) - min(nf_share)
        even = "more evenly" if spread_fm < spread_nf else "less evenly"
        text += (
            "Measured as the share of all movement made in each fifth of the way, the FM "
            "flow moves "
            + ", ".join(pct(s, 0) for s in fm_share)
            + f" and the NF ({_per_fifth(study.models['nf'])} per fifth) "
            + ", ".join(pct(s, 0) for s in nf_share)
            + f"; flow matching spreads its transport {even} over time. "
        )
    text += (
        "The NF's intermediate clouds have no target at all: each coupling stretches and "
        "shifts the cloud along one axis, and nothing asks a layer's output to resemble "
        "the data, the noise or a mixture of the two; only the output is trained."
    )
    doc.para(text)


def _per_fifth(nf) -> str:
    """How many couplings make a fifth of the flow's way, in words."""
    k = nf.config()["couplings"] / 5
    words = {1: "one coupling", 2: "two couplings", 3: "three couplings", 4: "four couplings"}
    return words.get(k, f"{k:g} couplings") if k != int(k) or k not in words else words[int(k)]


def q3(study: Study) -> None:
    """FM Q3: ten trajectories, their straightness and turning against the NF's."""
    doc, p, fm = study.doc, study.preset, study.models["fm"]
    doc.question("fm-q3", "FM Q3 · Trajectories of 10 points")
    path = study.fm_path[:, :10]
    # Successive moves compared at the NF's resolution: one step of the flow per coupling.
    steps = study.nf_path.shape[0] - 1
    fm_coarse = as_numpy(
        fm.trajectory(study.z_show, dt=p.dt, times=np.linspace(0, 1, steps + 1).tolist())
    )
    m = {
        "straightness_10": straightness(path),
        "straightness_all": study.m["fm_q2"]["straightness"],
        "nf_straightness_all": study.m["nf_q3"]["straightness"],
        "axis_aligned_share": study.m["fm_q2"]["axis_aligned_share"],
        "successive_cosine": successive_cosine(fm_coarse),
        "nf_successive_cosine": successive_cosine(study.nf_path),
    }
    study.m["fm_q3"] = m
    study.trajectory_figure(
        "fm_q3_trajectories",
        [{"path": path, "times": study.fm_times, "title": "FM: 10 samples", "markers": False}],
        "FM Q3. The same ten latent points as NF Q4, integrated from t = 0 (hollow "
        "circles) to t = 1 (crosses), coloured by t.",
        time_label="time t (0: noise, 1: data)",
    )
    fm_more = m["successive_cosine"] > m["nf_successive_cosine"]
    straighter = "FM" if m["straightness_all"] > m["nf_straightness_all"] else "NF"
    doc.para(
        "The flow-matching paths are smooth curves"
        + (", close to straight lines" if m["straightness_all"] > 0.8 else "")
        + f"; {pct(m['axis_aligned_share'])} of their steps are parallel to an axis, "
        f"against {pct(study.m['nf_q3']['axis_aligned_share'])} of the NF's. Splitting "
        f"both flows into {steps} equal stages (the NF's couplings, FM's t = k/{steps}), the "
        "cosine "
        "between the directions of successive moves "
        f"averages {num(m['successive_cosine'], 2)} for FM and "
        f"{num(m['nf_successive_cosine'], 2)} for the NF (1: the point keeps its "
        "direction, 0: it turns at right angles), so the "
        + ("flow-matching" if fm_more else "normalizing")
        + " flow is the more consistent over time. The mean straightness, start-to-end "
        f"distance over path length, is {num(m['straightness_all'], 2)} for FM and "
        f"{num(m['nf_straightness_all'], 2)} for the NF ({straighter} straighter). "
        + (
            "FM paths are not straight lines, because only the conditional paths of "
            "training are (Eq. 15) and the learnt field averages them: at t = 0 the "
            "ideal field is E[x<sub>1</sub>] − y, which sends every point towards the "
            "data's mean, and only later does it turn each one towards a ring. "
            if m["straightness_all"] < 0.9
            else "FM paths are nearly straight, like the conditional paths of training (Eq. 15). "
        )
        + (
            "The reason for the difference is structural: FM integrates one velocity "
            "field that varies continuously in t, so successive steps can only turn "
            f"gradually; the NF's {steps} couplings are unrelated functions, each free to move the "
            "points anywhere along its own axis."
            if fm_more
            else "In this run the FM field turns the points as sharply as the NF's layers "
            "do, although its velocity varies continuously in t."
        )
    )


def q4(study: Study) -> None:
    """FM Q4: the same noise sampled with Euler steps from 0.002 to 0.2."""
    doc, p, fm = study.doc, study.preset, study.models["fm"]
    doc.question("fm-q4", "FM Q4 · Time quantization: Δt = 0.002 … 0.2")
    z = torch.randn(p.n_show, 2, generator=study.gen(4))
    ref = study.test[: p.n_show]
    floor = study.floor(len(ref))
    samples = {dt: fm(z, dt=dt) for dt in DTS}
    rows, table, panels = [], [], []
    base = samples[DTS[0]]
    for dt in DTS:
        x = samples[dt]
        q = metrics.sample_quality(x, ref)
        drift = float((x - base).norm(dim=1).mean())
        rows.append({"dt": dt, "steps": round(1 / dt), **q, "drift": drift})
        panels.append((x, f"Δt = {dt:g} ({round(1 / dt)} steps)"))
        table.append(
            (
                f"{dt:g}",
                f"{round(1 / dt)}",
                pct(q["ring_precision"]),
                num(q["ring_mean_offset"]),
                pct(q["ring_coverage"]),
                num(q["w2"]),
                num(drift),
            )
        )
    study.m["fm_q4"] = {
        "rows": rows,
        "w2_noise_floor": floor.mean,
        "w2_noise_floor_std": floor.std,
        "n": p.n_show,
    }
    study.points_figure(
        "fm_q4_dt",
        panels,
        "FM Q4. Euler sampling of the same noise with five step sizes; dashed red: the "
        "rings' centre lines.",
        names=[f"Δt = {dt:g}" for dt in DTS],
        ncols=3,
        rings=True,
        suptitle=f"FM: the same {p.n_show} noise points",
    )
    doc.table(
        ("Δt", "steps", "in a band", "offset of the rest", "coverage", "W2", "moved vs 0.002"),
        table,
        f"FM Q4. Quality per step size ({p.n_show:,} samples, W2 to as many test points; "
        f"its noise floor at this size is {study.floor_text(len(ref))}, as in NF Q2). Last "
        "column: mean distance from where the same noise lands with Δt = 0.002, data units.",
    )
    doc.para(_q4_paragraph(study, rows, len(ref)))


def _q4_paragraph(study: Study, rows: list[dict[str, float]], n_ref: int) -> str:
    """What the step size does to FM Q4's samples (``rows``: one per step of
    :data:`DTS`), against the W2 noise floor at ``n_ref`` points."""
    p, floor = study.preset, study.floor(n_ref)
    a, b = rows[0], rows[-1]
    prec = [r["ring_precision"] for r in rows]
    mono = all(x >= y for x, y in zip(prec, prec[1:], strict=False))
    trend = (
        "falls steadily"
        if mono and a["ring_precision"] > b["ring_precision"]
        else ("rises" if b["ring_precision"] > a["ring_precision"] else "changes unevenly")
    )
    turn = study.m["fm_q2"]["fifth_velocity_change"]
    k = int(np.argmax(turn))
    text = (
        f"From Δt = {DTS[0]:g} to {DTS[-1]:g} the share of samples inside a band {trend} "
        f"(from {pct(a['ring_precision'])} to {pct(b['ring_precision'])}), W2 goes from "
        f"{num(a['w2'])} to {num(b['w2'])}, and the same noise lands on average "
        f"{num(b['drift'])} data units away from its fine-step destination. Euler keeps "
        "the velocity of the start of a step for the whole step, so it is exact only "
        "where the paths are straight; where they bend, a large step cuts the corner. "
        "Along the paths of FM Q2 the velocity changes most between "
        f"t = {k / 5:g} and {(k + 1) / 5:g} ({pct(turn[k], 0)} of all its change), "
        "so that is where coarse steps lose most. "
    )
    if b["ring_precision"] < a["ring_precision"] - 0.02:
        text += (
            f"With {round(1 / DTS[-1])} steps fewer points reach the thin bands and the "
            "rings come out thicker and blurred; the points outside sit on average "
            f"{num(b['ring_mean_offset'])} from a band, against "
            f"{num(a['ring_mean_offset'])} with the finest step. "
        )
    else:
        text += (
            "In this run the coarse steps move the points without lowering the share "
            "inside the bands much; the damage shows in W2 and in the distance moved. "
        )
    near = [r["dt"] for r in rows if r["w2"] <= floor.mean + 2 * floor.std]
    if near:
        text += (
            f"W2 with Δt = {', '.join(f'{dt:g}' for dt in near)} lies within twice the "
            f"spread of the noise floor ({study.floor_text(n_ref)}) or below it: at "
            f"{p.n_show:,} points W2 cannot tell these samples from the data, and a value "
            "below the floor is noise, not a better model. "
        )
    if rows[1]["drift"] < 0.25 * b["drift"]:
        text += (
            f"Between Δt = {DTS[0]:g} and {DTS[1]:g} the points move only "
            f"{num(rows[1]['drift'])} on average: below some step size the samples stop "
            "changing, and smaller steps only cost time."
        )
    return text


#: The Euler steps of FM Q5's round trips.
_Q5_DTS = (0.1, 0.01, 0.001)


def q5(study: Study) -> None:
    """FM Q5: the latents of the probe points against the NF's, and the round-trip
    errors of both families."""
    doc, p = study.doc, study.preset
    doc.question("fm-q5", "FM Q5 · Reversing the flow")
    rev = _reverse_probes(study)
    pts = study.test[: min(1000, p.n_quality)]
    rt = _round_trips(study, pts)
    _q5_probes(study, rev, rt, len(pts))
    _q5_round_trip_figure(study, rt, len(pts))
    _q5_paragraphs(study, rev, rt, len(pts))


@dataclass(frozen=True)
class _Reversal:
    """The probe points run back through the FM flow.

    Attributes:
        path: (101, 5, 2) the states from the points (t = 1) to their noise, data units.
        times: (101,) the times of ``path``, from 1 to 0.
        z_fm, z_nf: (5, 2) the FM and NF latents of the points, standardized units.
        dist: (5,) distance between the two latents, standardized units.
        err: (5,) distance of the FM latent integrated forward again to its point.
    """

    path: np.ndarray
    times: np.ndarray
    z_fm: torch.Tensor
    z_nf: torch.Tensor
    dist: torch.Tensor
    err: torch.Tensor


def _reverse_probes(study: Study) -> _Reversal:
    """Eq. 18 from the probe points with the sampler's step, and forward again."""
    dt, fm, x = study.preset.dt, study.models["fm"], study.probes
    times = np.linspace(1, 0, 101)
    path = as_numpy(fm.trajectory(x, inverse=True, dt=dt, times=times.tolist()))
    z_fm = fm.encode(x, dt=dt)
    z_nf = study.nf_probe_z
    back = fm(z_fm, dt=dt)
    return _Reversal(
        path=path,
        times=times,
        z_fm=z_fm,
        z_nf=z_nf,
        dist=(z_fm - z_nf).norm(dim=1),
        err=(back - x).norm(dim=1),
    )


def _round_trips(study: Study, pts: torch.Tensor) -> dict[str, metrics.RoundTrip]:
    """Round-trip errors of ``pts`` through the NF (float32 and float64) and through FM
    (Euler at each step of :data:`_Q5_DTS`, RK4 at 0.01), by label."""
    nf, fm = study.models["nf"], study.models["fm"]
    nf64 = copy.deepcopy(nf).double()
    rt = {
        "NF float32": metrics.round_trip_error(nf, pts),
        "NF float64": metrics.round_trip_error(nf64, pts.double()),
    }
    for dt in _Q5_DTS:
        rt[f"FM Euler Δt={dt:g}"] = metrics.round_trip_error(fm, pts, dt=dt)
    rt["FM RK4 Δt=0.01"] = metrics.round_trip_error(fm, pts, dt=0.01, solver="rk4")
    return rt


def _q5_probes(study: Study, rev: _Reversal, rt: dict[str, metrics.RoundTrip], n_pts: int) -> None:
    """The probes' latents and round trips in ``metrics.json``, their reverse paths and
    their table."""
    p, z_nf, z_fm = study.preset, rev.z_nf, rev.z_fm
    info = []
    rows = []
    for i, (name, _) in enumerate(PROBE_POINTS):
        info.append(
            {
                "name": name,
                "z_nf": z_nf[i].tolist(),
                "z_fm": z_fm[i].tolist(),
                "latent_distance": float(rev.dist[i]),
                "round_trip_error": float(rev.err[i]),
            }
        )
        rows.append(
            (
                name,
                pair(z_nf[i]),
                pair(z_fm[i]),
                num(float(rev.dist[i]), 2),
                sci(float(rev.err[i])),
            )
        )
    study.m["fm_q5"] = {
        "points": info,
        "dt": p.dt,
        "round_trip_points": n_pts,
        "round_trip": {k: {"mean": v.mean, "max": v.max} for k, v in rt.items()},
    }
    nf_lat = as_numpy(study.models["nf"].standardization.inverse(z_nf))
    study.trajectory_figure(
        "fm_q5_reverse",
        [
            {
                "path": rev.path,
                "times": rev.times,
                "title": "FM: reverse process of the 5 points of NF Q5",
                "markers": False,
                "annotate": [n for n, _ in PROBE_POINTS],
                "overlay": [(nf_lat, "NF latent", "s", "#EE334E")],
            }
        ],
        f"FM Q5. Eq. 18 with Δt = {p.dt:g} from the points (hollow circles, t = 1) to "
        "their noise (crosses, t = 0); red squares, lettered: where the NF sends the same points "
        "(all in data units).",
        time_label="t (1: data, 0: noise)",
        panel_height=3.0,
        zoom=True,
    )
    study.doc.table(
        ("point", "NF latent z", "FM latent z", "distance", "FM round-trip error"),
        rows,
        "FM Q5. Latents in standardized units. Round trip: the FM latent integrated "
        f"forward again with Δt = {p.dt:g}; distance to the original point, data units.",
    )


def _q5_round_trip_figure(study: Study, rt: dict[str, metrics.RoundTrip], n_pts: int) -> None:
    """The bar chart of the mean round-trip errors."""
    labels = list(rt)
    fig = plots.bars(
        {k: rt[k].mean for k in labels},
        title=f"Round trip x → latent → x, mean over {n_pts:,} test points",
        ylabel="mean error (data units)",
        colors=["#0081C8" if k.startswith("NF") else "#00A651" for k in labels],
        height=1.9,
    )
    study.figure(
        "fm_q5_round_trip",
        fig,
        "FM Q5. Round-trip error of the NF (inverse then forward) and of FM (reverse then "
        "forward) for several solvers and steps.",
    )


def _q5_paragraphs(
    study: Study, rev: _Reversal, rt: dict[str, metrics.RoundTrip], n_pts: int
) -> None:
    """FM Q5's answers: same latents as the NF?, back where they started?, and the NF's
    exact inverse; adds the summary numbers to ``metrics.json``."""
    doc, p = study.doc, study.preset
    dist, err = rev.dist, rev.err
    same = float(dist.max()) < 0.05
    e = {dt: rt[f"FM Euler Δt={dt:g}"].mean for dt in _Q5_DTS}
    order = math.log10(e[0.1] / e[0.001]) / 2 if e[0.001] > 0 and e[0.1] > 0 else float("nan")
    shrinking = e[0.1] > e[0.01] > e[0.001]
    nf32, nf64e = rt["NF float32"].mean, rt["NF float64"].mean
    fm_here = rt[f"FM Euler Δt={p.dt:g}"].mean if p.dt in _Q5_DTS else float(err.mean())
    doc.para(
        ("<b>Same outputs?</b> Nearly: " if same else "<b>Same outputs?</b> No: ")
        + f"the FM latents lie {num(float(dist.min()), 2)} to {num(float(dist.max()), 2)} "
        "standardized units from the NF latents of the same points. Both models push "
        "N(0, I) onto the rings, but infinitely many invertible maps do that; maximum "
        f"likelihood through {study.models['nf'].config()['couplings']} couplings and "
        "regression onto straight-line velocities "
        "pick different ones, and nothing ties a data point to one particular latent."
    )
    doc.para(
        "<b>Forward again.</b> Integrating the FM latents forward does not return exactly "
        f"the same points: with Euler at Δt = {p.dt:g} the five points come back "
        f"{sci(float(err.min()))} to {sci(float(err.max()))} data units away "
        f"(mean {sci(fm_here)} over {n_pts:,} test points). Euler going back "
        "(Eq. 18) uses the velocity at the late end of each step, going forward (Eq. 17) "
        "the velocity at its early end; the two disagree wherever the field changes "
        "along the path, and their local errors add up instead of cancelling. "
        + (
            f"The error shrinks with the step: {sci(e[0.1])}, {sci(e[0.01])} and "
            f"{sci(e[0.001])} at Δt = 0.1, 0.01 and 0.001 (about Δt<sup>"
            f"{num(order, 1)}</sup>), and RK4 at Δt = 0.01 gives "
            f"{sci(rt['FM RK4 Δt=0.01'].mean)}."
            if shrinking
            else f"Measured at Δt = 0.1, 0.01, 0.001: {sci(e[0.1])}, {sci(e[0.01])}, "
            f"{sci(e[0.001])}; RK4 at Δt = 0.01: {sci(rt['FM RK4 Δt=0.01'].mean)}."
        )
    )
    exact = nf64e < 1e-9
    ratio = fm_here / max(nf32, 1e-300)
    study.m["fm_q5"].update(fm_error_at_dt=fm_here, fm_over_nf_float32=ratio, euler_order=order)
    doc.para(
        "<b>And the normalizing flow?</b> "
        + ("Yes, up to rounding: " if exact else "In exact arithmetic, yes: ")
        + "each coupling is inverted in closed form (Eq. 4), with no discretization, so "
        "φ(φ<sup>−1</sup>(x)) = x exactly in exact arithmetic. Measured: "
        f"{sci(nf32)} data units in float32 and {sci(nf64e)} in float64"
        + (
            ", so what remains is floating-point rounding; "
            if exact
            else " (larger than float64 rounding alone would give: the layers amplify it); "
        )
        + (
            f"in float32 that is {sci(ratio)} times smaller than the FM Euler round trip."
            if ratio > 1
            else f"in float32 that is not smaller than the FM Euler round trip ({sci(fm_here)})."
        )
    )


STAGES = (
    ("FM Q1: batch loss", q1),
    ("FM Q2: flow progression", q2),
    ("FM Q3: point trajectories", q3),
    ("FM Q4: time quantization", q4),
    ("FM Q5: reversing the flow", q5),
)
