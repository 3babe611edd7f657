"""The autograd function shared by the algebraically reversible SDE solvers.

A solver module provides ``outputs(problem, y0) -> (ys, zs)``, its forward pass without a graph
returning the two coupled states at the output times, and ``backward(problem, ys, zs, grad_ys,
params, grad_params) -> dL/dy0``, the reverse sweep that rebuilds the states from the last pair and
adds the parameter cotangents into ``grad_params``. Only the outputs are kept between the passes.
"""
from __future__ import annotations

import torch


class ExactReversibleAdjoint(torch.autograd.Function):
    """ys = the solver's outputs; backward is the solver's exact O(1)-memory reverse sweep."""

    @staticmethod
    def forward(ctx, solver, problem, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ys, zs = solver.outputs(problem, y0)
        ys, zs = torch.stack(ys), torch.stack(zs)
        ctx.solver, ctx.problem = solver, problem
        ctx.save_for_backward(ys, zs, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        ys, zs, *params = ctx.saved_tensors
        wanted = [p for p in params if p.requires_grad]
        grad_params = [torch.zeros_like(p) for p in wanted]
        y0_grad = ctx.solver.backward(ctx.problem, ys, zs, grad_ys, wanted, grad_params)
        it = iter(grad_params)
        return (None, None, y0_grad, *[next(it) if p.requires_grad else None for p in params])
