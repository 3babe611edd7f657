"""Solver statistics, filled in place by :func:`pyjode.odeint`."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Stats:
    """Counts of one solve and its gradient.

    Pass an instance as ``stats=`` to :func:`pyjode.odeint`. The forward fields are filled when the
    solve returns; the backward fields once ``backward()`` has run through it (for ``adjoint="direct"``
    the backward pass is plain autograd and does no solver steps, so they stay 0).

    Attributes:
        nfe_forward: vector-field evaluations on the forward pass.
        nfe_backward: vector-field evaluations (each with its VJP) on the backward pass.
        steps_forward, steps_backward: accepted steps.
        rejected_forward, rejected_backward: rejected steps.
        adjoint: the gradient method used, as chosen by ``adjoint="auto"`` (empty otherwise).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_forward: int = 0
    steps_backward: int = 0
    rejected_forward: int = 0
    rejected_backward: int = 0
    adjoint: str = ""

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)
