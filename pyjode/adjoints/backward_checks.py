"""Checks of the adjoint backward passes: no silently missing and no silently NaN gradient.

* **Captured tensors.** A continuous or reversible adjoint differentiates ``f`` with respect to ``y`` and the
  ``adjoint_params`` only; a tensor that requires grad and that the field closes over (``W`` in
  ``lambda t, y: torch.tanh(y @ W)``) would get no gradient at all. When ``adjoint_params`` was not given,
  one evaluation of ``f`` at the final state is traced back to its leaves; a leaf that requires grad and is
  neither ``y`` nor a parameter raises a ``ValueError`` naming ``adjoint_params``.
* **Non-finite gradients.** One behaviour in every adjoint: a NaN or inf in the state adjoint or in the
  parameter gradient raises a :class:`~pyjode.errors.SolveError` with ``phase="backward"``, the part that
  failed and where.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..errors import SolveError

__all__ = ["captured_tensors", "check_no_captured_tensors", "nonfinite_gradient"]


def _graph_leaves(root) -> list:
    """The leaf tensors (``AccumulateGrad`` nodes) reachable from ``root``, a ``grad_fn``."""
    leaves, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.append(variable)
        stack.extend(n for n, _ in node.next_functions)
    return leaves


def captured_tensors(func: Callable, t, y: torch.Tensor, params: Sequence[torch.Tensor]) -> list:
    """The leaf tensors that require grad, that ``func(t, y)`` depends on and that are neither ``y`` nor among
    ``params`` (tensors a closure captures, or the parameters of the module behind a bound method): one
    evaluation of ``func`` under autograd, traced back to its leaves. ``t`` may be a sequence of times (the
    span's ends, say): ``func`` is then traced at each, and what any of them uses is returned, so that a field
    that switches a tensor on later in the span is caught too."""
    found, seen = [], set()
    for ti in dict.fromkeys(t if isinstance(t, (list, tuple)) else (t,)):  # each distinct time once
        with torch.enable_grad():
            yg = y.detach().requires_grad_(True)
            f = func(torch.full((), ti, dtype=y.dtype, device=y.device), yg)
        if not isinstance(f, torch.Tensor) or f.grad_fn is None:
            continue
        known = {id(p) for p in params} | {id(yg)} | seen
        for v in _graph_leaves(f.grad_fn):
            if id(v) not in known:
                seen.add(id(v))
                found.append(v)
    return found


def check_no_captured_tensors(func: Callable, t: float, y: torch.Tensor, params: Sequence[torch.Tensor],
                              name: str) -> None:
    """Raise if ``func(t, y)`` depends on a tensor that requires grad and is not among ``params``."""
    missed = captured_tensors(func, t, y, params)
    if missed:
        shapes = ", ".join(str(tuple(v.shape)) for v in missed[:4])
        raise ValueError(
            f"adjoint={name!r}: the vector field uses {len(missed)} tensor(s) that require grad but are not among "
            f"its parameters (shapes {shapes}), e.g. tensors captured by a closure; adjoint={name!r} would leave "
            f"their gradient silently None. Pass adjoint_params=(...) listing every tensor to differentiate "
            f"(or make them parameters of an nn.Module field), or use adjoint=\"direct\"")


def nonfinite_gradient(part: str, t_lo: float, t_hi: float, name: str, t: Optional[float] = None) -> SolveError:
    """The error for a NaN or inf ``part`` (``"state adjoint"``/``"parameter adjoint"``) found on the
    backward solve over ``[t_lo, t_hi]`` (at ``t`` when known)."""
    where = f"at t={t:.6g}" if t is not None else f"between t={min(t_lo, t_hi):.6g} and t={max(t_lo, t_hi):.6g}"
    return SolveError(
        f"adjoint={name!r} produced a NaN or inf gradient {where}", t=t if t is not None else t_hi,
        phase="backward", cause="nonfinite_gradient", part=part,
        hint="the field's derivative is not finite there (a NaN only in its Jacobian, e.g. sqrt or a norm at 0); "
             "check the field's derivatives, or try tighter forward tolerances, float64, or adjoint=\"direct\"")


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """One host synchronisation for a list of tensors.

    A NaN or an infinity makes a tensor's sum NaN or infinite, so finite sums prove every element finite
    without the elementwise temporaries of ``isfinite`` (a parameter-sized ``abs`` and three masks for a
    parameter-sized gradient); only a non-finite sum, a NaN or an overflow of the sum, is checked
    element by element."""
    tensors = [x for x in tensors if x is not None and x.numel()]
    if not tensors:
        return True
    if bool(torch.isfinite(torch.stack([x.sum() for x in tensors])).all()):
        return True
    return bool(torch.stack([torch.isfinite(x).all() for x in tensors]).all())
