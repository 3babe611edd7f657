"""Euler–Heun (Stratonovich; Kloeden & Platen 1992, eq. 11.1.9 with the drift taken once, torchsde's "euler_heun"):

    ỹ = y + g(t0, y)·dW
    y1 = y + f(t0, y) h + ½(g(t0, y) + g(t1, ỹ))·dW.

Strong order 1.0 for commuting noise, 0.5 for general noise; one drift evaluation per step."""
from __future__ import annotations

from ..noise_types import NOISE_TYPES, diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)

    def step(t0, t1, h, y, dw):
        f, g0 = f_and_g(t0, y)
        g1 = sde.g(t1, axpy(y, g0, dw, 1.0))
        return axpy(y + f * h, g0 + g1, dw, 0.5)
    return step


EULER_HEUN = SDEMethod("euler_heun", "stratonovich", NOISE_TYPES, _make_step)
