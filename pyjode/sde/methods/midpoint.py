"""Stratonovich midpoint scheme (Burrage, Burrage & Tian 2004; torchsde's "midpoint"):

    ỹ = y + ½ f(t0, y) h + ½ g(t0, y)·dW
    y1 = y + f(t0 + h/2, ỹ) h + g(t0 + h/2, ỹ)·dW.

Strong order 1.0 for commuting noise, 0.5 in general."""
from __future__ import annotations

import torch

from ..noise_types import NOISE_TYPES, diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)

    def step(t0, t1, h, y, dw):
        f0, g0 = f_and_g(t0, y)
        y_half = axpy(torch.add(y, f0, alpha=0.5 * h), g0, dw, 0.5)
        f1, g1 = f_and_g(t0 + 0.5 * h, y_half)
        return axpy(torch.add(y, f1, alpha=h), g1, dw, 1.0)
    return step


MIDPOINT = SDEMethod("midpoint", "stratonovich", NOISE_TYPES, _make_step)
