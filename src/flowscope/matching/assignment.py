"""Exact assignment of a batch: the permutation that pairs N source points with N data
points at the least total squared distance, by the faster of two maintained solvers.

Both solvers are exact: scipy's ``linear_sum_assignment`` (a shortest augmenting path
method) and POT's ``emd`` (the network simplex; with unit masses its optimal plan is a
permutation matrix, since the assignment polytope's vertices are permutations). Which is
faster depends on N and on the points (clustered targets, many near-equal costs, are the
slow case of both): POT's is about 2-4x faster from 128 points on, scipy's below
(``benchmarks/README.md``, "Minibatch OT"). ``solver="auto"`` therefore times both on the
first problems of each size (rounded to a power of two) that it is given, each of which
it solves, and then keeps the faster one: no problem is solved twice, and a solver that
is slower on this machine does not run.

Neither solver releases Python's global lock, so the assignment cannot run on a thread
beside the training step (measured); it adds to the step.

References:
    Crouse. On implementing 2D rectangular assignment algorithms. IEEE Transactions on
    Aerospace and Electronic Systems, 2016 (scipy's solver).
    Bonneel, van de Panne, Paris, Heidrich. Displacement interpolation using Lagrangian
    mass transport. ACM TOG 2011 (POT's network simplex).
    Flamary et al. POT: Python Optimal Transport. JMLR 2021.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["SOLVERS", "assignment_cost", "check_solver", "ot_assignment", "solve_assignment"]

#: The largest number of network-simplex iterations POT may take before the problem is
#: handed to scipy's solver (POT's own default, 100,000, is reached by 1024 points).
_MAX_ITER = 10**8


def _scipy(cost: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def _pot(cost: np.ndarray) -> np.ndarray:
    try:
        from ot.lp.emd_wrap import emd_c
    except ImportError:  # POT is a dependency; without it, the exact scipy solver
        return _scipy(cost)
    n = cost.shape[0]
    ones = np.ones(n)
    plan, _, _, _, code = emd_c(ones, ones, cost, _MAX_ITER, 1)
    perm = plan.argmax(axis=1)
    # 1 is POT's OPTIMAL; an integral plan with unit masses is a permutation matrix.
    if code != 1 or not np.array_equal(np.bincount(perm, minlength=n), ones.astype(np.int64)):
        return _scipy(cost)
    return perm


#: The exact solvers, by name: cost (N, N) float64 -> perm (N,), row i paired with
#: column perm[i].
SOLVERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"scipy": _scipy, "pot": _pot}


class _Fastest:
    """The faster solver per problem size (rounded up to a power of two), chosen after
    timing each on ``trials`` problems of that size; every timed call solves its own
    problem."""

    def __init__(self, trials: int = 3):
        self.trials = trials
        self.times: dict[int, dict[str, list[float]]] = {}
        self.chosen: dict[int, str] = {}

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        size = max(1, cost.shape[0] - 1).bit_length()
        if size in self.chosen:
            return SOLVERS[self.chosen[size]](cost)
        times = self.times.setdefault(size, {name: [] for name in SOLVERS})
        name = min(times, key=lambda k: len(times[k]))  # the least tried, in order
        t0 = time.perf_counter()
        perm = SOLVERS[name](cost)
        times[name].append(time.perf_counter() - t0)
        if all(len(v) >= self.trials for v in times.values()):
            self.chosen[size] = min(times, key=lambda k: statistics.median(times[k]))
        return perm


_fastest = _Fastest()


def assignment_cost(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    r"""The squared Euclidean cost (N, N) float64, row i data x1[i], column j source x0[j]:
    :math:`\sum_d (x_1[i, d] - x_0[j, d])^2`, one coordinate at a time in NumPy.

    Elementwise and single-threaded on purpose: exact differences (no cancellation, as in
    the expansion through a matrix product), and no thread pool, whose workers cost tens
    of milliseconds a call on a loaded machine (measured: ``torch.addmm`` and
    ``torch.cdist`` with two threads, ``benchmarks/README.md``).
    """
    a = x1.detach().to("cpu", torch.float64).numpy()
    b = x0.detach().to("cpu", torch.float64).numpy()
    cost = np.zeros((len(a), len(b)))
    for d in range(a.shape[1]):
        diff = np.subtract.outer(a[:, d], b[:, d])  # (N, N)
        diff *= diff
        cost += diff
    return cost


def check_solver(solver: str) -> str:
    """``solver`` if it is ``"auto"`` or one of :data:`SOLVERS`.

    Raises:
        ValueError: naming the choices.
    """
    if solver != "auto" and solver not in SOLVERS:
        raise ValueError(
            f"unknown assignment solver {solver!r}; choose one of: auto, {', '.join(SOLVERS)}"
        )
    return solver


def solve_assignment(cost: np.ndarray, solver: str = "auto") -> np.ndarray:
    """The exact minimal assignment of a square float64 cost: perm (N,) with row i paired
    with column perm[i], by ``solver``: ``"scipy"``, ``"pot"`` or ``"auto"`` (the faster
    of the two on this machine at this size, by measurement).

    Raises:
        ValueError: for another solver name.
    """
    solve = _fastest if check_solver(solver) == "auto" else SOLVERS[solver]
    return solve(np.ascontiguousarray(cost))


def ot_assignment(x0: torch.Tensor, x1: torch.Tensor, solver: str = "auto") -> torch.Tensor:
    r"""The permutation p (N,) of the source rows that minimises
    :math:`\sum_i \|x_0[p_i] - x_1[i]\|^2`: an exact assignment on the squared Euclidean
    cost (:func:`assignment_cost`), computed in float64 on the CPU.

    Arguments:
        x0: (N, D) source points; x1: (N, D) data points.
        solver: ``"auto"``, ``"scipy"`` or ``"pot"`` (:func:`solve_assignment`).

    Returns:
        (N,) int64 indices into x0, on x0's device.
    """
    perm = solve_assignment(assignment_cost(x0, x1), solver)
    return torch.from_numpy(perm).to(x0.device)
