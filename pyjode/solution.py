"""``Solution``: what :func:`pyjode.solve` returns."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .stats import Stats
from .trajectory import DenseTrajectory


class Solution:
    """One solve: its output times, the states there, the work it took and, on request, y anywhere.

    Attributes:
        ts: the output times (the ``t`` given).
        ys: the states at ``ts``, shape ``(len(ts), *y0.shape)``.
        stats: the :class:`pyjode.Stats` of the solve (its backward fields fill in after ``backward()``).
    """

    def __init__(self, ts: torch.Tensor, ys: torch.Tensor, stats: Stats,
                 trajectory: Optional[DenseTrajectory] = None):
        self.ts, self.ys, self.stats, self._trajectory = ts, ys, stats, trajectory

    def evaluate(self, t: Union[float, Sequence[float], torch.Tensor]) -> torch.Tensor:
        """y at ``t`` (a number, a sequence or a tensor of times inside the span) from the solver's dense
        output; returns ``(*t.shape, *y0.shape)``. Needs ``pyjode.solve(..., dense=True)``."""
        if self._trajectory is None:
            raise ValueError("this Solution keeps no steps: call pyjode.solve(..., dense=True) to evaluate it")
        t = torch.as_tensor(t, dtype=self.ys.dtype, device=self.ys.device)
        lo, hi = sorted((float(self.ts[0]), float(self.ts[-1])))
        span = hi - lo
        outside = (t < lo - 1e-12 * span) | (t > hi + 1e-12 * span)
        if bool(outside.any()):
            raise ValueError(f"evaluate: every time must lie in the solved span [{lo:.6g}, {hi:.6g}]")
        return self._trajectory(t)

    def __repr__(self) -> str:
        return f"pyjode.Solution(ts={tuple(self.ts.shape)}, ys={tuple(self.ys.shape)}, {self.stats})"
