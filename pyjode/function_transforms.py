"""``torch.func`` transforms around a solve: what works and a clear error for what does not.

* ``torch.func.grad``/``jacrev``/``vjp`` through ``adjoint="direct"`` work: the solve is ordinary torch
  arithmetic on the transform's wrapped tensors.
* The adjoints run their backward pass as a solve outside autograd, in an ``autograd.Function`` that the
  transforms cannot enter: a ``TypeError`` says to use ``adjoint="direct"``.
* ``torch.func.vmap`` over a solve cannot work: the adaptive loop decides each step on the host from the
  error norm of the whole batch. The state's leading dimensions are batch already, so the stacked batch is
  solved in one call.
"""

from __future__ import annotations

import torch

__all__ = ["check_function_transforms", "is_functorch_wrapped"]


def is_functorch_wrapped(x) -> bool:
    """Whether ``x`` is a ``torch.func`` transform's wrapper (whose value cannot be read on the host)."""
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return False


def _active_transform():
    """The innermost active ``torch.func`` transform's kind (a ``TransformType``), or None."""
    try:
        from torch._C._functorch import peek_interpreter_stack
    except ImportError:  # pragma: no cover - older torch
        return None
    interpreter = peek_interpreter_stack()
    return None if interpreter is None else interpreter.key()


def check_function_transforms(gradient_method: str) -> None:
    """Raise a ``TypeError`` when a solve runs under a ``torch.func`` transform it cannot support."""
    kind = _active_transform()
    if kind is None:
        return
    from torch._C._functorch import TransformType

    if kind == TransformType.Vmap:
        raise TypeError(
            "torch.func.vmap over pyjode's solve is not supported: adaptive step control decides each step on the "
            "host. y0's leading dimensions are batch already: solve the stacked batch in one call, "
            "odeint(func, torch.stack(y0s), t)")
    if gradient_method != "direct":
        raise TypeError(
            f"torch.func transforms (grad, jacrev, vjp, jvp) cannot enter adjoint={gradient_method!r}, whose backward "
            f"pass is a solve outside autograd; use adjoint=\"direct\" under torch.func, or torch.autograd.grad "
            f"with adjoint={gradient_method!r}")
