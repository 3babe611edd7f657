"""Adaptive SDE steps by step doubling (torchsde's ``adaptive=True``; Lamba 2003, "An adaptive timestepping
algorithm for stochastic differential equations"; Burrage & Burrage 2002, Sec. 4):

    y_full = Φ(t0 → t1, y; W_{t0,t1}),   y_half = Φ(tm → t1, Φ(t0 → tm, y; W_{t0,tm}); W_{tm,t1}),

with tm the midpoint, the error estimate e = y_half − y_full, and y_half kept when the engine's adaptive loop
accepts the step. The increments come from one Brownian motion queried at the step's own times, so a rejected
step and the shorter steps that replace it see one and the same path (a `BrownianInterval` answers any query
consistently). As torchsde does, a step no longer than ``dt_min`` is accepted whatever its error estimate.
Outputs inside a step are linear interpolants of its ends (torchsde's rule).
"""
from __future__ import annotations

import torch

from ..stepper import Stepper


class StepDoublingSDE(Stepper):
    """Wraps a fixed-step SDE stepper (control = Brownian increment) into an adaptive one for `adaptive_loop`."""

    adaptive = True
    dense_output = True
    order = 1
    error_order = 1

    def __init__(self, inner: Stepper, query, dt_min: float):
        self.inner, self.query, self.dt_min = inner, query, dt_min
        self.time = getattr(inner, "time", None)

    def init(self, field, t0: float, y0: torch.Tensor):
        return self.inner.init(field, t0, y0)

    def step(self, field, t0: float, t1: float, state, control=None):
        tm = 0.5 * (t0 + t1)
        full, _, _ = self.inner.step(field, t0, t1, state, self.query(t0, t1))
        mid, _, _ = self.inner.step(field, t0, tm, state, self.query(t0, tm))
        half, _, _ = self.inner.step(field, tm, t1, mid, self.query(tm, t1))
        y_half = self.inner.output(half)
        with torch.no_grad():
            if abs(t1 - t0) <= self.dt_min * (1 + 1e-9):
                err = torch.zeros_like(y_half).reshape(-1)
            else:
                err = (y_half - self.inner.output(full)).reshape(-1)
        return half, err, (self.inner.output(state), y_half)

    def output(self, state) -> torch.Tensor:
        return self.inner.output(state)

    def interpolate(self, state, dense, t0: float, t1: float, thetas) -> torch.Tensor:
        y0, y1 = dense
        return torch.stack([torch.lerp(y0, y1, float(th)) for th in thetas])
