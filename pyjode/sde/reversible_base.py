"""McCallum & Foster's reversible wrapper over a Stratonovich SDE step (arXiv 2410.11648, §3; the SDE
case as in their diffrax code: a Stratonovich base solver and a Brownian path that can be re-queried).

With the base step Φ(t_a, t_b, x, ΔW) (e.g. Heun's from t_a to t_b with increment ΔW), a second
state z (z_0 = y_0) and a coupling λ in (0, 1]:
    y_{n+1} = λ (y_n − z_n) + Φ(t_n, t_{n+1}, z_n, ΔW_n)
    z_{n+1} = z_n + y_{n+1} − Φ(t_{n+1}, t_n, y_{n+1}, −ΔW_n)
and the exact algebraic inverse
    z_n = z_{n+1} − y_{n+1} + Φ(t_{n+1}, t_n, y_{n+1}, −ΔW_n)
    y_n = (y_{n+1} − Φ(t_n, t_{n+1}, z_n, ΔW_n)) / λ + z_n.
The backward base step runs the same Brownian increment backwards in time, so the replayable
`BrownianPath` gives the backward pass exactly the forward noise.

Adjoint (exact gradients of the discrete solution, O(1) memory in steps): for step n, with
cotangents ȳ, z̄ of y_{n+1}, z_{n+1} and s1 = Φ(t_{n+1}, t_n, y_{n+1}, −ΔW_n),
s2 = Φ(t_n, t_{n+1}, z_n, ΔW_n):
    ȳ ← ȳ + z̄ − J_{s1}ᵀ z̄,         θ̄ ← θ̄ − ∂_θ s1ᵀ z̄,
    then ȳ_n = λ ȳ,   z̄_n = z̄ − λ ȳ + J_{s2}ᵀ ȳ,   θ̄ ← θ̄ + ∂_θ s2ᵀ ȳ.
Each VJP's primal output is the value the reconstruction needs, so a backward step costs two base
steps with VJPs, like the forward's two base steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .grid import increment_chunks


@dataclass
class Problem:
    """Everything the adjoint needs besides tensors; kept off the autograd graph."""

    step: Callable
    times: Sequence[torch.Tensor]
    hs: Sequence[float]
    grid: torch.Tensor
    bm: Any
    out_index: Sequence[int]
    is_output: Sequence[bool]
    coupling: float
    evals_per_step: int
    stats: Any = None


def solve(step, times, hs, increments, y0: torch.Tensor, is_output: Sequence[bool], coupling: float):
    """Forward pass; returns (outputs y, z at the outputs). Differentiable by ordinary backprop."""
    y, z = y0, y0
    ys, zs = [y0], [y0]
    for k0, dws in increments:
        for j, dw in enumerate(dws):
            k = k0 + j
            y_next = torch.add(step(times[k], times[k + 1], hs[k], z, dw), y - z, alpha=coupling)
            z = z + y_next - step(times[k + 1], times[k], -hs[k], y_next, -dw)
            y = y_next
            if is_output[k + 1]:
                ys.append(y)
                zs.append(z)
    return ys, zs


def outputs(problem: Problem, y0: torch.Tensor):
    """The forward pass for `ExactReversibleAdjoint`: (ys, zs) at the outputs."""
    increments = increment_chunks(problem.bm, problem.grid, y0.dtype, y0.device)
    return solve(problem.step, problem.times, problem.hs, increments, y0, problem.is_output, problem.coupling)


def backward(problem: Problem, ys, zs, grad_ys, params, grad_params) -> torch.Tensor:
    """The reverse sweep for `ExactReversibleAdjoint` (module docstring); returns dL/dy0."""
    step, times, hs, lam = problem.step, problem.times, problem.hs, problem.coupling
    out_pos = {k: i for i, k in enumerate(problem.out_index)}

    def step_vjp(t_a, t_b, h, x, dw, cot):
        """Φ(t_a, t_b, x, dw) and J_xᵀ cot; adds ∂_θΦᵀ cot into grad_params."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = step(t_a, t_b, h, x, dw)
            grads = torch.autograd.grad(out, [x, *params], cot, allow_unused=True)
        for acc, g in zip(grad_params, grads[1:]):
            if g is not None:
                acc.add_(g)
        return out.detach(), (torch.zeros_like(x) if grads[0] is None else grads[0])

    y, z = ys[-1], zs[-1]
    y_bar, z_bar = grad_ys[-1].clone(), torch.zeros_like(y)
    with torch.no_grad():
        for k0, dws in increment_chunks(problem.bm, problem.grid, y.dtype, y.device, reverse=True):
            for j in range(len(dws) - 1, -1, -1):
                k = k0 + j
                h, dw = hs[k], dws[j]
                # z_{k+1} = z_k + y_{k+1} − s1: the θ-part of −s1 is subtracted, hence the −z̄ cotangent.
                s1, jz = step_vjp(times[k + 1], times[k], -h, y, -dw, -z_bar)
                y_bar = y_bar + z_bar + jz
                z_prev = z - y + s1
                s2, jy = step_vjp(times[k], times[k + 1], h, z_prev, dw, y_bar)
                y_prev = (y - s2) / lam + z_prev
                y_bar, z_bar = lam * y_bar, z_bar - lam * y_bar + jy
                if k in out_pos:
                    # Outputs were kept: restart from them rather than carry rebuilt rounding.
                    y_prev, z_prev = ys[out_pos[k]], zs[out_pos[k]]
                    if k > 0:
                        y_bar = y_bar + grad_ys[out_pos[k]]
                y, z = y_prev, z_prev
    stats = problem.stats
    if stats is not None and hasattr(stats, "nfe_backward"):
        stats.nfe_backward = 2 * problem.evals_per_step * (len(problem.grid) - 1)
        stats.steps_backward = len(problem.grid) - 1
    return y_bar + z_bar + grad_ys[0]
