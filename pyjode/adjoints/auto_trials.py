"""Timing the close contenders of ``adjoint="auto"`` on the user's own gradients, and keeping the fastest.

Predicted times in field evaluations rank methods whose costs differ in kind, not only in number: a
backward evaluation with a state and parameter VJP, a batched VJP over quadrature nodes, a forward
evaluation without a graph. What one of those costs relative to another depends on the field (how much a
VJP costs against the evaluation, how well a batch of nodes vectorises, how much of the time is per-call
overhead), so candidates predicted within a factor of two of each other are instead measured: each is used
for a few training iterations, its gradient timed from the start of the solve to the end of the backward
pass that consumes it, and the fastest is kept.

A measurement is the wall time of the solve plus that of the backward pass from the moment it reaches the
solve's outputs to its end, divided by the forward evaluations of the solve (the weights change between
iterations and with them the number of steps, the same for every candidate at one set of weights).
Everything the backward pass does after the solve (an encoder before the ODE) is in every candidate's
figure alike, so it does not change the ranking. The minimum of a candidate's measurements is its score:
timing noise only ever adds.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["Trials", "timed"]


class Trials:
    """The measurements of the candidates of one problem (field, state shape, span, tolerances).

    ``steps`` is the number of accepted steps when the measurements began: once the solve takes more than
    ``drift`` times as many (or as few), the measurements are stale and start again.
    """

    drift = 1.5

    def __init__(self, steps: int):
        self.steps = steps
        self.scores: Dict[str, List[float]] = {}
        self.attempts: Dict[str, int] = {}

    def stale(self, steps: int) -> bool:
        return not self.steps / self.drift <= steps <= self.steps * self.drift

    def next(self, contenders: Sequence[str], rounds: int) -> Optional[str]:
        """The contender to measure next (the least tried, ties in ``contenders`` order), or None when each
        has ``rounds`` measurements, or was tried twice as often without its backward pass being seen."""
        open_ = [k for k in contenders
                 if len(self.scores.get(k, ())) < rounds and self.attempts.get(k, 0) < 2 * rounds]
        if not open_:
            return None
        return min(open_, key=lambda k: (self.attempts.get(k, 0), contenders.index(k)))

    def start(self, kind: str) -> Callable[[float], None]:
        """Counts an attempt of ``kind``; returns where its measurement goes."""
        self.attempts[kind] = self.attempts.get(kind, 0) + 1
        return lambda score: self.scores.setdefault(kind, []).append(score)

    def best(self, contenders: Sequence[str]) -> Optional[str]:
        """The measured contender with the lowest score (None if none was measured)."""
        measured = [k for k in contenders if self.scores.get(k)]
        return min(measured, key=self.score) if measured else None

    def score(self, kind: str) -> float:
        return min(self.scores[kind])


def _now(device: torch.device) -> float:
    if device.type == "cuda":  # only while measuring: the kernels queued so far are part of the time
        torch.cuda.synchronize(device)
    return time.perf_counter()


class _BackwardClock(torch.autograd.Function):
    """The identity on the solve's outputs; its backward pass starts the clock and asks the autograd
    engine to stop it when the whole backward pass ends."""

    @staticmethod
    def forward(ctx, ys, report):
        ctx.report, ctx.device = report, ys.device
        return ys.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.report is not None:  # the first backward pass only (retain_graph may bring more)
            report, ctx.report = ctx.report, None
            start = _now(ctx.device)
            torch.autograd.Variable._execution_engine.queue_callback(lambda: report(_now(ctx.device) - start))
        return grad, None


def timed(solve: Callable[[], torch.Tensor], device: torch.device, nfe: Callable[[], int],
          report: Callable[[float], None]) -> torch.Tensor:
    """Runs ``solve()`` and hands ``report`` the seconds per forward evaluation (``nfe()`` after the solve)
    of the solve and of the backward pass through its outputs, once that pass has ended."""
    start = _now(device)
    ys = solve()
    forward = _now(device) - start
    evaluations = max(nfe(), 1)
    if not ys.requires_grad:  # nothing to differentiate: no measurement
        return ys
    return _BackwardClock.apply(ys, lambda backward: report((forward + backward) / evaluations))
