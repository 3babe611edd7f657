"""McCallum & Foster's reversible wrapper over a Stratonovich SDE step (arXiv 2410.11648, §3; the SDE
case as in their diffrax code: a Stratonovich base solver and a Brownian path that can be re-queried).

The recursion and its exact reverse sweep are those of the ODE case (:mod:`pyjode.reversible`), with the
base step Φ(t_a, t_b, x, ΔW) of an SDE method (e.g. Heun's from t_a to t_b with increment ΔW) and the
backward base step driven by −ΔW:
    y_{n+1} = λ (y_n − z_n) + Φ(t_n, t_{n+1}, z_n, ΔW_n)
    z_{n+1} = z_n + y_{n+1} − Φ(t_{n+1}, t_n, y_{n+1}, −ΔW_n).
The replayable Brownian motion gives the backward pass exactly the forward noise. This module supplies
the base step and the solve object of the shared autograd function.
"""
from __future__ import annotations

import torch

from ..reversible import reverse_sweep
from ..stepper import time_maker


class SDEBaseStep:
    """The base step Φ of the reversible scheme over an SDE method's step function."""

    adaptive, order, error_order = False, 1, None

    def __init__(self, step, like: torch.Tensor):
        self.step_fn, self.time = step, time_maker(like)

    def phi(self, field, t0: float, t1: float, x: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        return self.step_fn(self.time(t0), self.time(t1), t1 - t0, x, dw)

    @staticmethod
    def reverse(dw: torch.Tensor) -> torch.Tensor:
        return -dw


class ReversibleSDESolve:
    """One reversible SDE solve for :class:`~pyjode.exact_adjoint.ExactReversibleAdjoint`: the forward pass
    keeps the outputs' coupled pairs; the backward pass replays the Brownian increments backwards and
    restarts from each stored pair (rather than carry rebuilt rounding across output times)."""

    def __init__(self, problem, stepper):
        self.problem, self.stepper = problem, stepper

    def forward(self, y0: torch.Tensor):
        ys, zs, self.out_index = self.problem.solve_keeping_z(self.stepper, y0, lambda pair: pair[1])
        return ys, (ys, zs)

    def backward(self, saved, grad_ys: torch.Tensor, params):
        ys, zs = saved
        p = self.problem
        out_pos = {k: i for i, k in enumerate(self.out_index)}
        grid = p.grid_list

        def grad_at(n):
            if n is None:
                return grad_ys[-1].clone()
            return grad_ys[out_pos[n]] if n in out_pos else None

        def restart_at(n):
            return (ys[out_pos[n]], zs[out_pos[n]]) if n in out_pos else None

        steps = ((k + 1, grid[k], grid[k + 1], dw) for k, dw in p.reversed_controls(ys))
        counter = p.counting()
        _, _, grad_y0, grad_params = reverse_sweep(self.stepper.base, None, self.stepper.coupling, ys[-1], zs[-1],
                                                   steps, grad_at, params, restart_at)
        counter.steps += len(grid) - 1
        p.record_backward(counter)
        return grad_y0, grad_params
