"""Terminal events: solve until an event function of (t, y) crosses zero, and differentiate the event time.

``odeint_event`` integrates dy/dt = f(t, y) from ``t0`` forward (or backward with ``reverse_time``) until
the event function g(t, y) changes sign. Several event functions (g returning a vector) are combined as
``min_k s_k g_k(t, y)`` with ``s_k`` the sign of ``g_k`` at the start, so the first one to cross terminates.
The crossing is bracketed by the accepted steps and located by bisection on the method's dense output
(cubic Hermite for tableaus without one), to the resolution of the time's float.

Gradients (implicit function theorem). The event time t* solves g(t*, y(t*)) = 0. Perturbing the solution
at the fixed time T = t* by δy moves the event by

    δt* = -(∂g/∂y · δy) / (∂g/∂t + ∂g/∂y · f(t*, y*)),   and   δy* = δy + f(t*, y*) δt*,

so a loss L(t*, y*) sends  dL/dy(T) = ȳ - (t̄ + ȳ · f) / ġ · ∂g/∂y,  with t̄ = dL/dt*, ȳ = dL/dy*,
ġ = ∂g/∂t + ∂g/∂y · f. That cotangent is handed to an ordinary solve from t0 to the fixed T, so the
gradients to y0, t0 and the parameters come from whichever gradient method that solve uses (direct,
backsolve, quadrature). This is the construction of Chen, Amos & Nickel (2021), "Learning neural event
functions for ordinary differential equations", ICLR, §3.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import torch

from .adjoints.base import make_stepper
from .integrate import CheckedField, Counter, adaptive_loop, fixed_loop
from .solve import solve
from .step_control import StepControl
from .tableau import ButcherTableau, get_tableau

__all__ = ["odeint_event"]

_SEARCH_SPAN = 1e12  # the adaptive search integrates toward t0 ± this, stopping at the first event
_FIXED_CHUNK = 4096  # fixed steps laid out at a time while searching


class _EventFound(Exception):
    def __init__(self, t0, t1, y0, y1, dense):
        super().__init__()
        self.t0, self.t1, self.y0, self.y1, self.dense = t0, t1, y0, y1, dense


def _combined(event_fn: Callable, t0: torch.Tensor, y0: torch.Tensor) -> Callable:
    """min_k s_k g_k(t, y), positive at the start; the event is where it reaches 0."""
    with torch.no_grad():
        signs = torch.sign(torch.as_tensor(event_fn(t0, y0)))
    if (signs == 0).any():
        raise ValueError("event_fn is already 0 at t0: start from a state where every event function is non-zero")

    def combined(t, y):
        return (torch.as_tensor(event_fn(t, y)) * signs).min()

    return combined


def _search(func, y0: torch.Tensor, t0: float, direction: float, tableau: ButcherTableau, control: StepControl,
            combined: Callable, counter: Counter) -> float:
    """The event time (a float), by stepping until ``combined`` is <= 0 and bisecting inside that step, and
    the accepted step boundaries before it."""
    stepper = make_stepper(tableau, y0)
    time = stepper.time
    field = CheckedField(func, counter)
    times = []

    def on_step(ta, tb, y, y1, dense, _stepper):
        times.append(ta)
        if float(combined(time(tb), y1)) <= 0:
            raise _EventFound(ta, tb, y, y1, dense.clone() if isinstance(dense, torch.Tensor) else dense)

    try:
        if tableau.adaptive:
            adaptive_loop(stepper, field, y0, [t0, t0 + direction * _SEARCH_SPAN], control, counter, on_step)
        else:
            if control.step_size is None:
                raise ValueError(f"method={tableau.name!r} is a fixed-step method: an event search needs step_size")
            t, y, left = t0, y0, control.attempt_cap if control.max_steps is not None else math.inf
            while left > 0:
                n = int(min(_FIXED_CHUNK, left))
                grid = [t + direction * control.step_size * k for k in range(n + 1)]
                run = fixed_loop(stepper, field, y, grid, [True] * len(grid), control, counter, on_step)
                t, y, left = grid[-1], run.ys[-1], left - n
    except _EventFound as found:
        t_star, y_star = _bisect(stepper, field, found, combined, y0.dtype)
        return t_star, y_star, times
    except RuntimeError as err:
        if "max_steps" not in str(err):
            raise
        raise RuntimeError(f"no event found from t0={t0:.6g}: {err}. Check that event_fn changes sign along the "
                           f"solution") from None
    raise RuntimeError(f"no event within max_steps={control.max_steps} steps from t0={t0:.6g}; raise max_steps or "
                       f"check that event_fn changes sign along the solution")


def _bisect(stepper, field, found: _EventFound, combined: Callable, dtype: torch.dtype) -> float:
    ta, tb, y, y1, K = found.t0, found.t1, found.y0, found.y1, found.dense
    h = tb - ta
    if stepper.dense_output:
        def at(theta):
            return stepper.interpolate((y, None), K, ta, tb, [theta])[0]
    else:  # cubic Hermite from the end values and slopes
        f0 = K[0].view(y.shape)
        f1 = field(stepper.time(tb), y1)

        def at(theta):
            h00, h10 = 1 - theta ** 2 * (3 - 2 * theta), theta * (1 - theta) ** 2
            h01, h11 = theta ** 2 * (3 - 2 * theta), theta ** 2 * (theta - 1)
            return h00 * y + h01 * y1 + h * (h10 * f0 + h11 * f1)

    lo, hi = 0.0, 1.0
    resolution = 4 * torch.finfo(torch.float64).eps * max(1.0, abs(ta), abs(tb)) / abs(h)
    while hi - lo > resolution:
        mid = 0.5 * (lo + hi)
        if float(combined(stepper.time(ta + mid * h), at(mid))) > 0:
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return ta + theta * h, at(theta)


class _ImplicitEventGradient(torch.autograd.Function):
    """Returns (t*, y*) and turns their cotangents into one on y(T) at the fixed time T = t* (see the
    module docstring); ``g`` is the combined event function."""

    @staticmethod
    def forward(ctx, func, g, t_star, y_star):
        ctx.func, ctx.g = func, g
        ctx.save_for_backward(t_star, y_star)
        return t_star.detach().clone(), y_star.detach().clone()

    @staticmethod
    def backward(ctx, grad_t, grad_y):
        t_star, y_star = ctx.saved_tensors
        with torch.enable_grad():
            t = t_star.detach().requires_grad_(True)
            y = y_star.detach().requires_grad_(True)
            value = ctx.g(t, y)
            dg_dt, dg_dy = torch.autograd.grad(value, (t, y), allow_unused=True)
        dg_dt = torch.zeros_like(t) if dg_dt is None else dg_dt
        dg_dy = torch.zeros_like(y) if dg_dy is None else dg_dy
        with torch.no_grad():
            f = ctx.func(t_star.detach(), y_star.detach())
            g_dot = dg_dt + (dg_dy * f).sum()
            if float(g_dot.abs()) == 0:
                raise RuntimeError(f"the event function crosses zero tangentially at t={float(t_star):.6g} "
                                   f"(d/dt g(t, y(t)) = 0): the event time has no derivative there")
            grad_t = torch.zeros_like(t_star) if grad_t is None else grad_t
            grad_y = torch.zeros_like(y_star) if grad_y is None else grad_y
            total_t = grad_t + (grad_y * f).sum()
            return None, None, None, grad_y - (total_t / g_dot) * dg_dy


def odeint_event(func: Callable, y0: torch.Tensor, t0: Any, *, event_fn: Callable, reverse_time: bool = False,
                 method: Any = "dopri5", rtol: float = 1e-7, atol: float = 1e-9, adjoint: Any = "direct",
                 adjoint_params=None, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Solve dy/dt = func(t, y), y(t0) = y0 until ``event_fn(t, y)`` crosses zero.

    Args:
        func, y0, method, rtol, atol, adjoint, adjoint_params: as in :func:`pyjode.solve` (a Runge–Kutta
            method; a fixed-step one needs ``step_size``).
        t0: the start time (a float or a 0- or 1-element tensor, which may require grad).
        event_fn: ``event_fn(t, y)`` returning a 0-dim tensor or a vector of event functions; the
            first one to change sign terminates.
        reverse_time: integrate toward decreasing t.
        **kwargs: further step options of :func:`pyjode.solve` (``step_size``, ``first_step``,
            ``max_steps``, ``min_step``, ``max_step``, ``norm``, ``controller``, ``perturb``, ``step_ts``,
            ``jump_ts``, ``stats``).

    Returns:
        ``(t_event, ys)``: the event time (shaped like ``t0``) and ``ys = stack([y0, y(t_event)])``, with
        ``y(t_event)`` the dense output of the steps the event was found on. Both are differentiable with respect to ``y0``, ``t0`` and the parameters by the implicit
        function theorem (module docstring), through the gradient method ``adjoint``.
    """
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn).__name__}")
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise TypeError("y0 must be a floating-point torch.Tensor")
    t0_tensor = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device) if not isinstance(t0, torch.Tensor) else t0
    if t0_tensor.numel() != 1:
        raise ValueError(f"t0 must be one time, got shape {tuple(t0_tensor.shape)}")
    tableau = method if hasattr(method, "stepper") else get_tableau(method)
    direction = -1.0 if reverse_time else 1.0
    t0f = float(t0_tensor.detach())
    stats = kwargs.pop("stats", None)
    control_keys = ("step_size", "first_step", "max_steps", "min_step", "max_step", "norm", "controller",
                    "perturb", "step_ts", "jump_ts", "accept_min_step")
    unknown = set(kwargs) - set(control_keys)
    if unknown:
        raise TypeError(f"odeint_event got unexpected keyword arguments {sorted(unknown)}")
    control_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    control = StepControl(rtol=rtol, atol=atol, **control_kwargs)
    y0c = y0.contiguous()
    g = _combined(event_fn, t0_tensor.detach().reshape(()).to(y0.dtype), y0c.detach())
    counter = Counter()
    with torch.no_grad():
        t_star, y_found, step_times = _search(func, y0c.detach(), t0f, direction, tableau, control, g, counter)
    if stats is not None:
        stats.nfe_forward += counter.nfe
        stats.steps_forward += counter.steps
        stats.rejected_forward += counter.rejected

    # The state at the fixed time T = t*, from a solve the gradient method can differentiate. It lands on the
    # search's steps, so it retraces the solution the event was found on (to the last, partial step).
    control_kwargs["step_ts"] = tuple(control.step_ts) + tuple(step_times[1:])
    t_end = torch.full((), t_star, dtype=t0_tensor.dtype if t0_tensor.is_floating_point() else y0.dtype,
                       device=y0.device)
    ts = torch.stack([t0_tensor.reshape(()).to(t_end.dtype), t_end])
    ys = solve(func, y0c, ts, method=tableau, rtol=rtol, atol=atol, adjoint=adjoint, adjoint_params=adjoint_params,
               stats=stats, **control_kwargs).ys
    # The value returned is the search's dense output at t* (where the event function is 0 to root-finding
    # precision); its derivatives are those of the solve to t*, which differs from it by the local error.
    y_end = ys[-1] + (y_found.to(ys.dtype) - ys[-1]).detach()
    t_out, y_star = _ImplicitEventGradient.apply(func, g, t_end.to(y0.dtype), y_end)
    t_out = t_out.to(t_end.dtype).reshape(t0_tensor.shape)
    return t_out, torch.stack([ys[0], y_star])
