import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from flowscope import FlowMatching, NormalizingFlow, olympic_rings
from flowscope.data import RING_CENTERS, RING_RADIUS
from flowscope.metrics import (
    class_accuracy,
    heldout_nll,
    ring_coverage,
    ring_precision,
    round_trip_error,
    sample_quality,
    w2_noise_floor,
    wasserstein2,
)

torch.set_num_threads(1)


# -- W2 ---------------------------------------------------------------------------------------


def test_w2_of_a_set_with_itself_is_zero():
    a = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert wasserstein2(a, a) == 0.0
    assert wasserstein2(a, a[torch.randperm(60)]) == 0.0


@pytest.mark.parametrize("shift", [(0.3, -0.4), (2.0, 1.0), (-1.5, 0.0)])
def test_w2_of_a_shifted_set_is_the_shift_length(shift):
    a = torch.randn(80, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = (a + torch.tensor(shift, dtype=torch.float64))[torch.randperm(80)]
    assert wasserstein2(a, b) == pytest.approx(math.hypot(*shift), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_w2_matches_brute_force_over_all_permutations(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    costs = [((a - b[list(p)]) ** 2).sum(1).mean() for p in itertools.permutations(range(5))]
    identity = ((a - b) ** 2).sum(1).mean()
    assert min(costs) < identity  # the assignment matters for this set
    assert wasserstein2(a, b) == pytest.approx(math.sqrt(min(costs)), rel=1e-12)


def test_w2_rejects_sets_of_different_shapes():
    with pytest.raises(ValueError, match="same shape"):
        wasserstein2(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        wasserstein2(torch.zeros(4), torch.zeros(4))


def test_w2_noise_floor_is_w2_between_two_seeded_draws():
    def draw(n, s):
        return olympic_rings(n, seed=s)

    floor = w2_noise_floor(draw, n=300, seed=5)
    assert floor == wasserstein2(draw(300, 5), draw(300, 6))
    assert floor > 0
    # A floor shrinks as n grows (the empirical measures converge).
    assert w2_noise_floor(draw, n=1500, seed=5) < floor


# -- ring geometry ----------------------------------------------------------------------------


def test_ring_precision_of_the_data_is_one():
    for x in (olympic_rings(20_000, seed=3), olympic_rings(20_000, conditional=True, seed=4)[0]):
        r = ring_precision(x)
        assert (r.precision, r.mean_offset, r.max_offset) == (1.0, 0.0, 0.0)


def test_ring_precision_of_hand_placed_points():
    # (1, 0) lies on the blue, black and yellow centre lines; (0, 1.5) is 0.5 from the
    # blue line, 0.375 from its band; (0, 0) is sqrt(2) - 1 from the yellow line.
    x = [[1.0, 0.0], [0.0, 1.5], [0.0, 0.0]]
    r = ring_precision(x)
    far = [0.375, math.sqrt(2) - 1 - 0.125]
    assert r.precision == pytest.approx(1 / 3)
    assert r.mean_offset == pytest.approx(sum(far) / 2, rel=1e-12)
    assert r.max_offset == pytest.approx(max(far), rel=1e-12)
    # A band 0.9 wide takes in the third point (0.414 < 0.45), not the second (0.5).
    assert ring_precision(x, ring_thickness=0.9).precision == pytest.approx(2 / 3)


def test_ring_precision_of_gaussian_noise_matches_monte_carlo():
    # The expected share, by an independent computation on a million other draws.
    z = np.random.default_rng(123).standard_normal((1_000_000, 2))
    inside = np.zeros(len(z), dtype=bool)
    for cx, cy in RING_CENTERS:
        inside |= np.abs(np.hypot(z[:, 0] - cx, z[:, 1] - cy) - RING_RADIUS) <= 0.125
    p = inside.mean()
    n = 20_000
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(7))
    got = ring_precision(noise).precision
    assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert 0 < got < 0.5


def test_ring_coverage():
    assert ring_coverage(olympic_rings(10_000, seed=8)) == 1.0
    assert ring_coverage(olympic_rings(10_000, seed=8), bins=1) == 1.0
    assert ring_coverage(torch.full((10, 2), 100.0)) == 0.0
    # (0, 1) is in the blue band only; (1, 0) on three centre lines at once.
    assert ring_coverage([[0.0, 1.0]]) == pytest.approx(1 / 180)
    assert ring_coverage([[1.0, 0.0]]) == pytest.approx(3 / 180)
    # Dropping a ring leaves cells empty.
    x, y = olympic_rings(10_000, conditional=True, seed=9)
    assert ring_coverage(x[y != 2]) < 1.0


def test_class_accuracy():
    x, y = olympic_rings(5_000, conditional=True, seed=10)
    acc = class_accuracy(x, y)
    assert acc.per_class == (1.0,) * 5 and acc.overall == 1.0
    wrong = class_accuracy(x, (y + 1) % 5)
    assert wrong.overall < 0.5 and max(wrong.per_class) < 1.0
    missing = class_accuracy(x[y != 3], y[y != 3])
    assert math.isnan(missing.per_class[3]) and missing.overall == 1.0
    with pytest.raises(ValueError, match="label 5"):
        class_accuracy(x[:2], torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        class_accuracy(x[:3], y[:2])


def test_ring_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ring_precision(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="ring_thickness"):
        ring_precision(torch.zeros(4, 2), ring_thickness=0.0)
    with pytest.raises(ValueError, match="bins"):
        ring_coverage(torch.zeros(4, 2), bins=0)


def test_sample_quality_collects_the_metrics():
    x, y = olympic_rings(400, conditional=True, seed=11)
    ref = olympic_rings(400, seed=12)
    q = sample_quality(x, ref, labels=y)
    assert q["w2"] == wasserstein2(x, ref)
    assert q["ring_precision"] == 1.0 and q["class_accuracy_green"] == 1.0
    assert "class_accuracy" not in sample_quality(x, ref)


# -- held-out likelihood ----------------------------------------------------------------------


def test_nll_of_a_gaussian_flow_matches_closed_form():
    gen = torch.Generator().manual_seed(13)
    train = torch.randn(500, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.0, 0.5], dtype=torch.float64
    ) + torch.tensor([1.0, -3.0], dtype=torch.float64)
    test = torch.randn(103, 2, generator=gen, dtype=torch.float64) * 1.5
    flow = NormalizingFlow(couplings=0).double()
    flow.standardization.fit(train)
    loc, scale = flow.standardization.loc.numpy(), flow.standardization.scale.numpy()
    data = -multivariate_normal(loc, np.diag(scale**2)).logpdf(test.numpy()).mean()
    std = -norm.logpdf((test.numpy() - loc) / scale).sum(1).mean()
    nll = heldout_nll(flow, test, batch_size=10)
    assert nll.n == 103
    assert nll.data == pytest.approx(data, rel=1e-12)
    assert nll.standardized == pytest.approx(std, rel=1e-12)
    assert nll.data - nll.standardized == pytest.approx(np.log(scale).sum(), rel=1e-12)


def test_nll_of_flow_matching_with_zero_velocity_is_gaussian():
    fm = FlowMatching(hidden=16, layers=3, gaussian_skip=False).double()
    with torch.no_grad():
        w, b = fm.field.pairs()[-1]
        w.zero_()
        b.zero_()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    nll = heldout_nll(fm, x, steps=5)
    assert nll.standardized == pytest.approx(-norm.logpdf(x.numpy()).sum(1).mean(), rel=1e-12)


def test_nll_in_batches_equals_one_pass_with_labels():
    torch.manual_seed(15)
    fm = FlowMatching(num_classes=5, hidden=16, layers=3).double()
    x, y = olympic_rings(60, conditional=True, seed=15)
    x = x.double()
    fm.standardization.fit(x, y)  # per class: the data shift differs by class
    whole = -fm.log_prob(x, y, standardized=True, steps=8).mean().item()
    nll = heldout_nll(fm, x, y, batch_size=7, steps=8)
    assert nll.standardized == pytest.approx(whole, rel=1e-12)
    assert nll.data == pytest.approx(-fm.log_prob(x, y, steps=8).mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        heldout_nll(fm, x, y, batch_size=0)


# -- round trip -------------------------------------------------------------------------------


def test_round_trip_of_a_normalizing_flow_is_exact():
    torch.manual_seed(16)
    flow = NormalizingFlow(couplings=6).double()
    x = olympic_rings(300, seed=16).double()
    flow.standardization.fit(x)
    rt = round_trip_error(flow, x)
    assert rt.max < 1e-12 and 0 <= rt.mean <= rt.max
    with pytest.raises(ValueError, match="unconditional"):
        round_trip_error(flow, x, labels=0)


def test_round_trip_of_flow_matching_shrinks_with_dt():
    torch.manual_seed(17)
    fm = FlowMatching(hidden=32, layers=3).double()
    x = olympic_rings(200, seed=17).double()
    fm.standardization.fit(x)
    coarse, fine = round_trip_error(fm, x, dt=0.1), round_trip_error(fm, x, dt=0.02)
    assert coarse.mean > 0 and coarse.max >= coarse.mean
    # Euler is first order: a 5x smaller step gives about a 5x smaller error.
    assert 0.1 < fine.mean / coarse.mean < 0.3
    assert round_trip_error(fm, x, dt=0.1, solver="rk4").mean < fine.mean


# -- honest for diverged models and empty input ----------------------------------------------

NAN = math.nan


def test_nan_samples_are_outside_every_band():
    # NaN compares False both ways: it used to slip past `offset > tol` and score as inside.
    prec = ring_precision([[NAN, NAN], [1.0, 0.0]])
    assert prec.precision == 0.5
    assert prec.mean_offset == math.inf and prec.max_offset == math.inf
    assert ring_precision([[math.inf, 0.0], [1.0, 0.0]]).precision == 0.5
    assert ring_precision(torch.full((4, 2), NAN)).precision == 0.0


def test_nan_samples_cover_nothing_and_are_never_correct():
    x, y = olympic_rings(500, conditional=True, seed=0)
    x = x.double()
    bad = x.clone()
    bad[::2] = NAN  # half the samples diverged
    assert ring_coverage(torch.full((10, 2), NAN)) == 0.0
    assert ring_coverage(bad) == ring_coverage(x[1::2])
    acc = class_accuracy(bad, y)
    assert acc.overall == pytest.approx(0.5)
    for c, share in enumerate(acc.per_class):
        assert share == pytest.approx(float((y[1::2] == c).sum() / (y == c).sum()))
    q = sample_quality(bad, olympic_rings(500, seed=1))
    assert q["w2"] == math.inf and q["ring_precision"] == pytest.approx(0.5)


def test_w2_with_a_non_finite_point_is_infinite():
    a = torch.zeros(3, 2, dtype=torch.float64)
    b = a.clone()
    b[1, 0] = NAN
    assert wasserstein2(a, b) == math.inf
    b[1, 0] = -math.inf
    assert wasserstein2(b, a) == math.inf


def test_empty_input_is_refused_with_a_clear_message():
    flow = NormalizingFlow(couplings=0)
    empty = torch.zeros(0, 2)
    with pytest.raises(ValueError, match="x holds no points .*held-out NLL needs at least one"):
        heldout_nll(flow, empty)
    with pytest.raises(ValueError, match="round-trip error needs at least one"):
        round_trip_error(flow, empty)
    with pytest.raises(ValueError, match="N >= 1"):
        ring_precision(empty)
    with pytest.raises(ValueError, match="N >= 1"):
        wasserstein2(empty, empty)


@pytest.mark.parametrize("bad", [True, 2.0])
def test_counts_must_be_integers(bad):
    flow = NormalizingFlow(couplings=0)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        heldout_nll(flow, x, batch_size=bad)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        ring_coverage(x, bins=bad)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        w2_noise_floor(lambda n, s: olympic_rings(n, seed=s), n=bad)
