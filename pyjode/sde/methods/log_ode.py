"""Log-ODE midpoint scheme for general noise (Stratonovich; Lie–Trotter splitting of the log-ODE method with the
explicit midpoint rule, Foster, Lyons & Oberhauser 2020; torchsde's "log_ode"):

    ỹ = y + ½ f(t0, y) h + ½ g(t0, y)·ΔW
    y1 = y + f(t_½, ỹ) h + g(t_½, ỹ)·ΔW + Σ_{j,k,l} ∂g_{·l}/∂y_j (t_½, ỹ) g_{jk}(t_½, ỹ) A_{kl},

with A the Lévy area of the step (Davie's or Foster's approximation from a `BrownianInterval`). The last term is
Σ_l J_{g_{·l}} (g A)_{·l}: one forward-mode JVP per noise channel. Without general noise it vanishes and the
scheme is the midpoint method. Strong order 0.5 for general noise (1.0 with exact Lévy area)."""
from __future__ import annotations

import torch

from ..noise_types import diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)

    def step(t0, t1, h, y, control):
        dw, area = control
        f0, g0 = f_and_g(t0, y)
        y_half = axpy(torch.add(y, f0, alpha=0.5 * h), g0, dw, 0.5)
        t_half = t0 + 0.5 * h
        f1, g1 = f_and_g(t_half, y_half)
        ga = g1 @ area
        correction = sum(torch.func.jvp(lambda u, col=col: sde.g(t_half, u)[..., col], (y_half,),
                                        (ga[..., col],))[1] for col in range(g1.shape[-1]))
        return axpy(torch.add(y, f1, alpha=h), g1, dw, 1.0) + correction
    return step


LOG_ODE = SDEMethod("log_ode", "stratonovich", ("general",), _make_step, levy_area="levy")
