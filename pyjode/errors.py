"""The exceptions a solve raises on numerical failure, so that callers can react without parsing messages.

Bad input stays a plain ``ValueError``/``TypeError`` naming the argument and the fix. A numerical failure
raises a :class:`SolveError` (a ``RuntimeError``) carrying

* ``t``: where it happened (``None`` when it is not one time);
* ``phase``: ``"forward"`` (the solve) or ``"backward"`` (a gradient method's backward pass);
* ``cause``: a short machine-readable tag (``"nonfinite_start"``, ``"nonfinite_field"``, ``"step_underflow"``,
  ``"max_steps"``, ``"min_step"``, ``"nonfinite_solution"``, ``"nonfinite_gradient"``, ``"zero_error_scale"``);
* ``hint``: what to try.

The message says all of it in words. A failure inside a backward solve is re-raised with
``phase="backward"`` and the part of the adjoint that failed (``"state adjoint"`` or
``"parameter adjoint"``), so it never reads like a forward failure.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["SolveError", "BadStartError", "DoubleBackwardError", "refuse_double_backward"]


class SolveError(RuntimeError):
    """A solve failed numerically. Attributes ``t``, ``phase``, ``cause``, ``hint``, ``part`` (see module)."""

    def __init__(self, message: str, *, t: Optional[float] = None, phase: str = "forward", cause: str = "",
                 hint: str = "", part: Optional[str] = None):
        self.what, self.t, self.phase, self.cause, self.hint, self.part = message, t, phase, cause, hint, part
        super().__init__(self._render())

    def _render(self) -> str:
        where = "" if self.phase == "forward" else (
            f"in the backward pass (the {self.part} solve)" if self.part else "in the backward pass")
        text = f"{where}: {self.what}" if where else self.what
        return f"{text}; {self.hint}" if self.hint else text

    def in_backward(self, part: Optional[str], hint: Optional[str] = None) -> "SolveError":
        """The same failure, reported as part of a backward pass (a new exception of the same class)."""
        err = type(self).__new__(type(self))
        SolveError.__init__(err, self.what, t=self.t, phase="backward", cause=self.cause,
                            hint=self.hint if hint is None else hint, part=part)
        return err


class BadStartError(SolveError):
    """The initial state, the field at the initial time or the tolerances make any step impossible."""


class DoubleBackwardError(RuntimeError):
    """A gradient method that computes its backward pass outside autograd was asked for a second derivative."""


def refuse_double_backward(name: str, where: str = "") -> None:
    """Raise inside an autograd ``backward`` run with ``create_graph=True``: the adjoint's backward solve
    runs without a graph, so its result would be silently constant to a second differentiation."""
    import torch

    if torch.is_grad_enabled():
        fix = 'adjoint="direct" with backend="torch"' if where else 'adjoint="direct"'
        raise DoubleBackwardError(
            f"adjoint={name!r}{where} cannot be differentiated twice (create_graph=True, a gradient penalty, a "
            f"Hessian): its backward pass is a solve outside autograd, so the second derivative would be silently "
            f"wrong. Use {fix} for higher derivatives")
