"""Stratonovich Heun scheme (trapezoidal predictor–corrector; Kloeden & Platen 1992, eq. 11.1.9
without the derivative-free correction terms; torchsde's "heun"):

    ỹ = y + f(t0, y) h + g(t0, y)·dW
    y1 = y + ½(f(t0, y) + f(t1, ỹ)) h + ½(g(t0, y) + g(t1, ỹ))·dW.

Strong order 1.0 for commuting noise, 0.5 in general."""
from __future__ import annotations

import torch

from ..noise_types import NOISE_TYPES, diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)

    def step(t0, t1, h, y, dw):
        f0, g0 = f_and_g(t0, y)
        y_pred = axpy(torch.add(y, f0, alpha=h), g0, dw, 1.0)
        f1, g1 = f_and_g(t1, y_pred)
        return axpy(torch.add(y, f0 + f1, alpha=0.5 * h), g0 + g1, dw, 0.5)
    return step


HEUN = SDEMethod("heun", "stratonovich", NOISE_TYPES, _make_step)
