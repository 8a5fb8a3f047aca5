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


def test_save_writes_the_format_its_suffix_names(tmp_path):
    fig = plots.point_panels([(np.zeros((3, 2)), "three points")], ncols=1)
    assert plots.save(fig, tmp_path / "f.png").read_bytes()[:8] == PNG
    assert plots.save(fig, tmp_path / "f").read_bytes()[:8] == PNG  # no suffix: PNG
    assert b"<svg" in plots.save(fig, tmp_path / "f.svg").read_bytes()[:1000]
    assert plots.save(fig, tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="xyz"):
        plots.save(fig, tmp_path / "f.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.pdf", "f.png", "f.svg"]
