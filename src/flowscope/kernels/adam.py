"""The trainer's fast optimizer step: torch.optim.Adam's update by ``adam.c``."""

from __future__ import annotations

import torch

from .build import load

__all__ = ["FusedAdam"]


class FusedAdam:
    """Adam's step for an optimizer's parameters in one C call per parameter.

    It updates the optimizer's own state (``step``, ``exp_avg``, ``exp_avg_sq``) in place
    and reads the learning rate from its parameter group, so the optimizer's
    ``state_dict`` and the learning-rate scheduler work as with ``optimizer.step()``;
    the update is the same to rounding (tested against ``torch.optim.Adam`` in float64).

    Arguments:
        optimizer: a ``torch.optim.Adam`` that :meth:`supports` accepts.
    """

    def __init__(self, optimizer: torch.optim.Adam):
        self.optimizer = optimizer
        (self.group,) = optimizer.param_groups
        self.params = list(self.group["params"])
        self.fn = load("adam", self.params[0].dtype)
        self.beta1, self.beta2 = (float(b) for b in self.group["betas"])
        self.eps = float(self.group["eps"])
        for p in self.params:
            state = optimizer.state[p]
            if not state:  # as torch.optim.Adam initialises it on its first step
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.states = [optimizer.state[p] for p in self.params]

    @staticmethod
    def supports(optimizer: torch.optim.Optimizer) -> str | None:
        """``None`` if the C step computes this optimizer's update, else why not."""
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return "not one parameter group of torch.optim.Adam"
        group = optimizer.param_groups[0]
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            return "weight decay, amsgrad or maximize"
        if isinstance(group["lr"], torch.Tensor) or group.get("differentiable"):
            return "a tensor or differentiable learning rate"
        params = group["params"]
        if any(p.device.type != "cpu" or not p.is_contiguous() for p in params):
            return "parameters off the CPU or not contiguous"
        if len({p.dtype for p in params}) != 1 or params[0].dtype not in (
            torch.float32,
            torch.float64,
        ):
            return "parameters of mixed dtypes, or neither float32 nor float64"
        for p in params:
            state = optimizer.state.get(p) or {}
            step = state.get("step")
            if step is not None and (step.dtype != torch.float32 or step.device.type != "cpu"):
                return "a step counter other than PyTorch's float32 scalar on the CPU"
        if load("adam", params[0].dtype) is None:
            return "the C kernel could not be built"
        return None

    def step(self) -> None:
        """One Adam step of every parameter with a gradient, with the group's current lr.

        It stands for ``optimizer.step()``, and marks the optimizer as stepped as that call
        would (``_opt_called``, and ``_step_count`` before PyTorch 2.4, which PyTorch's
        learning-rate schedulers read to warn of a scheduler stepped before its optimizer).
        """
        self.optimizer._opt_called = True
        self.optimizer._step_count = getattr(self.optimizer, "_step_count", 0) + 1
        lr = float(self.group["lr"])
        for p, state in zip(self.params, self.states, strict=True):
            if p.grad is None:
                continue
            g = p.grad.contiguous()  # bound to a name: it must outlive the call
            rc = self.fn(
                p.numel(),
                p.data_ptr(),
                g.data_ptr(),
                state["exp_avg"].data_ptr(),
                state["exp_avg_sq"].data_ptr(),
                state["step"].data_ptr(),
                lr,
                self.beta1,
                self.beta2,
                self.eps,
            )
            if rc != 0:
                raise RuntimeError(f"the Adam kernel failed (code {rc})")
