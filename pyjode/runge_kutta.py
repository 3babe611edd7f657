"""One explicit Runge–Kutta step and its dense output, for any :class:`~pyjode.tableau.ButcherTableau`.

The stages live in one ``(s, n)`` buffer ``K`` (``n`` = elements of the state); each stage input is a
single fused ``addmv``:  y_i = y + h * K[:i]^T a_i.  Without autograd the buffer is allocated once and
reused for every step; under autograd each step gets a fresh one, because the graph keeps it alive.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .tableau import ButcherTableau


class RungeKutta:
    """The explicit RK step of one tableau, with its coefficients cached on the state's dtype/device."""

    def __init__(self, tableau: ButcherTableau, like: torch.Tensor):
        self.tableau = tableau
        self.shape = like.shape
        self.numel = like.numel()
        opts = dict(dtype=like.dtype, device=like.device)
        self._opts = opts
        self.A = torch.as_tensor(tableau.a, **opts)
        self.b = torch.as_tensor(tableau.b, **opts)
        self.e = None if tableau.b_error is None else torch.as_tensor(tableau.b_error, **opts)
        self.c = [float(x) for x in tableau.c]
        self.fsal = tableau.fsal
        self._buffer: Optional[torch.Tensor] = None

    def _stages(self) -> torch.Tensor:
        if torch.is_grad_enabled():
            return torch.empty(self.tableau.stages, self.numel, **self._opts)
        if self._buffer is None:
            self._buffer = torch.empty(self.tableau.stages, self.numel, **self._opts)
        return self._buffer

    def step(self, func: Callable, t: float, h: float, y: torch.Tensor, f0: Optional[torch.Tensor],
             time: Callable[[float], torch.Tensor]):
        """Advance ``y`` from ``t`` to ``t + h``; returns ``(y1, K)``.

        ``f0 = f(t, y)`` may be passed in (FSAL reuse); otherwise it is evaluated. For FSAL tableaus
        ``K[-1]`` is ``f(t + h, y1)``.
        """
        K = self._stages()
        y_flat = y.reshape(-1)
        if f0 is None:
            f0 = func(time(t), y)
        K[0].copy_(f0.reshape(-1))
        yi = y_flat
        A, c = self.A, self.c
        for i in range(1, len(c)):
            yi = torch.addmv(y_flat, K[:i].t(), A[i, :i], alpha=h)
            K[i].copy_(func(time(t + c[i] * h), yi.view(self.shape)).reshape(-1))
        if self.fsal:
            y1 = yi  # the last stage's input is y1, because a[-1] == b
        else:
            y1 = torch.addmv(y_flat, K.t(), self.b, alpha=h)
        return y1.view(self.shape), K

    def error(self, K: torch.Tensor, h: float) -> torch.Tensor:
        """The embedded local error estimate ``h * K^T (b - b_hat)``, flat."""
        return torch.mv(K.t(), self.e) * h

    def dense(self, y: torch.Tensor, K: torch.Tensor, h: float, theta: float) -> torch.Tensor:
        """The method's own continuous extension at ``t + theta h`` (``0 <= theta <= 1``)."""
        w = torch.as_tensor(self.tableau.interp_weights(theta), **self._opts)
        return torch.addmv(y.reshape(-1), K.t(), w, alpha=h).view(self.shape)

    def dense_many(self, y: torch.Tensor, K: torch.Tensor, h: float, thetas) -> torch.Tensor:
        """Dense output at several ``theta`` at once; returns ``(len(thetas), *shape)``."""
        import numpy as np

        W = np.stack([self.tableau.interp_weights(float(th)) for th in thetas])
        W = torch.as_tensor(W, **self._opts)
        out = y.reshape(1, -1) + h * (W @ K)
        return out.view(len(thetas), *self.shape)
