"""``pyjode.odeint(..., backend="julia")``."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from .bridge import JuliaSolve
from .function import JuliaODEFunction
from .loader import ensure_cuda, load_pyjode
from .plan import make_plan

__all__ = ["odeint_julia", "odeint_with_module"]


def _output_times(t: torch.Tensor) -> list:
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 1:
        raise ValueError("t must be a 1-D tensor of output times, e.g. torch.linspace(0, 1, 10)")
    ts = [float(x) for x in t.detach().cpu().double()]
    steps = [b - a for a, b in zip(ts[:-1], ts[1:])]
    if steps and not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise ValueError("t must be strictly increasing or strictly decreasing; sort it and drop repeated times")
    return ts


def _default_params(func: Callable, adjoint_params: Optional[Sequence[torch.Tensor]]) -> tuple:
    if adjoint_params is not None:
        return tuple(adjoint_params)
    if isinstance(func, torch.nn.Module):
        return tuple(p for p in func.parameters() if p.requires_grad)
    return ()


def odeint_with_module(load: Callable[[], Any], func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: Any = "dopri5",
                       rtol: float = 1e-7, atol: float = 1e-9, step_size: Optional[float] = None,
                       max_steps: Optional[int] = None, adjoint: Any = "quadrature",
                       adjoint_params: Optional[Sequence[torch.Tensor]] = None, stats: Any = None) -> torch.Tensor:
    """:func:`odeint_julia` against the ``PyJODE`` module that ``load()`` returns (Julia's, or a stand-in with
    the same functions). Arguments are validated before ``load`` is called."""
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise TypeError("y0 must be a floating-point torch.Tensor")
    ts = _output_times(t)
    params = _default_params(func, adjoint_params)
    grad_on = torch.is_grad_enabled()
    t_requires_grad = grad_on and t.requires_grad
    needs_grad = grad_on and (y0.requires_grad or t.requires_grad or any(p.requires_grad for p in params))
    plan = make_plan(method, adjoint, rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps,
                     needs_grad=needs_grad, t_requires_grad=t_requires_grad)
    module = load()
    if y0.is_cuda:
        ensure_cuda()
    if len(ts) == 1:
        return y0.unsqueeze(0).clone()
    solve = JuliaSolve(module, plan, func, y0, ts, params, stats)
    if not needs_grad:
        with torch.no_grad():
            return solve.forward(y0)[0]
    return JuliaODEFunction.apply(solve, y0, t, *params)


def odeint_julia(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: Any = "dopri5", rtol: float = 1e-7,
                 atol: float = 1e-9, step_size: Optional[float] = None, max_steps: Optional[int] = None,
                 adjoint: Any = "quadrature", adjoint_params: Optional[Sequence[torch.Tensor]] = None,
                 stats: Any = None) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` in the Julia package PyJODE, with gradients computed in Julia.

    Same arguments and result as :func:`pyjode.odeint`. Methods: ``"euler" "midpoint" "heun" "rk4"``
    (with ``step_size``), ``"bosh3" "dopri5" "tsit5"``, or ``pyjode.Reversible(base)`` with a fixed
    ``step_size``. Gradients: ``"quadrature"``, ``"backsolve"`` and ``"reversible"``; ``"direct"``
    only when no gradient is needed. ``"quadrature"`` and ``"backsolve"`` also return ``dL/dt`` when
    ``t`` requires grad, as on the PyTorch backend; ``"reversible"`` has none and refuses such a ``t``.

    Raises:
        JuliaUnavailableError: Julia cannot be used here (raised before anything is downloaded).
        JuliaUnsupportedError: the method or gradient method has no Julia implementation.
    """
    return odeint_with_module(load_pyjode, func, y0, t, method=method, rtol=rtol, atol=atol, step_size=step_size,
                              max_steps=max_steps, adjoint=adjoint, adjoint_params=adjoint_params, stats=stats)
