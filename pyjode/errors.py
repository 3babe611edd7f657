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


def _double_backward_message(name: str, where: str) -> str:
    fix = 'adjoint="direct" with backend="torch"' if where else 'adjoint="direct"'
    return (f"adjoint={name!r}{where} cannot be differentiated twice (create_graph=True with a second "
            f"derivative: a gradient penalty, a Hessian): its backward pass is a solve outside autograd, so the "
            f"second derivative would be silently wrong. Use {fix} for higher derivatives")


def refuse_double_backward(name: str, where: str, grads: tuple, inputs: tuple = ()) -> tuple:
    """The gradients a backward pass returns, made to raise :class:`DoubleBackwardError` if they are ever
    differentiated. The adjoint's backward solve runs without a graph, so under ``create_graph=True`` its
    result would be silently constant to a second differentiation; the first derivative itself is right, and
    torchdiffeq's and torchsde's users take it with ``create_graph=True`` too, so only the second is refused
    (as ``torch.autograd.function.once_differentiable`` does, with a message that names the fix).
    ``inputs`` are the forward pass's inputs: the refusing node hangs off them, so that a second derivative
    with respect to any of them reaches it."""
    import torch

    if not torch.is_grad_enabled():
        return grads
    message = _double_backward_message(name, where)
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    # aliases that require grad, so that a second differentiation reaches the refusing node
    global _Refuse
    if _Refuse is None:
        _Refuse = _refuse_class()
    linked = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    refused = _Refuse.apply(message, len(present), *[g.detach().requires_grad_(True) for g in present], *linked)
    refused = iter(refused if isinstance(refused, tuple) else (refused,))
    return tuple(None if g is None else next(refused) for g in grads)


def _refuse_class():
    import torch

    class Refuse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, message, n, *tensors):
            ctx.message = message
            return tuple(g.view_as(g) for g in tensors[:n])

        @staticmethod
        def backward(ctx, *_):
            raise DoubleBackwardError(ctx.message)

    return Refuse


_Refuse = None  # the autograd function, built on first use: this module is imported before torch is needed
