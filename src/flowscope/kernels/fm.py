"""Flow matching's fast path: the regression loss and its gradients by ``fm.c``."""

from __future__ import annotations

from typing import Any

import torch

from ..matching import FlowMatching, VelocityField
from ..matching.field import LEAKY_SLOPE
from . import FastPath, Step, grad_buffer, load, model_dtype, overridden

__all__ = ["FMKernel"]


class FMKernel(FastPath):
    """:class:`~flowscope.matching.FlowMatching` with the built-in
    :class:`~flowscope.matching.VelocityField`, on any probability path, coupling and
    time sampler (the model's :meth:`~flowscope.matching.FlowMatching.training_batch`
    gives the kernel its inputs and targets), with or without the Gaussian skip, on the
    CPU in float32 or float64. With label dropout the batch's labels carry the null class
    (the embedding's last row), which the kernel looks up as any other class.

    The kernel regresses the network on u = dx_t - g(t) x_t, the path's velocity less the
    skip, which is the model's loss ||network + g(t) x_t - dx_t||^2 written for the
    network alone."""

    name = "fm kernel"
    kernel = "fm"
    model_class = FlowMatching

    def supports(self, model: FlowMatching) -> str | None:
        if model.device.type != "cpu":
            return f"the kernels run on the CPU, the model is on {model.device}"
        if model_dtype(model) not in (torch.float32, torch.float64):
            return f"the kernel computes in float32 or float64, not {model_dtype(model)}"
        if type(model.field) is not VelocityField:
            return (
                f"the kernel computes the built-in VelocityField, not {type(model.field).__name__}"
            )
        if model.field.activation != "leaky_relu":
            return f"the kernel computes LeakyReLU layers, not {model.field.activation}"
        name = overridden(model, FlowMatching, ("_loss", "velocity", "training_batch"))
        if name is not None:
            return f"{type(model).__name__} overrides {name}, which the kernel reproduces"
        return None

    def params(self, model: FlowMatching) -> list[torch.nn.Parameter]:
        return model.field.kernel_params()

    def signature(self, model: FlowMatching) -> dict[str, Any]:
        f = model.field
        return {"dims": f.dims, "classes": model.num_classes, "skip": model.gaussian_skip}

    def bind(self, model: FlowMatching) -> Step:
        fn = load(self.kernel, model_dtype(model))
        field = model.field
        emb = field.embedding
        params = field.kernel_params()
        sizes = (
            field.dims[-1],
            0 if emb is None else emb.embedding_dim,
            0 if emb is None else emb.num_embeddings,
            field.dims[1],
            len(field.dims) - 1,
            LEAKY_SLOPE,
        )
        skip = model.gaussian_skip
        rate = model.path.gaussian_rate

        def step(y: torch.Tensor, labels: Any, generator: torch.Generator) -> torch.Tensor:
            b = model.training_batch(y, labels, generator)
            target = torch.addcmul(b.dx_t, rate(b.t), b.x_t, value=-1) if skip else b.dx_t
            # Contiguous copies are bound to names so that they outlive the call.
            x_t, t, u = b.x_t.contiguous(), b.t.contiguous(), target.contiguous()
            lab = None if b.labels is None else b.labels.contiguous()  # after dropout
            grads = [grad_buffer(p) for p in params]
            loss = torch.empty((), dtype=x_t.dtype)
            rc = fn(
                x_t.shape[0],
                *sizes,
                field.theta.data_ptr(),
                None if emb is None else emb.weight.data_ptr(),
                x_t.data_ptr(),
                t.data_ptr(),
                u.data_ptr(),
                None if lab is None else lab.data_ptr(),
                loss.data_ptr(),
                grads[0].data_ptr(),
                None if emb is None else grads[1].data_ptr(),
            )
            if rc == 3:
                raise ValueError(f"a label is outside 0..{emb.num_embeddings - 1}")
            if rc == 1:
                raise MemoryError(f"the flow matching kernel could not allocate {len(x_t)} points")
            if rc != 0:
                raise RuntimeError(f"the flow matching kernel refused these sizes (code {rc})")
            return loss

        return step
