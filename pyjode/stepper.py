"""The stepper protocol: what every solver provides to the one adaptive and one fixed-step loop.

A stepper advances an explicit state; it never decides step sizes, counts, saves outputs or checks
progress (the loops in :mod:`pyjode.integrate` do that, once for all solvers). In diffrax's terms a stepper
is an ``AbstractSolver``; in torchode's a ``SingleStepMethod``.

* ``init(field, t0, y0) -> state``: the state at the initial time (for a Runge–Kutta method ``(y, f)``
  with its first-same-as-last stage, for a reversible method ``(y, z)``, for reversible Heun
  ``(y, z, f, g)``).
* ``step(field, t0, t1, state, control) -> (state1, err, dense)``: one step from ``t0`` to ``t1``
  (either direction). ``control`` is the step's driving increment (the Brownian increment of an SDE
  step, ``None`` for an ODE). ``err`` is the flat embedded error estimate (``None`` for fixed-step
  methods) and ``dense`` whatever ``interpolate`` needs. ``state1`` must not alias anything the
  stepper will overwrite on a later attempt: a rejected step is retried from ``state``.
* ``output(state) -> y``: the solution carried by the state.
* ``restart(field, t, state) -> state``: the state after a jump of the field at ``t`` (re-evaluate the
  cached stages).
* ``slope(field, t, state) -> f(t, y)``: for the initial step-size selection.
* ``interpolate(state0, dense, t0, t1, thetas)``: outputs at ``t0 + theta (t1 - t0)``, where
  ``dense_output`` is true; otherwise the loops land a step on every output time.

Optional: ``hold_step(ratio) -> bool``, asked by the adaptive loop after each accepted step whose size the
controller would change by ``ratio``: true keeps the step size (implicit methods, to reuse their factorised
Newton matrices; Hairer's rule).

Attributes: ``adaptive`` (has an error estimate), ``order``, ``error_order`` (order of the embedded
method, which sets the controller's exponent), ``dense_output``, and ``time``, which makes the field's
0-dim time tensor from a Python float (see :func:`time_maker`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch


def time_maker(like: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """0-dim time tensors on the state's device and dtype; ``torch.full`` never synchronises on CUDA. A time
    that is already a tensor (the ``(B,)`` times of a per-sample solve, :mod:`pyjode.per_sample`) is cast."""
    dtype, device = like.dtype, like.device

    def time(value):
        if isinstance(value, torch.Tensor):
            return value.to(dtype=dtype, device=device)
        return torch.full((), value, dtype=dtype, device=device)
    return time


class Stepper:
    """Base class of the steppers (see the module docstring for the protocol)."""

    adaptive: bool = False
    order: int = 1
    error_order: Optional[int] = None
    dense_output: bool = False

    def init(self, field, t0: float, y0: torch.Tensor) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, field, t0: float, t1: float, state: Any, control=None):  # pragma: no cover - interface
        raise NotImplementedError

    def output(self, state: Any) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def restart(self, field, t: float, state: Any) -> Any:
        return state

    def slope(self, field, t: float, state: Any) -> torch.Tensor:
        return field(self.time(t), self.output(state))

    def interpolate(self, state: Any, dense: Any, t0: float, t1: float, thetas) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no dense output")
