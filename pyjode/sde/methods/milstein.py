"""Milstein schemes (Kloeden & Platen 1992, eqs. 10.3.3 and 11.1.7), diagonal or scalar noise:

    Itô:           y1 = y + f h + g·dW + ½ (∂g/∂y · g)(dW² − h)
    Stratonovich:  y1 = y + f h + g·dW + ½ (∂g/∂y · g) dW²

∂g/∂y · g comes from one forward-mode JVP (or one reverse pass for diagonal noise). The derivative-free
variant (torchsde's options={"grad_free": True}; Kloeden & Platen eq. 11.1.5) replaces it by a finite
difference along the noise:

    ỹ = y + c f h + g √h   (c = 1 Itô, 0 Stratonovich),   ∂g/∂y · g ≈ (g(ỹ) − g(y)) / √h.

Strong order 1.0 for commuting noise; with additive noise the correction vanishes and the step is
Euler–Maruyama."""
from __future__ import annotations

import math

import torch

from ..noise_types import diffusion_and_jvp, diffusion_axpy
from .method import SDEMethod, Step

_NOISE = ("diagonal", "scalar", "additive")


def _maker(ito: bool, grad_free: bool):
    def make_step(sde, f_and_g, noise_type) -> Step:
        axpy = diffusion_axpy(noise_type)
        if noise_type == "additive":
            def additive_step(t0, t1, h, y, dw):
                f, g = f_and_g(t0, y)
                return axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
            return additive_step

        def v_term(dw, h):
            return dw * dw - h if ito else dw * dw

        if grad_free:
            def free_step(t0, t1, h, y, dw):
                f, g = f_and_g(t0, y)
                sqrt_h = math.sqrt(h)
                g_ = g[..., 0] if noise_type == "scalar" else g
                y_probe = y + g_ * sqrt_h
                if ito:
                    y_probe = y_probe + f * h
                g_probe = sde.g(t0, y_probe)
                y1 = axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
                return axpy(y1, g_probe - g, v_term(dw, h), 0.5 / sqrt_h)
            return free_step

        def step(t0, t1, h, y, dw):
            f = sde.f(t0, y)
            g, g_dg = diffusion_and_jvp(sde, t0, y, noise_type)
            y1 = axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
            return axpy(y1, g_dg, v_term(dw, h), 0.5)
        return step
    return make_step


MILSTEIN = SDEMethod("milstein", "ito", _NOISE, _maker(True, False))
MILSTEIN_GRAD_FREE = SDEMethod("milstein", "ito", _NOISE, _maker(True, True))
MILSTEIN_STRATONOVICH = SDEMethod("milstein", "stratonovich", _NOISE, _maker(False, False))
MILSTEIN_STRATONOVICH_GRAD_FREE = SDEMethod("milstein", "stratonovich", _NOISE, _maker(False, True))
