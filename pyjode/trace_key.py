"""What a traced graph of a field freezes, as a hashable key: re-trace when it changes.

``torch.fx`` tracing (``make_fx``) records the aten ops one call of ``func`` runs. Tensors that are graph
inputs (an ``nn.Module``'s parameters and buffers) may change freely; everything else the call read is
frozen into the graph:

* Python numbers, strings and flags the field reads (``self.k``, a function attribute ``f.k``, a closure
  cell, a default argument, a module-level global the code names);
* which tensor a closure or attribute refers to (the tensor object itself stays live in the graph, so an
  in-place change of it is seen, but rebinding the name to another tensor is not);
* every submodule's ``training`` flag (dropout and batch norm trace differently in ``train()`` and
  ``eval()``).

:func:`python_state_key` collects these, a few levels deep, so a cache keyed on it serves a graph only while
they are unchanged. State it cannot see (a value computed from a mutable container deeper down, a random
number drawn in Python) is still frozen: such a field must not be cached.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

__all__ = ["python_state_key"]

_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)
_MODULE_SLOTS = {"_parameters", "_buffers", "_modules", "training"}


def python_state_key(obj: Any, depth: int = 3) -> tuple:
    """A hashable summary of the Python state that a trace of ``obj`` (a field) freezes; see the module."""
    return _key(obj, depth, set())


def _key(obj: Any, depth: int, seen: set):
    if isinstance(obj, _PRIMITIVES):
        return obj
    if isinstance(obj, torch.Tensor):
        return ("tensor", id(obj))
    if isinstance(obj, (types.ModuleType, type)) or depth <= 0:
        return ("id", id(obj))
    if id(obj) in seen:
        return ("seen", id(obj))
    seen.add(id(obj))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, *(_key(x, depth - 1, seen) for x in obj[:32]))
    if isinstance(obj, dict):
        return ("dict", *((k, _key(v, depth - 1, seen)) for k, v in list(obj.items())[:64] if isinstance(k, str)))
    if isinstance(obj, nn.Module):
        return ("module", id(obj), *(_module_key(m, depth, seen) for m in obj.modules()))
    if isinstance(obj, types.MethodType):
        return ("method", _key(obj.__self__, depth, seen), _key(obj.__func__, depth, seen))
    if isinstance(obj, types.FunctionType):
        return _function_key(obj, depth, seen)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):  # a callable object: its attributes
        return ("object", id(obj), _key(attrs, depth - 1, seen))
    return ("id", id(obj))


def _module_key(module: nn.Module, depth: int, seen: set) -> tuple:
    own = tuple((k, _key(v, depth - 1, seen)) for k, v in module.__dict__.items()
                if k not in _MODULE_SLOTS and not k.startswith("_"))
    return (module.training, own)


def _function_key(fn: types.FunctionType, depth: int, seen: set) -> tuple:
    cells = tuple(_key(c.cell_contents, depth - 1, seen) if _filled(c) else None for c in (fn.__closure__ or ()))
    code = fn.__code__
    names = [n for n in code.co_names if n in fn.__globals__]
    used_globals = tuple((n, _key(fn.__globals__[n], depth - 1, seen)) for n in names
                         if not isinstance(fn.__globals__[n], (types.ModuleType, type)))
    return ("function", id(code), cells, _key(fn.__defaults__, depth - 1, seen),
            _key(fn.__kwdefaults__, depth - 1, seen), _key(fn.__dict__, depth - 1, seen), used_globals)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
        return False
    return True
