"""Adaptive step-size selection: Hairer's initial step and a PI controller.

All quantities here are Python floats: the only host synchronisation per step is the error norm that
decides acceptance, and everything downstream of it is scalar host arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def initial_step_size(func, t0: float, y0: torch.Tensor, f0: torch.Tensor, order: int, rtol: float,
                      atol: float, norm, direction: float, time) -> float:
    """Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4 (starting step size), returning ``|h0|``.

    d0 = ||y0||, d1 = ||f0|| (scaled by atol + rtol|y0|); h0 = 0.01 d0/d1; one explicit Euler step of
    size h0 gives d2 = ||f(t0+h0, y0+h0 f0) - f0|| / h0; then h1 = (0.01 / max(d1, d2))^(1/(order+1))
    and the result is min(100 h0, h1).  Costs one vector-field evaluation. Returns NaN, without
    evaluating the field, when d0 or d1 is not finite (a non-finite y0 or f0, or a zero error scale): the
    caller then diagnoses the start.
    """
    scale = atol + rtol * y0.abs()
    d0, d1 = torch.stack([norm(y0 / scale), norm(f0 / scale)]).tolist()
    if not (math.isfinite(d0) and math.isfinite(d1)):
        return math.nan
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    y1 = y0 + (direction * h0) * f0
    f1 = func(time(t0 + direction * h0), y1)
    d2 = float(norm((f1 - f0) / scale)) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1)


@dataclass(frozen=True)
class PIController:
    """Proportional–integral step-size control (Gustafsson 1991; Hairer & Wanner, *ODEs II*, §IV.2).

    With r_n the error norm of the step just taken and k the order of the error estimate plus one,
    an accepted step scales h by

        safety * r_n^(-(1/k - 0.75 beta)) * r_{n-1}^beta,   clipped to [factor_min, factor_max],

    the stabilised controller of Hairer's DOPRI5 code (beta = 0.04); a rejected step by
    max(factor_min, safety * r_n^(-1/k)). At a steady state the accepted error ratio settles at
    safety^(1/(1/k - 1.75 beta)) (about 0.45 for dopri5): a PI controller with a weaker integral gain
    settles lower and takes needlessly many steps.

    Args:
        safety: the safety factor (default 0.9).
        beta: the integral gain (default 0.04; 0 gives the classic I controller, as torchdiffeq's).
        factor_min, factor_max: bounds of the factor by which one step may change h (defaults 0.2, 10).
    """

    safety: float = 0.9
    beta: float = 0.04
    factor_min: float = 0.2
    factor_max: float = 10.0

    def accept_factor(self, ratio: float, prev_ratio: float, k: int) -> float:
        ratio = max(ratio, 1e-10)
        fac = self.safety * ratio ** (-(1.0 / k - 0.75 * self.beta)) * prev_ratio ** self.beta
        return min(self.factor_max, max(self.factor_min, fac))

    def reject_factor(self, ratio: float, k: int) -> float:
        if not math.isfinite(ratio):
            return self.factor_min
        return min(1.0, max(self.factor_min, self.safety * ratio ** (-1.0 / k)))
