"""The couplings of flow matching: minimal-cost pairing, the right side reordered, classes
kept apart, and the batch sizes they refuse."""

from __future__ import annotations

import itertools

import pytest
import torch

from flowscope import FlowMatching, TrainConfig, fit
from flowscope.matching import COUPLINGS, ClassOTCoupling, OTCoupling, assignment, ot_assignment

OT_COUPLINGS = [name for name in COUPLINGS.names() if issubclass(COUPLINGS.get(name), OTCoupling)]


def cost(x0, x1):
    return float(((x0 - x1) ** 2).sum())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [2, 37, 128, 300])
def test_ot_never_costs_more_than_the_identity_pairing(seed, n):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) * 2 + 1
    paired = OTCoupling().pair(x0, x1)
    assert cost(paired, x1) <= cost(x0, x1) + 1e-4


@pytest.mark.parametrize("solver", ["auto", *assignment.SOLVERS])
@pytest.mark.parametrize("seed", range(4))
def test_ot_is_optimal_against_brute_force(seed, solver):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g)
    x1 = x1.double()
    best = min(cost(x0[list(p)], x1) for p in itertools.permutations(range(6)))
    assert cost(OTCoupling(solver=solver).pair(x0, x1), x1) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("n", [3, 64, 200])
def test_the_solvers_find_the_same_assignment(n):
    # Clustered targets (many near-equal costs) are where the solvers work hardest.
    g = torch.Generator().manual_seed(n)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.05 + torch.randint(
        0, 4, (n, 1), generator=g
    )
    perms = {name: ot_assignment(x0, x1, name) for name in assignment.SOLVERS}
    assert torch.equal(perms["scipy"], perms["pot"])
    assert torch.equal(torch.sort(perms["pot"]).values, torch.arange(n))


def test_the_cost_is_the_squared_distance_in_float64():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(40, 3, generator=g) * 3, torch.randn(40, 3, generator=g) + 5
    plain = ((x1.double()[:, None, :] - x0.double()[None, :, :]) ** 2).sum(-1)
    c = assignment.assignment_cost(x0, x1)
    assert c.dtype == plain.numpy().dtype and c.shape == (40, 40)
    assert abs(c - plain.numpy()).max() <= 1e-12 * plain.max().item()


def test_auto_keeps_the_faster_solver_per_size(monkeypatch):
    import time

    calls, plain = [], assignment.SOLVERS["scipy"]

    def slow(c):
        calls.append("slow")
        time.sleep(0.002)
        return plain(c)

    def fast(c):
        calls.append("fast")
        return plain(c)

    monkeypatch.setattr(assignment, "SOLVERS", {"slow": slow, "fast": fast})
    choose = assignment._Fastest(trials=2)
    c = assignment.assignment_cost(torch.randn(5, 2), torch.randn(5, 2))
    for _ in range(6):
        choose(c)
    # Two trials each, alternating, then only the faster; every call solved its problem.
    assert calls == ["slow", "fast", "slow", "fast", "fast", "fast"]
    assert choose.chosen == {3: "fast"}  # 5 points: the size class of 5-8
    choose(assignment.assignment_cost(torch.randn(20, 2), torch.randn(20, 2)))
    assert calls[-1] == "slow"  # another size is timed afresh


def test_an_unknown_solver_lists_the_choices():
    with pytest.raises(ValueError, match="auto, scipy, pot"):
        OTCoupling(solver="hungarian")
    with pytest.raises(ValueError, match="auto, scipy, pot"):
        assignment.solve_assignment(
            assignment.assignment_cost(torch.randn(3, 2), torch.randn(3, 2)), "x"
        )


def test_ot_reorders_the_source_and_leaves_data_and_labels_alone():
    # A shifted copy of the source is paired back with its own rows: the permutation is
    # applied to x0 (torchcfm PR 178 fixed one applied to the data's side).
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(50, 2, generator=g)
    perm = torch.randperm(50, generator=g)
    x0 = (x1 + 0.01)[perm]
    x1_before, labels = x1.clone(), torch.arange(50) % 3
    paired = OTCoupling().pair(x0, x1, labels)
    torch.testing.assert_close(paired, x1 + 0.01)
    assert torch.equal(x1, x1_before) and torch.equal(labels, torch.arange(50) % 3)
    assert torch.equal(ot_assignment(x0, x1), torch.argsort(perm))


@pytest.mark.parametrize("seed", range(3))
def test_class_ot_pairs_only_within_classes_and_optimally_there(seed):
    g = torch.Generator().manual_seed(seed)
    n = 90
    labels = torch.randint(0, 3, (n,), generator=g)
    # Each source point carries its class in a third coordinate, to see where it went.
    x0 = torch.cat([torch.randn(n, 2, generator=g), labels[:, None].float()], 1)
    x1 = torch.cat([torch.randn(n, 2, generator=g) + 3, labels[:, None].float()], 1)
    paired = ClassOTCoupling().pair(x0, x1, labels)
    assert torch.equal(paired[:, 2], labels.float())
    for k in range(3):
        m = labels == k
        assert cost(paired[m], x1[m]) == pytest.approx(
            cost(OTCoupling().pair(x0[m], x1[m]), x1[m]), rel=1e-6
        )
    assert cost(paired, x1) <= cost(x0, x1)


def test_large_batches_are_paired_in_blocks():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    c = OTCoupling(block=300)  # 4 blocks of 250
    paired = c.pair(x0, x1)
    for a in range(0, 1000, 250):
        s = slice(a, a + 250)
        torch.testing.assert_close(paired[s], OTCoupling().pair(x0[s], x1[s]))
    assert COUPLINGS.build(c.config()) == c


@pytest.mark.parametrize("name", OT_COUPLINGS)
def test_a_batch_of_one_or_above_the_block_is_refused(name):
    c = COUPLINGS.build({"name": name, "block": 64})
    with pytest.raises(ValueError, match="batch size 1"):
        c.check_batch_size(1)
    with pytest.raises(ValueError, match="at most 64"):
        c.check_batch_size(65)
    c.check_batch_size(64)
    with pytest.raises(ValueError, match="block"):
        COUPLINGS.build({"name": name, "block": 1})


def test_fit_refuses_a_batch_of_one_with_ot():
    fm = FlowMatching(hidden=8, layers=2, coupling="ot")
    with pytest.raises(ValueError, match="batch size 1"):
        fit(fm, torch.randn(20, 2), config=TrainConfig(epochs=1, batch_size=1), progress=False)


def test_class_ot_needs_a_conditional_model():
    with pytest.raises(ValueError, match="conditional"):
        FlowMatching(coupling="class-ot")
    FlowMatching(num_classes=3, coupling="class-ot")


def test_ot_coupling_straightens_the_training_pairs():
    # The point of OT: pairs of a batch cross less, so the regression targets vary less.
    fm = FlowMatching(hidden=8, layers=2, coupling="ot")
    ind = FlowMatching(hidden=8, layers=2)
    x1 = torch.randn(256, 2) * 0.3
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a, b = fm.training_batch(x1, generator=g()), ind.training_batch(x1, generator=g())
    assert cost(a.x0, a.x1) < 0.8 * cost(b.x0, b.x1)
