"""The figures of flowscope: point clouds, trajectories coloured by time, loss curves.

Every function returns a :class:`matplotlib.figure.Figure` built with matplotlib's object
API on the Agg canvas (no ``pyplot`` state, no display needed); :func:`save` writes it as
PNG. Point coordinates are in data units, arrays may be numpy arrays or tensors. Point
clouds use equal aspect; colour always means something and has a legend or a colour bar.

Example:
    >>> import numpy as np
    >>> fig = point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from matplotlib.ticker import MaxNLocator

from .data import RING_CENTERS, RING_COLORS, RING_NAMES, RING_RADIUS
from .runs import atomic_write

__all__ = [
    "PAGE_WIDTH",
    "POINT_COLOR",
    "TIME_CMAP",
    "bars",
    "batch_loss",
    "class_scatter",
    "class_trajectories",
    "loss_curves",
    "point_panels",
    "save",
    "trajectory_panels",
]

PAGE_WIDTH = 7.0  # inches: the text width of an A4 page with 1.6 cm margins
TIME_CMAP = "viridis"
POINT_COLOR = "#1f4e79"  # points that carry no class
X_LABEL, Y_LABEL = "x₁ (data units)", "x₂ (data units)"
_RC = {"font.size": 7.5, "axes.titlesize": 8, "axes.labelsize": 7.5, "legend.fontsize": 6.5}


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _figure(height: float, width: float = PAGE_WIDTH) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, wspace=0.02, hspace=0.04)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write ``fig`` at ``path`` atomically, white background, and return the path.

    The suffix of ``path`` names the format (``.png``, ``.svg``, ``.pdf``, ...; PNG when
    there is none); ``dpi`` sets the resolution of raster formats and rasterized artists.

    Raises:
        ValueError: if matplotlib cannot write the format the suffix names.
    """
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=path.suffix.lower().lstrip(".") or "png", facecolor="white")
    atomic_write(path, buf.getvalue())
    return path


def _styled(fn):
    """Create the figure under the house font sizes (matplotlib reads them at creation)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def limits(
    arrays: Sequence[Any], pad: float = 0.25, quantile: float = 0.995, rings: bool = True
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared axis limits (data units) holding all but the outer 1 - ``quantile`` of points.

    Arguments:
        arrays: point sets (N, 2) (or (T, N, 2) paths).
        pad: margin added on each side, in data units.
        quantile: share of the points kept per side and axis (outliers are cut off).
        rings: also include the box of the Olympic rings.
    """
    pts = [_np(a).reshape(-1, 2) for a in arrays]
    pts = [p[np.isfinite(p).all(axis=1)] for p in pts]
    pts = np.concatenate(pts) if pts else np.zeros((0, 2))
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    if len(pts):
        lo = np.quantile(pts, 1 - quantile, axis=0)
        hi = np.quantile(pts, quantile, axis=0)
    if rings:
        lo = np.minimum(lo, (-1.125, -2.125))
        hi = np.maximum(hi, (5.125, 1.125))
    return (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad)


def draw_rings(ax, color: str = "0.55", lw: float = 0.5) -> None:
    """Dotted centre lines of the five rings, as a reference (not data)."""
    for c in RING_CENTERS:
        ax.add_patch(Circle(c, RING_RADIUS, fill=False, ls=":", lw=lw, ec=color, zorder=0.5))


def _points_axes(ax, xlim, ylim, title: str, labels: tuple[bool, bool] = (True, True)) -> None:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(title)
    if labels[0]:
        ax.set_xlabel(X_LABEL)
    if labels[1]:
        ax.set_ylabel(Y_LABEL)
    ax.tick_params(length=2, pad=1.5)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return (n + ncols - 1) // ncols, ncols


@_styled
def point_panels(
    panels: Sequence[tuple[Any, str]],
    *,
    ncols: int = 3,
    suptitle: str | None = None,
    rings: bool = False,
    shared: bool = True,
    color: str = POINT_COLOR,
    size: float = 2.0,
    panel_height: float | None = None,
) -> Figure:
    """A grid of point clouds with shared limits and equal aspect.

    Arguments:
        panels: (points (N, 2) in data units, title) per panel.
        ncols: panels per row.
        suptitle: title of the whole figure.
        rings: draw the rings' dotted centre lines as a reference.
        shared: one set of limits for all panels (else each panel fits its points).
        color, size: marker colour and size.
        panel_height: height of a row in inches (default from the limits' aspect).
    """
    nrows, ncols = _grid(len(panels), ncols)
    if shared:
        xlim, ylim = limits([p for p, _ in panels])
        aspect = (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])
    else:
        aspect = 0.65
    row = panel_height or min(3.2, PAGE_WIDTH / ncols * aspect + 0.45)
    fig = _figure(row * nrows + (0.25 if suptitle else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        pts, title = panels[i]
        pts = _np(pts)
        if not shared:
            xlim, ylim = limits([pts], rings=False)
        if rings:
            draw_rings(ax)
        ax.scatter(pts[:, 0], pts[:, 1], s=size, c=color, lw=0, alpha=0.8, rasterized=True)
        _points_axes(ax, xlim, ylim, title, (i // ncols == nrows - 1, i % ncols == 0))
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


def _draw_paths(
    ax,
    path: np.ndarray,
    times: np.ndarray,
    *,
    norm: Normalize,
    cmap: str = TIME_CMAP,
    markers: bool = True,
    lw: float = 1.1,
    line_colors: Sequence[str] | None = None,
):
    """Draw paths (T, N, 2): segments coloured by time (or by ``line_colors`` per point)."""
    t_mid = 0.5 * (times[1:] + times[:-1])
    mappable = None
    for n in range(path.shape[1]):
        seg = np.stack([path[:-1, n], path[1:, n]], axis=1)  # (T - 1, 2, 2)
        if line_colors is None:
            lc = LineCollection(seg, cmap=cmap, norm=norm, lw=lw, zorder=2)
            lc.set_array(t_mid)
            mappable = lc
        else:
            lc = LineCollection(seg, colors=line_colors[n], lw=lw, zorder=2)
        ax.add_collection(lc)
        if markers:
            ax.scatter(
                path[:, n, 0], path[:, n, 1], c=times, cmap=cmap, norm=norm, s=7, lw=0, zorder=3
            )
    ax.scatter(
        path[0, :, 0], path[0, :, 1], s=22, facecolors="none", edgecolors="k", lw=0.7, zorder=4
    )
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=26, marker="X", c="k", lw=0, zorder=4)
    return mappable


@_styled
def trajectory_panels(
    panels: Sequence[Mapping[str, Any]],
    *,
    time_label: str = "t",
    suptitle: str | None = None,
    background: Any = None,
    panel_height: float = 2.7,
    ncols: int | None = None,
) -> Figure:
    """Paths of points coloured by time, one panel per entry, with one time colour bar.

    Arguments:
        panels: dicts with ``path`` (T, N, 2) in data units, ``times`` (T,) in [0, 1],
            ``title``, optional ``markers`` (dots at each state; default True) and
            ``annotate`` (labels (N,) written next to the start of each path) and
            ``overlay`` (a list of (points (M, 2), legend label, marker, colour)).
        time_label: label of the colour bar.
        suptitle: title of the whole figure.
        background: points (M, 2) drawn in light grey for context (e.g. data samples).
        panel_height: height of a row in inches.
        ncols: panels per row (default: all in one row).

    Returns:
        the figure; the start of each path is a hollow circle, its end a black cross.
    """
    ncols = ncols or len(panels)
    nrows, ncols = _grid(len(panels), ncols)
    lims = [
        limits([p["path"], *(o[0] for o in p.get("overlay") or ())], quantile=1.0, pad=0.35)
        for p in panels
    ]
    width = PAGE_WIDTH
    if nrows == 1:  # as wide as the panels need at this height, plus the colour bar
        spans = [(x[1] - x[0]) / (y[1] - y[0]) for x, y in lims]
        width = min(PAGE_WIDTH, sum((panel_height - 0.6) * a + 0.55 for a in spans) + 0.9)
    fig = _figure(panel_height * nrows + 0.2 + (0.25 if suptitle else 0), width)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm = Normalize(0.0, 1.0)
    mappable = None
    bg = None if background is None else _np(background)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        spec = panels[i]
        path = _np(spec["path"])
        times = _np(spec["times"])
        overlay = spec.get("overlay") or ()
        xlim, ylim = lims[i]
        if bg is not None:
            ax.scatter(bg[:, 0], bg[:, 1], s=1.0, c="0.82", lw=0, zorder=1, rasterized=True)
        m = _draw_paths(ax, path, times, norm=norm, markers=spec.get("markers", True))
        mappable = m or mappable
        for n, text in enumerate(spec.get("annotate") or ()):
            ax.annotate(
                str(text),
                path[0, n],
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=6.5,
                zorder=5,
            )
        for pts, label, marker, color in overlay:
            pts = _np(pts).reshape(-1, 2)
            ax.scatter(pts[:, 0], pts[:, 1], s=40, marker=marker, c=color, ec="k", lw=0.4,
                       zorder=5, label=label)  # fmt: skip
        _points_axes(ax, xlim, ylim, spec.get("title", ""), (True, i % ncols == 0))
    handles = [
        Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="start"),
        Line2D([], [], ls="", marker="X", color="k", label="end"),
    ]
    for _, label, marker, color in panels[0].get("overlay") or ():
        handles.append(Line2D([], [], ls="", marker=marker, mfc=color, mec="k", label=label))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    if mappable is not None:
        cb = fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.85, pad=0.01)
        cb.set_label(time_label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


@_styled
def loss_curves(epochs: Sequence[Mapping[str, float]], *, title: str) -> Figure:
    """Normalizing-flow validation loss per epoch with its two parts (seed Eq. 9).

    Plots ``val_loss`` and the two terms as they enter it, ``-E[log p_z(z)]`` and
    ``-E[log|det|]`` (they add up to the loss), in nats per point, standardized units.

    Arguments:
        epochs: rows of :attr:`~flowscope.train.History.epochs` with ``val_loss``,
            ``val_log_pz`` and ``val_log_det``.
    """
    ep = np.array([r["epoch"] for r in epochs], dtype=float)
    loss = np.array([r["val_loss"] for r in epochs])
    pz = -np.array([r["val_log_pz"] for r in epochs])
    det = -np.array([r["val_log_det"] for r in epochs])
    fig = _figure(2.3)
    ax = fig.subplots()
    ax.plot(ep, loss, "-o", ms=3, c="k", label="validation loss (Eq. 9)")
    ax.plot(ep, pz, "-s", ms=3, c="#0081C8", label=r"$-\mathrm{E}[\log p_z(\varphi^{-1}(x))]$ part")
    ax.plot(
        ep, det, "-^", ms=3, c="#EE334E",
        label=r"$-\mathrm{E}[\log |\det\, \partial\varphi^{-1}/\partial x|]$ part",
    )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0, c="0.7", lw=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per point (standardized units)")
    ax.set_title(title)
    ax.legend(loc="center right", framealpha=0.9)
    ax.grid(alpha=0.25)
    return fig


@_styled
def batch_loss(
    losses: Sequence[float], steps_per_epoch: int, *, title: str, window: int = 200
) -> Figure:
    """The training loss of every batch, with a running mean and epoch boundaries.

    Arguments:
        losses: the loss of each step (standardized units).
        steps_per_epoch: batches per epoch, for the epoch ticks on the top axis.
        window: width of the running mean, in steps.
    """
    y = np.asarray(losses, dtype=float)
    steps = np.arange(1, len(y) + 1)
    fig = _figure(2.3)
    ax = fig.subplots()
    ax.plot(steps, y, lw=0.3, c="#9ab", alpha=0.6, label="loss of each batch", rasterized=True)
    w = max(1, min(window, len(y) // 5 or 1))
    if len(y) >= w:
        mean = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], mean, c="k", lw=1.0, label=f"running mean over {w} batches")
    top = np.quantile(y, 0.995) if len(y) else 1.0
    ax.set_ylim(max(0.0, float(y.min()) - 0.1) if len(y) else 0, top * 1.05)
    ax.set_xlabel("training step (batch)")
    ax.set_ylabel("Eq. 16 loss (standardized units)")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    n_epochs = len(y) // max(1, steps_per_epoch)
    if 1 < n_epochs <= 40:
        sec = ax.secondary_xaxis(
            "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
        )
        sec.set_xlabel("epoch")
    ax.legend(loc="upper right", framealpha=0.9)
    return fig


@_styled
def class_scatter(
    panels: Sequence[tuple[Any, Any, str]],
    *,
    class_names: Sequence[str] = RING_NAMES,
    colors: Sequence[str] | None = None,
    suptitle: str | None = None,
    size: float = 2.0,
    alpha: float | None = None,
    rasterized: bool = True,
    frame: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Figure:
    """Point clouds coloured by class, with equal aspect and a legend of the classes shown.

    Arguments:
        panels: (points (N, 2) in data units, labels (N,) class ids or ``None``, title) per
            panel; points without labels are drawn in one colour.
        class_names: the name of each class id.
        colors: the colour of each class id; default: the rings' colours when the classes
            are the Olympic rings, else matplotlib's colour cycle.
        suptitle: title of the whole figure.
        size, alpha: marker size and opacity.
        rasterized: draw the points as an image inside vector formats (SVG, PDF): small
            files for large clouds; ``False`` keeps every point a vector shape.
        frame: axis limits ((x0, x1), (y0, y1)) in data units; default: :func:`limits` of
            all the points, with the rings' box.
    """
    if colors is None:
        olympic = tuple(class_names) == RING_NAMES
        colors = RING_COLORS if olympic else [f"C{i % 10}" for i in range(len(class_names))]
    nrows, ncols = _grid(len(panels), len(panels))
    xlim, ylim = frame or limits([p for p, _, _ in panels])
    aspect = (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])
    fig = _figure(min(2.9, (PAGE_WIDTH - 0.8) / ncols * aspect + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    shown: set[int] = set()
    style = dict(s=size, lw=0, alpha=alpha, rasterized=rasterized)
    for i, ax in enumerate(axes.flat):
        pts, labels, title = panels[i]
        pts = _np(pts)
        if labels is None:
            ax.scatter(pts[:, 0], pts[:, 1], c=POINT_COLOR, **style)
        else:
            labels = _np(labels).astype(int)
            for k in np.unique(labels).tolist():
                m = labels == k
                ax.scatter(pts[m, 0], pts[m, 1], c=colors[k], label=class_names[k], **style)
                shown.add(k)
        _points_axes(ax, xlim, ylim, title, (True, i == 0))
    if shown:
        handles = [
            Line2D([], [], ls="", marker="o", ms=4, color=colors[k], label=class_names[k])
            for k in sorted(shown)
        ]
        fig.legend(handles=handles, loc="outside right center", title="class")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


@_styled
def class_trajectories(
    path: Any,
    labels: Any,
    times: Any,
    *,
    title: str,
    background: Any = None,
    background_labels: Any = None,
    class_names: Sequence[str] = RING_NAMES,
    colors: Sequence[str] = RING_COLORS,
) -> Figure:
    """Paths (T, N, 2) in data units, each drawn in its class's colour (labels (N,)).

    The time of each state is shown by the size of the dots along the path (growing with
    t), since the colour carries the class; ``background`` points are drawn faintly in
    their classes' colours.
    """
    path, labels, times = _np(path), _np(labels).astype(int), _np(times)
    fig = _figure(2.9)
    ax = fig.subplots()
    if background is not None:
        bg = _np(background)
        bl = _np(background_labels).astype(int)
        for k in range(len(class_names)):
            m = bl == k
            ax.scatter(bg[m, 0], bg[m, 1], s=1, c=colors[k], alpha=0.2, lw=0, rasterized=True)
    cols = [colors[k] for k in labels]
    _draw_paths(ax, path, times, norm=Normalize(0, 1), markers=False, lw=1.4, line_colors=cols)
    idx = np.linspace(0, len(times) - 1, min(len(times), 11)).round().astype(int)
    for n in range(path.shape[1]):
        ax.scatter(
            path[idx, n, 0],
            path[idx, n, 1],
            s=4 + 26 * times[idx],
            c=cols[n],
            edgecolors="0.3",
            lw=0.3,
            zorder=3,
        )
    xlim, ylim = limits([path], quantile=1.0, pad=0.35)
    _points_axes(ax, xlim, ylim, title)
    handles = [
        Line2D([], [], color=colors[k], lw=1.6, label=f"class {class_names[k]}")
        for k in sorted(set(labels.tolist()))
    ]
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="start, t = 0"),
        Line2D([], [], ls="", marker="X", color="k", label="end, t = 1"),
        Line2D([], [], ls="", marker="o", ms=2, color="0.4", label="dots grow with t"),
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), framealpha=0.9)
    return fig


@_styled
def bars(
    values: Mapping[str, float],
    *,
    title: str,
    ylabel: str,
    log: bool = True,
    colors: Sequence[str] | None = None,
    height: float = 2.2,
) -> Figure:
    """A labelled bar chart (log scale by default), each bar annotated with its value."""
    names = list(values)
    vals = np.array([values[k] for k in names], dtype=float)
    fig = _figure(height)
    ax = fig.subplots()
    shown = np.where(vals > 0, vals, np.nan) if log else vals
    ax.bar(range(len(names)), shown, color=colors or "#0081C8", width=0.6)
    for i, v in enumerate(vals):
        ax.annotate(
            f"{v:.2g}",
            (i, shown[i] if np.isfinite(shown[i]) else 0),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=6.5,
        )
    if log:
        ax.set_yscale("log")
        good = shown[np.isfinite(shown)]
        if len(good):
            ax.set_ylim(good.min() / 10, good.max() * 30)
    ax.set_xticks(range(len(names)), names, fontsize=6.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.25)
    return fig
