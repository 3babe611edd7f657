"""Whether ``torch.func.vmap`` can batch a vector field, decided once per field.

The quadrature adjoint evaluates ``f`` at many (t, y) nodes. ``vmap`` turns them into one batched call,
but it refuses some fields: in-place updates of captured tensors, ``.item()``, data-dependent control flow,
and fields that call ``torch.autograd.grad`` themselves (a continuous normalising flow's trace). A failed
``vmap`` costs a partial trace of the field, so its outcome is remembered for the field object (weakly:
the entry goes with the field) instead of being retried on every call, and the decision is taken on a
single node without a graph, so that a failure never holds more than one node's activations.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch

_REFUSED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_ACCEPTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _key(func: Callable):
    # A bound method is a new object at every attribute access: key on the object it is bound to.
    return getattr(func, "__self__", func)


def vmap_refused(func: Callable) -> bool:
    """True when ``vmap`` already failed on this field."""
    try:
        return _key(func) in _REFUSED
    except TypeError:  # not weak-referenceable: no memory, try every time
        return False


def remember_refusal(func: Callable, error: BaseException) -> None:
    try:
        _REFUSED[_key(func)] = f"{type(error).__name__}: {error}"
    except TypeError:
        pass


def _accepted(func: Callable) -> bool:
    try:
        return _key(func) in _ACCEPTED
    except TypeError:
        return False


def _accept(func: Callable) -> None:
    try:
        _ACCEPTED[_key(func)] = True
    except TypeError:
        pass


def try_vmap(func: Callable, T: torch.Tensor, Y: torch.Tensor) -> Optional[torch.Tensor]:
    """``vmap(func)(T, Y)``, or None when ``vmap`` cannot trace this field (now or on an earlier call)."""
    if vmap_refused(func):
        return None
    if not _accepted(func):
        # Decide on one node without a graph (one evaluation, once per field): a trace that fails part-way
        # then holds one node's activations, not a chunk's, and a success leaves no graph behind whose
        # parameter VJP would need a second parameter-sized buffer beside the chunk's.
        try:
            with torch.no_grad():
                torch.func.vmap(func)(T[:1], Y[:1])
        except Exception as error:  # noqa: BLE001 - any vmap limitation means: evaluate node by node
            remember_refusal(func, error)
            return None
        _accept(func)
    try:
        return torch.func.vmap(func)(T, Y)
    except Exception as error:  # noqa: BLE001 - a field vmap traces without a graph but not with one
        remember_refusal(func, error)
        return None
