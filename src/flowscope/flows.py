"""Normalizing flows from coupling and permutation layers: the study's affine coupling flow
(its section 3, Eqs. 1-9) and the neural spline flow, each optionally class-conditional.

A coupling flow is a stack of couplings with permutations between them
(:class:`CouplingFlow`); a coupling (:class:`Coupling`) leaves half the coordinates as they
are and maps the other half by an elementwise bijection whose parameters a small network
computes from the first half and, in a conditional flow, from a class embedding. The
affine coupling's bijection is a scale and shift (:class:`AffineCoupling`), the spline
coupling's a monotonic rational-quadratic spline (:class:`SplineCoupling`, the transform
itself in :mod:`flowscope.splines`). :class:`NormalizingFlow` and :class:`SplineFlow` are
the two flows.

References:
    Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. 2017, arXiv:1605.08803.
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. 2019, arXiv:1906.04032.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import defaults
from .base import FlowModel, standard_normal_log_prob
from .splines import rational_quadratic_inverse, raw_size, spline_parameters, spline_transform

__all__ = [
    "LEAKY_SLOPE",
    "AffineCoupling",
    "Coupling",
    "CouplingFlow",
    "NormalizingFlow",
    "Permutation",
    "SplineCoupling",
    "SplineFlow",
]

#: The negative slope of the LeakyReLU between a coupling network's layers.
LEAKY_SLOPE = 0.01

#: Size of the class embedding of a conditional coupling flow, by default.
DEFAULT_EMBEDDING_DIM = defaults.DEFAULT_EMBEDDING_DIM
_NF, _NSF = defaults.NF_DEFAULTS, defaults.NSF_DEFAULTS


def views(pieces, shapes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) pairs from flat ``pieces`` (weight, bias, weight, ...) of a coupling's
    weights, viewed with ``shapes`` (:meth:`Coupling.shapes`)."""
    pieces = iter(pieces)
    return [(next(pieces).view(w), next(pieces).view(b)) for w, b in shapes]


class Coupling(nn.Module):
    r"""Base of the coupling layers: the conditioner network and its weights.

    Splits z into (z_l, z_r), with z_l the first ``features // 2`` coordinates, and maps
    z_r by an elementwise bijection whose parameters the conditioner computes from z_l
    (and from a class vector, in a conditional flow); z_l passes unchanged, so the
    Jacobian is triangular and its log|det| is the bijection's. A subclass sets
    ``networks`` and implements :meth:`transform`.

    The conditioner is ``networks`` MLPs of ``linear_layers`` Linear layers of width
    ``hidden`` with LeakyReLU between them (none after the last), their weights stacked:
    ``weights[i]`` of shape (networks, in, out), so that one batched product evaluates all
    of them. The first layer's input is z_l followed by the class vector (N, C) of a
    conditional flow.

    Arguments:
        features: the dimension D >= 2.
        hidden: width of the hidden layers.
        linear_layers: number of Linear layers per network, >= 1.
        outputs: numbers each network computes per coordinate of z_r.
        context_features: size C of the class vector (0: unconditional).

    Raises:
        ValueError: for features < 2, or a width or depth < 1.
    """

    #: How many networks the conditioner stacks (the affine coupling: 2, for log s and b).
    networks: ClassVar[int] = 1

    def __init__(
        self,
        features: int = 2,
        hidden: int = 8,
        linear_layers: int = 5,
        outputs: int = 1,
        context_features: int = 0,
    ):
        super().__init__()
        if features < 2:
            raise ValueError(f"a coupling needs features >= 2, got {features}")
        if linear_layers < 1 or hidden < 1:
            raise ValueError("linear_layers and hidden must be >= 1")
        if context_features < 0:
            raise ValueError(f"context_features must be >= 0, got {context_features}")
        self.split = features // 2
        self.context_features = context_features
        d_in, d_out = self.split + context_features, (features - self.split) * outputs
        dims = [d_in] + [hidden] * (linear_layers - 1) + [d_out]
        self.dims = dims
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        k = self.networks
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            # The initialisation of nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(
                nn.Parameter(torch.empty(k, fan_in, fan_out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(k, 1, fan_out).uniform_(-bound, bound)))

    @property
    def num_weights(self) -> int:
        """Number of scalar weights of the conditioner."""
        k = self.networks
        return sum(k * a * b + k * b for a, b in zip(self.dims[:-1], self.dims[1:], strict=True))

    def shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The shapes of every Linear layer's (weight, bias), in order: (networks, in, out)
        and (networks, 1, out)."""
        k = self.networks
        return [((k, a, b), (k, 1, b)) for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)]

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (weight (networks, in, out), bias (networks, 1, out)) of every Linear layer,
        in order."""
        theta = self.__dict__.get("_theta")
        if theta is None:
            return list(zip(self.weights, self.biases, strict=True))
        size = self.num_weights
        return views(theta[self._offset : self._offset + size].split(self.sizes()), self.shapes())

    def sizes(self) -> list[int]:
        """The number of weights of each tensor of :meth:`pairs`, in theta's order."""
        return [math.prod(shape) for pair in self.shapes() for shape in pair]

    def _bind(self, theta: nn.Parameter, offset: int) -> None:
        """Let this coupling read its weights from ``theta[offset:]`` (a flow's flat
        parameter, laid out as :meth:`pairs` lists them) instead of owning them."""
        del self.weights, self.biases
        object.__setattr__(self, "_theta", theta)  # not registered: the flow owns it
        self._offset = offset

    def conditioner(
        self,
        z_l: torch.Tensor,
        context: torch.Tensor | None = None,
        pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """The networks: z_l (N, D_l) and the class vector (N, C) or ``None`` ->
        (networks, N, out); ``pairs`` are the weights, as :meth:`pairs` gives them."""
        a = z_l if context is None else torch.cat([z_l, context], dim=1)  # (N, D_l + C)
        a = a.unsqueeze(0).expand(self.networks, -1, -1)
        pairs = self.pairs() if pairs is None else pairs
        last = len(pairs) - 1
        for i, (w, b) in enumerate(pairs):
            a = torch.baddbmm(b, a, w)  # (networks, N, out)
            if i < last:
                a = F.leaky_relu(a, LEAKY_SLOPE)
        return a

    def transform(
        self, v: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The elementwise bijection of v = z_r (N, D_r) with the conditioner's ``params``
        (networks, N, out), or its inverse: -> (output (N, D_r), log|det| (N,))."""
        raise NotImplementedError

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None, pairs=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h(z): z (N, D), class vector (N, C) or ``None`` -> (y (N, D), log|det dh/dz| (N,));
        ``pairs``: the weights, if not :meth:`pairs` (see :meth:`CouplingFlow.weights`)."""
        z_l, z_r = z.split([self.split, z.shape[1] - self.split], dim=1)
        y_r, log_det = self.transform(z_r, self.conditioner(z_l, context, pairs), inverse=False)
        return torch.cat([z_l, y_r], dim=1), log_det

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None, pairs=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h^{-1}(y): y (N, D) -> (z (N, D), log|det dh^{-1}/dy| (N,))."""
        y_l, y_r = y.split([self.split, y.shape[1] - self.split], dim=1)
        z_r, log_det = self.transform(y_r, self.conditioner(y_l, context, pairs), inverse=True)
        return torch.cat([y_l, z_r], dim=1), log_det


class AffineCoupling(Coupling):
    r"""Affine coupling layer (the study's Eqs. 3-6).

    Two networks map z_l to log s and to b; then

    .. math:: y_r = e^{\log s} \odot z_r + b, \qquad z_r = (y_r - b) \odot e^{-\log s}

    and the inverse's log|det| is ``-sum(log s)`` (Eq. 6), computed in log space. The two
    networks' weights are stacked (index 0: log s, index 1: b; see :class:`Coupling`): same
    math as two separate ``nn.Sequential``, half the calls.

    Arguments:
        features: the dimension D >= 2.
        hidden: width of the hidden layers.
        linear_layers: number of Linear layers per network, >= 1.
        log_scale_bound: if set to c, log s is softly bounded as ``c * tanh(log s / c)``
            (Eq. 6 then uses the bounded value); ``None`` leaves it free.
        context_features: size of the class vector of a conditional flow (0: none).
    """

    networks = 2

    def __init__(
        self,
        features: int = 2,
        hidden: int = 8,
        linear_layers: int = 5,
        log_scale_bound: float | None = None,
        context_features: int = 0,
    ):
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}")
        super().__init__(features, hidden, linear_layers, 1, context_features)
        self.log_scale_bound = log_scale_bound

    def _log_scale_and_shift(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, shift = params[0], params[1]
        if self.log_scale_bound is not None:
            c = self.log_scale_bound
            log_s = c * torch.tanh(log_s / c)
        return log_s, shift

    def log_scale_and_shift(
        self, z_l: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two networks: z_l (N, D_l) -> (log s, b), each (N, D_r)."""
        return self._log_scale_and_shift(self.conditioner(z_l, context))

    def transform(self, v, params, inverse):
        """Eq. 3 (z_r -> y_r), or with ``inverse`` Eq. 4 (y_r -> z_r) and Eq. 6."""
        log_s, b = self._log_scale_and_shift(params)
        if inverse:
            return (v - b) * (-log_s).exp(), -log_s.sum(dim=1)
        return v * log_s.exp() + b, log_s.sum(dim=1)


class SplineCoupling(Coupling):
    r"""Rational-quadratic spline coupling (Durkan et al. 2019, section 3).

    One network maps z_l to 3K - 1 numbers per coordinate of z_r: the bins' widths and
    heights and the interior derivatives of a monotonic rational-quadratic spline on
    [-B, B] (:func:`~flowscope.splines.spline_parameters`, with floors on all three and
    derivative 1 at both ends), the identity outside (linear tails). The direction from
    the data to the latent (:meth:`inverse`, the one training evaluates) applies the
    spline g itself (:func:`~flowscope.splines.rational_quadratic`), the direction of
    sampling (:meth:`forward`) its inverse, the root of a quadratic
    (:func:`~flowscope.splines.rational_quadratic_inverse`); both are exact.

    Arguments:
        features: the dimension D >= 2.
        hidden: width of the hidden layers.
        linear_layers: number of Linear layers of the network, >= 1.
        bins: K >= 1, the number of bins.
        tail_bound: B > 0; outside [-B, B] the coupling is the identity.
        context_features: size of the class vector of a conditional flow (0: none).
        min_bin_width, min_bin_height, min_derivative: the floors, see
            :func:`~flowscope.splines.spline_parameters`.

    Raises:
        ValueError: for bins < 1, tail_bound <= 0 or floors that leave no room.
    """

    networks = 1

    def __init__(
        self,
        features: int = 2,
        hidden: int = _NSF["hidden"],
        linear_layers: int = _NSF["linear_layers"],
        bins: int = _NSF["bins"],
        tail_bound: float = _NSF["tail_bound"],
        context_features: int = 0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        if not (isinstance(bins, int) and bins >= 1):
            raise ValueError(f"bins must be an int >= 1, got {bins!r}")
        if not (math.isfinite(tail_bound) and tail_bound > 0):
            raise ValueError(f"tail_bound must be a positive number, got {tail_bound!r}")
        super().__init__(features, hidden, linear_layers, raw_size(bins), context_features)
        self.bins, self.tail_bound = bins, float(tail_bound)
        self.floors = dict(
            min_width=min_bin_width, min_height=min_bin_height, min_derivative=min_derivative
        )
        spline_parameters(torch.zeros(raw_size(bins)), self.tail_bound, **self.floors)  # checks

    def raw(self, params: torch.Tensor) -> torch.Tensor:
        """The conditioner's params (1, N, D_r (3K - 1)) as the splines' unconstrained
        numbers (N, D_r, 3K - 1)."""
        return params.squeeze(0).unflatten(1, (-1, raw_size(self.bins)))

    def spline(self, params: torch.Tensor):
        """The splines of a batch, from the conditioner's params (1, N, D_r (3K - 1)):
        :class:`~flowscope.splines.Spline` of widths (N, D_r, K), heights (N, D_r, K)
        and derivatives (N, D_r, K + 1)."""
        return spline_parameters(self.raw(params), self.tail_bound, **self.floors)

    def transform(self, v, params, inverse):
        """y_r = g^{-1}(z_r) (sampling), or with ``inverse`` z_r = g(y_r) (the data to
        the latent) and log|dz_r/dy_r|."""
        if inverse:  # the spline itself, with the backward pass training needs written out
            out, log_det = spline_transform(v, self.raw(params), self.tail_bound, **self.floors)
        else:
            out, log_det = rational_quadratic_inverse(v, *self.spline(params), self.tail_bound)
        return out, log_det.sum(dim=1)


class Permutation(nn.Module):
    """A fixed permutation of the coordinates; log|det| = 0 (the study's section 3.1.5).

    The default rotates the coordinates by ``features // 2`` places so that the block a
    coupling left untouched is the block the next coupling transforms; in 2D it swaps the
    two coordinates. (A random permutation of two elements is the identity half the time.)

    Arguments:
        features: the dimension D >= 2.
        perm: an explicit permutation of ``range(features)``; it must not be the identity.

    Raises:
        ValueError: if ``perm`` is not a permutation of ``range(features)``, or is the identity.
    """

    def __init__(self, features: int = 2, perm: list[int] | None = None):
        super().__init__()
        if perm is None:
            perm = [(i + features // 2) % features for i in range(features)]
        if sorted(perm) != list(range(features)):
            raise ValueError(f"perm must be a permutation of range({features}), got {perm}")
        if list(perm) == list(range(features)):
            raise ValueError("perm is the identity; a permutation layer must move coordinates")
        p = torch.as_tensor(perm, dtype=torch.long)
        self.register_buffer("perm", p, persistent=False)
        self.register_buffer("inv", torch.argsort(p), persistent=False)

    def forward(self, z: torch.Tensor, context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (N, D) -> (z[:, perm] (N, D), zeros (N,)); a class vector is ignored."""
        return z.index_select(1, self.perm), z.new_zeros(z.shape[0])

    def inverse(self, y: torch.Tensor, context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The matching inverse: y (N, D) -> (y[:, argsort(perm)], zeros (N,))."""
        return y.index_select(1, self.inv), y.new_zeros(y.shape[0])


class CouplingFlow(FlowModel):
    r"""A flow x = phi(z), z ~ N(0, I): couplings with permutations between them.

    Layers: coupling, permutation, coupling, ..., coupling (no permutation after the last;
    the study's section 3.1.5). Trained by maximum likelihood (Eq. 9):

    .. math:: \log p(x) = \log p_z(\phi^{-1}(x)) + \log|\det \partial\phi^{-1}(x)/\partial x|

    The model carries the standardization of its training data: :meth:`sample` returns and
    :meth:`log_prob` takes data units; ``log_prob(x, standardized=True)`` gives the density
    of the standardized point, the quantity the training loss is in. All coupling weights
    live in one flat parameter ``theta``, which each coupling reads views of: one tensor for
    the optimizer (whose cost grows with the number of tensors) and for the trainer's fused
    kernel.

    A conditional flow (``num_classes``) looks up a learned class vector
    (``nn.Embedding``, ``embedding_dim`` wide) and feeds it to every coupling's
    conditioner beside z_l, so that ``log_prob(x, labels)`` is the density of x given its
    class. Subclasses (:class:`NormalizingFlow`, :class:`SplineFlow`) choose the coupling.

    Arguments:
        features: the dimension D >= 2.
        couplings: number of coupling layers, >= 0 (0 gives a Gaussian).
        coupling: builds one coupling from its ``context_features`` (the class vector's
            size, 0 for an unconditional flow).
        num_classes: classes of a conditional flow, or ``None``.
        embedding_dim: size of the class vector of a conditional flow.
        standardize: ``"class"`` (each class by its own mean and scale) or ``"global"``;
            ``None`` is ``"class"`` for a conditional flow and ``"global"`` otherwise.

    Raises:
        ValueError: for couplings < 0, embedding_dim < 1, or a bad ``standardize``.
    """

    def __init__(
        self,
        features: int,
        couplings: int,
        coupling: Callable[[int], Coupling],
        *,
        num_classes: int | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        standardize: str | None = None,
    ):
        if standardize is None:
            standardize = "global" if num_classes is None else "class"
        super().__init__(features, num_classes, standardize)
        if couplings < 0:
            raise ValueError(f"couplings must be >= 0, got {couplings}")
        if not (isinstance(embedding_dim, int) and embedding_dim >= 1):
            raise ValueError(f"embedding_dim must be an int >= 1, got {embedding_dim!r}")
        self.standardize = standardize
        context = 0 if num_classes is None else embedding_dim
        layers: list[nn.Module] = []
        for k in range(couplings):
            layers.append(coupling(context))
            if k < couplings - 1:
                layers.append(Permutation(features))
        coupling_layers = [m for m in layers if isinstance(m, Coupling)]
        # All weights live in one flat parameter; each coupling reads views of its slice.
        flat = [t.detach().reshape(-1) for c in coupling_layers for p in c.pairs() for t in p]
        self.theta = nn.Parameter(torch.cat(flat) if flat else torch.zeros(0))
        offset = 0
        for c in coupling_layers:
            c._bind(self.theta, offset)
            offset += c.num_weights
        self.layers = nn.ModuleList(layers)
        self.couplings = couplings
        self.embedding = None if num_classes is None else nn.Embedding(num_classes, embedding_dim)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, recorded by each subclass in ``_args``."""
        return dict(self._args)

    def coupling_layers(self) -> list[Coupling]:
        """The couplings, in forward order."""
        return [m for m in self.layers if isinstance(m, Coupling)]

    def weights(self) -> list[list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """For each layer, its coupling's (weight, bias) pairs (as :meth:`Coupling.pairs`
        gives them), or ``None`` for a permutation.

        The views are cut from ``theta`` by one ``split``: in autograd's graph that is one
        node, where a slice per tensor would each add a zeroed theta-sized gradient to the
        backward pass.
        """
        couplings = self.coupling_layers()
        if not couplings:
            return [None] * len(self.layers)
        pieces = iter(self.theta.split([n for c in couplings for n in c.sizes()]))
        pairs = iter([views([next(pieces) for _ in c.sizes()], c.shapes()) for c in couplings])
        return [next(pairs) if isinstance(m, Coupling) else None for m in self.layers]

    def context(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The class vectors (N, embedding_dim) of labels (N,), or ``None`` (unconditional)."""
        return None if self.embedding is None else self.embedding(labels)

    # -- the hooks (standardized units) ----------------------------------------------------
    def _inverse(self, y: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """phi^{-1} (Eqs. 7-8): y (N, D) -> (z (N, D), log|det d phi^{-1}/dy| (N,))."""
        context = self.context(labels)
        log_det = y.new_zeros(y.shape[0])
        for layer, pairs in zip(reversed(self.layers), reversed(self.weights()), strict=True):
            if isinstance(layer, Permutation):
                y = y.index_select(1, layer.inv)
            else:
                y, ld = layer.inverse(y, context, pairs)
                log_det = log_det + ld
        return y, log_det

    def _encode(self, y: torch.Tensor, labels=None) -> torch.Tensor:
        return self._inverse(y, labels)[0]

    def _decode(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """phi (Eq. 1): z (N, D) -> y (N, D)."""
        context = self.context(labels)
        for layer, pairs in zip(self.layers, self.weights(), strict=True):
            z = layer(z, context)[0] if pairs is None else layer(z, context, pairs)[0]
        return z

    def _loss(self, y, labels, generator):
        """Eq. 9: the mean negative log-likelihood of standardized points y (N, D)."""
        z, log_det = self._inverse(y, labels)
        return -(standard_normal_log_prob(z) + log_det).mean()

    def _trajectory(self, state: torch.Tensor, labels, inverse: bool) -> torch.Tensor:
        """The state after every coupling (see :meth:`trajectory`)."""
        context = self.context(labels)
        order = list(reversed(self.layers)) if inverse else list(self.layers)
        states = []
        perms = [m.perm for m in self.layers if isinstance(m, Permutation)]
        for layer in [None, *order]:
            if layer is not None:
                step = layer.inverse if inverse else layer
                state = step(state, context)[0]
                if isinstance(layer, Permutation):
                    continue
            states.append(state)
        # The permutations that lie ahead of each recorded state, in forward order: after
        # k couplings going forward they are perms[k-1:] (all of them for k = 0); after m
        # inverse couplings the state sits just before coupling L - m + 1, so perms[L-m:].
        shown = []
        for k, s in enumerate(states):
            is_latent = k == (self.couplings if inverse else 0)
            start = self.couplings - k if inverse else max(k, 1) - 1
            for p in [] if is_latent else perms[start:]:
                s = s.index_select(1, p)
            shown.append(s)
        return torch.stack(shown)

    def trajectory(
        self, points, *, labels: Any = None, inverse: bool = False, units: str = "data"
    ) -> torch.Tensor:
        """The points after every coupling layer, starting with the input.

        Arguments:
            points: latents z (N, D), or with ``inverse=True`` data points x (N, D) in
                data units.
            labels: class ids of a conditional flow (one int or (N,)), else ``None``.
            inverse: follow phi^{-1} from the data to the latent instead.
            units: ``"data"`` maps every state through the model's destandardization (a
                fixed affine map, so that all states share the data's axes), or
                ``"standardized"``.

        Returns:
            (L + 1, N, D) with L = ``couplings``. Entry 0 is the input and entry L the
            output, exactly. The states in between are shown in the data's coordinate
            order: the permutations still ahead of them are applied, as they only relabel
            axes. (The latent z is left as it is; it differs from that order only when the
            permutations do not compose to the identity, e.g. an even number of couplings
            in 2D.)
        """
        return super().trajectory(points, labels=labels, inverse=inverse, units=units)

    @torch.no_grad()
    def validation_terms(self, y, labels, generator=None) -> dict[str, float]:
        """Eq. 9 on standardized points: ``loss`` and its parts ``log_pz`` and ``log_det``."""
        z, log_det = self._inverse(y, labels)
        log_pz = standard_normal_log_prob(z)
        return {
            "loss": float(-(log_pz + log_det).mean()),
            "log_pz": float(log_pz.mean()),
            "log_det": float(log_det.mean()),
        }


class NormalizingFlow(CouplingFlow):
    """The study's normalizing flow: affine couplings (:class:`AffineCoupling`) with
    permutations between them (see :class:`CouplingFlow`).

    Arguments:
        features: the dimension D >= 2.
        couplings: number of affine coupling layers, >= 0 (0 gives a Gaussian).
        hidden: hidden width of each coupling network (the study: 8).
        linear_layers: Linear layers per network (the study: 5).
        log_scale_bound: soft bound c on log s, ``c * tanh(log s / c)``, or ``None`` for
            none (see :class:`AffineCoupling`). Without a bound, single batches of the
            study's recipe can blow the loss up beyond recovery; the default, 1.0, is the
            bound that trained best (``benchmarks/README.md``).
        num_classes, embedding_dim, standardize: a class-conditional flow, see
            :class:`CouplingFlow`.

    Example:
        >>> flow = NormalizingFlow(features=2, couplings=3)
        >>> x = flow.sample(5, generator=torch.Generator().manual_seed(0))
        >>> z, log_det = flow.inverse(x)
        >>> bool(torch.allclose(flow(z), x, atol=1e-5)), flow.log_prob(x).shape
        (True, torch.Size([5]))
    """

    kind = "nf"

    def __init__(
        self,
        features: int = 2,
        couplings: int = _NF["couplings"],
        hidden: int = _NF["hidden"],
        linear_layers: int = _NF["linear_layers"],
        log_scale_bound: float | None = 1.0,
        num_classes: int | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        standardize: str | None = None,
    ):
        def coupling(context: int) -> AffineCoupling:
            return AffineCoupling(features, hidden, linear_layers, log_scale_bound, context)

        super().__init__(
            features,
            couplings,
            coupling,
            num_classes=num_classes,
            embedding_dim=embedding_dim,
            standardize=standardize,
        )
        self._args = dict(
            features=features,
            couplings=couplings,
            hidden=hidden,
            linear_layers=linear_layers,
            log_scale_bound=log_scale_bound,
            num_classes=num_classes,
            embedding_dim=embedding_dim,
            standardize=self.standardize,
        )


class SplineFlow(CouplingFlow):
    """A neural spline flow: rational-quadratic spline couplings
    (:class:`SplineCoupling`) with permutations between them (see :class:`CouplingFlow`).

    Each coupling's spline acts on [-B, B] of the standardized coordinate it transforms
    and is the identity outside (linear tails), so a point far from the data keeps a
    finite density, with the base's Gaussian fall-off. The defaults are sizes chosen by
    measurement on the study's data, and the registry gives the type its own training
    recipe (:data:`~flowscope.models.MODELS`, ``nsf``: batches of 512, Adam lr 5e-3);
    ``benchmarks/README.md`` ("Spline flows and class-conditional flows") has the
    numbers.

    Warning:
        The data should be roughly standardized for [-B, B] to cover it; the model
        standardizes its training data itself (:func:`~flowscope.train.fit`), so this
        holds unless the standardization is set by hand.

    Arguments:
        features: the dimension D >= 2.
        couplings: number of spline couplings, >= 0.
        bins: K, bins of each spline.
        tail_bound: B, in standardized units.
        hidden: hidden width of each coupling network.
        linear_layers: Linear layers of each coupling network.
        num_classes, embedding_dim, standardize: a class-conditional flow, see
            :class:`CouplingFlow`.

    References:
        Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. 2019, arXiv:1906.04032.

    Example:
        >>> flow = SplineFlow(couplings=2, bins=4, hidden=8)
        >>> x = flow.sample(5, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(flow.decode(flow.encode(x)), x, atol=1e-5))
        True
    """

    kind = "nsf"

    def __init__(
        self,
        features: int = 2,
        couplings: int = _NSF["couplings"],
        bins: int = _NSF["bins"],
        tail_bound: float = _NSF["tail_bound"],
        hidden: int = _NSF["hidden"],
        linear_layers: int = _NSF["linear_layers"],
        num_classes: int | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        standardize: str | None = None,
    ):
        def coupling(context: int) -> SplineCoupling:
            return SplineCoupling(features, hidden, linear_layers, bins, tail_bound, context)

        super().__init__(
            features,
            couplings,
            coupling,
            num_classes=num_classes,
            embedding_dim=embedding_dim,
            standardize=standardize,
        )
        self._args = dict(
            features=features,
            couplings=couplings,
            bins=bins,
            tail_bound=float(tail_bound),
            hidden=hidden,
            linear_layers=linear_layers,
            num_classes=num_classes,
            embedding_dim=embedding_dim,
            standardize=self.standardize,
        )
