"""Itô Milstein scheme (Kloeden & Platen 1992, eq. 10.3.3), diagonal or scalar noise:

    y1 = y + f h + g·dW + ½ (∂g/∂y · g)(dW² − h).

∂g/∂y · g comes from one forward-mode JVP. Strong order 1.0 for commuting noise; with additive
noise the correction vanishes and the step is Euler–Maruyama."""
from __future__ import annotations

import torch

from ..noise_types import diffusion_and_jvp, diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)
    if noise_type == "additive":
        def additive_step(t0, t1, h, y, dw):
            f, g = f_and_g(t0, y)
            return axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
        return additive_step

    def step(t0, t1, h, y, dw):
        f = sde.f(t0, y)
        g, g_dg = diffusion_and_jvp(sde, t0, y, noise_type)
        y1 = axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
        return axpy(y1, g_dg, dw * dw - h, 0.5)
    return step


MILSTEIN = SDEMethod("milstein", "ito", ("diagonal", "scalar", "additive"), _make_step)
