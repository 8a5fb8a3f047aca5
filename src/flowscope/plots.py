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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from .data import RING_CENTERS, RING_COLORS, RING_NAMES, RING_RADIUS
from .defaults import COMPARABLE_SPANS

__all__ = [
    "PAGE_WIDTH",
    "POINT_COLOR",
    "TIME_CMAP",
    "bars",
    "batch_loss",
    "class_scatter",
    "class_trajectories",
    "content_box",
    "limits",
    "loss_curves",
    "outside",
    "point_panels",
    "save",
    "trajectory_panels",
    "trajectory_zoom",
    "zoom_frame",
]

PAGE_WIDTH = 7.0  # inches: the text width of an A4 page with 1.6 cm margins
TIME_CMAP = "viridis"
POINT_COLOR = "#1f4e79"  # points that carry no class
X_LABEL, Y_LABEL = "x₁ (data units)", "x₂ (data units)"
_RC = {"font.size": 7.5, "axes.titlesize": 8, "axes.labelsize": 7.5, "legend.fontsize": 6.5}
RINGS_BOX = ((-1.125, 5.125), (-2.125, 1.125))  # the rings' bands' bounding box, data units
Frame = tuple[tuple[float, float], tuple[float, float]]  # ((x0, x1), (y0, y1)), data units


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _figure(height: float, width: float = PAGE_WIDTH) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, wspace=0.02, hspace=0.04)
    return fig


def content_box(fig: Figure, pad: float = 0.03) -> Bbox | None:
    """The figure's area grown to hold every title, label and legend, in inches.

    The layout is run twice first: constrained layout places titles and labels from the
    axes' positions of its previous pass, so with fixed-aspect axes a single pass (what
    ``savefig`` does on a new figure) can leave a title above the figure's top edge; the
    second pass settles it. What still sticks out (a label placed in offset points, say)
    would be cut off in the saved file, and what touches the edge looks cut off.

    Arguments:
        fig: a figure; its layout is run here (as drawing would, twice).
        pad: the margin an artist should keep from the figure's edge, inches.

    Returns:
        ``None`` when every artist lies at least ``pad / 3`` inside the figure, else the
        figure's area grown, on each side where an artist comes closer (or sticks out),
        to ``pad`` beyond that artist.
    """
    for _ in range(2):  # the layout engine's passes: positions as they will be saved
        fig.draw_without_rendering()
    w, h = fig.get_size_inches()
    tight = fig.get_tightbbox()
    if tight is None:
        return None
    near = pad / 3
    x0 = min(0.0, tight.x0 - pad) if tight.x0 < near else 0.0
    y0 = min(0.0, tight.y0 - pad) if tight.y0 < near else 0.0
    x1 = max(w, tight.x1 + pad) if tight.x1 > w - near else w
    y1 = max(h, tight.y1 + pad) if tight.y1 > h - near else h
    if (x0, y0, x1, y1) == (0.0, 0.0, w, h):
        return None
    return Bbox([[x0, y0], [x1, y1]])


def save(
    fig: Figure,
    path: str | Path,
    dpi: int = 150,
    *,
    write: Callable[[Path, bytes], Any] = Path.write_bytes,
) -> Path:
    """Write ``fig`` at ``path``, white background, and return the path.

    The suffix of ``path`` names the format (``.png``, ``.svg``, ``.pdf``, ...; PNG when
    there is none); ``dpi`` sets the resolution of raster formats and rasterized artists.
    Nothing is clipped: if a title, label or legend sticks out of the figure, the saved
    area grows to hold it (:func:`content_box`); otherwise it is the figure's size.

    Arguments:
        fig: the figure.
        path: where to write it; its suffix names the format.
        dpi: dots per inch of raster formats and rasterized artists.
        write: called as ``write(path, data)`` with the file's bytes. The command line
            and the report pass :func:`flowscope.runs.atomic_write`, so that a figure is
            always the old file or the new one; the plots leave files to their callers.

    Raises:
        ValueError: if matplotlib cannot write the format the suffix names.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ValueError(
            f"{path}: matplotlib cannot write {fmt!r}; use one of "
            + ", ".join(sorted(fig.canvas.get_supported_filetypes()))
        )
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=fmt, facecolor="white", bbox_inches=content_box(fig))
    write(path, buf.getvalue())
    return path


def _styled(fn):
    """Create the figure under the house font sizes (matplotlib reads them at creation)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def limits(
    arrays: Sequence[Any],
    pad: float = 0.25,
    quantile: float = 0.995,
    rings: bool = True,
    margin: float = 0.0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared axis limits (data units) holding all but the outer 1 - ``quantile`` of points.

    Arguments:
        arrays: point sets (N, 2) (or (T, N, 2) paths).
        pad: margin added on each side, in data units.
        quantile: share of the points kept per side and axis (outliers are cut off).
        rings: also include the box of the Olympic rings.
        margin: a further margin on each side, as a share of that axis' span (1 data
            unit where the points do not spread along it), for data whose axes have
            different scales, where one ``pad`` fits neither.
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
        lo = np.minimum(lo, (RINGS_BOX[0][0], RINGS_BOX[1][0]))
        hi = np.maximum(hi, (RINGS_BOX[0][1], RINGS_BOX[1][1]))
    span = hi - lo
    span = np.where(np.isfinite(span) & (span > 0), span, 1.0)  # one point: a unit's frame
    grow = pad + margin * span
    return (lo[0] - grow[0], hi[0] + grow[0]), (lo[1] - grow[1], hi[1] + grow[1])


def zoom_frame(arrays: Sequence[Any], *, reach: float = 2.5, pad: float = 0.35) -> Frame:
    """Axis limits (data units) of the region of the data, for paths that run far off it.

    The rings' box, grown to hold every point lying within ``reach`` of it (per axis),
    plus ``pad`` on each side; points farther out are left outside the frame.

    Arguments:
        arrays: point sets (N, 2) or paths (T, N, 2), data units.
        reach: how far outside the rings' box a point may lie and still widen the frame.
        pad: margin added on each side, data units.

    Raises:
        ValueError: if ``reach`` or ``pad`` is negative.
    """
    if reach < 0 or pad < 0:
        raise ValueError(f"reach={reach} and pad={pad} must be >= 0 (data units)")
    lo = np.array([RINGS_BOX[0][0], RINGS_BOX[1][0]])
    hi = np.array([RINGS_BOX[0][1], RINGS_BOX[1][1]])
    pts = np.concatenate([np.zeros((0, 2)), *(_np(a).reshape(-1, 2) for a in arrays)])
    near = pts[((pts >= lo - reach) & (pts <= hi + reach)).all(axis=1)]
    if len(near):
        lo, hi = np.minimum(lo, near.min(axis=0)), np.maximum(hi, near.max(axis=0))
    lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
    return (lo[0], hi[0]), (lo[1], hi[1])


def outside(points: Any, frame: Frame) -> np.ndarray:
    """Which points (..., 2) in data units lie outside ``frame`` (or are not finite).

    Returns:
        a boolean array of shape (...,).
    """
    pts = _np(points)
    (x0, x1), (y0, y1) = frame
    inside = (pts[..., 0] >= x0) & (pts[..., 0] <= x1) & (pts[..., 1] >= y0) & (pts[..., 1] <= y1)
    return ~inside


def _exits(path: np.ndarray, frame: Frame) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Where paths (T, N, 2) leave ``frame``: (point n, segment k, exit point, direction).

    Each segment is clipped to the frame (Liang-Barsky: the parameter interval inside the
    box is the intersection of the per-axis intervals); it leaves the frame when a part of
    it is inside and that part ends before the segment does.
    """
    lo = np.array([frame[0][0], frame[1][0]])
    hi = np.array([frame[0][1], frame[1][1]])
    p0, d = path[:-1], np.diff(path, axis=0)  # (T - 1, N, 2)
    inside = (p0 >= lo) & (p0 <= hi)  # per axis: matters where the segment is parallel
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lo - p0) / d, (hi - p0) / d
    still = d == 0
    enter = np.where(still, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb))
    leave = np.where(still, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
    t_in, t_out = np.maximum(enter.max(axis=-1), 0.0), np.minimum(leave.min(axis=-1), 1.0)
    out = []
    for k, n in zip(*np.nonzero((t_in <= t_out) & (t_out < 1.0)), strict=True):
        out.append((int(n), int(k), p0[k, n] + t_out[k, n] * d[k, n], d[k, n]))
    return sorted(out, key=lambda e: (e[0], e[1]))


RING_LINE = {"ls": (0, (4, 2.5)), "lw": 0.7, "ec": "#b2182b", "alpha": 0.75}  # dashed, dark red


def draw_rings(ax) -> None:
    """Dashed centre lines of the five rings, as a reference (not data): thin, dark red and
    half transparent, drawn above the points so that they stay visible in dense clouds."""
    for c in RING_CENTERS:
        ax.add_patch(Circle(c, RING_RADIUS, fill=False, zorder=3, **RING_LINE))


def comparable(xlim, ylim) -> bool:
    """Whether two axis ranges are close enough in scale to share one unit length."""
    a, b = xlim[1] - xlim[0], ylim[1] - ylim[0]
    return max(a, b) <= COMPARABLE_SPANS * min(a, b)


def _points_axes(
    ax,
    xlim,
    ylim,
    title: str,
    labels: tuple[bool, bool] = (True, True),
    names: Sequence[str] | None = None,
) -> None:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    if comparable(xlim, ylim):
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_title(title)
    x_name, y_name = names or (X_LABEL, Y_LABEL)
    if labels[0]:
        ax.set_xlabel(x_name)
    if labels[1]:
        ax.set_ylabel(y_name)
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
    frame: Frame | None = None,
) -> Figure:
    """A grid of point clouds with shared limits and equal aspect.

    Arguments:
        panels: (points (N, 2) in data units, title) per panel.
        ncols: panels per row.
        suptitle: title of the whole figure.
        rings: draw the rings' centre lines (dashed) as a reference.
        shared: one set of limits for all panels (else each panel fits its points).
        color, size: marker colour and size.
        panel_height: height of a row in inches (default from the limits' aspect).
        frame: the shared limits ((x0, x1), (y0, y1)), data units; default :func:`limits`
            of all the points (which leaves out the outermost 0.5% per side and axis; count
            what falls outside with :func:`outside`).
    """
    nrows, ncols = _grid(len(panels), ncols)
    if shared:
        xlim, ylim = frame or limits([p for p, _ in panels])
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
    end_size: float = 1.0,
):
    """Draw paths (T, N, 2): segments coloured by time (or by ``line_colors`` per point);
    ``end_size`` scales the start and end markers."""
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
        path[0, :, 0],
        path[0, :, 1],
        s=22 * end_size,
        facecolors="none",
        edgecolors="k",
        lw=0.7 * end_size,
        zorder=4,
    )
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=26 * end_size, marker="X", c="k", lw=0, zorder=4)
    return mappable


def _move(path: np.ndarray, *, last: bool) -> np.ndarray:
    """The first (or ``last``) non-zero step (2,) of one path (T, 2); zeros if none."""
    d = np.diff(path, axis=0)
    moved = np.flatnonzero(np.hypot(d[:, 0], d[:, 1]) > 0)
    return d[moved[-1] if last else moved[0]] if len(moved) else np.zeros(2)


def _away(direction: np.ndarray, dist: float = 7.0) -> tuple[float, float]:
    """An offset of ``dist`` points along ``direction`` (data units: with equal aspect,
    the same direction on the page); up and to the right when it is zero."""
    length = float(np.hypot(*direction))
    u = direction / length if length > 0 else np.array([0.6, 0.8])
    return float(dist * u[0]), float(dist * u[1])


def _label(
    ax,
    text: str,
    xy: np.ndarray,
    offset: tuple[float, float],
    *,
    zorder: float = 6,
    outward: bool = False,
    **kwargs,
) -> None:
    """Write ``text`` centred ``offset`` points from the data point ``xy``; ``outward``:
    with its near side there instead (left-aligned when the offset points right, and so
    on), so that a long label does not run back over the point."""
    ha, va = "center", "center"
    if outward:
        u = np.asarray(offset, dtype=float) / max(float(np.hypot(*offset)), 1e-12)
        ha = "left" if u[0] > 0.38 else "right" if u[0] < -0.38 else "center"
        va = "bottom" if u[1] > 0.38 else "top" if u[1] < -0.38 else "center"
    ax.annotate(
        text,
        tuple(xy),
        xytext=offset,
        textcoords="offset points",
        ha=ha,
        va=va,
        fontsize=6.5,
        zorder=zorder,
        **kwargs,
    )


def _trajectory_axes(
    ax,
    spec: Mapping[str, Any],
    frame: Frame,
    *,
    norm: Normalize,
    background: np.ndarray | None,
    labels: tuple[bool, bool],
    small: bool = False,
):
    """One panel of :func:`trajectory_panels` (``small``: thin paths, no dots, no labels).

    Returns the time colour mapping of the paths (``None`` if they have none).
    """
    path, times = _np(spec["path"]), _np(spec["times"])
    if background is not None:
        ax.scatter(
            background[:, 0],
            background[:, 1],
            s=0.6 if small else 1.0,
            c="0.82",
            lw=0,
            zorder=1,
            rasterized=True,
        )
    mappable = _draw_paths(
        ax,
        path,
        times,
        norm=norm,
        markers=spec.get("markers", True) and not small,
        lw=0.8 if small else 1.1,
        end_size=0.5 if small else 1.0,
    )
    names = [] if small else [str(t) for t in spec.get("annotate") or ()]
    for n, text in enumerate(names):  # on the side the path does not leave by
        _label(ax, text, path[0, n], _away(-_move(path[:, n], last=False)))
    for pts, label, marker, color in spec.get("overlay") or ():
        pts = _np(pts).reshape(-1, 2)
        if len(pts) == len(names) == path.shape[1]:  # one overlay point per path: name it
            for n, text in enumerate(names):
                _label(ax, text, pts[n], _away(np.array([1.0, -1.0]), 8.0), color=color)
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=18 if small else 40,
            marker=marker,
            c=color,
            ec="k",
            lw=0.4,
            zorder=5,
            label=label,
        )
    _points_axes(ax, *frame, "" if small else spec.get("title", ""), labels)
    return mappable


def _colorbar(fig, mappable, axes, label: str, pad: float) -> Any:
    """The time colour bar of trajectory figures, its label as large as the axis labels
    and close to the bar."""
    cb = fig.colorbar(mappable, ax=axes, shrink=0.85, pad=pad)
    cb.set_label(label, fontsize=matplotlib.rcParams["axes.labelsize"], labelpad=3)
    cb.ax.tick_params(length=2, pad=1.5)
    return cb


def _trajectory_legend(fig, spec: Mapping[str, Any], extra: Sequence[Line2D] = ()) -> None:
    handles = [
        Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="start"),
        Line2D([], [], ls="", marker="X", color="k", label="end"),
    ]
    for _, label, marker, color in spec.get("overlay") or ():
        handles.append(Line2D([], [], ls="", marker=marker, mfc=color, mec="k", label=label))
    handles += list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)


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
        labels = (True, i % ncols == 0)
        m = _trajectory_axes(ax, panels[i], lims[i], norm=norm, background=bg, labels=labels)
        mappable = m or mappable
    _trajectory_legend(fig, panels[0])
    if mappable is not None:
        _colorbar(fig, mappable, axes.ravel().tolist(), time_label, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


@_styled
def trajectory_zoom(
    panel: Mapping[str, Any],
    *,
    frame: Frame | None = None,
    time_label: str = "t",
    background: Any = None,
    panel_height: float = 3.0,
) -> Figure:
    """Paths seen in the region of the data, and beside it, small, their whole extent.

    For paths of which a few run far from the data: drawn to their whole extent with equal
    aspect, the data would shrink to a corner. The left panel shows ``frame`` only: the
    paths are cut at its edge and a black triangle, pointing the way the path goes, marks
    each place where one leaves it (the first one labelled with the point's name from
    ``annotate``). The right panel shows everything, with ``frame`` as a dashed box and
    the names of the paths that leave the frame written at their ends. When nothing lies
    outside ``frame``, the figure is the left panel alone.

    Arguments:
        panel: a panel of :func:`trajectory_panels` (``path`` (T, N, 2) in data units,
            ``times`` (T,), ``title``, optional ``markers``, ``annotate``, ``overlay``).
        frame: the left panel's limits ((x0, x1), (y0, y1)), data units; default
            :func:`zoom_frame` of the paths and overlays.
        time_label: label of the colour bar.
        background: points (M, 2) drawn in light grey for context (e.g. data samples).
        panel_height: height of the figure without its legend, inches.

    Returns:
        the figure: the start of each path is a hollow circle, its end a black cross.

    Example:
        >>> import numpy as np
        >>> path = np.array([[[0.0, 0.0]], [[0.0, 40.0]]])  # (T, N, 2): one point, far up
        >>> fig = trajectory_zoom({"path": path, "times": np.array([1.0, 0.0])})
        >>> [round(ax.get_ylim()[1]) for ax in fig.axes[:2]]  # the frame's top, the whole
        [1, 41]
    """
    path = _np(panel["path"])
    names = list(panel.get("annotate") or ())
    marks = [_np(o[0]).reshape(-1, 2) for o in panel.get("overlay") or ()]
    frame = frame or zoom_frame([path, *marks])
    (x0, x1), (y0, y1) = limits([path, *marks], quantile=1.0, pad=0.0)
    pad = 0.35 + 0.02 * max(x1 - x0, y1 - y0)  # room for the markers at the small scale
    whole = (x0 - pad, x1 + pad), (y0 - pad, y1 + pad)
    clipped = bool(outside(np.concatenate([path.reshape(-1, 2), *marks]), frame).any())
    frames = [frame, whole] if clipped else [frame]
    spans = [(x[1] - x[0]) / (y[1] - y[0]) for x, y in frames]
    width = min(PAGE_WIDTH, sum((panel_height - 0.6) * a + 0.6 for a in spans) + 0.9)
    fig = _figure(panel_height + 0.2, width)
    axes = fig.subplots(1, len(frames), width_ratios=spans, squeeze=False)[0]
    norm = Normalize(0.0, 1.0)
    bg = None if background is None else _np(background)
    mappable = _trajectory_axes(
        axes[0], panel, frame, norm=norm, background=bg, labels=(True, True)
    )
    extra = []
    exits = _exits(path, frame)
    labelled = set()
    for n, _, xy, d in exits:
        angle = np.degrees(np.arctan2(d[1], d[0])) - 90  # equal aspect: screen = data angle
        axes[0].scatter(
            *xy, s=38, marker=(3, 0, angle), c="k", ec="w", lw=0.5, zorder=6, clip_on=False
        )
        if n < len(names) and n not in labelled:
            u = d / np.hypot(*d)
            off = -10 * u + 6 * np.array([abs(u[1]), abs(u[0])])  # back inside, then aside
            _label(axes[0], str(names[n]), xy, (off[0], off[1]), fontweight="bold")
            labelled.add(n)
    if exits:
        extra.append(Line2D([], [], ls="", marker="^", color="k", label="leaves the frame"))
    if clipped:
        ax = axes[1]
        _trajectory_axes(
            ax, panel, whole, norm=norm, background=bg, labels=(True, False), small=True
        )
        ax.set_title("whole extent")
        ax.xaxis.set_major_locator(MaxNLocator(3))
        (x0, x1), (y0, y1) = frame
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=0.7, ec="k", zorder=6)
        )
        # Name what lies outside the frame: path ends and (one per path) overlay points.
        for n in np.flatnonzero(outside(path[-1], frame)):
            if n < len(names):
                off = _away(_move(path[:, n], last=True))
                _label(ax, str(names[n]), path[-1, n], off, fontweight="bold")
        for pts, color in zip(marks, (o[3] for o in panel.get("overlay") or ()), strict=True):
            if len(pts) == len(names) == path.shape[1]:
                for n in np.flatnonzero(outside(pts, frame)):
                    _label(ax, str(names[n]), pts[n], _away(np.array([-1.0, -1.0])), color=color)
        extra.append(Line2D([], [], ls="--", lw=0.7, color="k", label="left panel's frame"))
    _trajectory_legend(fig, panel, extra)
    if mappable is not None:
        _colorbar(fig, mappable, list(axes), time_label, pad=0.01)
    return fig


@_styled
def loss_curves(epochs: Sequence[Mapping[str, float]], *, title: str) -> Figure:
    """Normalizing-flow validation loss per epoch with its two parts (the study's Eq. 9).

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
    axis_names: Sequence[str] | None = None,
) -> Figure:
    """Point clouds coloured by class, with a legend of the classes shown; equal aspect
    where the two axes' scales are comparable (:func:`comparable`), else a frame of its own
    shape with readable ticks.

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
        axis_names: the names of the two coordinates (a data file's header), for the
            axis labels; default x and y.
    """
    if colors is None:
        olympic = tuple(class_names) == RING_NAMES
        colors = RING_COLORS if olympic else [f"C{i % 10}" for i in range(len(class_names))]
    nrows, ncols = _grid(len(panels), len(panels))
    xlim, ylim = frame or limits([p for p, _, _ in panels])
    aspect = (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) if comparable(xlim, ylim) else 0.75
    height = min(2.9, (PAGE_WIDTH - 0.8) / ncols * aspect + 0.5)
    # As wide as the panels (equal aspect), their axis labels and the legend: no empty band
    # between a narrow panel and a legend at the page's edge.
    ids = {int(k) for _, labels, _ in panels if labels is not None for k in np.unique(_np(labels))}
    names = [class_names[k] for k in ids] + ["class"]  # the legend's entries and its title
    legend = 0.4 + 0.055 * max(map(len, names)) if ids else 0.0  # inches, at this font size
    width = min(PAGE_WIDTH, ncols * (height - 0.5) / aspect + 0.6 + legend)
    fig = _figure(height, width)
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
        _points_axes(ax, xlim, ylim, title, (True, i == 0), axis_names)
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
    their classes' colours. Shorter paths are drawn above longer ones, each end cross has
    a white edge, and the class name is written next to each end, beyond it in the
    direction the path arrives from, so that every path and its end can be told apart
    where paths cross or one is short.
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
    idx = np.linspace(0, len(times) - 1, min(len(times), 11)).round().astype(int)
    length = np.linalg.norm(np.diff(path, axis=0), axis=-1).sum(axis=0)  # (N,)
    halo = [withStroke(linewidth=2.0, foreground="white")]
    for rank, n in enumerate(np.argsort(-length, kind="stable")):  # longest first, at the bottom
        color, z = colors[labels[n]], 2 + 4 * rank
        ax.plot(path[:, n, 0], path[:, n, 1], c=color, lw=1.4, zorder=z)
        ax.scatter(
            path[idx, n, 0],
            path[idx, n, 1],
            s=4 + 26 * times[idx],
            c=color,
            edgecolors="0.3",
            lw=0.3,
            zorder=z + 1,
        )
        ax.scatter(*path[0, n], s=24, facecolors="none", edgecolors="k", lw=0.8, zorder=z + 2)
        ax.scatter(*path[-1, n], s=46, marker="X", c="k", ec="w", lw=0.7, zorder=z + 3)
        _label(
            ax,
            class_names[labels[n]],
            path[-1, n],
            _away(_move(path[:, n], last=True), 6.0),
            outward=True,
            color=color,
            fontweight="bold",
            path_effects=halo,
            zorder=100,  # above every path
        )
    xlim, ylim = limits([path], quantile=1.0, pad=0.35)
    _points_axes(ax, xlim, ylim, title)
    handles = [
        Line2D([], [], color=colors[k], lw=1.6, label=f"class {class_names[k]}")
        for k in sorted(set(labels.tolist()))
    ]
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="start, t = 0"),
        Line2D([], [], ls="", marker="X", color="k", mec="w", label="end, t = 1 (named)"),
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
