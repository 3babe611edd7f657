"""``torch.func`` transforms around a solve: what works and a clear error for what does not.

* ``torch.func.grad``/``jacrev``/``vjp`` through ``adjoint="direct"`` work: the solve is ordinary torch
  arithmetic on the transform's wrapped tensors.
* The adjoints run their backward pass as a solve outside autograd, in an ``autograd.Function`` that the
  transforms cannot enter: a ``TypeError`` says to use ``adjoint="direct"``.
* A batched backward pass (``torch.autograd.functional.jacobian(..., vectorize=True)``,
  ``torch.autograd.grad(..., is_grads_batched=True)``) runs the adjoints' backward under ``vmap``, where their
  solves and in-place accumulations cannot run: a ``TypeError`` says to use one backward pass per row, or
  ``adjoint="direct"``.
* ``torch.func.vmap`` over a solve cannot work: the adaptive loop decides each step on the host from the
  error norm of the whole batch. The state's leading dimensions are batch already, so the stacked batch is
  solved in one call.
"""

from __future__ import annotations

import torch

__all__ = ["check_batched_backward", "check_function_transforms", "is_functorch_wrapped"]


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


def _batched(x) -> bool:
    """Whether ``x`` carries a batch dimension of a vmap (autograd's batched gradients use the legacy kind)."""
    functorch = torch._C._functorch
    for test in ("is_legacy_batchedtensor", "is_batchedtensor"):
        try:
            if bool(getattr(functorch, test)(x)):
                return True
        except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - older torch
            pass
    return False


def check_batched_backward(gradient_method: str, *grads) -> None:
    """Raise a ``TypeError`` when an adjoint's backward pass runs batched (its incoming gradients carry a vmap
    batch dimension, or a vmap transform is active)."""
    kind = _active_transform()
    from torch._C._functorch import TransformType

    if kind == TransformType.Vmap or any(g is not None and _batched(g) for g in grads):
        raise TypeError(
            f"adjoint={gradient_method!r} cannot run a batched backward pass (torch.autograd.functional.jacobian with "
            f"vectorize=True, torch.autograd.grad with is_grads_batched=True): its backward pass solves and "
            f"accumulates outside autograd's batching. Use vectorize=False / is_grads_batched=False (one backward "
            f"pass per row), or adjoint=\"direct\"")
