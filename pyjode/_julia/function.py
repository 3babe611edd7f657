"""The Julia solve as a node of PyTorch's autograd graph."""

from __future__ import annotations

import torch

from ..errors import refuse_double_backward
from .bridge import JuliaSolve
from .loader import assert_main_thread

__all__ = ["JuliaODEFunction"]


class JuliaODEFunction(torch.autograd.Function):
    """``ys = JuliaODEFunction.apply(solve, y0, t, *params)``: forward and gradient both run in Julia.

    The forward pass keeps only the outputs (and, for reversible solvers, the final second state); the
    backward pass asks Julia for ``dL/dy0`` and ``dL/dparams`` given ``dL/dys``. ``t`` is an input so
    that its gradient is returned when asked for (continuous adjoints), never silently dropped; the plan
    refuses a ``t`` that requires grad where there is no time gradient.
    """

    @staticmethod
    def forward(ctx, solve: JuliaSolve, y0: torch.Tensor, t: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        assert_main_thread()
        ys, saved = solve.forward(y0)
        ctx.solve, ctx.inputs = solve, (y0, *params)
        ctx.save_for_backward(ys, t, *saved)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        assert_main_thread()
        ys, t, *saved = ctx.saved_tensors
        solve = ctx.solve
        gy0, gparams = solve.backward(ys, saved, grad_ys)
        grad_t = solve.time_gradients(t, ys, grad_ys, gy0) if ctx.needs_input_grad[2] else None
        gparams = tuple(g if need else None for g, need in zip(gparams, ctx.needs_input_grad[3:]))
        # Julia's gradient is a constant to torch: a second derivative through it is refused by name
        return (None, *refuse_double_backward(ctx.solve.plan.gradient, " with backend='julia'",
                                              (gy0 if ctx.needs_input_grad[1] else None, grad_t, *gparams),
                                              (*ctx.inputs, t)))
