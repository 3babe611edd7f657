"""Checks at the start of a solve and on every field call: report a hopeless start at once, and a field that
misbehaves on the call where it does.

A start from a NaN or inf state, a field that is NaN at the initial time, or an error scale
``atol + rtol |y0|`` with a zero component (``atol=0`` and a zero state component, or an ``atol`` that
underflows in the state's dtype) makes every error ratio NaN or inf: without these checks the adaptive loop
rejects step after step until ``max_steps``, and then blames stiffness. Each check here costs one host
synchronisation per solve (all folded into one ``tolist``).
"""

from __future__ import annotations

from typing import Optional

import torch

from .errors import BadStartError, SolveError

__all__ = ["check_start", "check_field_output", "CheckedField", "first_bad_index"]


def first_bad_index(bad: torch.Tensor, shape) -> tuple:
    """The multi-index of the first True of a flat mask ``bad`` in a tensor of ``shape``."""
    flat = int(torch.nonzero(bad.reshape(-1))[0])
    index = []
    for size in reversed(tuple(shape)):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def check_start(t0: float, y0: torch.Tensor, f0: Optional[torch.Tensor] = None, rtol: Optional[float] = None,
                atol: Optional[float] = None, norm=None) -> None:
    """Raise :class:`~pyjode.errors.BadStartError` if ``y0`` or ``f0 = f(t0, y0)`` is not finite, or if the
    error scale ``atol + rtol |y0|`` (in ``y0``'s dtype) is zero in a component that the error ``norm``
    measures (a seminorm leaves some out)."""
    with torch.no_grad():
        y = y0.detach()
        checks = [torch.isfinite(y).all()]
        if f0 is not None:
            checks.append(torch.isfinite(f0.detach()).all())
        if rtol is not None:
            scale = y.abs().mul(rtol).add(atol)
            checks.append(torch.isfinite(torch.as_tensor(norm(scale.reciprocal()))) if norm is not None
                          else (scale > 0).all())
        ok = torch.stack(checks).tolist()
    if not ok[0]:
        bad = ~torch.isfinite(y)
        idx = first_bad_index(bad, y.shape)
        raise BadStartError(
            f"y0 contains {'NaN' if torch.isnan(y[idx]) else 'inf'} at index {idx} (t={t0:.6g})", t=t0,
            cause="nonfinite_start", hint="pass a finite initial state")
    if f0 is not None and not ok[1]:
        bad = ~torch.isfinite(f0.detach())
        idx = first_bad_index(bad, f0.shape)
        raise BadStartError(
            f"f(t0, y0) is {'NaN' if torch.isnan(f0.detach()[idx]) else 'inf'} at index {idx} (t0={t0:.6g}): the "
            f"vector field is not finite at the initial state", t=t0, cause="nonfinite_field",
            hint="check the field at the initial time and state (a division by zero, a log of a non-positive value, "
                 "an overflow)")
    if rtol is not None and not ok[-1]:
        scale = y.abs().mul(rtol).add(atol)
        idx = first_bad_index(~(scale > 0), y.shape)
        tiny = torch.finfo(y0.dtype).tiny
        why = (f"atol={atol:g} is below the smallest normal {y0.dtype} ({tiny:.3g})" if 0 < atol < tiny
               else f"atol={atol:g}")
        raise BadStartError(
            f"the error scale atol + rtol*|y| is zero at index {idx} (t={t0:.6g}): {why} and "
            f"rtol*|y0[{', '.join(map(str, idx))}]| = 0 there, so no step can pass the error test", t=t0,
            cause="zero_error_scale",
            hint=f"use atol > 0 (e.g. atol={max(1e-9, 10 * tiny):.3g})"
                 + ("" if y0.dtype == torch.float64 else ", or float64"))


def check_field_output(f, y: torch.Tensor) -> None:
    """The field's output must be a tensor with ``y``'s shape and dtype."""
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"func(t, y) must return a torch.Tensor, got {type(f).__name__}")
    if f.shape != y.shape:
        raise ValueError(
            f"func(t, y) returned shape {tuple(f.shape)} but y has shape {tuple(y.shape)}; "
            "the vector field must return dy/dt with the shape of y"
        )
    if f.dtype != y.dtype:
        raise ValueError(
            f"func(t, y) returned dtype {f.dtype} but y has dtype {y.dtype}; "
            "return dy/dt in the dtype of y (e.g. cast the module with .to(y.dtype))"
        )


class CheckedField:
    """Wraps the field so that every call is counted (``counter.nfe``) and checked, at the cost of a few
    attribute reads (no host sync):

    * the output is a tensor with ``y``'s shape and dtype (a field that changes shape later would otherwise
      be broadcast silently). Under ``torch.autocast`` a floating output in another dtype is cast to ``y``'s
      dtype, as autocast intends (the state and the step control stay in the state's dtype);
    * the field did not change ``y`` in place (``y._version``): the solver's state, the caller's ``y0`` and
      the stored outputs share that memory, so a mutation would corrupt the solution silently.
    """

    __slots__ = ("func", "counter")

    def __init__(self, func, counter):
        self.func, self.counter = func, counter

    def __call__(self, t, y):
        self.counter.nfe += 1
        try:
            version = y._version
        except Exception:  # noqa: BLE001 - functorch-wrapped tensors have no version counter
            version = None
        f = self.func(t, y)
        if version is not None and y._version != version:
            raise ValueError(
                f"func(t, y) modified y in place at t={float(t):.6g}; the solver's state (and the caller's y0) "
                f"share that memory. Compute dy/dt out of place (y * k instead of y.mul_(k)), or work on y.clone()")
        try:  # the common case in two comparisons; everything else below
            if f.shape == y.shape and f.dtype == y.dtype:
                return f
        except AttributeError:
            pass
        if isinstance(f, torch.Tensor) and f.dtype != y.dtype and f.is_floating_point() and (
                torch.is_autocast_enabled(y.device.type)):
            f = f.to(y.dtype)
        check_field_output(f, y)
        return f


def backward_failure(err: SolveError, part: str) -> SolveError:
    """``err`` (raised by a backward solve's loop) restated as a failure of the backward pass."""
    if err.cause == "zero_error_scale":  # the adjoint starts at zero in some component: atol = 0 cannot work
        return err.in_backward(None, "the adjoint state starts at zero in some components, so the backward solve "
                                     "needs atol > 0: pass it to the adjoint, e.g. adjoint=pyjode.Backsolve(atol=1e-9)")
    hint = ("the gradient is NaN or inf there: check the field's derivatives at that time (a NaN only in "
            "its Jacobian, e.g. sqrt at 0), or try tighter forward tolerances, float64, or adjoint=\"direct\"")
    return err.in_backward(part, hint)
