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

import torch

from ..stepper import Stepper, time_maker
from .methods.method import SDEMethod
from .noise_types import NOISE_TYPES

REVERSIBLE_HEUN = SDEMethod("reversible_heun", "stratonovich", NOISE_TYPES, make_step=None)


class ReversibleHeunStepper(Stepper):
    """Reversible Heun as a stepper: state (y, z, f, g) with (f, g) = (f, g)(t_n, z_n); control ΔW_n."""

    def __init__(self, f_and_g, axpy, like: torch.Tensor):
        self.f_and_g, self.axpy, self.time = f_and_g, axpy, time_maker(like)

    def init(self, field, t0: float, y0: torch.Tensor):
        f, g = self.f_and_g(self.time(t0), y0)
        return (y0, y0, f, g)

    def step(self, field, t0: float, t1: float, state, dw):
        y, z, f, g = state
        h = t1 - t0
        z1 = self.axpy(torch.add(torch.sub(y, z).add_(y), f, alpha=h), g, dw, 1.0)
        f1, g1 = self.f_and_g(self.time(t1), z1)
        y1 = self.axpy(torch.add(y, f + f1, alpha=0.5 * h), g + g1, dw, 0.5)
        # z1 is handed on as the step's dense information, so that a caller can keep the outputs' z
        return (y1, z1, f1, g1), None, z1

    def output(self, state) -> torch.Tensor:
        return state[0]


class ReversibleHeunSolve:
    """One reversible Heun solve for :class:`~pyjode.exact_adjoint.ExactReversibleAdjoint`: the forward pass
    keeps y and z at the outputs; the backward pass is the module docstring's reverse sweep."""

    def __init__(self, problem, product, cotangent):
        self.problem, self.product, self.cotangent = problem, product, cotangent

    def forward(self, y0: torch.Tensor):
        p = self.problem
        stepper = ReversibleHeunStepper(p.f_and_g, p.axpy, y0)
        ys, zs, self.out_index = p.solve_keeping_z(stepper, y0, lambda z: z)
        return ys, (ys, zs)

    def backward(self, saved, grad_ys, params):
        ys, zs = saved
        counter = self.problem.counting()
        grad_y0, grad_params = _backward(self.problem, self.product, self.cotangent, self.out_index, ys, zs, grad_ys,
                                         params)
        counter.steps += len(self.problem.grid_list) - 1
        self.problem.record_backward(counter)
        return grad_y0, grad_params


def _backward(problem, product, cot, out_index, ys, zs, grad_ys, params):
    """The reverse sweep of the module docstring: reconstruct (y_n, z_n), with one (f, g) evaluation and
    one VJP per step; returns (dL/dy0, [dL/dparam])."""
    f_and_g, grid = problem.f_and_g, problem.grid_list
    time = time_maker(ys)
    out_pos = {k: i for i, k in enumerate(out_index)}
    n_steps = len(grid) - 1
    grad_params = [torch.zeros_like(p) for p in params]

    def evaluate(k, z):
        z_leaf = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f, g = f_and_g(time(grid[k]), z_leaf)
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
    with torch.no_grad():
        for k, dw in problem.reversed_controls(y):
            h = grid[k + 1] - grid[k]
            _, f1, g1 = node
            f1, g1 = f1.detach(), g1.detach()
            if k in out_pos:
                z_prev = zs[out_pos[k]]
            else:
                z_prev = 2.0 * y - z - f1 * h - product(g1, dw)
            prev = evaluate(k, z_prev)
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
    return y_bar + z0_bar, grad_params


