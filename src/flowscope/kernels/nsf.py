"""The spline flow's fast path: its negative log-likelihood and gradient by ``nsf.c``."""

from __future__ import annotations

from typing import Any

import torch

from ..flows import LEAKY_SLOPE, SplineCoupling, SplineFlow
from . import FastPath, Step, load, model_dtype
from .nf import coupling_flow_reason, coupling_flow_step

__all__ = ["SplineKernel"]

#: The most bins, couplings, features and Linear layers per network the kernel computes
#: (``KMAX``, ``LMAX``, ``DMAX``, ``NLMAX`` in nsf.c).
MAX_BINS, MAX_COUPLINGS, MAX_FEATURES, MAX_LAYERS = 64, 128, 128, 16


class SplineKernel(FastPath):
    """:class:`~flowscope.flows.SplineFlow` of spline couplings with one shape, bins,
    tail bound and floors, LeakyReLU networks and any permutations, unconditional, on the
    CPU in float32 or float64."""

    name = "nsf kernel"
    kernel = "nsf"
    model_class = SplineFlow

    def supports(self, model: SplineFlow) -> str | None:
        reason = coupling_flow_reason(model, SplineCoupling, SplineFlow)
        if reason is not None:
            return reason
        first, *rest = model.coupling_layers()
        shape = (first.dims, first.bins, first.tail_bound, first.floors)
        if any((c.dims, c.bins, c.tail_bound, c.floors) != shape for c in rest):
            return "the kernel needs every coupling to have the same shape, bins, bound and floors"
        limits = (
            ("bins", first.bins, MAX_BINS),
            ("couplings", model.couplings, MAX_COUPLINGS),
            ("features", model.features, MAX_FEATURES),
            ("Linear layers per network", len(first.dims) - 1, MAX_LAYERS),
        )
        for what, value, most in limits:
            if value > most:
                return f"the kernel computes at most {most} {what}, this flow has {value}"
        return None

    def params(self, model: SplineFlow) -> list[torch.nn.Parameter]:
        return [model.theta]

    def signature(self, model: SplineFlow) -> dict[str, Any]:
        c = model.coupling_layers()[0]
        return {
            "couplings": model.couplings,
            "features": model.features,
            "dims": c.dims,
            "bins": c.bins,
        }

    def bind(self, model: SplineFlow) -> Step:
        c = model.coupling_layers()[0]
        sizes = (
            model.couplings,
            model.features,
            c.split,
            c.dims[1] if len(c.dims) > 2 else 1,
            len(c.dims) - 1,
            c.bins,
            c.tail_bound,
            c.floors["min_width"],
            c.floors["min_height"],
            c.floors["min_derivative"],
            LEAKY_SLOPE,
        )
        return coupling_flow_step(load(self.kernel, model_dtype(model)), sizes, model)
