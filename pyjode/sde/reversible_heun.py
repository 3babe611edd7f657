"""Reversible Heun (Kidger, Foster, Li & Lyons 2021, "Efficient and Accurate Gradients for Neural
SDEs", Algorithms 1 and 2) and its exact O(1)-memory adjoint.

State (y, z) with z_0 = y_0, and (f_n, g_n) = (f, g)(t_n, z_n). One step, h = t_{n+1} − t_n:
    z_{n+1} = 2 y_n − z_n + f_n h + g_n·ΔW_n
    y_{n+1} = y_n + ½(f_n + f_{n+1}) h + ½(g_n + g_{n+1})·ΔW_n
It is Stratonovich, strong order 0.5 (1.0 for additive noise), one (f, g) evaluation per step,
and algebraically invertible:
    z_n = 2 y_{n+1} − z_{n+1} − f_{n+1} h − g_{n+1}·ΔW_n
    y_n = y_{n+1} − ½(f_n + f_{n+1}) h − ½(g_n + g_{n+1})·ΔW_n.

Adjoint (discretise-then-optimise, exact up to rounding). Write F_n(z) = f(t_n, z) h_n +
g(t_n, z)·ΔW_n and F'_n(z) = f(t_{n+1}, z) h_n + g(t_{n+1}, z)·ΔW_n, so that
z_{n+1} = 2y_n − z_n + F_n(z_n) and y_{n+1} = y_n + ½F_n(z_n) + ½F'_n(z_{n+1}). With ȳ, z̄ the
cotangents of y_{n+1}, z_{n+1} (z̄ taken after F'_n's share, c = z̄ + ½ J_{F'_n}ᵀ ȳ):
    ȳ_n = ȳ + 2c,   z̄_n = −c + J_{F_n}ᵀ (c + ½ȳ),
    θ̄ += ∂_θF_nᵀ (c + ½ȳ) + ½ ∂_θF'_nᵀ ȳ.
Both F_n and F'_{n−1} read the same evaluation (f_n, g_n), so the backward pass makes one
(f, g) evaluation and one VJP per step, whose primal output also drives the reconstruction.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .grid import increment_chunks
from .noise_types import NOISE_TYPES
from .methods.method import SDEMethod

REVERSIBLE_HEUN = SDEMethod("reversible_heun", "stratonovich", NOISE_TYPES, 1,
                            "0.5 (1.0 for additive noise)", make_step=None)


def solve(f_and_g: Callable, axpy: Callable, times: Sequence[torch.Tensor], hs: Sequence[float],
          increments, y0: torch.Tensor, is_output: Sequence[bool]):
    """Forward pass; returns (outputs y, z at the outputs, final (y, z, f, g)).

    `axpy(y, g, dW, c)` = y + c·(g·dW). Differentiable by ordinary backprop when called with
    grad enabled (adjoint="direct")."""
    y, z = y0, y0
    f, g = f_and_g(times[0], y0)
    ys, zs = [y0], [y0]
    for k0, dws in increments:
        for j, dw in enumerate(dws):
            k = k0 + j
            h = hs[k]
            z_next = axpy(torch.add(torch.sub(y, z).add_(y), f, alpha=h), g, dw, 1.0)
            f_next, g_next = f_and_g(times[k + 1], z_next)
            y = axpy(torch.add(y, f + f_next, alpha=0.5 * h), g + g_next, dw, 0.5)
            z, f, g = z_next, f_next, g_next
            if is_output[k + 1]:
                ys.append(y)
                zs.append(z)
    return ys, zs, (y, z, f, g)


class _Problem:
    """Everything the adjoint needs besides tensors; kept off the autograd graph."""

    def __init__(self, f_and_g, product, axpy, cotangent, times, hs, grid, bm, out_index, stats):
        self.f_and_g, self.product, self.axpy, self.cotangent = f_and_g, product, axpy, cotangent
        self.times, self.hs, self.grid, self.bm = times, hs, grid, bm
        self.out_index, self.stats = out_index, stats


def outputs(problem: _Problem, y0: torch.Tensor):
    """The forward pass for `ExactReversibleAdjoint`: (ys, zs) at the outputs."""
    increments = increment_chunks(problem.bm, problem.grid, y0.dtype, y0.device)
    ys, zs, _ = solve(problem.f_and_g, problem.axpy, problem.times, problem.hs, increments, y0,
                      _output_mask(problem))
    return ys, zs


def _output_mask(problem: _Problem) -> list[bool]:
    mask = [False] * len(problem.grid)
    for i in problem.out_index:
        mask[i] = True
    return mask


def backward(problem: _Problem, ys, zs, grad_ys, params, grad_params) -> torch.Tensor:
    """The reverse sweep for `ExactReversibleAdjoint`: reconstruct (y_n, z_n), with one (f, g)
    evaluation and one VJP per step; returns dL/dy0."""
    f_and_g, product, cot = problem.f_and_g, problem.product, problem.cotangent
    times, hs = problem.times, problem.hs
    out_pos = {k: i for i, k in enumerate(problem.out_index)}
    n_steps = len(problem.grid) - 1

    def evaluate(k, z):
        z_leaf = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f, g = f_and_g(times[k], z_leaf)
        return z_leaf, f, g

    def vjp(node, a_f, a_g):
        """Adds ∂_θᵀ to grad_params and returns J_zᵀ of the node's (f, g) against (a_f, a_g)."""
        z_leaf, f, g = node
        outs, cots = [], []
        for out, a in ((f, a_f), (g, a_g)):
            if out.requires_grad:
                outs.append(out)
                cots.append(a)
        if not outs:
            return torch.zeros_like(z_leaf)
        grads = torch.autograd.grad(outs, [z_leaf, *params], cots, allow_unused=True)
        for acc, gp in zip(grad_params, grads[1:]):
            if gp is not None:
                acc.add_(gp)
        return torch.zeros_like(z_leaf) if grads[0] is None else grads[0]

    y, z = ys[-1], zs[-1]
    node = evaluate(n_steps, z)
    y_bar = grad_ys[-1].clone()
    r = torch.zeros_like(y)                       # z̄ without the field terms of its node
    a_f, a_g = torch.zeros_like(node[1]), torch.zeros_like(node[2])
    nfe = 1
    with torch.no_grad():
        for k0, dws in increment_chunks(problem.bm, problem.grid, y.dtype, y.device, reverse=True):
            for j in range(len(dws) - 1, -1, -1):
                k = k0 + j
                h, dw = hs[k], dws[j]
                _, f1, g1 = node
                f1, g1 = f1.detach(), g1.detach()
                if k in out_pos:
                    z_prev = zs[out_pos[k]]
                else:
                    z_prev = 2.0 * y - z - f1 * h - product(g1, dw)
                prev = evaluate(k, z_prev)
                nfe += 1
                f0, g0 = prev[1].detach(), prev[2].detach()
                if k in out_pos:
                    y_prev = ys[out_pos[k]]
                else:
                    y_prev = y - (0.5 * h) * (f0 + f1) - 0.5 * product(g0 + g1, dw)
                # Finish node k+1: step k reads it through ½F'_k(z_{k+1}).
                half = 0.5 * y_bar
                a_f = a_f + h * half
                a_g = a_g + cot(half, dw)
                c = r + vjp(node, a_f, a_g)
                b = c + half                        # cotangent of F_k(z_k)
                y_bar = y_bar + 2.0 * c
                if k in out_pos:
                    y_bar = y_bar + grad_ys[out_pos[k]]
                r = -c
                a_f, a_g = h * b, cot(b, dw)
                y, z, node = y_prev, z_prev, prev
        z0_bar = r + vjp(node, a_f, a_g)
    stats = problem.stats
    if stats is not None:
        _set(stats, "nfe_backward", nfe)
        _set(stats, "steps_backward", n_steps)
    return y_bar + z0_bar


def _set(stats, name: str, value: int) -> None:
    if hasattr(stats, name):
        setattr(stats, name, value)
