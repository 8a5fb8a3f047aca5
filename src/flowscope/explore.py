"""The explorer: one offline HTML page to look inside a trained model.

:func:`explorer_data` computes, for any registered model type, what the page shows:

- the points along the flow (after each layer, or at each time of an ODE type) in both
  directions, and for an ODE type the velocity field at each time;
- the log-density on a grid over the data's region, and the density of every
  intermediate state;
- probe points on a coarse grid, each with its trajectory to the latent, log p(x) and its
  decomposition;
- for an ODE type, the samples at each step size of :data:`DTS`, and for a conditional
  model trained with label dropout at each guidance scale of :data:`GUIDANCE_SCALES`;

once per class for a conditional model. :func:`write_explorer` writes the page: plotly.js
inlined (no network request when opened), the numbers as JSON, and a small script that
redraws with ``Plotly.react`` when a slider or selector moves.

How the intermediate densities are computed depends on what the type offers, not on its
name: a type whose sampler takes ``dt`` (its :class:`~flowscope.models.ModelType` lists
``sample_options``) integrates an ODE with a ``velocity(y, t, labels)``, and the density at
time t comes from the instantaneous change of variables integrated from t down to 0;
for every other type the states of :meth:`~flowscope.base.FlowModel.trajectory` are
differentiated by central differences in float64, which gives log|det| of each step, the
density of each intermediate state at the images of a grid, and the per-layer terms of a
probe's log p(x).

Example:
    >>> from flowscope import NormalizingFlow
    >>> html = explorer_html(NormalizingFlow(couplings=2), n=50, grid=8, probes=3)
    >>> html.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .base import FlowModel, one_thread
from .defaults import COMPARABLE_SPANS, EXPLORE_FILE, EXPLORE_POINTS
from .models import model_type

__all__ = [
    "DTS",
    "GUIDANCE_SCALES",
    "TIMES",
    "explore_run",
    "explorer_data",
    "explorer_html",
    "write_explorer",
]

#: The step sizes the page compares for an ODE type (the study's FM Q4).
DTS = (0.002, 0.02, 0.05, 0.1, 0.2)
#: Guidance scales w of the guidance slider (a conditional model trained with label
#: dropout): 0 the unconditional model, 1 the conditional one; sampled with Euler steps
#: of GUIDANCE_DT.
GUIDANCE_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
GUIDANCE_DT = 0.01
#: The times an ODE type is shown at, t = 0 (noise) to 1 (data).
TIMES = tuple(k / 10 for k in range(11))
#: Steps of the trajectories an ODE type is shown with: RK4 steps of 1/100, the grid of
#: ``log_prob``'s default solve, so that a probe's trajectory ends at its latent.
TRAJECTORY_OPTIONS = {"dt": 0.01, "solver": "rk4"}
#: RK4 steps per unit of time for the densities at intermediate times.
DENSITY_STEPS = 32
_FD_STEP = 1e-5  # central differences in float64: error ~1e-10


def _is_ode(model: FlowModel) -> bool:
    return "dt" in model_type(model).sample_options and hasattr(model, "velocity")


def _r(a: Any, digits: int = 4) -> Any:
    """Rounded nested lists for the page (display data only); None where not finite."""
    a = np.asarray(a, dtype=np.float64)
    out = np.round(a, digits).astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _region(points: np.ndarray, margin: float = 0.1) -> list[list[float]]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = margin * (hi - lo) + 1e-6
    return [[float(lo[i] - pad[i]), float(hi[i] + pad[i])] for i in range(2)]


def _grid(region: list[list[float]], n: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Axes (n,), (n,) and the points (n * n, 2), row-major with y outer."""
    gx = np.linspace(*region[0], n)
    gy = np.linspace(*region[1], n)
    xx, yy = np.meshgrid(gx, gy)
    return gx, gy, torch.tensor(np.stack([xx.ravel(), yy.ravel()], axis=1))


# -- densities of intermediate states ------------------------------------------------------


def _state_log_dets(model64: FlowModel, x: torch.Tensor, labels: Any) -> torch.Tensor:
    """log|det d h_j / dx| (T, N) of every state h_j (standardized units) of the inverse
    trajectory from x (N, D), by central differences on a float64 model."""
    x = x.double()
    d = x.shape[1]
    cols = []
    for i in range(d):
        e = torch.zeros_like(x)
        e[:, i] = _FD_STEP
        plus = model64.trajectory(x + e, labels=labels, inverse=True, units="standardized")
        minus = model64.trajectory(x - e, labels=labels, inverse=True, units="standardized")
        cols.append((plus - minus) / (2 * _FD_STEP))  # (T, N, D)
    jac = torch.stack(cols, dim=-1)  # (T, N, D, D): d h_j[a] / d x[b]
    return torch.linalg.slogdet(jac)[1]


def _ode_time_log_prob(
    model: FlowModel, y: torch.Tensor, t: torch.Tensor, labels: Any, steps: int
) -> torch.Tensor:
    r"""log p_t(y) (N,) in standardized units of points y (N, D) at times t (N,), by
    integrating the state and -\int div v from each row's t down to 0 (RK4, ``steps``
    steps; time rescaled per row, s = t' / t, so that one solve serves every t)."""
    from .matching.solvers import divergence_of, integrate, time_grid

    d = y.shape[1]
    rate = t.reshape(-1, 1)

    def augmented(s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            yy = s[:, :d].detach().requires_grad_(True)
            v = model.velocity(yy, rate[:, 0] * u, labels) * rate
            div = divergence_of(v, yy)
        return torch.cat([v.detach(), div.detach()[:, None]], dim=1)

    state = torch.cat([y, y.new_zeros(len(y), 1)], dim=1)
    end = integrate(augmented, state, time_grid(1.0 / steps, 1.0, 0.0), "rk4")[-1]
    return model.base_log_prob(end[:, :d]) + end[:, d]


def _interpolate(mesh: np.ndarray, values: np.ndarray, gx: np.ndarray, gy: np.ndarray):
    """Values known at the nodes of a warped grid (the image of a regular m x m grid,
    ``mesh`` (m, m, 2), ``values`` (m, m)) on the regular grid (gx, gy): linear in each
    of the mesh's triangles, NaN outside the mesh (and in triangles with a non-finite
    corner)."""
    m = mesh.shape[0]
    i, j = np.meshgrid(np.arange(m - 1), np.arange(m - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    corners = np.concatenate(
        [
            np.stack([i * m + j, (i + 1) * m + j, i * m + j + 1], axis=1),
            np.stack([(i + 1) * m + j + 1, i * m + j + 1, (i + 1) * m + j], axis=1),
        ]
    )  # (T, 3) node indices
    nodes, vals = mesh.reshape(-1, 2), values.ravel()
    a, b, c = (nodes[corners[:, k]] for k in range(3))  # (T, 2) each
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = (np.abs(det) > 1e-300) & np.isfinite(vals[corners]).all(axis=1)
    xx, yy = np.meshgrid(gx, gy)
    q = np.stack([xx.ravel(), yy.ravel()], axis=1)
    out = np.full(len(q), np.nan)
    for s in range(0, len(q), 256):  # (256, T) at a time
        d = q[s : s + 256, None, :] - a[None]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (d[..., 0] * e2[:, 1] - d[..., 1] * e2[:, 0]) / det
            v = (e1[:, 0] * d[..., 1] - e1[:, 1] * d[..., 0]) / det
        inside = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9)
        hit = inside.any(axis=1)
        t = inside.argmax(axis=1)
        rows = np.nonzero(hit)[0]
        tt = t[rows]
        uu, vv = u[rows, tt], v[rows, tt]
        f = vals[corners[tt]]
        out[s + rows] = (1 - uu - vv) * f[:, 0] + uu * f[:, 1] + vv * f[:, 2]
    return out.reshape(len(gy), len(gx))


def _labels(c: int | None, n: int) -> torch.Tensor | None:
    return None if c is None else torch.full((n,), c, dtype=torch.long)


def _step_labels(ode: bool, count: int, inverse: bool) -> list[str]:
    """The name of each state: its time, or its step of the trajectory."""
    if ode:
        times = TIMES[::-1] if inverse else TIMES
        return [f"t = {t:.1f}" + " (noise)" * (t == 0) + " (data)" * (t == 1) for t in times]
    last = count - 1
    names = ["latent z"] + [f"after step {k} of {last}" for k in range(1, last)] + ["data x"]
    return names[::-1] if inverse else names


def _arrows(model: FlowModel, c: int | None, regions: list, n: int = 12) -> list[dict]:
    """The velocity at each time of :data:`TIMES` on an n x n grid over that time's
    region, as arrows drawn by line segments in data units (None between them)."""
    out = []
    std = model.standardization
    for t, region in zip(TIMES, regions, strict=True):
        pts = _grid(region, n)[2].to(model.dtype)
        labels = model.check_labels(_labels(c, len(pts)), len(pts))
        with torch.no_grad():
            v = model.velocity(std(pts, labels), float(t), labels)
            # dx/dt = scale * dy/dt: the destandardization is affine
            vx = std.inverse(v, labels) - std.inverse(torch.zeros_like(v), labels)
        pts, vx = pts.double().numpy(), vx.double().numpy()
        span = min(region[0][1] - region[0][0], region[1][1] - region[1][0])
        scale = 0.9 * span / n / max(float(np.quantile(np.linalg.norm(vx, axis=1), 0.9)), 1e-12)
        d = vx * scale
        tip = pts + d
        side = np.stack([-d[:, 1], d[:, 0]], axis=1) * 0.25
        back = tip - 0.35 * d
        gap = np.full_like(pts, np.nan)
        # per arrow: shaft, gap, one barb, gap, the other barb, gap
        segs = np.stack([pts, tip, gap, tip, back + side, gap, tip, back - side, gap], axis=1)
        segs = segs.reshape(-1, 2)
        out.append({"x": _r(segs[:, 0]), "y": _r(segs[:, 1]), "scale": scale})
    return out


# -- every class at once ---------------------------------------------------------------------
# The ODE solves cost per call more than per point at these sizes, so each computation
# runs once over the points of every class, with each row's class id.


class _Rows:
    """Point sets of several classes stacked into one batch, and split back."""

    def __init__(self, parts: Sequence[torch.Tensor], classes: Sequence[int | None], dtype):
        self.sizes = [len(p) for p in parts]
        self.points = torch.cat(list(parts)).to(dtype)
        self.labels = None
        if classes[0] is not None:
            self.labels = torch.cat(
                [
                    torch.full((k,), c, dtype=torch.long)
                    for k, c in zip(self.sizes, classes, strict=True)
                ]
            )

    def split(self, values: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
        return list(torch.split(values, self.sizes, dim=dim))


def _ode_densities(model, classes, regions, grid: int) -> list[list[dict]]:
    """Per class, per time of :data:`TIMES` before t = 1 (the model's density, drawn
    apart): log p_t on a grid over that time's region, in data units."""
    parts, owners, axes = [], [], []
    times = TIMES[:-1]
    for c, regs in zip(classes, regions, strict=True):
        for t, reg in zip(times, regs, strict=False):
            gx, gy, pts = _grid(reg, grid)
            parts.append(pts)
            owners.append(c)
            axes.append((t, gx, gy))
    rows = _Rows(parts, owners, model.dtype)
    std = model.standardization
    y = std(rows.points, rows.labels)
    t = torch.cat(
        [torch.full((k,), a[0], dtype=model.dtype) for k, a in zip(rows.sizes, axes, strict=True)]
    )
    lp = torch.empty(len(y), dtype=model.dtype)
    zero = t == 0
    lp[zero] = model.base_log_prob(y[zero])
    sel = ~zero
    sub = None if rows.labels is None else rows.labels[sel]
    lp[sel] = _ode_time_log_prob(model, y[sel], t[sel], sub, DENSITY_STEPS)
    lp = lp + std.log_abs_det(rows.labels)
    frames = [
        {"x": _r(gx), "y": _r(gy), "z": _r(v.double().numpy().reshape(grid, grid), 3)}
        for v, (_, gx, gy) in zip(rows.split(lp), axes, strict=True)
    ]
    return [frames[i : i + len(times)] for i in range(0, len(frames), len(times))]


def _layer_densities(model64, classes, data_regions, regions, grid: int) -> list[list[dict]]:
    """Per class, per generative state: its log-density, exact at the images of a grid
    over the data's region under the inverse trajectory (log p_j(h_j(x)) = log p(x) -
    log|det dh_j/dx|, data units), interpolated onto a grid over the state's region."""
    m = 2 * grid
    rows = _Rows([_grid(r, m)[2] for r in data_regions], classes, torch.float64)
    lp = model64.log_prob(rows.points, rows.labels)
    log_dets = _state_log_dets(model64, rows.points, rows.labels)  # (T, N)
    states = model64.trajectory(rows.points, labels=rows.labels, inverse=True)
    out = []
    for p, ld, st, regs in zip(
        rows.split(lp), rows.split(log_dets, 1), rows.split(states, 1), regions, strict=True
    ):
        frames = []
        steps = len(st)
        for k, reg in enumerate(regs):
            j = steps - 1 - k  # generative state k is inverse state j
            ax, ay, _ = _grid(reg, grid)
            values = (p - (ld[j] - ld[0])).numpy().reshape(m, m)
            z = _interpolate(st[j].numpy().reshape(m, m, 2), values, ax, ay)
            frames.append({"x": _r(ax), "y": _r(ay), "z": _r(z, 3)})
        out.append(frames)
    return out


def _check_finite_item(item: dict, dtype: torch.dtype) -> None:
    """Refuse a named point whose numbers on the page (its latent, trajectory, log p(x)
    and terms) leave the floating-point range: the page could not hold them.

    Raises:
        ValueError: naming the point and what to do.
    """
    values = [*item["x"], *item["z"], item["log_prob"], *(v for _, v in item["terms"])]
    values += [v for state in item["trajectory"] for v in state]
    if all(math.isfinite(v) for v in values):
        return
    (a, b), name = item["x"], item["name"]
    at = f"({a:g}, {b:g})"
    what = f"the point {at}" if name == at else f"the point {name!r} at {at}"
    raise ValueError(
        f"{what} is so far from the data that its numbers (its latent, trajectory or "
        f"log-density) leave {str(dtype).replace('torch.', '')}'s range, so the page cannot "
        "show them; give points nearer the data"
    )


def _probe_items(model, model64, rows: _Rows, lp, latent, ode: bool) -> list[list[dict]]:
    """Per class, the probe points with their trajectory, log p(x) and its terms."""
    std_term = model.standardization.log_abs_det(rows.labels).expand(len(rows.points))
    base = model.base_log_prob(latent.z)
    opts = {**TRAJECTORY_OPTIONS, "times": list(TIMES[::-1])} if ode else {}
    traj = model.trajectory(rows.points, labels=rows.labels, inverse=True, **opts)  # (T, N, D)
    if not ode:
        log_dets = _state_log_dets(model64, rows.points, rows.labels)  # (T, N)
        layers = (log_dets[1:] - log_dets[:-1]).numpy()
    items = []
    for i in range(len(rows.points)):
        terms = [["log p_z(z), the latent's density", float(base[i])]]
        if ode:
            terms.append(["−∫₀¹ div v(x_t, t) dt", float(latent.log_det[i])])
        else:
            terms += [[f"log|det| of step {k + 1}", float(v)] for k, v in enumerate(layers[:, i])]
        terms.append(["log|det| of the standardization", float(std_term[i])])
        items.append(
            {
                "x": rows.points[i].tolist(),
                "log_prob": float(lp[i]),
                "z": latent.z[i].tolist(),
                "trajectory": traj[:, i].tolist(),
                "terms": terms,
            }
        )
    out, k = [], 0
    for size in rows.sizes:
        out.append(items[k : k + size])
        k += size
    return out


def _per_class(
    model, model64, classes, data, *, n, grid, frame_grid, probes, seed, ode, points=()
) -> list[dict]:
    z = model.base_sample(n * len(classes), torch.Generator().manual_seed(seed))
    zs = _Rows(list(torch.split(z, n)), classes, model.dtype)
    xs = _Rows(data, classes, model.dtype)
    opts: dict[str, Any] = {**TRAJECTORY_OPTIONS, "times": list(TIMES)} if ode else {}
    gen = zs.split(model.trajectory(zs.points, labels=zs.labels, **opts).double(), 1)
    if ode:
        opts["times"] = list(TIMES[::-1])
    inv = xs.split(model.trajectory(xs.points, labels=xs.labels, inverse=True, **opts).double(), 1)
    out = []
    for x, g, i in zip(data, gen, inv, strict=True):
        region = _region(np.concatenate([x.double().numpy(), g[-1].numpy()]))
        out.append(
            {
                "region": region,
                "data": _r(x.double().numpy().T),
                "gen": [_r(s.numpy().T) for s in g],
                "inv": [_r(s.numpy().T) for s in i],
                "gen_labels": _step_labels(ode, len(g), False),
                "inv_labels": _step_labels(ode, len(i), True),
            }
        )
    regions = [
        [o["region"] if k == len(g) - 1 else _region(s.numpy()) for k, s in enumerate(g)]
        for o, g in zip(out, gen, strict=True)
    ]
    # The density grid and the probes in one likelihood solve.
    grids = [_grid(o["region"], grid) for o in out]
    # The grid's probes, then the named points (the same for every class).
    named = torch.tensor([xy for _, xy in points], dtype=torch.float64).reshape(-1, 2)
    probe_pts = [
        torch.cat([_grid(o["region"], probes)[2], named.to(g[2])])
        for o, g in zip(out, grids, strict=True)
    ]
    both = _Rows([g[2] for g in grids] + probe_pts, classes + classes, model.dtype)
    latent = model.inverse(both.points, both.labels, standardized=True)
    lp = model.base_log_prob(latent.z) + latent.log_det
    lp = lp + model.standardization.log_abs_det(both.labels)
    lp = torch.where(torch.isfinite(lp) & torch.isfinite(latent.z).all(1), lp, -math.inf)
    m = len(classes)
    lps, zsplit, dsplit = both.split(lp), both.split(latent.z), both.split(latent.log_det)
    probe_rows = _Rows(probe_pts, classes, model.dtype)
    probe_latent = type(latent)(torch.cat(zsplit[m:]), torch.cat(dsplit[m:]))
    items = _probe_items(model, model64, probe_rows, torch.cat(lps[m:]), probe_latent, ode)
    if ode:
        densities = _ode_densities(model, classes, regions, frame_grid)
    else:
        densities = _layer_densities(
            model64, classes, [o["region"] for o in out], regions, frame_grid
        )
    for k, (o, c) in enumerate(zip(out, classes, strict=True)):
        gx, gy, _ = grids[k]
        o["density"] = {
            "x": _r(gx),
            "y": _r(gy),
            "z": _r(lps[k].double().numpy().reshape(grid, grid), 3),
        }
        # an ODE type's last frame (t = 1) is the model's density itself
        o["densities"] = densities[k] + [o["density"]] * ode
        for item, (name, _) in zip(items[k][len(items[k]) - len(points) :], points, strict=True):
            item["name"] = name
            _check_finite_item(item, model.dtype)
        o["probes"] = {"options": {k2: v for k2, v in opts.items()}, "items": items[k]}
        if ode:
            o["arrows"] = _arrows(model, c, regions[k])
    if ode:
        labels = None if classes[0] is None else torch.arange(m).repeat_interleave(n)
        for d in DTS:
            s = model.sample(
                n * m, labels=labels, generator=torch.Generator().manual_seed(seed), dt=d
            )
            for o, part in zip(out, torch.split(s, n), strict=True):
                o.setdefault("dts", []).append({"dt": d, "points": _r(part.double().numpy().T)})
    if ode and getattr(model, "null_label", None) is not None:  # trained with label dropout
        for w in GUIDANCE_SCALES:
            s = model.sample(
                n * m,
                labels=labels,
                generator=torch.Generator().manual_seed(seed),
                dt=GUIDANCE_DT,
                guidance=w,
            )
            for o, part in zip(out, torch.split(s, n), strict=True):
                o.setdefault("guided", []).append({"w": w, "points": _r(part.double().numpy().T)})
    return out


def explorer_data(
    model: FlowModel,
    data: torch.Tensor | None = None,
    data_labels: torch.Tensor | None = None,
    *,
    n: int = EXPLORE_POINTS,
    grid: int = 32,
    frame_grid: int = 22,
    probes: int = 10,
    seed: int = 0,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
    points: Sequence[tuple[str, tuple[float, float]]] = (),
) -> dict[str, Any]:
    """Everything the explorer page shows, as JSON-safe values.

    Arguments:
        model: any registered model type with 2 features.
        data: (M, D) points in data units drawn in the background and pushed through the
            inverse direction (at most ``n`` per class); ``None``: the model's own samples.
        data_labels: (M,) class ids of ``data`` for a conditional model.
        n: points along the flow per class.
        grid: cells per axis of the grid of the model's density.
        frame_grid: cells per axis of the grids of the intermediate densities.
        probes: probe points per axis (``probes ** 2`` per class).
        seed: of the latents.
        title: the page's heading (default: the type's title).
        class_names: names of a conditional model's classes.
        points: named points in data units, e.g. the report's probe points
            ``[("A", (-0.71, 0.71)), ...]``, offered in a list beside the click (each
            exact, for every class).

    Returns:
        a dict with the model's description and ``per_class``, one entry per class (one
        for an unconditional model).

    Raises:
        ValueError: for a model with features other than 2, or data of the wrong shape.
    """
    if model.features != 2:
        raise ValueError(f"the explorer draws 2D models; this one has {model.features} features")
    entry = model_type(model)
    ode = _is_ode(model)
    model = copy.deepcopy(model).cpu().eval()
    model64 = copy.deepcopy(model).double()
    conditional = model.num_classes is not None
    classes: list[int | None] = list(range(model.num_classes)) if conditional else [None]
    parts = []
    for c in classes:
        x = None
        if data is not None:
            x = model.check_points(data, "data")
            if c is not None and data_labels is not None:
                x = x[torch.as_tensor(data_labels) == c]
            x = x[:n] if len(x) else None
        if x is None:
            gen = torch.Generator().manual_seed(seed + 1)
            x = model.sample(n, labels=c, generator=gen, **entry.sampling(dt=0.01))
        parts.append(x)
    with one_thread():
        sizes = {"n": n, "grid": grid, "frame_grid": frame_grid, "probes": probes}
        points = [(str(name), (float(xy[0]), float(xy[1]))) for name, xy in points]
        model.check_points([xy for _, xy in points] or torch.zeros(0, 2), "points")
        per_class = _per_class(
            model, model64, classes, parts, seed=seed, ode=ode, points=points, **sizes
        )
    names = None
    if conditional:
        names = list(class_names) if class_names else [f"class {c}" for c in classes]
    return {
        "title": title or entry.title,
        "type": entry.name,
        "comparable_spans": COMPARABLE_SPANS,  # the panels' equal aspect, as the plots
        "ode": ode,
        "classes": names,
        "density_note": (
            f"the instantaneous change of variables from each time down to t = 0 (RK4, "
            f"{DENSITY_STEPS} steps per unit time)"
            if ode
            else "its exact value at the images of a grid over the data's region (log p(x) "
            "minus log|det| of the steps so far), interpolated linearly in the triangles "
            "between them; blank outside them"
        ),
        "likelihood": model.likelihood_method(),
        "per_class": per_class,
    }


def explorer_html(model: FlowModel, data=None, data_labels=None, **options: Any) -> str:
    """The explorer page of ``model`` as one self-contained HTML string (plotly.js
    inlined); arguments as :func:`explorer_data`.

    Raises:
        MissingDependency: if plotly is not installed.
    """
    try:
        from plotly.offline import get_plotlyjs
    except ModuleNotFoundError:
        from .errors import MissingDependency

        raise MissingDependency("the explorer needs plotly: pip install plotly") from None
    payload = explorer_data(model, data, data_labels, **options)
    body = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    page = (Path(__file__).with_name("explore.html")).read_text()
    script = (Path(__file__).with_name("explore.js")).read_text()
    # "</" would end the script element early
    return (
        page.replace("{{TITLE}}", payload["title"])
        .replace("{{PLOTLY}}", get_plotlyjs().replace("</script", "<\\/script"))
        .replace("{{DATA}}", body.replace("</", "<\\/"))
        .replace("{{SCRIPT}}", script)
    )


def write_explorer(
    model: FlowModel, path: str | Path, data=None, data_labels=None, **options
) -> Path:
    """Write :func:`explorer_html` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write(path, explorer_html(model, data, data_labels, **options))
    return path


def explore_run(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write the explorer page of the run in ``run_dir`` (default ``RUN/explore.html``)
    with the run's test points as the data (for a data file whose test part has fewer
    than the page's n points, its validation and training points after them: a small
    file is drawn whole; the model's own samples if its data file is gone); ``options``
    as :func:`explorer_data`. Returns the path.

    Raises:
        RunError: if the run folder cannot be read.
    """
    from .runs import RunError, load_run, run_data

    run_dir = Path(run_dir)
    model, info = load_run(run_dir)
    try:
        data = [run_data(info, "test")]
        # A small file's test part (5% of it) is a dozen points: its validation and
        # training points follow, so that the page's first n points (per class) fill up.
        if "sha256" in info.data and len(data[0].x) < options.get("n", EXPLORE_POINTS):
            data += [run_data(info, "val"), run_data(info, "train")]
        x, names = torch.cat([d.x for d in data]), data[0].class_names
        labels = None if data[0].labels is None else torch.cat([d.labels for d in data])
    except (RunError, ValueError, OSError):
        x, labels, names = None, None, info.data.get("class_names")
    out = Path(out) if out else run_dir / EXPLORE_FILE
    options.setdefault("title", f"{model_type(model).title} ({run_dir.name})")
    return write_explorer(model, out, x, labels, class_names=names, **options)
