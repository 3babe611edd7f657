"""The one autograd function of the algebraically reversible solvers (ODE and SDE alike).

A solve object provides ``forward(y0) -> (ys, saved)``, its forward pass without a graph returning the
stacked outputs and the tensors its backward pass needs (the final coupled pair, and whatever else it keeps
between the passes), and ``backward(saved, grad_ys, params) -> (dL/dy0, [dL/dparam])``, the reverse sweep
that rebuilds the states from the saved ones. Only ``saved`` is kept between the passes.
"""
from __future__ import annotations

import torch

from .errors import refuse_double_backward
from .function_transforms import check_batched_backward


class ExactReversibleAdjoint(torch.autograd.Function):
    """ys = the solve's outputs; backward is the solve's exact O(1)-memory reverse sweep."""

    @staticmethod
    def forward(ctx, solve, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ys, saved = solve.forward(y0)
        ctx.solve, ctx.n_saved, ctx.y0 = solve, len(saved), y0
        ctx.save_for_backward(*saved, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_batched_backward("reversible", grad_ys)
        if torch.is_grad_enabled() and getattr(ctx.solve, "graph_vjp", None) is not None:
            grads = ctx.solve.graph_vjp(grad_ys)  # None unless the solve offers a differentiable gradient
            if grads is not None:
                return (None, *grads)
        tensors = ctx.saved_tensors
        saved, params = tensors[:ctx.n_saved], tensors[ctx.n_saved:]
        wanted = [p for p in params if p.requires_grad]
        with torch.no_grad():
            grad_y0, grad_params = ctx.solve.backward(saved, grad_ys.detach(), tuple(wanted))
        it = iter(grad_params)
        # the reverse sweep runs outside autograd: a second derivative through it is refused by name
        return (None, *refuse_double_backward("reversible", "", (grad_y0, *[next(it) if p.requires_grad else None
                                                                           for p in params]), (ctx.y0, *params)))
