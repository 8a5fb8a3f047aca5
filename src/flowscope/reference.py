"""The study's normalizing flow written plainly: the baseline of ``flowscope bench``.

Plain eager PyTorch, no tricks: every affine coupling owns two ``nn.Sequential`` networks
(5 ``nn.Linear`` of width 8 with ``nn.LeakyReLU`` between them), one for log s and one for
b (the study's Eq. 3); a coordinate swap sits between consecutive couplings; the base is
N(0, I); the loss is the mean negative log-likelihood (Eq. 9), trained with the default
``torch.optim.Adam``. It is what a careful reader of the exercise would write, and it is
kept obviously correct rather than fast. The benchmark (:mod:`flowscope.bench`) times it
as the contender ``reference-nf`` beside :class:`flowscope.NormalizingFlow`.

:func:`copy_from_flowscope` loads the weights of a :class:`flowscope.NormalizingFlow`, so
the two can be checked to compute the same loss and gradients (``tests/test_bench.py``).

References:
    Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. 2017, arXiv:1605.08803.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(d_in: int, d_out: int, hidden: int = 8, linear_layers: int = 5) -> nn.Sequential:
    """``linear_layers`` Linear layers of width ``hidden``, LeakyReLU between, none after."""
    dims = [d_in] + [hidden] * (linear_layers - 1) + [d_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class Coupling(nn.Module):
    """Affine coupling (the study's Eqs. 3-6): z_l passes, z_r is scaled by exp(log s), shifted."""

    def __init__(self, features: int = 2, hidden: int = 8, linear_layers: int = 5):
        super().__init__()
        self.split = features // 2
        self.log_s_net = mlp(self.split, features - self.split, hidden, linear_layers)
        self.b_net = mlp(self.split, features - self.split, hidden, linear_layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """y = h(z) (Eq. 3): (N, D) -> (N, D)."""
        z_l, z_r = z[:, : self.split], z[:, self.split :]
        y_r = torch.exp(self.log_s_net(z_l)) * z_r + self.b_net(z_l)
        return torch.cat([z_l, y_r], dim=1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = h^{-1}(y) (Eq. 4) and log|det dh^{-1}/dy| = -sum(log s) (Eq. 6), (N,)."""
        y_l, y_r = y[:, : self.split], y[:, self.split :]
        log_s = self.log_s_net(y_l)
        z_r = (y_r - self.b_net(y_l)) / torch.exp(log_s)
        return torch.cat([y_l, z_r], dim=1), -log_s.sum(dim=1)


class ReferenceFlow(nn.Module):
    """Couplings with a coordinate swap between consecutive ones; base N(0, I).

    Arguments:
        features: the dimension D (the swap is defined for D = 2).
        couplings: number of affine couplings (the study: 15).
        hidden, linear_layers: each network's width and depth (the study: 8 and 5).
    """

    def __init__(
        self, features: int = 2, couplings: int = 15, hidden: int = 8, linear_layers: int = 5
    ):
        super().__init__()
        if features != 2:
            raise ValueError(
                f"the reference swaps two coordinates; features must be 2, got {features}"
            )
        self.couplings = nn.ModuleList(
            Coupling(features, hidden, linear_layers) for _ in range(couplings)
        )

    @staticmethod
    def swap(x: torch.Tensor) -> torch.Tensor:
        """The permutation layer: exchange the two coordinates (its own inverse, log-det 0)."""
        return x[:, [1, 0]]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """x = phi(z) (Eq. 1): coupling, swap, coupling, ..., coupling."""
        for k, c in enumerate(self.couplings):
            if k > 0:
                z = self.swap(z)
            z = c(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(phi^{-1}(x); 0, I) + log|det d phi^{-1}/dx| (Eqs. 2, 8): (N,)."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for k in reversed(range(len(self.couplings))):
            x, ld = self.couplings[k].inverse(x)
            log_det = log_det + ld
            if k > 0:
                x = self.swap(x)
        log_pz = -0.5 * (x**2).sum(dim=1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
        return log_pz + log_det

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training loss (Eq. 9): mean negative log-likelihood of the batch x (N, D)."""
        return -self.log_prob(x).mean()


def make_reference(seed: int = 0) -> tuple[ReferenceFlow, torch.optim.Optimizer]:
    """The study's recipe: its model and optimizer: 15 couplings, default Adam with lr 1e-3."""
    torch.manual_seed(seed)
    model = ReferenceFlow()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


@torch.no_grad()
def copy_from_flowscope(ref: ReferenceFlow, flow) -> ReferenceFlow:
    """Load the weights of a :class:`flowscope.NormalizingFlow` (same sizes) into ``ref``.

    flowscope stores each coupling's Linear layer as a stacked weight (2, in, out) and bias
    (2, 1, out), index 0 for log s and 1 for b, applied as ``a @ w + bias``; ``nn.Linear``
    holds the transposed weight.
    """
    couplings = [m for m in flow.layers if hasattr(m, "pairs")]
    if len(couplings) != len(ref.couplings):
        raise ValueError(f"{len(couplings)} couplings in the flow, {len(ref.couplings)} here")
    for mine, theirs in zip(ref.couplings, couplings, strict=True):
        linears = [
            [m for m in net if isinstance(m, nn.Linear)] for net in (mine.log_s_net, mine.b_net)
        ]
        for i, (w, b) in enumerate(theirs.pairs()):
            for k in range(2):
                linears[k][i].weight.copy_(w[k].T)
                linears[k][i].bias.copy_(b[k, 0])
    return ref
