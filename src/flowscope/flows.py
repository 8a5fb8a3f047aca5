"""Normalizing flows from affine coupling and permutation layers (the study's section 3, Eqs. 1-9).

References:
    Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. 2017, arXiv:1605.08803.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import FlowModel, standard_normal_log_prob

__all__ = ["LEAKY_SLOPE", "AffineCoupling", "Permutation", "NormalizingFlow"]

#: The negative slope of the LeakyReLU between a coupling network's layers.
LEAKY_SLOPE = 0.01


class AffineCoupling(nn.Module):
    r"""Affine coupling layer (the study's Eqs. 3-6).

    Splits z into (z_l, z_r), with z_l the first ``features // 2`` coordinates. Two
    networks map z_l to log s and to b; then

    .. math:: y_r = e^{\log s} \odot z_r + b, \qquad z_r = (y_r - b) \odot e^{-\log s}

    and the inverse's log|det| is ``-sum(log s)`` (Eq. 6), computed in log space.

    Each network is ``linear_layers`` Linear layers of width ``hidden`` with LeakyReLU
    between them (none after the last). The two networks' weights are stored stacked,
    ``weights[i]`` of shape (2, in, out) (index 0: log s, index 1: b), so one batched
    product evaluates both: same math as two separate ``nn.Sequential``, half the calls.

    Arguments:
        features: the dimension D >= 2.
        hidden: width of the hidden layers.
        linear_layers: number of Linear layers per network, >= 1.
        log_scale_bound: if set to c, log s is softly bounded as ``c * tanh(log s / c)``
            (Eq. 6 then uses the bounded value); ``None`` leaves it free.
    """

    def __init__(
        self,
        features: int = 2,
        hidden: int = 8,
        linear_layers: int = 5,
        log_scale_bound: float | None = None,
    ):
        super().__init__()
        if features < 2:
            raise ValueError(f"a coupling needs features >= 2, got {features}")
        if linear_layers < 1 or hidden < 1:
            raise ValueError("linear_layers and hidden must be >= 1")
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}")
        self.split = features // 2
        dims = [self.split] + [hidden] * (linear_layers - 1) + [features - self.split]
        self.dims = dims
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            # The initialisation of nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(
                nn.Parameter(torch.empty(2, fan_in, fan_out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(2, 1, fan_out).uniform_(-bound, bound)))
        self.log_scale_bound = log_scale_bound

    @property
    def num_weights(self) -> int:
        """Number of scalar weights of the two networks."""
        return sum(2 * a * b + 2 * b for a, b in zip(self.dims[:-1], self.dims[1:], strict=True))

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (weight (2, in, out), bias (2, 1, out)) of every Linear layer, in order."""
        theta = self.__dict__.get("_theta")
        if theta is None:
            return list(zip(self.weights, self.biases, strict=True))
        out, o = [], self._offset
        for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
            w = theta[o : o + 2 * a * b].view(2, a, b)
            o += 2 * a * b
            out.append((w, theta[o : o + 2 * b].view(2, 1, b)))
            o += 2 * b
        return out

    def _bind(self, theta: nn.Parameter, offset: int) -> None:
        """Let this coupling read its weights from ``theta[offset:]`` (a flow's flat
        parameter, laid out as :meth:`pairs` lists them) instead of owning them."""
        del self.weights, self.biases
        object.__setattr__(self, "_theta", theta)  # not registered: the flow owns it
        self._offset = offset

    def log_scale_and_shift(self, z_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two networks: z_l (N, D_l) -> (log s, b), each (N, D_r)."""
        a = z_l.unsqueeze(0).expand(2, -1, -1)  # (2, N, D_l)
        pairs = self.pairs()
        last = len(pairs) - 1
        for i, (w, b) in enumerate(pairs):
            a = torch.baddbmm(b, a, w)  # (2, N, out)
            if i < last:
                a = F.leaky_relu(a, LEAKY_SLOPE)
        log_s, shift = a[0], a[1]
        if self.log_scale_bound is not None:
            c = self.log_scale_bound
            log_s = c * torch.tanh(log_s / c)
        return log_s, shift

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h(z): z (N, D) -> (y (N, D), log|det dh/dz| (N,))."""
        z_l, z_r = z[:, : self.split], z[:, self.split :]
        log_s, b = self.log_scale_and_shift(z_l)
        return torch.cat([z_l, z_r * log_s.exp() + b], dim=1), log_s.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h^{-1}(y) (Eq. 4): y (N, D) -> (z (N, D), log|det dh^{-1}/dy| (N,)) (Eq. 6)."""
        y_l, y_r = y[:, : self.split], y[:, self.split :]
        log_s, b = self.log_scale_and_shift(y_l)
        return torch.cat([y_l, (y_r - b) * (-log_s).exp()], dim=1), -log_s.sum(dim=1)


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

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (N, D) -> (z[:, perm] (N, D), zeros (N,))."""
        return z.index_select(1, self.perm), z.new_zeros(z.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The matching inverse: y (N, D) -> (y[:, argsort(perm)], zeros (N,))."""
        return y.index_select(1, self.inv), y.new_zeros(y.shape[0])


class NormalizingFlow(FlowModel):
    r"""A normalizing flow x = phi(z), z ~ N(0, I): couplings with permutations between them.

    Layers: coupling, permutation, coupling, ..., coupling (no permutation after the last;
    the study's section 3.1.5). Trained by maximum likelihood (Eq. 9):

    .. math:: \log p(x) = \log p_z(\phi^{-1}(x)) + \log|\det \partial\phi^{-1}(x)/\partial x|

    The model carries the standardization of its training data: :meth:`sample` returns and
    :meth:`log_prob` takes data units; ``log_prob(x, standardized=True)`` gives the density
    of the standardized point, the quantity the training loss is in. All coupling weights
    live in one flat parameter ``theta``, which each coupling reads views of: one tensor for
    the optimizer (whose cost grows with the number of tensors) and for the trainer's fused
    kernel.

    Arguments:
        features: the dimension D >= 2.
        couplings: number of affine coupling layers, >= 0 (0 gives a Gaussian).
        hidden: hidden width of each coupling network (the study: 8).
        linear_layers: Linear layers per network (the study: 5).
        log_scale_bound: soft bound c on log s, ``c * tanh(log s / c)``, or ``None`` for
            none (see :class:`AffineCoupling`). Without a bound, single batches of the
            study's recipe can blow the loss up beyond recovery; the default, 1.0, is the
            bound that trained best (``benchmarks/README.md``).

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
        couplings: int = 15,
        hidden: int = 8,
        linear_layers: int = 5,
        log_scale_bound: float | None = 1.0,
    ):
        super().__init__(features)
        if couplings < 0:
            raise ValueError(f"couplings must be >= 0, got {couplings}")
        self._args = dict(
            features=features,
            couplings=couplings,
            hidden=hidden,
            linear_layers=linear_layers,
            log_scale_bound=log_scale_bound,
        )
        layers: list[nn.Module] = []
        for k in range(couplings):
            layers.append(AffineCoupling(features, hidden, linear_layers, log_scale_bound))
            if k < couplings - 1:
                layers.append(Permutation(features))
        coupling_layers = [m for m in layers if isinstance(m, AffineCoupling)]
        # All weights live in one flat parameter; each coupling reads views of its slice.
        flat = [t.detach().reshape(-1) for c in coupling_layers for p in c.pairs() for t in p]
        self.theta = nn.Parameter(torch.cat(flat) if flat else torch.zeros(0))
        offset = 0
        for c in coupling_layers:
            c._bind(self.theta, offset)
            offset += c.num_weights
        self.layers = nn.ModuleList(layers)
        self.couplings = couplings

    def config(self) -> dict[str, Any]:
        return dict(self._args)

    def coupling_layers(self) -> list[AffineCoupling]:
        """The couplings, in forward order."""
        return [m for m in self.layers if isinstance(m, AffineCoupling)]

    # -- the hooks (standardized units) ----------------------------------------------------
    def _inverse(self, y: torch.Tensor, labels: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """phi^{-1} (Eqs. 7-8): y (N, D) -> (z (N, D), log|det d phi^{-1}/dy| (N,))."""
        log_det = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            if isinstance(layer, Permutation):
                y = y.index_select(1, layer.inv)
            else:
                y, ld = layer.inverse(y)
                log_det = log_det + ld
        return y, log_det

    def _encode(self, y: torch.Tensor, labels: None = None) -> torch.Tensor:
        return self._inverse(y)[0]

    def _decode(self, z: torch.Tensor, labels: None = None) -> torch.Tensor:
        """phi (Eq. 1): z (N, D) -> y (N, D)."""
        for layer in self.layers:
            z = layer(z)[0]
        return z

    def _loss(self, y, labels, generator):
        """Eq. 9: the mean negative log-likelihood of standardized points y (N, D)."""
        z, log_det = self._inverse(y)
        return -(standard_normal_log_prob(z) + log_det).mean()

    def _trajectory(self, state: torch.Tensor, labels: None, inverse: bool) -> torch.Tensor:
        """The state after every coupling (see :meth:`trajectory`)."""
        order = list(reversed(self.layers)) if inverse else list(self.layers)
        states = []
        perms = [m.perm for m in self.layers if isinstance(m, Permutation)]
        for layer in [None, *order]:
            if layer is not None:
                state = layer.inverse(state)[0] if inverse else layer(state)[0]
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
            labels: ``None`` (the flow is unconditional).
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
        z, log_det = self._inverse(y)
        log_pz = standard_normal_log_prob(z)
        return {
            "loss": float(-(log_pz + log_det).mean()),
            "log_pz": float(log_pz.mean()),
            "log_det": float(log_det.mean()),
        }
