"""The Julia solve as a node of PyTorch's autograd graph."""

from __future__ import annotations

import torch

from .bridge import JuliaSolve
from .loader import assert_main_thread

__all__ = ["JuliaODEFunction"]


class JuliaODEFunction(torch.autograd.Function):
    """``ys = JuliaODEFunction.apply(solve, y0, *params)``: forward and gradient both run in Julia.

    The forward pass keeps only the outputs (and, for reversible solvers, the final second state); the
    backward pass asks Julia for ``dL/dy0`` and ``dL/dparams`` given ``dL/dys``.
    """

    @staticmethod
    def forward(ctx, solve: JuliaSolve, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        assert_main_thread()
        ys, saved = solve.forward(y0)
        ctx.solve = solve
        ctx.save_for_backward(ys, *saved)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        assert_main_thread()
        ys, *saved = ctx.saved_tensors
        gy0, gparams = ctx.solve.backward(ys, saved, grad_ys)
        gparams = tuple(g if need else None for g, need in zip(gparams, ctx.needs_input_grad[2:]))
        return (None, gy0 if ctx.needs_input_grad[1] else None, *gparams)
