"""The continuous adjoint of an SDE (Li, Wong, Chen & Duvenaud 2020, "Scalable gradients for stochastic
differential equations", Sec. 3 and eq. (9); Kidger et al. 2021, Sec. 2), solved backwards in time on the
forward step grid with the forward Brownian path replayed.

In Stratonovich form dy = f̂ dt + g ∘ dW (for an Itô SDE f̂ = f − ½ Σ_j (∂g_j/∂y) g_j, i.e. f − ½ g ∂g/∂y
for diagonal noise and f − ½ (∂g/∂y)g for scalar noise; f̂ = f for additive noise), the adjoint state
a = ∂L/∂y(t) and the parameter cotangent θ̄ obey, backwards from a(T) = ∂L/∂y(T), θ̄(T) = 0,

    dy = f̂ dt + g ∘ dW,   da = −aᵀ ∂f̂/∂y dt − aᵀ ∂g/∂y ∘ dW,   dθ̄ = −aᵀ ∂f̂/∂θ dt − aᵀ ∂g/∂θ ∘ dW.

This is itself a Stratonovich SDE in (y, a, θ̄), driven by the same W. One step from t_{k+1} back to t_k
(h = t_k − t_{k+1} < 0, increment −ΔW_k) uses the increment map

    Φ(t, y, a) = (v, −J_yᵀ a, −J_θᵀ a),   v = f̂(t, y) h + g(t, y)·(−ΔW_k),

whose two cotangent parts are one vector–Jacobian product of v. The schemes are Stratonovich midpoint
(default; the first evaluation needs only J_yᵀ a) and Heun. The state y is reset to the stored forward value at
every grid node an output depends on, which keeps the backward reconstruction of y from drifting.

The gradient converges to that of the exact solution as the step shrinks (strong order 0.5 for general noise,
1.0 for commuting noise); it is not the exact gradient of the forward discretisation.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..function_transforms import check_batched_backward
from ..stepper import time_maker
from .noise_types import diffusion_and_jvp, diffusion_product

ADJOINT_METHODS = ("midpoint", "heun")


def stratonovich_f_and_g(sde, noise_type: str, sde_type: str):
    """(t, y) -> (f̂, g): the drift of the Stratonovich form and the diffusion."""
    if sde_type == "stratonovich" or noise_type == "additive":
        return sde.f_and_g
    if noise_type == "general":
        raise ValueError("sdeint_adjoint: an Itô SDE with general noise has no Itô–Stratonovich correction here; "
                         "write it in Stratonovich form (sde_type='stratonovich') with the corrected drift.")

    def f_and_g(t, y):
        f = sde.f(t, y)
        g, g_dg = diffusion_and_jvp(sde, t, y, noise_type)
        return f - 0.5 * (g_dg[..., 0] if noise_type == "scalar" else g_dg), g
    return f_and_g


class AdjointSDESolve:
    """One solve's forward pass (no graph, states at `nodes`) and its backward adjoint SDE."""

    def __init__(self, forward, f_and_g_hat, noise_type: str, layout, reversed_controls, scheme: str = "midpoint"):
        """`layout()` gives (step times, node indices) once the forward pass has run (adaptive steps fix them
        only then); `reversed_controls()` yields (k, control of step k) from the last step back."""
        if scheme not in ADJOINT_METHODS:
            raise ValueError(f"sdeint_adjoint: adjoint_method={scheme!r} is not available; choose one of "
                             f"{list(ADJOINT_METHODS)} (the adjoint SDE is solved in Stratonovich form).")
        self.forward, self.f_and_g_hat, self.layout = forward, f_and_g_hat, layout
        self.product, self.reversed_controls, self.scheme = diffusion_product(noise_type), reversed_controls, scheme

    def backward(self, states: torch.Tensor, grad_states: torch.Tensor, params):
        grid, nodes = self.layout()
        product = self.product
        time = time_maker(states)
        node_pos = {k: i for i, k in enumerate(nodes)}
        grad_params = [torch.zeros_like(p) for p in params]

        def phi(t, y, a, h, dw, with_params):
            """(v, J_yᵀ a, [J_θᵀ a]) at (t, y), with v = f̂ h + g·dw."""
            y_leaf = y.detach().requires_grad_(True)
            with torch.enable_grad():
                f, g = self.f_and_g_hat(time(t), y_leaf)
                v = f * h + product(g, dw)
                inputs = [y_leaf, *params] if with_params else [y_leaf]
                if not v.requires_grad:
                    return v.detach(), torch.zeros_like(y), [None] * len(params)
                grads = torch.autograd.grad(v, inputs, a, allow_unused=True)
            gy = torch.zeros_like(y) if grads[0] is None else grads[0]
            return v.detach(), gy, list(grads[1:])

        def add_params(scale, grads):
            for acc, gp in zip(grad_params, grads):
                if gp is not None:
                    acc.add_(gp, alpha=-scale)

        last = len(grid) - 1
        y, a = states[node_pos[last]], grad_states[node_pos[last]].clone()
        for k, control in self.reversed_controls():
            dw = -(control[0] if isinstance(control, tuple) else control)
            t1, t0 = grid[k + 1], grid[k]
            h = t0 - t1
            if self.scheme == "midpoint":
                v0, gy0, _ = phi(t1, y, a, h, dw, False)
                v1, gy1, gp1 = phi(t1 + 0.5 * h, y + 0.5 * v0, a - 0.5 * gy0, h, dw, True)
                y, a = y + v1, a - gy1
                add_params(1.0, gp1)
            else:
                v0, gy0, gp0 = phi(t1, y, a, h, dw, True)
                v1, gy1, gp1 = phi(t0, y + v0, a - gy0, h, dw, True)
                y, a = y + 0.5 * (v0 + v1), a - 0.5 * (gy0 + gy1)
                add_params(0.5, gp0)
                add_params(0.5, gp1)
            if k in node_pos:
                y = states[node_pos[k]]
                if k > 0:
                    a = a + grad_states[node_pos[k]]
        # y0's own cotangent; with a single node (ts of one time) it is already the starting a
        return (a + grad_states[node_pos[0]] if last > 0 else a), grad_params


class SDEAdjoint(torch.autograd.Function):
    """states at the solve's nodes = forward(y0); backward solves the adjoint SDE."""

    @staticmethod
    def forward(ctx, solve: AdjointSDESolve, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            states = solve.forward(y0)
        ctx.solve = solve
        ctx.save_for_backward(states, *params)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: torch.Tensor):
        check_batched_backward("adjoint", grad_states)
        states, *params = ctx.saved_tensors
        wanted = [p for p in params if p.requires_grad]
        grad_y0, grad_params = ctx.solve.backward(states, grad_states, tuple(wanted))
        it = iter(grad_params)
        return (None, grad_y0, *[next(it) if p.requires_grad else None for p in params])
