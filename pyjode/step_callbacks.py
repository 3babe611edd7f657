"""Step callbacks: a vector field may ask to be told of every step the solver takes.

As in torchdiffeq, the field ``func`` may carry the methods

* ``callback_step(t0, y0, dt)``: before every attempted step from ``t0`` of size ``dt``;
* ``callback_accept_step(t0, y0, dt)`` / ``callback_reject_step(t0, y0, dt)``: after the error test of an
  adaptive step (fixed-step methods never reject, so they never call these);

and the same three with the suffix ``_adjoint``, called for the steps of the backward solve of a
continuous adjoint (``y0`` is then the augmented backward state). ``t0`` is a 0-dim tensor in the state's
dtype, ``dt`` a Python float.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["StepCallbacks"]

_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


@dataclass(frozen=True)
class StepCallbacks:
    """The forward and backward step callbacks of one solve (any of them ``None``).

    Attributes:
        on_step: ``on_step(t0, y0, dt)`` before every attempted step (the field's ``callback_step``).
        on_accept, on_reject: ``(t0, y0, dt)`` after an adaptive step's error test
            (``callback_accept_step``, ``callback_reject_step``).
        adjoint: the callbacks of a continuous adjoint's backward solve (the ``_adjoint`` forms).

    Built from a field by :meth:`from_func`; carried by :class:`pyjode.StepControl` as ``callbacks``.
    """

    on_step: Optional[Callable] = None
    on_accept: Optional[Callable] = None
    on_reject: Optional[Callable] = None
    adjoint: Optional["StepCallbacks"] = None

    @staticmethod
    def from_func(func, adaptive: bool) -> Optional["StepCallbacks"]:
        """The callbacks ``func`` carries, or None. A fixed-step method never accepts or rejects a step,
        so accept/reject callbacks on it are warned about rather than silently never called."""
        def get(suffix):
            found = [getattr(func, name + suffix, None) for name in _NAMES]
            for name, cb in zip(_NAMES, found):
                if cb is not None and not callable(cb):
                    raise TypeError(f"func.{name}{suffix} must be callable as (t0, y0, dt), got {type(cb).__name__}")
            if not adaptive:
                for name, cb in zip(_NAMES[1:], found[1:]):
                    if cb is not None:
                        warnings.warn(f"func.{name}{suffix} is never called: a fixed-step method accepts every "
                                      f"step without an error test (use callback_step{suffix})", stacklevel=4)
            return found

        forward, backward = get(""), get("_adjoint")
        if not any(forward) and not any(backward):
            return None
        adjoint = StepCallbacks(*backward) if any(backward) else None
        return StepCallbacks(*forward, adjoint=adjoint)

    def backward(self) -> Optional["StepCallbacks"]:
        """The callbacks of a backward (adjoint) solve."""
        return self.adjoint

    @staticmethod
    def _call(cb, t0: float, y: torch.Tensor, dt: float) -> None:
        if cb is not None:
            cb(torch.full((), t0, dtype=y.dtype, device=y.device), y, dt)

    def step(self, t0: float, y: torch.Tensor, dt: float) -> None:
        self._call(self.on_step, t0, y, dt)

    def accept(self, t0: float, y: torch.Tensor, dt: float) -> None:
        self._call(self.on_accept, t0, y, dt)

    def reject(self, t0: float, y: torch.Tensor, dt: float) -> None:
        self._call(self.on_reject, t0, y, dt)
