"""Tests of :mod:`flowscope.plots`: the figures' axes, colours, legends and files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from flowscope import plots
from flowscope.data import RING_COLORS

PNG = b"\x89PNG\r\n\x1a\n"


def test_point_panels_have_equal_aspect_titles_and_data_labels():
    pts = np.random.default_rng(0).normal(size=(50, 2))
    fig = plots.point_panels([(pts, "a"), (pts + 1, "b")], ncols=2)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    assert all(ax.get_aspect() == 1.0 for ax in axes)
    assert "data units" in axes[0].get_xlabel() and "data units" in axes[0].get_ylabel()


def test_trajectory_panels_colour_by_time_with_a_colour_bar(tmp_path):
    path = np.cumsum(np.random.default_rng(0).normal(size=(16, 3, 2)), axis=0)
    fig = plots.trajectory_panels(
        [{"path": path, "times": np.linspace(0, 1, 16), "title": "paths"}], time_label="t"
    )
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "t" in labels  # the colour bar
    out = plots.save(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == PNG


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_class_scatter_draws_each_class_in_its_ring_colour_and_lists_those_shown():
    pts = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.array([1, 3] * 15)  # blue and red only
    fig = plots.class_scatter([(pts, labels, "two rings")])
    ax = fig.axes[0]
    assert ax.get_aspect() == 1.0 and ax.get_title() == "two rings"
    assert len(ax.collections) == 2
    for coll, k in zip(ax.collections, (1, 3), strict=True):
        assert to_hex(coll.get_facecolor()[0]) == RING_COLORS[k].lower()
        np.testing.assert_array_equal(coll.get_offsets(), pts[labels == k])
        assert coll.get_rasterized()
    assert _legend_labels(fig) == ["blue", "red"]


def test_class_scatter_other_classes_unlabelled_points_frame_and_vector_points():
    pts = np.random.default_rng(1).normal(size=(9, 2))
    fig = plots.class_scatter(
        [(pts, np.arange(9) % 3, "abc")], class_names=("a", "b", "c"), rasterized=False
    )
    colls = fig.axes[0].collections
    assert [to_hex(c.get_facecolor()[0]) for c in colls] == [to_hex(f"C{i}") for i in range(3)]
    assert not any(c.get_rasterized() for c in colls)
    assert _legend_labels(fig) == ["a", "b", "c"]

    frame = ((-3.0, 4.0), (-2.0, 2.5))
    fig = plots.class_scatter([(pts, None, "plain")], class_names=(), alpha=0.5, frame=frame)
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 9
    assert ax.collections[0].get_alpha() == 0.5
    assert (ax.get_xlim(), ax.get_ylim()) == frame
    assert fig.legends == []  # no classes, no legend


def test_class_scatter_is_as_wide_as_its_panel_and_legend(tmp_path):
    """One square panel of equal aspect: no empty band between it and its legend."""
    from PIL import Image

    pts = np.random.default_rng(2).normal(size=(200, 2))
    for labels in (np.zeros(200, dtype=int), np.arange(200) % 5, None):
        fig = plots.class_scatter([(pts, labels, "one panel")])
        assert fig.get_size_inches()[0] < plots.PAGE_WIDTH * 0.75
        with Image.open(plots.save(fig, tmp_path / "f.png", dpi=100)) as im:
            rgb = np.asarray(im.convert("L"))
        ink = np.flatnonzero((rgb < 200).any(axis=0))  # columns with something drawn
        gaps = np.diff(ink)
        assert gaps.max() < 0.5 * 100, gaps.max()  # no blank band of half an inch


def test_save_writes_the_format_its_suffix_names(tmp_path):
    fig = plots.point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    assert plots.save(fig, tmp_path / "f.png").read_bytes()[:8] == PNG
    assert plots.save(fig, tmp_path / "f").read_bytes()[:8] == PNG  # no suffix: PNG
    assert b"<svg" in plots.save(fig, tmp_path / "f.svg").read_bytes()[:1000]
    assert plots.save(fig, tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="xyz"):
        plots.save(fig, tmp_path / "f.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.pdf", "f.png", "f.svg"]


def test_save_hands_the_bytes_to_the_callers_writer(tmp_path):
    fig = plots.point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    written = []
    out = plots.save(fig, tmp_path / "f.png", write=lambda p, data: written.append((p, data)))
    assert out == tmp_path / "f.png" and [p for p, _ in written] == [out]
    assert written[0][1][:8] == PNG
    assert not out.exists()  # the writer alone puts the file in place


def test_zoom_frame_holds_the_rings_and_near_points_but_not_far_ones():
    near, far = np.array([[-3.0, 3.5]]), np.array([[2.0, 40.0]])
    (x0, x1), (y0, y1) = plots.zoom_frame([near, far], reach=2.5, pad=0.5)
    # the rings' box, grown to the near point (within 2.5 of it), plus the pad
    assert (x0, x1, y0, y1) == (-3.5, 5.625, -2.625, 4.0)
    frame = ((x0, x1), (y0, y1))
    np.testing.assert_array_equal(plots.outside(np.concatenate([near, far]), frame), [0, 1])
    assert plots.zoom_frame([far], pad=0.0) == ((-1.125, 5.125), (-2.125, 1.125))
    with pytest.raises(ValueError, match="reach=-1"):
        plots.zoom_frame([near], reach=-1)


def test_exits_are_where_segments_cross_the_frame_edge_outwards():
    frame = ((0.0, 4.0), (0.0, 2.0))
    # Point 0 goes up out of the frame, along the outside and back in; point 1 crosses the
    # frame from left to right in one segment; point 2 stays inside.
    path = np.array(
        [
            [[1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]],
            [[1.0, 5.0], [5.0, 1.0], [3.0, 1.0]],
            [[3.0, 5.0], [5.0, 3.0], [1.0, 1.0]],
            [[3.0, 1.0], [5.0, 3.0], [1.0, 1.0]],
        ]
    )  # (T, N, 2)
    exits = plots._exits(path, frame)
    assert [(n, k) for n, k, _, _ in exits] == [(0, 0), (1, 0)]
    np.testing.assert_allclose(exits[0][2], [1.0, 2.0])  # top edge, straight up
    np.testing.assert_allclose(exits[0][3], [0.0, 4.0])
    np.testing.assert_allclose(exits[1][2], [4.0, 1.0])  # enters at x=0, leaves at x=4


def test_trajectory_zoom_cuts_paths_at_the_frame_and_shows_the_whole_extent():
    times = np.linspace(1, 0, 3)
    path = np.array(
        [[[0.0, 0.0], [4.0, 0.0]], [[0.0, 0.5], [4.0, -0.5]], [[0.0, 1.0], [4.0, 30.0]]]
    )
    overlay = [(np.array([[0.5, 0.5], [6.0, 20.0]]), "other latent", "s", "#EE334E")]
    panel = {"path": path, "times": times, "annotate": ["A", "B"], "overlay": overlay}
    frame = ((-1.5, 5.5), (-2.5, 1.5))
    fig = plots.trajectory_zoom(panel, frame=frame, time_label="t")
    left, right, cbar = fig.axes
    assert (left.get_xlim(), left.get_ylim()) == frame
    assert right.get_ylim()[1] > 30 > right.get_xlim()[1] > 6  # everything, overlay too
    assert left.get_aspect() == right.get_aspect() == 1.0
    assert "data units" in left.get_xlabel() and "data units" in right.get_xlabel()
    assert cbar.get_ylabel() == "t"
    # one triangle where B leaves the frame, on its top edge, with B's name next to it
    tri = [c for c in left.collections if len(c.get_offsets()) == 1 and c.get_clip_on() is False]
    assert len(tri) == 1
    np.testing.assert_allclose(tri[0].get_offsets()[0], [4.0, 1.5], atol=1e-12)
    # the starts, the overlay points, then B's exit in bold
    assert [t.get_text() for t in left.texts] == ["A", "B", "A", "B", "B"]
    assert left.texts[-1].get_fontweight() == "bold"
    assert [t.get_text() for t in right.texts] == ["B", "B"]  # B's end, its overlay point
    assert [p.get_linestyle() for p in right.patches] == ["--"]  # the left frame
    assert _legend_labels(fig) == [
        "start", "end", "other latent", "leaves the frame", "left panel's frame"
    ]  # fmt: skip

    inside = {"path": path[:2], "times": times[:2]}  # nothing outside: one panel, no legend extras
    fig = plots.trajectory_zoom(inside, frame=frame)
    assert len(fig.axes) == 2  # the panel and its colour bar
    assert _legend_labels(fig) == ["start", "end"]


def _all_figures() -> list:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 2)) + [2.0, -0.5]
    path = np.cumsum(rng.normal(size=(101, 10, 2)) * 0.02, axis=0) + [2.0, -0.5]
    times = np.linspace(0, 1, 101)
    far = np.concatenate([path[:, :2], path[:, :2] + np.linspace(0, 30, 101)[:, None, None]], 1)
    epochs = [{"epoch": e, "val_loss": 2.0 - e / 10, "val_log_pz": -2.8, "val_log_det": 0.8}
              for e in range(1, 6)]  # fmt: skip
    return [
        plots.point_panels(
            [(pts, "a"), (pts, "b"), (pts, "c"), (pts, "d")],
            ncols=3,
            rings=True,
            suptitle="four clouds",
        ),  # fmt: skip
        plots.trajectory_panels(
            [{"path": path, "times": times, "title": "FM: 10 samples", "markers": False}],
            time_label="time t (0: noise, 1: data)",
            background=rng.uniform(-1, 5, (400, 2)) * [1, 0.5],
        ),
        plots.trajectory_panels(
            [{"path": path, "times": times, "title": f"panel {i}\nerror 0"} for i in range(5)],
            ncols=3,
            panel_height=2.1,
        ),
        plots.trajectory_zoom({"path": far, "times": times, "annotate": list("ABCD")}),
        plots.loss_curves(epochs, title="loss"),
        plots.batch_loss(rng.normal(3, 0.2, 900), 100, title="batches"),
        plots.class_scatter([(pts, np.arange(200) % 5, "classes")]),
        plots.class_trajectories(path[:, :5], np.arange(5), times, title="one per class"),
        plots.bars({"a": 1e-7, "b": 0.3}, title="bars", ylabel="error"),
    ]


def test_no_title_or_label_is_cut_off_in_a_saved_figure(tmp_path):
    """Nothing drawn is cut by the edge of a saved file: its outermost pixels are white."""
    from PIL import Image

    for i, fig in enumerate(_all_figures()):
        with Image.open(plots.save(fig, tmp_path / f"{i}.png", dpi=100)) as im:
            rgb = np.asarray(im.convert("RGB"))
        edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (perimeter, 3)
        assert edge.min() >= 250, (i, fig.axes[0].get_title())
    # A title placed above the figure: the saved file grows to hold it, by the pad.
    fig = plots.point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    fig.get_layout_engine().set(h_pad=0.0)
    fig.suptitle("far above", y=1.3)
    box = plots.content_box(fig)
    assert box is not None and box.y1 > fig.get_size_inches()[1]
    from PIL import Image

    with Image.open(plots.save(fig, tmp_path / "f.png", dpi=100)) as im:
        assert im.size == (round(box.width * 100), round(box.height * 100))
    fig = plots.point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    assert plots.content_box(fig) is None  # nothing sticks out: the figure's own size
    with Image.open(plots.save(fig, tmp_path / "g.png", dpi=100)) as im:
        assert im.size == tuple(round(v * 100) for v in fig.get_size_inches())


def test_ring_centre_lines_are_dashed_and_drawn_above_the_points():
    pts = np.random.default_rng(0).normal(size=(50, 2))
    fig = plots.point_panels([(pts, "a")], ncols=1, rings=True)
    ax = fig.axes[0]
    (dots,) = ax.collections
    assert len(ax.patches) == 5
    for ring in ax.patches:
        offset, (dash, gap) = ring.get_linestyle()
        assert ring.get_linestyle() == plots.RING_LINE["ls"] and gap > 0 and not ring.get_fill()
        assert max(ring.get_edgecolor()[:3]) < 0.75  # darker than the old light grey
        assert ring.get_zorder() > dots.get_zorder()  # visible over dense clouds
        assert 0 < ring.get_alpha() < 1  # and the points through them


def test_colour_bar_label_is_as_large_as_the_axis_labels():
    path = np.cumsum(np.random.default_rng(0).normal(size=(6, 2, 2)), axis=0)
    fig = plots.trajectory_panels([{"path": path, "times": np.linspace(0, 1, 6), "title": "p"}])
    ax, cbar = fig.axes
    assert cbar.yaxis.label.get_size() == ax.xaxis.label.get_size() == ax.yaxis.label.get_size()


def test_class_trajectories_name_each_end_and_draw_short_paths_on_top():
    times = np.linspace(0, 1, 11)
    long = np.stack([np.linspace(0, 4, 11), np.zeros(11)], axis=1)  # red, 4 long
    short = np.stack([np.linspace(1.9, 2.1, 11), np.full(11, 0.05)], axis=1)  # black, 0.2
    path = np.stack([short, long], axis=1)  # (T, 2, 2)
    fig = plots.class_trajectories(path, [0, 3], times, title="two")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["black", "red"]
    label = {t.get_text(): t for t in ax.texts}
    np.testing.assert_allclose(label["black"].xy, short[-1])  # at the end of its own path
    assert label["black"].get_ha() == "left"  # beyond the end, the way the path went
    lines = {ln.get_color(): ln for ln in ax.lines}
    assert lines[RING_COLORS[0]].get_zorder() > lines[RING_COLORS[3]].get_zorder()
    ends = [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 1
            and to_hex(c.get_edgecolor()[0]) == "#ffffff"]  # fmt: skip
    assert len(ends) == 2  # each end cross with a white edge, above its own path
    assert min(e.get_zorder() for e in ends) > lines[RING_COLORS[3]].get_zorder()


def test_point_panels_take_a_frame():
    pts = np.random.default_rng(0).normal(size=(50, 2)) * 5
    frame = ((-1.0, 2.0), (-3.0, 0.5))
    fig = plots.point_panels([(pts, "a"), (pts, "b")], ncols=2, frame=frame)
    assert all((ax.get_xlim(), ax.get_ylim()) == frame for ax in fig.axes)


def test_axes_of_very_different_scales_get_a_frame_of_their_own_shape():
    from flowscope import plots

    g = np.random.default_rng(0)
    pts = np.c_[g.uniform(1.5, 5.5, 300), g.uniform(40, 100, 300)]  # minutes vs minutes x 15
    fig = plots.class_scatter([(pts, None, "faithful")], frame=plots.limits([pts], rings=False))
    ax = fig.axes[0]
    assert ax.get_aspect() == "auto"  # not a thin strip of equal aspect
    assert 3 <= len(ax.get_xticks()) <= 7 and 3 <= len(ax.get_yticks()) <= 7
    rings = plots.class_scatter([(np.array([[0.0, 0.0], [4.0, -1.0]]), None, "rings")])
    assert rings.axes[0].get_aspect() == 1.0  # comparable scales keep one unit length
