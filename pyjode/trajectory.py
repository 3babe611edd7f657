"""A stored forward trajectory that can be evaluated at any time inside its span.

It keeps, for each accepted step n, the start time t_n, step h_n, start state y_n and the stage
matrix K_n, and evaluates the method's own dense output
    y(t) = y_n + h_n * sum_i b_i(theta) K_n[i],   theta = (t - t_n) / h_n,
with the step found by ``searchsorted`` on the device, so that a query with a tensor time never
synchronises with the host. Methods without a continuous extension (the fixed-step tableaus) store
f(t_n, y_n) and f(t_{n+1}, y_{n+1}) instead and use cubic Hermite interpolation.
Memory is O(steps x stages x state): states only, never activations.
"""

from __future__ import annotations

from typing import List

import torch

from .runge_kutta import RungeKutta
from .tableau import _hermite_interp


class TrajectoryRecorder:
    """An ``on_step`` callback of :func:`pyjode.integrate.integrate` that stores every accepted step."""

    def __init__(self):
        self.t0: List[float] = []
        self.h: List[float] = []
        self.y0: List[torch.Tensor] = []
        self.K: List[torch.Tensor] = []
        self.stepper: RungeKutta | None = None

    def __call__(self, t0, t1, y0, y1, K, stepper):
        self.stepper = stepper
        self.t0.append(t0)
        self.h.append(t1 - t0)
        self.y0.append(y0.reshape(-1))
        K = K.clone()
        if stepper.tableau.interp is None:
            # Hermite needs f at both ends; f(t1, y1) is the next step's first stage, filled in `finish`.
            K = K[:1].clone()
        self.K.append(K)

    def finish(self, func, t_end: float, y_end: torch.Tensor) -> "DenseTrajectory":
        stepper = self.stepper
        tab = stepper.tableau
        opts = dict(dtype=y_end.dtype, device=y_end.device)
        if tab.interp is None:
            f_end = func(torch.full((), t_end, **opts), y_end).reshape(1, -1)
            f_starts = self.K + [f_end]
            K = torch.stack([torch.cat([a, b]) for a, b in zip(f_starts[:-1], f_starts[1:])])
            y_ends = self.y0[1:] + [y_end.reshape(-1)]
            # Stage form of cubic Hermite: pseudo-stages (f0, f1, (y1 - y0)/h), weights from _hermite_interp.
            h = torch.tensor(self.h, **opts).view(-1, 1)
            slope = (torch.stack(y_ends) - torch.stack(self.y0)) / h
            K = torch.cat([K, slope.unsqueeze(1)], dim=1)
            P = hermite_pseudo_interp()
        else:
            K = torch.stack(self.K)
            P = tab.interp
        return DenseTrajectory(torch.tensor(self.t0, **opts), torch.tensor(self.h, **opts),
                               torch.stack(self.y0), K, torch.as_tensor(P, **opts), y_end.shape)


def hermite_pseudo_interp():
    """Cubic Hermite dense output over the pseudo-stages (f0, f1, (y1 - y0)/h), in stage form."""
    import numpy as np

    # _hermite_interp(b, first, last) writes y(θ) = y0 + h Σ P_i(θ) k_i with y1 - y0 = h Σ b_i k_i. With the
    # pseudo-stages (f0, f1, (y1 - y0)/h), b = (0, 0, 1) makes the slope stage carry y1 - y0.
    return _hermite_interp(np.array([0.0, 0.0, 1.0]), first=0, last=1)


class DenseTrajectory:
    """y(t) on the span of a stored solve (see the module docstring)."""

    def __init__(self, t0: torch.Tensor, h: torch.Tensor, y0: torch.Tensor, K: torch.Tensor, P: torch.Tensor,
                 shape):
        self.h = h
        self.y0 = y0
        self.K = K
        self.P = P
        self.shape = tuple(shape)
        self.increasing = bool(h[0] > 0) if h.numel() else True
        # searchsorted needs ascending keys; for a decreasing solve search on -t.
        self.t0 = t0
        self._keys = t0 if self.increasing else -t0
        self._powers = torch.arange(1, P.shape[1] + 1, dtype=P.dtype, device=P.device)

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.t0, self.h, self.y0, self.K))

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """Evaluate at a 0-dim or 1-D tensor of times; returns ``(*t.shape, *state_shape)``."""
        tt = t.reshape(-1).to(self.t0.dtype)
        keys = tt if self.increasing else -tt
        idx = (torch.searchsorted(self._keys, keys, right=True) - 1).clamp_(0, self.t0.numel() - 1)
        theta = (tt - self.t0[idx]) / self.h[idx]
        W = (theta.unsqueeze(-1) ** self._powers) @ self.P.t()  # (m, stages)
        y = self.y0[idx] + self.h[idx].unsqueeze(-1) * torch.einsum("ms,msn->mn", W, self.K[idx])
        return y.view(*t.shape, *self.shape)
