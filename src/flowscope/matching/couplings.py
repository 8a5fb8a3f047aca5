"""Couplings: which source point each data point of a batch is paired with.

The flow-matching loss draws a batch of source points x0 and pairs it with the batch of
data x1. A coupling may reorder the source (never the data, so that data and labels stay
together); the independent coupling of the study keeps the order it was drawn in. A fixed
coupling (:class:`PairsCoupling`, reflow's) replaces the drawn source by the source point
each data point was generated from.

References:
    Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio. Improving and
    Generalizing Flow-Based Generative Models with Minibatch Optimal Transport. TMLR
    2024, arXiv:2302.00482.
    Pooladian, Ben-Hamu, Domingo-Enrich, Amos, Lipman, Chen. Multisample Flow Matching.
    ICML 2023, arXiv:2304.14772.
    Cheng, Schwing. The Curse of Conditions: Analyzing and Improving Optimal Transport
    for Conditional Flow-Based Generation. 2025, arXiv:2503.10636 (pairing within each
    condition).
    Liu, Gong, Liu. Flow Straight and Fast: Learning to Generate and Transfer Data with
    Rectified Flow. 2022, arXiv:2209.03003 (training on the pairs of a flow: reflow).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from ..registry import Part, Registry
from .times import DEFAULT_CONDITIONAL_TIME_ALPHA, DEFAULT_TIME_ALPHA

if TYPE_CHECKING:
    import torch

# What a coupling declares (its name, whether it needs labels, its defaults in
# FlowMatching) is plain Python, which the command line's help quotes; PyTorch, numpy and
# scipy are imported where points are paired.

__all__ = [
    "COUPLINGS",
    "DEFAULT_OT_BLOCK",
    "ClassOTCoupling",
    "Coupling",
    "IndependentCoupling",
    "OTCoupling",
    "PairsCoupling",
    "drawn_couplings",
]

#: The registered couplings, by name.
COUPLINGS: Registry[type[Coupling]] = Registry("coupling")

#: The largest batch :class:`OTCoupling` assigns exactly in one piece (default).
DEFAULT_OT_BLOCK = 1024
#: The time sampler of a conditional model with an OT coupling: t ~ Beta(3, 1).
OT_CONDITIONAL_TIME_ALPHA = 3.0


class Coupling(Part):
    """Pairs a batch of source points with a batch of data.

    A coupling also declares the defaults of :class:`~.model.FlowMatching` that depend on
    how it pairs: whether the Gaussian skip is the exact field of Gaussian data under its
    pairs (:attr:`gaussian_skip_exact`), and the time sampler it trains with
    (:meth:`default_times`). The base class's are the independent coupling's.
    """

    #: Whether the coupling needs the data's class labels (a conditional model).
    needs_labels: ClassVar[bool] = False
    #: Whether the path's Gaussian velocity (:meth:`~.paths.AffinePath.gaussian_velocity`,
    #: FlowMatching's ``gaussian_skip``) is the exact field of N(0, I) data under this
    #: coupling's pairs: true when each source point is paired with a data point drawn
    #: independently of it, so that E[x1 | x0] = 0. A coupling that pairs by position
    #: leaves N(0, I) data with the source point it started from (the OT map of N(0, I) to
    #: itself is the identity), whose field on the linear path is 0: no skip.
    gaussian_skip_exact: ClassVar[bool] = True

    @classmethod
    def default_times(cls, conditional: bool) -> dict[str, Any]:
        """The config of the time sampler a model with this coupling trains with when it is
        not given one: Beta(:data:`~.times.DEFAULT_TIME_ALPHA`, 1), or
        Beta(:data:`~.times.DEFAULT_CONDITIONAL_TIME_ALPHA`, 1) for a conditional model
        (mostly near the data, where the independent coupling's field is sharpest)."""
        alpha = DEFAULT_CONDITIONAL_TIME_ALPHA if conditional else DEFAULT_TIME_ALPHA
        return {"name": "beta", "alpha": alpha}

    #: Whether the coupling pairs recorded source points with its own data (reflow's
    #: pairs) instead of reordering the drawn ones; it then needs its file.
    fixed: ClassVar[bool] = False

    def pair(
        self, x0: torch.Tensor, x1: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The source (N, D) reordered so that row i is paired with data row i of x1 (N, D)
        (labels (N,) or ``None``: the data's classes)."""
        raise NotImplementedError

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ``ValueError`` if the coupling cannot pair training batches of this size."""

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The standardization (loc, scale) the coupling's source points are in, which a
        model trained with it must keep, or ``None`` (the model fits its own)."""
        return None


def drawn_couplings() -> tuple[str, ...]:
    """The names of the couplings that pair drawn source points (every coupling but the
    fixed ones, which are made by ``flowscope reflow``)."""
    return tuple(n for n in COUPLINGS.names() if not COUPLINGS.get(n).fixed)


@COUPLINGS.decorator("independent")
class IndependentCoupling(Coupling):
    """Source and data drawn independently, paired as drawn (the study's Algorithm 1)."""

    name = "independent"

    def pair(self, x0, x1, labels=None):
        return x0


def _blocks(n: int, block: int) -> list[slice]:
    """[0, n) cut into ceil(n / block) consecutive slices of nearly equal sizes."""
    k = max(1, math.ceil(n / block))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@COUPLINGS.decorator("ot")
class OTCoupling(Coupling):
    r"""Exact minibatch optimal transport: the source of a batch reordered by the
    assignment that minimises the batch's total squared distance (OT-CFM, Tong et al.
    2024; Pooladian et al. 2023), :func:`ot_assignment`.

    A batch of N points costs O(N^3) to assign. A training batch of up to ``block``
    points is assigned in one piece; a larger one (the validation set, which the trainer
    sends through the loss as one batch) is cut into consecutive blocks of at most
    ``block`` points of nearly equal sizes, each assigned exactly, so the validation loss
    pairs within blocks of about the training batch's size and its cost stays linear in
    N. A training batch larger than ``block`` is refused (:meth:`check_batch_size`), and
    so is a batch size of 1, where there is nothing to pair.

    The assignment is exact, by the faster of scipy's and POT's solvers at the batch's
    size on this machine (``solver="auto"``, :mod:`.assignment`), or by the one named.

    Its defaults in :class:`~.model.FlowMatching` are its own: no Gaussian skip (that
    field assumes independent pairs, :attr:`Coupling.gaussian_skip_exact`) and the time
    sampler of :meth:`default_times`.

    Warning:
        On a conditional model this pairs across classes, which C2OT (Cheng and Schwing
        2025) shows to hurt: use ``class-ot`` there.

    Arguments:
        block: the largest batch assigned in one piece, >= 2.
        solver: ``"auto"``, ``"scipy"`` or ``"pot"``.

    Raises:
        ValueError: for a block below 2 or another solver.
    """

    name = "ot"
    gaussian_skip_exact = False

    def __init__(self, block: int = DEFAULT_OT_BLOCK, solver: str = "auto"):
        from ..data import check_int
        from .assignment import check_solver

        self.block = check_int(block, "block", minimum=2)
        self.solver = check_solver(solver)

    def arguments(self):
        return {"block": self.block, "solver": self.solver}

    @classmethod
    def default_times(cls, conditional: bool) -> dict[str, Any]:
        """U[0, 1] for an unconditional model, Beta(3, 1) for a conditional one.

        The paths an OT coupling trains on are nearly straight, so its field matters all
        along them, near the source (which few Euler steps rely on) as much as near the
        data; a conditional model's class accuracy (landing inside its own thin ring)
        also needs the field near the data. Measured on the rings with the default
        recipe (``benchmarks/README.md``, "Minibatch OT"): fm with ``ot``, W2 at 4 Euler
        steps, uniform below Beta(5, 1); cfm with ``class-ot``, class accuracy, Beta(3, 1)
        above U[0, 1] and Beta(7, 1).
        """
        if conditional:
            return {"name": "beta", "alpha": OT_CONDITIONAL_TIME_ALPHA}
        return {"name": "uniform"}

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < 2:
            raise ValueError(
                f"the {self.name} coupling pairs the points of a batch with each other: "
                f"batch size {batch_size} leaves nothing to pair; use a batch size >= 2"
            )
        if batch_size > self.block:
            raise ValueError(
                f"the {self.name} coupling assigns at most {self.block} points at once "
                f"(its block), but the batch size is {batch_size}; use a smaller batch or "
                f"a coupling with block >= {batch_size}"
            )

    def _pair_block(self, x0, x1, labels):
        from .assignment import ot_assignment

        return x0[ot_assignment(x0, x1, self.solver)]

    def pair(self, x0, x1, labels=None):
        import torch

        out = torch.empty_like(x0)
        for s in _blocks(len(x1), self.block):
            out[s] = self._pair_block(x0[s], x1[s], None if labels is None else labels[s])
        return out


@COUPLINGS.decorator("class-ot")
class ClassOTCoupling(OTCoupling):
    """Minibatch optimal transport within each class: the source points drawn for the
    data of class k are assigned only to data of class k (C2OT's condition-aware OT,
    Cheng and Schwing 2025, for discrete conditions). For a conditional model only; the
    blocks are those of :class:`OTCoupling`.

    Arguments:
        block: the largest batch assigned in one piece, >= 2.
        solver: ``"auto"``, ``"scipy"`` or ``"pot"``.
    """

    name = "class-ot"
    needs_labels = True

    def _pair_block(self, x0, x1, labels):
        if labels is None:
            raise ValueError("the class-ot coupling pairs within classes: it needs labels")
        import torch

        from .assignment import ot_assignment

        out = torch.empty_like(x0)
        for k in torch.unique(labels):
            idx = (labels == k).nonzero()[:, 0]
            out[idx] = x0[idx][ot_assignment(x0[idx], x1[idx], self.solver)]
        return out


#: How far, in standardized units, a data point may be from the recorded one it is
#: looked up as (float32 rounding of the standardization is about 1e-7).
PAIRS_TOLERANCE = 1e-4


@COUPLINGS.decorator("pairs")
class PairsCoupling(Coupling):
    r"""Fixed pairs: every data point with the source point it was generated from, as
    ``flowscope reflow`` records them (:func:`flowscope.reflow.draw_pairs`), so that flow
    matching on them trains the 2-rectified flow (or, applied again, the k-rectified one)
    of Liu et al. 2022.

    The file (``.npz``) holds ``x`` (N, D), the generated points in data units (the
    reflow run's data, which :func:`~flowscope.data.load_points` reads), ``labels`` (N,)
    for a conditional model, ``x0`` (N, D), the source point of each in standardized
    units, and ``loc`` and ``scale``, the standardization those units are (the parent
    model's: (D,) each, or (C, D) per class); a model with this coupling keeps that
    standardization (:meth:`coordinates`) instead of fitting its own, so that its source
    stays the parent's. :meth:`pair` looks each data point of a batch up among the
    recorded ones (a k-d tree in standardized units, to :data:`PAIRS_TOLERANCE`) and
    returns its source point; the drawn source points are not used.

    Its defaults for :class:`~.model.FlowMatching` are rectified flow's (Liu et al. 2022,
    Algorithm 1): t ~ U[0, 1] (:meth:`default_times`) and no Gaussian skip
    (:attr:`gaussian_skip_exact` is false). Each sample is a function of its own source
    point, so E[x1 | x0] != 0 and the skip's field, exact for independent pairs, does not
    describe these; and the few Euler steps a rectified flow is made for read the field
    near t = 0 (one step only at t = 0), where the independent coupling's Beta(5, 1)
    (density 5 t^4) hardly trains it.

    Arguments:
        path: the file.
        sha256: the expected SHA-256 (a reloaded run's), or ``None``.

    Raises:
        ValueError: for a missing, changed or malformed file.
    """

    name = "pairs"
    fixed = True
    gaussian_skip_exact = False

    @classmethod
    def default_times(cls, conditional: bool) -> dict[str, Any]:
        """U[0, 1], conditional or not: rectified flow's (Liu et al. 2022, Algorithm 1)."""
        return {"name": "uniform"}

    def __init__(self, path: str, sha256: str | None = None):
        import numpy as np
        import torch
        from scipy.spatial import cKDTree

        from ..data import recorded_file

        self.path, self.sha256 = recorded_file(path, sha256, "pairs file")
        with np.load(self.path, allow_pickle=False) as f:
            missing = [k for k in ("x", "x0", "loc", "scale") if k not in f]
            if missing:
                raise ValueError(f"pairs file {self.path}: lacks the arrays {missing}")
            x, x0 = (torch.from_numpy(np.asarray(f[k], np.float64)) for k in ("x", "x0"))
            self.loc, self.scale = (torch.from_numpy(np.asarray(f[k])) for k in ("loc", "scale"))
            labels = torch.from_numpy(np.asarray(f["labels"])).long() if "labels" in f else None
        if x.ndim != 2 or x.shape != x0.shape or self.loc.shape[-1] != x.shape[1]:
            raise ValueError(
                f"pairs file {self.path}: x {tuple(x.shape)}, x0 {tuple(x0.shape)} and loc "
                f"{tuple(self.loc.shape)} do not fit together"
            )
        self.x0 = x0
        self._tree = cKDTree(self._standardized(x, labels).numpy())

    def arguments(self):
        return {"path": self.path, "sha256": self.sha256}

    def coordinates(self):
        return self.loc, self.scale

    def _standardized(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.loc.ndim == 1:
            return (x - self.loc.double()) / self.scale.double()
        if labels is None:
            raise ValueError(f"pairs file {self.path}: is standardized per class, has no labels")
        return (x - self.loc.double()[labels]) / self.scale.double()[labels]

    def pair(self, x0, x1, labels=None):
        import numpy as np
        import torch

        dist, idx = self._tree.query(x1.detach().double().cpu().numpy())
        far = dist > PAIRS_TOLERANCE
        if far.any():
            row = int(np.flatnonzero(far)[0])
            raise ValueError(
                f"data point {row} of the batch is {float(dist[row]):.3g} standardized units "
                f"from every point of the pairs file {self.path}: a pairs coupling trains "
                "only on the points of its file (flowscope reflow writes both)"
            )
        return self.x0[torch.from_numpy(idx)].to(x0.device, x0.dtype)


def __getattr__(name: str) -> Any:
    # ot_assignment, the OT couplings' solver, is :mod:`.assignment`'s (scipy): still
    # importable from here, where it used to be.
    if name == "ot_assignment":
        from .assignment import ot_assignment

        return ot_assignment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
