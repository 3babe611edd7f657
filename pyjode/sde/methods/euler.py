"""Euler–Maruyama (Kloeden & Platen 1992, eq. 10.2.2): y1 = y + f h + g·dW.

Itô; strong order 0.5 in general, 1.0 for additive noise."""
from __future__ import annotations

import torch

from ..noise_types import NOISE_TYPES, diffusion_axpy
from .method import SDEMethod, Step


def _make_step(sde, f_and_g, noise_type) -> Step:
    axpy = diffusion_axpy(noise_type)

    def step(t0, t1, h, y, dw):
        f, g = f_and_g(t0, y)
        return axpy(torch.add(y, f, alpha=h), g, dw, 1.0)
    return step


EULER = SDEMethod("euler", "ito", NOISE_TYPES, _make_step)
