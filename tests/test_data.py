"""Tests of flowscope.data: the Olympic rings, toy sets, file loading, standardization, splits."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from flowscope import NormalizingFlow
from flowscope.data import (
    BAND_TOLERANCE,
    DATASETS,
    OLYMPIC_BOX,
    RING_CENTERS,
    RING_NAMES,
    Standardization,
    check_int,
    column_names,
    in_band,
    load_points,
    make_dataset,
    nearest_ring,
    olympic_rings,
    ring_distance,
    split,
    split_sizes,
)

HALF = 0.125  # half the ring thickness 0.25
TOL = 1e-5  # float32 rounding of points near a band's edge


def _box_samples(m: int, seed: int) -> torch.Tensor:
    """m points uniform in the reference's box, float64."""
    x0, x1, y0, y1 = OLYMPIC_BOX
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform((x0, y0), (x1, y1), size=(m, 2)))


def _in_union(p: torch.Tensor) -> torch.Tensor:
    return ring_distance(p).min(dim=1).values <= HALF


# --- geometry -----------------------------------------------------------------------------


def test_reference_geometry():
    centers = dict(zip(RING_NAMES, RING_CENTERS, strict=True))
    assert RING_NAMES == ("black", "blue", "green", "red", "yellow")
    assert centers == {
        "black": (2.0, 0.0),
        "blue": (0.0, 0.0),
        "green": (3.0, -1.0),
        "red": (4.0, 0.0),
        "yellow": (1.0, -1.0),
    }
    assert OLYMPIC_BOX == (-1.0, 5.0, -2.0, 1.0)


def test_unconditional_points_lie_in_a_band_and_in_the_box():
    x = olympic_rings(20_000, seed=0)
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    assert (ring_distance(x.double()).min(dim=1).values <= HALF + TOL).all()
    x0, x1, y0, y1 = OLYMPIC_BOX
    assert (x[:, 0] >= x0).all() and (x[:, 0] <= x1).all()
    assert (x[:, 1] >= y0).all() and (x[:, 1] <= y1).all()


def test_unconditional_points_are_uniform_over_the_union_of_bands():
    # Uniform by area: the share of points in each unit cell of the box must match the
    # share of uniform box points that fall in the bands (overlaps counted once).
    x = olympic_rings(60_000, seed=1).double()
    ref = _box_samples(600_000, seed=2)
    ref = ref[_in_union(ref)]

    def cells(p):
        i = (p[:, 0] + 1).floor().clamp(0, 5).long()
        j = (p[:, 1] + 2).floor().clamp(0, 2).long()
        return torch.bincount(3 * i + j, minlength=18).numpy()

    table = np.stack([cells(x), cells(ref)])
    assert table.min() > 0
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_conditional_points_lie_in_their_own_ring_and_are_shuffled():
    x, y = olympic_rings(10_003, conditional=True, seed=0)
    assert x.shape == (10_003, 2) and y.shape == (10_003,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1, 2, 3, 4}
    d = ring_distance(x.double())
    own = d.gather(1, y[:, None]).squeeze(1)
    assert (own <= HALF + TOL).all()
    # Shuffled, not ring by ring: consecutive labels change most of the time (4/5 expected).
    assert (y[1:] != y[:-1]).double().mean() > 0.7


def test_conditional_radius_and_angle_are_uniform():
    # Uniform in radius (not in area) and in angle, as the reference draws them.
    x, y = olympic_rings(20_000, conditional=True, seed=3)
    rel = x.double() - torch.tensor(RING_CENTERS, dtype=torch.float64)[y]
    r = rel.norm(dim=1).numpy()
    a = torch.atan2(rel[:, 1], rel[:, 0]).numpy() % (2 * math.pi)
    assert stats.kstest(r, "uniform", args=(1 - HALF, 2 * HALF)).pvalue > 1e-3
    assert stats.kstest(a, "uniform", args=(0, 2 * math.pi)).pvalue > 1e-3


@pytest.mark.parametrize("n", [5, 7, 1003, 10_004])
def test_conditional_classes_are_balanced(n):
    _, y = olympic_rings(n, conditional=True, seed=0)
    counts = torch.bincount(y, minlength=5)
    assert len(y) == n and counts.sum() == n
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("conditional", [False, True])
def test_same_seed_same_data_other_seed_other_data(conditional):
    def draw(seed):
        out = olympic_rings(500, conditional=conditional, seed=seed)
        return out if conditional else (out,)

    a, b, c = draw(7), draw(7), draw(8)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0])


def test_statistics_match_the_reference():
    # Reference: mean ~ (2.00, -0.42), std ~ (1.59, 0.845). With n = 200k the standard
    # error of each mean is <= 0.004 and of each std <= 0.003; the tolerances allow that
    # and the rounding of the reference numbers.
    x = olympic_rings(200_000, seed=11).double()
    mean, std = x.mean(0), x.std(0)
    assert mean[0].item() == pytest.approx(2.00, abs=0.02)
    assert mean[1].item() == pytest.approx(-0.42, abs=0.015)
    assert std[0].item() == pytest.approx(1.59, abs=0.015)
    assert std[1].item() == pytest.approx(0.845, abs=0.01)


def test_entropy_of_the_olympic_distribution():
    # Uniform on a set of area A has entropy log A (nats). A = box area x acceptance rate,
    # by Monte Carlo: with 2M points the relative standard error of A is ~1e-3, so the
    # 0.01-nat tolerance is ~10 standard errors. After per-axis standardization the
    # entropy becomes log A - sum(log std), the 1.562-nat floor.
    m = 2_000_000
    box = _box_samples(m, seed=5)
    inside = _in_union(box)
    x0, x1, y0, y1 = OLYMPIC_BOX
    area = (x1 - x0) * (y1 - y0) * inside.double().mean().item()
    assert math.log(area) == pytest.approx(1.857, abs=0.01)
    std = olympic_rings(200_000, seed=12).double().std(0)
    assert math.log(area) - std.log().sum().item() == pytest.approx(1.562, abs=0.015)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n must be"):
        olympic_rings(0)
    with pytest.raises(ValueError, match="ring_thickness"):
        olympic_rings(10, ring_thickness=0.0)


# --- toy sets -----------------------------------------------------------------------------

TOYS = ["moons", "8gaussians", "checkerboard", "2spirals", "pinwheel", "circles", "swissroll"]


def test_all_toy_sets_are_registered():
    assert set(TOYS) <= set(DATASETS)


@pytest.mark.parametrize("name", TOYS)
def test_toy_sets_are_seeded_and_finite(name):
    a = make_dataset(name, 1000, seed=0)
    b = make_dataset(name, 1000, seed=0)
    c = make_dataset(name, 1000, seed=1)
    assert a.x.shape == (1000, 2) and a.labels is None
    assert torch.isfinite(a.x).all()
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, c.x)
    assert (a.x.std(0) > 0.05).all()  # not collapsed to a point


def test_make_dataset_errors():
    with pytest.raises(ValueError, match="no class labels"):
        make_dataset("moons", 10, conditional=True)
    with pytest.raises(ValueError, match="unknown data"):
        make_dataset("no-such-set", 10)


def test_make_dataset_olympic_conditional():
    d = make_dataset("olympic", 20, conditional=True, seed=0)
    assert d.labels is not None and d.class_names == RING_NAMES and len(d) == 20


# --- user files ---------------------------------------------------------------------------


def _pts(n=6):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 2))


def _write_csv(path, rows, header=None):
    lines = [] if header is None else [header]
    lines += [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", [None, "x,y"])
def test_load_csv(tmp_path, header):
    arr = _pts()
    x, labels = load_points(_write_csv(tmp_path / "p.csv", arr.tolist(), header))
    assert labels is None and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(arr).float())


def test_load_points_in_float64_keeps_the_files_digits_and_range(tmp_path):
    path = _write_csv(tmp_path / "p.csv", [[1 + 1e-12, 1e39], [0.25, -3.0]], "x,y")
    x, _ = load_points(path, torch.float64)
    assert x.dtype == torch.float64 and x[0, 0].item() == 1 + 1e-12 and x[0, 1].item() == 1e39
    with pytest.raises(ValueError, match=r"row 1 \(line 2\), column 2 is 1e\+39 \(beyond float32"):
        load_points(path)  # float32 cannot hold it: the same rule, the dtype's range
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        load_points(path, torch.float16)


def test_load_csv_with_labels(tmp_path):
    arr = _pts()
    lab = np.array([0, 1, 2, 0, 1, 4])
    rows = [[a, b, int(c)] for (a, b), c in zip(arr, lab, strict=True)]
    x, labels = load_points(_write_csv(tmp_path / "p.csv", rows, "x,y,label"))
    assert torch.allclose(x, torch.from_numpy(arr).float())
    assert labels.dtype == torch.int64 and labels.tolist() == lab.tolist()


def test_load_npy_and_npz(tmp_path):
    arr = _pts()
    lab = np.array([3, 1, 2, 0, 1, 4])
    np.save(tmp_path / "a.npy", arr)
    np.save(tmp_path / "b.npy", np.column_stack([arr, lab]))
    np.savez(tmp_path / "c.npz", arr)
    np.savez(tmp_path / "d.npz", x=arr, labels=lab)
    want = torch.from_numpy(arr).float()
    for name, has_labels in [("a.npy", False), ("b.npy", True), ("c.npz", False), ("d.npz", True)]:
        x, labels = load_points(tmp_path / name)
        assert torch.allclose(x, want), name
        if has_labels:
            assert labels.tolist() == lab.tolist(), name
        else:
            assert labels is None, name


# Each bad file: (file name, contents, words the message must contain besides the path).
BAD_CSV = [
    ("nan.csv", "x,y\n1,2\n3,nan\n", ["row 2 (line 3), column 2"]),
    ("inf.csv", "1,2\ninf,3\n", ["row 2 (line 2), column 1"]),
    ("text.csv", "1,2\n3,4\n5,abc\n", ["row 3 (line 3)", "not numeric"]),
    ("blank_line.csv", "x,y\n1,2\n\n3,abc\n", ["row 2 (line 4)", "not numeric"]),
    # A first line with a number in it is data, not a header to skip silently.
    ("half_header.csv", "1,abc\n1,2\n", ["row 1 (line 1)", "not numeric"]),
    ("one.csv", "1\n2\n3\n", ["columns", "1"]),
    ("four.csv", "1,2,3,4\n5,6,7,8\n", ["columns", "4"]),
    ("ragged.csv", "1,2\n3,4,5,6\n", ["row 2 (line 2)", "columns"]),
    ("empty.csv", "", ["no points"]),
    ("header_only.csv", "x,y\n", ["no points"]),
    ("neg_label.csv", "1,2,0\n3,4,-1\n", ["row 2 (line 2)", "label"]),
    ("frac_label.csv", "x,y,c\n1,2,0\n3,4,1\n5,6,1.5\n", ["row 3 (line 4)", "label"]),
    # The label column first (was "'long,3.6,79' is not numeric"), and trailing commas
    # (were "column 3 is a missing value").
    ("label_first.csv", "kind,a,b\nlong,3.6,79\n", ["row 1 (line 2)", "put the label column last"]),
    (
        "trailing.csv",
        "1,2,\n3,4,\n",
        ["row 1 (line 1)", "ends with a comma", "remove the trailing"],
    ),
    # np.savetxt without delimiter="," separates by spaces: the first line is data too (it
    # was taken as a header, and the error named line 2).
    ("spaces.csv", "1.5 2.0\n3.0 4.0\n", ["row 1 (line 1)", "separated by ' '"]),
    ("trailing_label.csv", "x,y,c,\n1,2,a,\n", ["row 1 (line 2)", "ends with a comma (column 4"]),
]


@pytest.mark.parametrize(("name", "text", "words"), BAD_CSV, ids=[b[0] for b in BAD_CSV])
def test_bad_csv_raises_naming_file_and_place(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_points(path)
    msg = str(err.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg


def test_bad_arrays_raise_naming_file_and_place(tmp_path):
    arr = _pts()
    cases = []
    a = arr.copy()
    a[3, 1] = np.nan
    cases.append(("nan.npy", a, ["row 4", "column 2"]))
    a = arr.copy()
    a[0, 0] = np.inf
    cases.append(("inf.npy", a, ["row 1", "column 1"]))
    cases.append(("one.npy", arr[:, :1], ["columns", "1"]))
    cases.append(("four.npy", np.column_stack([arr, arr]), ["columns", "4"]))
    cases.append(("empty.npy", np.zeros((0, 2)), ["no points"]))
    cases.append(("text.npy", np.array([["a", "b"]]), ["not numeric"]))
    cases.append(("neg.npy", np.column_stack([arr, [0, 1, 2, -3, 0, 0]]), ["row 4", "label"]))
    cases.append(("frac.npy", np.column_stack([arr, [0, 0.5, 2, 3, 0, 0]]), ["row 2", "label"]))
    for name, a, words in cases:
        path = tmp_path / name
        np.save(path, a)
        with pytest.raises(ValueError) as err:
            load_points(path)
        msg = str(err.value)
        assert str(path) in msg, (name, msg)
        for w in words:
            assert w in msg, (name, msg)


def test_bad_npz_labels_raise(tmp_path):
    path = tmp_path / "l.npz"
    np.savez(path, x=_pts(), labels=np.array([0, 1, -1, 0, 0, 0]))
    with pytest.raises(ValueError, match="row 3"):
        load_points(path)
    path = tmp_path / "s.npz"
    np.savez(path, x=_pts(), labels=np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="labels"):
        load_points(path)


def test_missing_and_unsupported_files_raise(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_points(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="nope.csv: no such file"):
        make_dataset(str(tmp_path / "nope.csv"), 10)  # a file name, not an unknown set
    for name in ("faithful.txt", str(tmp_path / "no-suffix")):  # a suffix or a folder: a file
        with pytest.raises(ValueError, match=": no such file"):
            make_dataset(name, 10)
    with pytest.raises(ValueError, match="is a folder, not a data file"):
        load_points(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"1,2\n\x80\x81\n")
    with pytest.raises(ValueError, match="bin.csv: not a text file .* .npy or .npz"):
        load_points(tmp_path / "bin.csv")
    (tmp_path / "p.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_points(tmp_path / "p.txt")


def test_make_dataset_from_labelled_file(tmp_path):
    path = _write_csv(tmp_path / "p.csv", [[0, 0, 0], [1, 1, 2], [2, 0, 1]])
    d = make_dataset(str(path), 0, conditional=True)
    assert d.labels.tolist() == [0, 2, 1] and d.class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="third column .class labels., but the model is uncond"):
        make_dataset(str(path), 0)  # more columns than an unconditional model uses
    plain = _write_csv(tmp_path / "q.csv", [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="third column"):
        make_dataset(str(plain), 0, conditional=True)


# --- standardization and splits -----------------------------------------------------------


def test_standardization_per_class_fits_each_class_and_its_log_abs_det():
    x, y = olympic_rings(5000, conditional=True, seed=0)
    x = x.double()
    s = Standardization(2, num_classes=5).double().fit(x, y)
    assert s.per_class and s.loc.shape == s.scale.shape == (5, 2)
    for k in range(5):
        assert torch.allclose(s.loc[k], x[y == k].mean(0), atol=1e-12)
        assert torch.allclose(s.scale[k], x[y == k].std(0), atol=1e-12)
    z = s(x, y)
    for k in range(5):  # every class is standardized by its own numbers
        assert torch.allclose(z[y == k].mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(z[y == k].std(0), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(s.inverse(z, y), x, atol=1e-12)
    ld = s.log_abs_det(y[:3])
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: s(v[None], y[i : i + 1])[0], x[i])
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-12)


def test_standardization_per_class_errors_say_what_to_do():
    x, y = olympic_rings(50, conditional=True, seed=0)
    s = Standardization(2, num_classes=5)
    with pytest.raises(ValueError, match="per class: pass the labels"):
        s.fit(x)
    with pytest.raises(ValueError, match=r"class 4 has 1 training point and .* at least 2"):
        s.fit(x[:9], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4]))
    with pytest.raises(ValueError, match=r"class 3 has no training points"):
        s.fit(x[:8], torch.tensor([0, 0, 1, 1, 2, 2, 4, 4]))
    # A model's class names name the class too (a cross-validation fold's message gave
    # the id alone for a file of names).
    with pytest.raises(ValueError, match=r"class 3 \(red\) has no training points"):
        s.fit(x[:8], torch.tensor([0, 0, 1, 1, 2, 2, 4, 4]), RING_NAMES)
    model = NormalizingFlow(couplings=2, num_classes=5, standardize="class")
    model.class_names = ("a", "b", "c", "rare", "e")
    with pytest.raises(ValueError, match=r"class 3 \(rare\) has no training points"):
        model.fit_standardization(x[:8], torch.tensor([0, 0, 1, 1, 2, 2, 4, 4]))
    with pytest.raises(ValueError, match=r"unknown label 7: the classes are 0..4"):
        s.fit(x[:4], torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="shape"):
        s(x, y[:3])
    flat = x.clone()
    flat[y == 2, 1] = 0.5
    with pytest.raises(ValueError, match="constant within class 2 .* --standardize global"):
        s.fit(flat, y)


def test_standardization_round_trip_and_log_abs_det():
    x = olympic_rings(5000, seed=0).double()
    s = Standardization(2).double().fit(x)
    assert torch.allclose(s.loc, x.mean(0)) and torch.allclose(s.scale, x.std(0))
    y = s(x)
    assert torch.allclose(y.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.std(0), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(s.inverse(y), x, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda v: s(v[None])[0], x[0])
    assert s.log_abs_det().item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-12)
    assert s.log_abs_det().item() == pytest.approx(-x.std(0).log().sum().item(), abs=1e-12)


def test_standardization_rejects_bad_fits():
    s = Standardization(2)
    with pytest.raises(ValueError):
        s.fit(torch.randn(10, 3))
    with pytest.raises(ValueError):
        s.fit(torch.randn(1, 2))
    x = torch.randn(10, 2)
    x[3, 1] = math.inf
    with pytest.raises(ValueError, match="point 3"):
        s.fit(x)
    with pytest.raises(ValueError, match="constant"):
        s.fit(torch.stack([torch.randn(10), torch.ones(10)], 1))


def test_split_is_seeded_disjoint_and_complete():
    x = torch.arange(1000, dtype=torch.float64)[:, None].repeat(1, 2)
    labels = torch.arange(1000)
    parts = split(x, labels, fractions=(0.8, 0.1, 0.1), seed=0)
    assert [len(p[0]) for p in parts] == [800, 100, 100]
    ids = [p[1] for p in parts]
    for (xp, _), i in zip(parts, ids, strict=True):
        assert torch.equal(xp[:, 0].long(), i)  # labels travel with their points
    allids = torch.cat(ids)
    assert len(set(allids.tolist())) == 1000  # disjoint and complete
    again = split(x, labels, fractions=(0.8, 0.1, 0.1), seed=0)
    other = split(x, labels, fractions=(0.8, 0.1, 0.1), seed=1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(parts, again, strict=True))
    assert not torch.equal(parts[0][1], other[0][1])
    assert split(x, fractions=(0.5, 0.5, 0.0))[0][1] is None


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        split(torch.zeros(10, 2), fractions=(0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="fractions"):
        split(torch.zeros(10, 2), fractions=(1.2, -0.1, -0.1))


def test_split_sizes_are_the_parts_split_makes_and_can_be_empty():
    for n in (0, 1, 9, 12, 15, 16, 17, 101):
        x = torch.zeros(n, 2)
        assert tuple(len(p[0]) for p in split(x)) == split_sizes(n)
    assert split_sizes(12) == (11, 1, 0)  # round(0.6) = 1 point of validation, none for test
    assert split_sizes(16) == (14, 1, 1)
    with pytest.raises(ValueError, match="fractions"):
        split_sizes(10, (0.5, 0.5, 0.5))


# --- the one band test ----------------------------------------------------------------


def test_in_band_is_the_distance_to_the_centre_line_within_half_the_width():
    p = _box_samples(20_000, seed=4)
    d = ring_distance(p)
    assert torch.equal(in_band(p, tolerance=0.0), d <= HALF)
    assert torch.equal(in_band(p), d <= HALF + BAND_TOLERANCE)
    assert torch.equal(in_band(p, 0.5, tolerance=0.0), d <= 0.25)
    ring, dist = nearest_ring(p)
    assert torch.equal(ring, d.argmin(dim=1)) and torch.equal(dist, d.min(dim=1).values)


def test_in_band_tolerance_covers_float32_rounding_only():
    blue = torch.tensor(RING_CENTERS[1], dtype=torch.float64)
    # Straight left of the blue ring's centre: only the blue band is near.
    edge = blue - torch.tensor([[1 + HALF, 0.0]], dtype=torch.float64)
    just_out = edge - torch.tensor([[5e-7, 0.0]], dtype=torch.float64)
    far_out = edge - torch.tensor([[5e-6, 0.0]], dtype=torch.float64)
    assert in_band(edge, tolerance=0.0)[0, 1]
    assert in_band(just_out)[0, 1] and not in_band(just_out, tolerance=0.0)[0, 1]
    assert not in_band(far_out).any()
    # Every point the generator stores (float32) is inside with the default tolerance.
    x, y = olympic_rings(20_000, conditional=True, seed=6)
    assert in_band(x.double()).gather(1, y[:, None]).all()
    assert in_band(olympic_rings(20_000, seed=7).double()).any(dim=1).all()


def test_in_band_says_no_for_non_finite_points_and_checks_its_arguments():
    p = torch.tensor([[math.nan, 0.0], [math.inf, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert in_band(p).any(dim=1).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="ring_thickness"):
        in_band(p, 2.0)
    with pytest.raises(ValueError, match="ring_thickness"):
        in_band(p, True)
    with pytest.raises(ValueError, match="tolerance"):
        in_band(p, tolerance=-1e-6)


# --- the one integer check ------------------------------------------------------------


def test_check_int_accepts_integers_and_names_the_argument():
    assert check_int(3, "epochs") == 3 and type(check_int(np.int64(3), "epochs")) is int
    assert check_int(0, "seed", minimum=0) == 0 and check_int(2, "n", minimum=2) == 2
    for bad in (True, False, 3.0, 2.5, "3", None, 0, -1):
        with pytest.raises(ValueError, match=r"^epochs must be a positive integer, got "):
            check_int(bad, "epochs")
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        check_int(-1, "seed", minimum=0)
    with pytest.raises(ValueError, match="n must be an integer >= 2, got 1"):
        check_int(1, "n", minimum=2)


@pytest.mark.parametrize("bad", [True, 3.0])
def test_counts_of_the_samplers_must_be_integers(bad):
    # A bool or a float count used to pass (True as 1 point, 3.0 as 3).
    with pytest.raises(ValueError, match="n must be a positive integer"):
        olympic_rings(bad)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make_dataset("moons", bad)


# --- float32 range --------------------------------------------------------------------


def test_a_value_beyond_float32_is_refused_naming_row_line_and_column(tmp_path):
    f = tmp_path / "big.csv"
    f.write_text("x,y\n0,1\n2,3\n-1e39,0\n")
    with pytest.raises(
        ValueError, match=r"big.csv: row 3 \(line 4\), column 1 is -1e\+39 \(beyond"
    ):
        load_points(f)
    g = tmp_path / "big.npy"
    np.save(g, np.array([[0.0, 1.0], [2.0, 3.5e38]]))
    with pytest.raises(ValueError, match=r"big.npy: row 2, column 2 .*float32"):
        load_points(g)
    # The largest float32 itself loads, finite.
    np.save(g, np.array([[0.0, 1.0], [2.0, float(np.finfo(np.float32).max)]]))
    x, _ = load_points(g)
    assert torch.isfinite(x).all()


def test_a_pandas_index_column_is_left_out_or_refused(tmp_path):
    # pandas' df.to_csv("f.csv") writes the row index first, under an empty header.
    rows = "\n".join(f"{i},{0.1 * i:.1f},{1 - 0.1 * i:.1f}" for i in range(12))
    (tmp_path / "f.csv").write_text(",x,y\n" + rows + "\n")
    with pytest.warns(UserWarning, match="first column .header ''. is a row index"):
        x, labels = load_points(tmp_path / "f.csv")
    assert x.shape == (12, 2) and labels is None
    assert x[3].tolist() == pytest.approx([0.3, 0.7])
    (tmp_path / "g.csv").write_text("Unnamed: 0,x,y\n" + rows + "\n")
    with pytest.warns(UserWarning, match="Unnamed: 0"):
        assert load_points(tmp_path / "g.csv")[0].shape == (12, 2)
    # Without the header, a counting first column is refused, saying what to do.
    (tmp_path / "h.csv").write_text(rows + "\n")
    with pytest.raises(ValueError, match="column 1 counts 0, 1, ..., 11: a row index.*index=False"):
        load_points(tmp_path / "h.csv")


def test_pandas_column_numbers_are_a_header_and_a_row_of_missing_values_is_not(tmp_path):
    # pd.DataFrame(array).to_csv(f) heads the columns with their numbers: ",0,1" before
    # the index, "0,1" with index=False. Both were read as data (a missing value; a point).
    f = tmp_path / "f.csv"
    f.write_text(",0,1\n0,1.5,2.0\n1,3.0,4.0\n")
    with pytest.warns(UserWarning, match="row index"):
        x, labels = load_points(f)
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]] and labels is None
    f.write_text("0,1,2\n1.5,2.0,0\n3.0,4.0,1\n")
    with pytest.warns(UserWarning, match=r"first line, 0,1,2, was read as the header.*0\.0,1\.0"):
        x, labels = load_points(f)
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]] and labels.tolist() == [0, 1]
    assert column_names(f) is None  # numbers, not names for the axes
    # Over rows of integers "0,1" is as likely a point: read as one.
    f.write_text("0,1\n1,2\n3,4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_points(f)[0].tolist() == [[0, 1], [1, 2], [3, 4]]
    # A first row of missing values is not a header: its values are missing.
    for first in ("NA,NA", "NA,NA,setosa"):
        f.write_text(f"{first}\n1,2{',setosa' if first.endswith('setosa') else ''}\n")
        with pytest.raises(ValueError, match=r"row 1 \(line 1\): column 1 is a missing value"):
            load_points(f)


def test_a_file_as_r_writes_it_loads_without_its_index_and_quotes(tmp_path):
    # R's write.csv quotes the header and the row names, which count from 1.
    rows = "\n".join(f'"{i + 1}",{0.1 * i:.1f},{1 - 0.1 * i:.1f}' for i in range(12))
    (tmp_path / "r.csv").write_text('"","eruptions","waiting"\n' + rows + "\n")
    with pytest.warns(UserWarning, match="pandas' to_csv and R's write.csv.*row.names=FALSE"):
        x, labels = load_points(tmp_path / "r.csv")
    assert x.shape == (12, 2) and labels is None and x[3].tolist() == pytest.approx([0.3, 0.7])
    assert column_names(tmp_path / "r.csv") == ("eruptions", "waiting")  # no quotes
    (tmp_path / "q.csv").write_text('"x","y"\n"1.5","2"\n"3","4"\n')  # quoted numbers
    assert load_points(tmp_path / "q.csv")[0].tolist() == [[1.5, 2.0], [3.0, 4.0]]
    # Unnamed, R's row names are refused as pandas' are.
    (tmp_path / "n.csv").write_text(rows.replace('"', "") + "\n")
    with pytest.raises(ValueError, match="column 1 counts 1, 2, ..., 12: a row index"):
        load_points(tmp_path / "n.csv")


def test_a_header_that_names_the_columns_in_another_order_is_refused(tmp_path):
    # Columns are read by position (x, y, label): a header saying otherwise is an error.
    for header, row, match in (
        ("label,x,y", "0,1,2", "names column 1 'label'.*put the label column third"),
        ("x,Class,y", "1,0,2", "names column 2 'Class'"),
        ("y,x", "1,2", "names y before x.*swap the two columns"),
        (",label,x,y", "0,0,1,2", "names column 1 'label'"),  # after a pandas index
    ):
        f = tmp_path / "f.csv"
        f.write_text(f"{header}\n{row}\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pandas index's note
            with pytest.raises(ValueError, match=match):
                load_points(f)
    # Headers in the order read, and any other names, load as before.
    for header in ("x,y,label", "X, Y", "waiting,eruptions", "a,b,class"):
        (tmp_path / "g.csv").write_text(f"{header}\n1,2{',0' if header.count(',') == 2 else ''}\n")
        assert load_points(tmp_path / "g.csv")[0].tolist() == [[1.0, 2.0]]


def test_a_file_of_another_shape_or_separator_says_what_it_holds(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(5, 2, 2\); points are \(N, 2\)"):
        load_points(tmp_path / "a.npy")
    for sep in ("\t", ";"):
        (tmp_path / "t.csv").write_text(f"x{sep}y\n1{sep}2\n")
        with pytest.raises(ValueError, match=re.escape(f"separated by {sep!r}; a .csv")):
            load_points(tmp_path / "t.csv")


def test_missing_values_are_named_as_such(tmp_path):
    """pandas writes a missing value as an empty field, R as NA."""
    f = tmp_path / "f.csv"
    for text, says in [
        ("a,b\n1,2\n,55\n", "column 1 is a missing value (empty); drop or fill the rows"),
        ("a,b\n1,2\n3.6,NA\n", "column 2 is a missing value ('NA')"),
        ("a,b,c\n1,2,blue\n3.6,79,\n", "column 3 is a missing value (empty)"),
    ]:
        f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"row 2 (line 3): {says}")):
            load_points(f)


def test_a_label_column_of_class_names_is_read_and_numbered_in_sorted_order(tmp_path):
    """A data frame's label column usually holds names: load_points gives them as they
    are, make_dataset numbers them as pandas' category codes do and keeps the names."""
    f = tmp_path / "f.csv"
    f.write_text(",x,y,species\n0,1,2,virginica\n1,3,4, Setosa\n2,5,6,virginica\n")
    with pytest.warns(UserWarning, match="row index"):
        x, labels = load_points(f)
    assert x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert labels == ["virginica", "Setosa", "virginica"]
    with pytest.warns(UserWarning, match="row index"):
        data = make_dataset(str(f), 0, conditional=True)
    assert data.class_names == ("Setosa", "virginica")  # sorted, as cat.codes
    assert data.labels.tolist() == [1, 0, 1] and data.columns == ("x", "y")
    np.savez(tmp_path / "f.npz", x=np.ones((2, 2)), labels=np.array(["b", "a"]))
    assert make_dataset(str(tmp_path / "f.npz"), 0, conditional=True).labels.tolist() == [1, 0]
    for text, says in [
        (
            "1,2,0\n3,4,blue\n",
            "holds class names (row 2, line 2: 'blue') and ids (row 1, line 1: 0)",
        ),
        ("1,2,Blue\n3,4,blue\n", "the class names 'Blue' and 'blue' differ only in case"),
    ]:
        f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(says)):
            make_dataset(str(f), 0, conditional=True)
    assert load_points(f)[1] == ["Blue", "blue"]  # a points file: the model reads any case


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    from flowscope.data import column_names

    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbferuptions,waiting\n3.6,79\n1.8,54\n")
    assert column_names(f) == ("eruptions", "waiting")
    assert load_points(f, torch.float64)[0].tolist() == [[3.6, 79.0], [1.8, 54.0]]


def test_a_third_column_of_fractions_is_said_to_be_read_as_labels(tmp_path):
    (tmp_path / "f.csv").write_text("a,b,c\n0.5,1.5,-0.36\n")
    with pytest.raises(ValueError, match="label -0.36 .*third column holds class ids"):
        load_points(tmp_path / "f.csv")
    for value in ("2.0000001", "1000000.5", "-1"):  # as written, all its digits shown
        (tmp_path / "f.csv").write_text(f"a,b,c\n0.5,1.5,{value}\n")
        with pytest.raises(ValueError, match=re.escape(f"label {value} is not a non-negative")):
            load_points(tmp_path / "f.csv")


def test_a_constant_coordinate_is_named():
    x = torch.stack([torch.linspace(0, 1, 20), torch.full((20,), 3.0)], dim=1)
    with pytest.raises(ValueError, match="coordinate 2 .column 2. is constant .* 3 there"):
        Standardization(2).fit(x)


def test_class_ids_that_leave_a_class_out_are_refused_for_training(tmp_path):
    # R's factors count from 1: class 0 would be a class no model could learn (the
    # message was "class 0 has no training points" of the standardization, or none).
    f = tmp_path / "r.csv"
    f.write_text("".join(f"{i * 0.1},{i % 7},{i % 3 + 1}\n" for i in range(30)))
    with pytest.raises(ValueError, match=r"ids are 1, 2, 3, .*count from 1 .*subtract 1"):
        make_dataset(str(f), 0, conditional=True)
    f.write_text("".join(f"{i * 0.1},{i % 7},{(i % 2) * 10}\n" for i in range(30)))
    with pytest.raises(ValueError, match="ids are 0, 10, .*class 1 has no rows"):
        make_dataset(str(f), 0, conditional=True)
    # Points to score (load_points) may name any class of a model, in any order.
    assert load_points(f)[1].unique().tolist() == [0, 10]


def test_a_header_of_words_and_numbers_is_still_a_header(tmp_path):
    # Only numbers under another separator make a first line data ("1.5 2.0").
    f = tmp_path / "h.csv"
    for header in ("Survey 2023 data", "x1 x2"):
        f.write_text(f"{header}\n1,2\n3,4\n")
        assert load_points(f)[0].tolist() == [[1, 2], [3, 4]]


def test_comment_lines_are_skipped_and_numpys_commented_header_is_a_header(tmp_path):
    # np.savetxt(f, x, delimiter=",", header="x,y") writes "# x,y": its names were "# x"
    # and "y"; a comment line before a header was "'a,b' is not numeric".
    f = tmp_path / "np.csv"
    np.savetxt(f, np.array([[1.5, 2.0], [3.0, 4.0]]), delimiter=",", header="eruptions,waiting")
    x, _ = load_points(f)
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert column_names(f) == ("eruptions", "waiting")
    f.write_text("# made by hand\na,b\n1,2\n# a note between rows\n3,4\n")
    assert load_points(f)[0].tolist() == [[1, 2], [3, 4]] and column_names(f) == ("a", "b")
    # A comment of another shape is no header; errors keep the file's line numbers.
    f.write_text("# measured in 2020\n1,2\n3,x\n")
    assert column_names(f) is None
    with pytest.raises(ValueError, match=r"row 2 \(line 3\)"):
        load_points(f)


def test_class_labels_follow_the_shares_of_the_counts_evenly_spread():
    from flowscope.data import class_labels

    assert class_labels(6, [4, 4, 4]).tolist() == [0, 1, 2, 0, 1, 2]  # equal: arange % K
    labels = class_labels(100, [270, 30])  # 90% and 10%
    assert torch.bincount(labels).tolist() == [90, 10]
    assert [int(labels[i * 10 : (i + 1) * 10].sum()) for i in range(10)] == [1] * 10  # spread
    # Largest remainders: 7 of [1, 1, 2] is 1.75, 1.75, 3.5 -> 2, 2, 3 (ties to lower ids).
    assert torch.bincount(class_labels(7, [1, 1, 2])).tolist() == [2, 2, 3]
    assert class_labels(0, [1, 2]).tolist() == []
    with pytest.raises(ValueError, match="not all 0"):
        class_labels(3, [0, 0])
