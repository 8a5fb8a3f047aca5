"""The normalizing flow's fast path: Eq. 9 and its gradient by ``nf.c``."""

from __future__ import annotations

from typing import Any

import torch

from ..flows import LEAKY_SLOPE, AffineCoupling, CouplingFlow, NormalizingFlow, Permutation
from . import FastPath, Step, grad_buffer, load, model_dtype, overridden

__all__ = ["NFKernel", "coupling_flow_reason", "coupling_flow_step"]


class NFKernel(FastPath):
    """:class:`~flowscope.flows.NormalizingFlow` of affine couplings with one shape,
    LeakyReLU networks and any permutations, on the CPU in float32 or float64."""

    name = "nf kernel"
    kernel = "nf"
    model_class = NormalizingFlow

    def supports(self, model: NormalizingFlow) -> str | None:
        reason = coupling_flow_reason(model, AffineCoupling, NormalizingFlow)
        if reason is not None:
            return reason
        couplings = model.coupling_layers()
        if any(c.dims != couplings[0].dims for c in couplings):
            return "the kernel needs every coupling to have the same shape"
        if any(c.log_scale_bound != couplings[0].log_scale_bound for c in couplings):
            return "the kernel needs every coupling to have the same log-scale bound"
        return None

    def params(self, model: NormalizingFlow) -> list[torch.nn.Parameter]:
        return [model.theta]

    def signature(self, model: NormalizingFlow) -> dict[str, Any]:
        c = model.coupling_layers()[0]
        return {"couplings": model.couplings, "features": model.features, "dims": c.dims}

    def bind(self, model: NormalizingFlow) -> Step:
        c = model.coupling_layers()[0]
        sizes = (
            model.couplings,
            model.features,
            c.split,
            c.dims[1] if len(c.dims) > 2 else 1,
            len(c.dims) - 1,
            float(c.log_scale_bound or 0.0),
            LEAKY_SLOPE,
        )
        return coupling_flow_step(load(self.kernel, model_dtype(model)), sizes, model)


def coupling_flow_reason(model: CouplingFlow, coupling: type, owner: type) -> str | None:
    """Why a coupling flow's kernel (``nf.c``, ``nsf.c``) does not compute ``model`` as far
    as they share it, or ``None``: an unconditional flow of ``coupling`` and
    :class:`~flowscope.flows.Permutation` layers, on the CPU in float32 or float64, whose
    loss is ``owner``'s."""
    if model.device.type != "cpu":
        return f"the kernels run on the CPU, the model is on {model.device}"
    if model_dtype(model) not in (torch.float32, torch.float64):
        return f"the kernel computes in float32 or float64, not {model_dtype(model)}"
    if model.couplings == 0:
        return "a flow without couplings has no network to fuse"
    if model.num_classes is not None:
        return (
            "the kernel computes unconditional flows; this one is class-conditional "
            "(its couplings read a class embedding)"
        )
    if not all(type(m) in (coupling, Permutation) for m in model.layers):
        return f"the kernel computes {coupling.__name__} and Permutation layers only"
    name = overridden(model, owner, ("_loss", "_inverse"))
    if name is not None:
        return f"{type(model).__name__} overrides {name}, which the kernel reproduces"
    return None


def coupling_flow_step(fn, sizes: tuple, model: CouplingFlow) -> Step:
    """The step of a coupling flow's kernel (``nf.c``, ``nsf.c``): ``fn(*sizes, theta, x, N,
    inverse permutations, logpz, logdet, grad)`` writes log N(z; 0, I) and log|det| of each
    point (N,) and theta's gradient of Eq. 9; the step returns Eq. 9, the mean of their
    negated sum."""
    perms = [m.inv for m in model.layers if isinstance(m, Permutation)]
    inv = torch.stack(perms) if perms else torch.zeros(0, model.features)
    inv = inv.to(torch.int32).contiguous()  # (L - 1, D)
    theta = model.theta

    def step(y: torch.Tensor, labels: Any, generator: torch.Generator) -> torch.Tensor:
        y = y.contiguous()
        n = len(y)
        logpz = torch.empty(n, dtype=y.dtype)
        logdet = torch.empty(n, dtype=y.dtype)
        grad = grad_buffer(theta)
        rc = fn(
            *sizes,
            theta.data_ptr(),
            y.data_ptr(),
            n,
            inv.data_ptr(),
            logpz.data_ptr(),
            logdet.data_ptr(),
            grad.data_ptr(),
        )
        if rc == 1:
            raise MemoryError(f"the flow kernel could not allocate memory for {n} points")
        if rc != 0:
            raise RuntimeError(f"the flow kernel refused these sizes (code {rc})")
        return -(logpz + logdet).mean()

    return step
