"""The Bonus of the report: making flow matching output the point (4, 5), far off the
rings, by each steering method of :mod:`flowscope.steer`, with the trajectory of the
sampled point and a verdict written from the measured errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import steer
from ..data import RING_NAMES, in_band
from . import models
from .presets import BONUS_LR, BONUS_REACHED, BONUS_TARGET, Preset
from .study import Study
from .text import num, pair, sci

__all__ = ["STAGES", "away", "error_text", "exact"]


def exact(r: steer.Steered, target: torch.Tensor) -> bool:
    """Whether the stored landing point of ``r`` equals ``target`` (1, D) exactly."""
    return torch.equal(r.x.reshape(-1), target.to(r.x.dtype).reshape(-1))


def away(r: steer.Steered, target: torch.Tensor) -> str:
    """Where ``r`` landed, for a sentence: ``7.1×10⁻³ away`` or ``exactly on the target
    (0 in float32)``."""
    if exact(r, target):
        return f"exactly on the target (0 in {str(r.x.dtype).removeprefix('torch.')})"
    return f"{sci(r.error)} away"


def error_text(r: steer.Steered, target: torch.Tensor, short: bool = False) -> str:
    """The landing error of ``r`` for the text: ``0 (exact in float32)`` when the stored
    landing point equals ``target`` bit for bit, else the number (``short``: 2 significant
    digits, for figure titles; otherwise :func:`~.text.sci`)."""
    if exact(r, target):
        return f"0 (exact in {str(r.x.dtype).removeprefix('torch.')})"
    return f"{r.error:.2g}" if short else sci(r.error)


def bonus(study: Study) -> None:
    """The Bonus: each steering method's attempt to output (4, 5), and the verdicts."""
    study.doc.section("Bonus")
    study.doc.question("bonus", "Bonus · Making flow matching output (4, 5)")
    target = torch.tensor([BONUS_TARGET])
    a = _steer(study, target)
    methods = _methods(study.preset, a)
    _record(study, a, methods, target)
    doc, p = study.doc, study.preset
    doc.para(_verdict_paragraph(methods))
    doc.para(_best_of_n_paragraph(p, a))
    doc.para(_reverse_paragraph(p, a, target))
    doc.para(_descent_paragraph(p, a, target))
    doc.para(_guidance_paragraph(a, target))
    cfg = _class_guidance(study, target)
    if cfg is not None:
        doc.para(_class_guidance_paragraph(cfg))


@dataclass(frozen=True)
class _Attempts:
    """The result of each steering method, and what the text says about their noise.

    Attributes:
        z0: (1, 2) the ordinary draw that gradient descent and guidance start from.
        pool, rev, rk4, gd, g5, g1: best of n samples, reverse then forward with Euler and
            with RK4, gradient descent on z, guidance with w = 0.5 and w = 1.
        fine: gradient descent's landing error when its z is sampled at the sampler's step.
    """

    z0: torch.Tensor
    pool: steer.Steered
    rev: steer.Steered
    rk4: steer.Steered
    gd: steer.Steered
    g5: steer.Steered
    g1: steer.Steered
    fine: float


def _steer(study: Study, target: torch.Tensor) -> _Attempts:
    """Run every steering method of :mod:`flowscope.steer` on the FM model towards
    ``target`` (1, 2), data units."""
    p, fm = study.preset, study.models["fm"]
    z0 = torch.randn(1, 2, generator=study.gen(7))
    pool = steer.nearest_sample(fm, target, n=p.bonus_pool, dt=p.bonus_dt, generator=study.gen(8))
    rev = steer.reverse_start(fm, target, dt=p.dt)
    rk4 = steer.reverse_start(fm, target, dt=0.01, solver="rk4")
    gd = steer.optimize_start(
        fm, target, z_init=z0, dt=p.bonus_dt, steps=p.bonus_steps, lr=BONUS_LR
    )
    g5 = steer.guided_sample(fm, target, weight=0.5, z=z0, dt=p.dt)
    g1 = steer.guided_sample(fm, target, weight=1.0, z=z0, dt=p.dt)
    fine = float((fm(gd.z, dt=p.dt) - target).norm())
    gd.details["error_at_sampler_dt"] = fine
    return _Attempts(z0=z0, pool=pool, rev=rev, rk4=rk4, gd=gd, g5=g5, g1=g1, fine=fine)


def _methods(p: Preset, a: _Attempts) -> list[tuple[str, str, steer.Steered]]:
    """(name in the table, short name for titles and text, result) of each method."""
    return [
        ("best of n samples", f"best of {p.bonus_pool:,} samples", a.pool),
        (f"reverse + forward, Euler Δt={p.dt:g}", "reverse, then forward (Euler)", a.rev),
        ("reverse + forward, RK4 Δt=0.01", "reverse, then forward (RK4)", a.rk4),
        (f"gradient descent on z, Euler Δt={p.bonus_dt:g}", "gradient descent on z", a.gd),
        ("velocity guidance, w = 0.5", "guidance, w = 0.5", a.g5),
        ("velocity guidance, w = 1 (trivial)", "guidance, w = 1", a.g1),
    ]


def _record(
    study: Study,
    a: _Attempts,
    methods: list[tuple[str, str, steer.Steered]],
    target: torch.Tensor,
) -> None:
    """The methods' results in ``metrics.json``, their trajectories and their table."""
    info, rows, panels = [], [], []
    for name, short, r in methods:
        reached = r.error < BONUS_REACHED
        details = {k: v for k, v in r.details.items() if k != "errors"}
        info.append(
            {
                "method": name,
                "landing": r.x[0].tolist(),
                "error": r.error,
                "exact": exact(r, target),
                "z": r.z[0].tolist(),
                "z_norm": float(r.z.norm()),
                "log_pz": r.log_pz,
                "evaluations": r.evaluations,
                "reached": reached,
                **details,
            }
        )
        rows.append(
            (
                name,
                pair(r.x[0]),
                error_text(r, target),
                num(float(r.z.norm()), 2),
                num(r.log_pz, 1),
                f"{r.evaluations:,}",
                "yes" if reached else "no",
            )
        )
        panels.append(
            {
                "path": r.path,
                "times": r.times,
                "title": f"{short}\nerror {error_text(r, target, short=True)}",
                "markers": False,
                "overlay": [(target, "target (4, 5)", "*", "#EE334E")],
            }
        )
    study.m["bonus"] = {
        "target": list(BONUS_TARGET),
        "reached_below": BONUS_REACHED,
        "methods": info,
        "gd_errors": a.gd.details["errors"],
        "gd_start_z_norm": float(a.z0.norm()),
    }
    study.trajectory_figure(
        "bonus_trajectories",
        panels,
        "Bonus. The trajectory of the sampled point for each method, from its noise "
        "(hollow circle) to the output (cross), coloured by t; red star: the target.",
        time_label="time t (0: noise, 1: output)",
        panel_height=2.1,
        ncols=3,
    )
    study.doc.table(
        (
            "method",
            "output",
            "error",
            "|z|",
            "log p<sub>z</sub>(z)",
            "velocity evaluations",
            "reached",
        ),  # fmt: skip
        rows,
        "Bonus. Output and its distance to (4, 5), data units; z in standardized units; "
        f"reached: error below {BONUS_REACHED} data units.",
    )


def _verdict_paragraph(methods: list[tuple[str, str, steer.Steered]]) -> str:
    """Which methods reached the target and which did not."""
    yes = [short for _, short, r in methods if r.error < BONUS_REACHED]
    no = [short for _, short, r in methods if not r.error < BONUS_REACHED]
    return (
        "The sampler is a deterministic map from noise to output, so there are two "
        "handles: the starting noise and the dynamics. Methods that reached the target "
        f"(error below {BONUS_REACHED}): {', '.join(yes) or 'none'}; methods that did not: "
        f"{', '.join(no) or 'none'}."
    )


def _best_of_n_paragraph(p: Preset, a: _Attempts) -> str:
    """How close the best of many ordinary samples lands."""
    return (
        f"<b>Best of n.</b> Among {p.bonus_pool:,} ordinary samples the closest lands "
        f"{num(a.pool.error, 2)} data units away"
        + (
            ": the model puts almost no mass near (4, 5), so waiting for such a sample "
            "is hopeless. "
            if a.pool.error >= BONUS_REACHED
            else ". "
        )
    )


def _reverse_paragraph(p: Preset, a: _Attempts, target: torch.Tensor) -> str:
    """The noise that Eq. 18 finds from the target, and where sampling from it lands."""
    rev = a.rev
    return (
        "<b>Reverse, then forward.</b> Integrating Eq. 18 back from the target gives a "
        f"noise of norm {num(float(rev.z.norm()), 2)} (log p<sub>z</sub> = "
        f"{num(rev.log_pz, 1)}"
        + (", far in the tail of N(0, I)" if float(rev.z.norm()) > 4 else "")
        + f"); sampling from it lands {away(rev, target)} with Euler "
        f"(Δt = {p.dt:g}) and {away(a.rk4, target)} with RK4 (Δt = 0.01). "
        + (
            "This works because the ODE is invertible, even where the field was never "
            "trained; what remains is the Euler mismatch of FM Q5. "
            if rev.error < BONUS_REACHED
            else "The Euler mismatch of FM Q5 is too large here, off the data where the "
            "field was never trained. "
        )
    )


def _descent_paragraph(p: Preset, a: _Attempts, target: torch.Tensor) -> str:
    """Where gradient descent on the noise through the unrolled sampler lands."""
    gd = a.gd
    return (
        "<b>Gradient descent on the noise.</b> Starting from an ordinary draw "
        f"(|z| = {num(float(a.z0.norm()), 2)}), Adam moved z through the unrolled Euler "
        f"sampler (Δt = {p.bonus_dt:g}) for {gd.details['steps_taken']} steps; the output "
        f"lands {away(gd, target)} at that step size and {sci(a.fine)} away when the same "
        f"z is sampled with Δt = {p.dt:g}. "
        + (
            "It needs no inverse and optimises exactly the sampler that will be used, at "
            "the cost of a backward pass through it per step; it finds the same noise as "
            f"the reversal (|z| = {num(float(gd.z.norm()), 2)}). "
            if gd.error < BONUS_REACHED
            else f"It stopped short of the target: {gd.details['steps_taken']} steps were "
            "not enough to carry z that far into the tail. "
        )
    )


def _guidance_paragraph(a: _Attempts, target: torch.Tensor) -> str:
    """Where blending the velocity with the straight path to the target ends."""
    return (
        "<b>Guidance.</b> Blending the network's velocity with the straight-path "
        "velocity towards the target, (1 − w) v + w (y* − y)/(1 − t), ends "
        f"{away(a.g5, target)} for w = 0.5"
        + (
            ": the two fields pull in different directions and the point stops between them. "
            if a.g5.error >= BONUS_REACHED
            else ". "
        )
        + f"With w = 1 it ends {away(a.g1, target)}, but the network is then "
        "ignored: the "
        "trivial answer, as the model no longer generates anything."
    )


#: Guidance scales of the classifier-free attempt, beside the guided model's own.
CFG_SCALES = (1.0, 3.0, 5.0)


def _class_guidance(study: Study, target: torch.Tensor) -> dict | None:
    """Classifier-free guidance as a way to the target: the report's guided model (the
    first whose sampler declares a guidance scale, trained by the "Beyond the study"
    stages) sampled at w = 1, its own w and :data:`CFG_SCALES`, ``n_quality`` samples
    per class from the same noise; per w the sample nearest ``target``. ``None``: the
    report has no guided model."""
    guided = [r for r in models.rows() if "guidance" in r.sampler]
    if not guided:
        return None
    r, p = guided[0], study.preset
    model = study.models[r.key]
    labels = torch.arange(p.n_quality * model.num_classes) % model.num_classes
    nearest = []
    for w in sorted({*CFG_SCALES, float(r.sampler["guidance"])}):
        sampling = {**r.sampling(p.dt), "guidance": w}  # its own sampler, at this w
        x = model.sample(len(labels), labels=labels, generator=study.gen(9), **sampling)
        d = (x - target).norm(dim=1)
        i = int(d.argmin())
        nearest.append({"w": w, "error": float(d[i]), "ring": RING_NAMES[int(labels[i])]})
    result = {
        "model": r.key,
        "label": r.label,
        "samples": len(labels),
        "nearest": nearest,
        "target_in_a_band": bool(in_band(target).any()),
    }
    study.m.setdefault("bonus", {})["class_guidance"] = result
    return result


def _class_guidance_paragraph(cfg: dict) -> str:
    """Whether steering towards a class brings a sample to the target."""
    best = min(cfg["nearest"], key=lambda n: n["error"])
    each = ", ".join(f"{num(n['error'], 2)} at w = {n['w']:g}" for n in cfg["nearest"])
    return (
        f"<b>Classifier-free guidance.</b> The {cfg['label']} of “Beyond the study” steers "
        "towards a ring, not a point: among its "
        f"{cfg['samples']:,} samples (an equal share per ring, the same noise for each w) "
        f"the one nearest (4, 5) lies {each} data units away"
        + (
            ". It does not serve here: "
            + ("" if cfg["target_in_a_band"] else "(4, 5) lies in no ring's band, and ")
            + "no guidance scale brings a sample within reach of it."
            if best["error"] >= BONUS_REACHED
            else f"; at w = {best['w']:g} a sample of the {best['ring']} ring reached it."
        )
    )


STAGES = (("Bonus: steering FM to (4, 5)", bonus),)
