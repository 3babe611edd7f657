"""``pyjode.solve``: validate a call, pick the backend and hand it to a gradient method; returns a
:class:`~pyjode.Solution`. ``pyjode.odeint`` is the thin wrapper that returns its states."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable, Optional, Sequence, Union

import torch

from .adjoints import resolve_adjoint
from .adjoints.base import GradientMethod, SolveSpec
from .function_transforms import check_function_transforms
from .implicit import IMPLICIT_METHODS, Implicit
from .stats import Stats
from .solution import Solution
from .step_callbacks import StepCallbacks
from .step_control import StepControl
from .step_size import PIController
from .trajectory import TrajectoryRecorder
from .tableau import ADAPTIVE, FIXED_STEP, TABLEAUS, ButcherTableau, get_tableau

__all__ = ["solve"]


def solve(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: Union[torch.Tensor, Sequence[float]],
    *,
    method: Any = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: Optional[float] = None,
    max_steps: Optional[int] = None,
    adjoint: Union[str, GradientMethod] = "direct",
    adjoint_params: Optional[Sequence[torch.Tensor]] = None,
    backend: str = "torch",
    stats: Optional[Stats] = None,
    first_step: Optional[float] = None,
    min_step: float = 0.0,
    max_step: float = math.inf,
    step_ts: Optional[Sequence[float]] = None,
    jump_ts: Optional[Sequence[float]] = None,
    dense: bool = False,
    norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    controller: Optional[PIController] = None,
    perturb: bool = False,
    accept_min_step: bool = False,
    per_sample: bool = False,
) -> Solution:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, through every time in ``t``.

    Args:
        func: the vector field ``func(t, y) -> dy/dt`` with the shape and dtype of ``y``; an
            ``nn.Module`` or any callable. ``t`` arrives as a 0-dim tensor (a ``(B,)`` one with ``per_sample``).
        y0: initial state of any shape; leading dimensions are batch (one step size for all, unless
            ``per_sample``).
        t: 1-D, strictly increasing or strictly decreasing output times; ``t[0]`` is the initial time.
        method: fixed-step ``"euler" "midpoint" "heun" "heun2" "heun3" "rk4" "rk4_38"``, adaptive
            ``"adaptive_heun" "fehlberg2" "bosh3" "dopri5" "tsit5" "dopri8"`` (default ``"dopri5"``), a
            :class:`pyjode.ButcherTableau`, ``pyjode.Reversible(base)``, ``pyjode.Adams(...)`` or
            ``pyjode.ScipySolver(...)``; for stiff
            problems the implicit ``"kvaerno3" "kvaerno4" "kvaerno5" "radauIIA5"`` (adaptive),
            ``"implicit_euler" "implicit_midpoint" "trapezoid" "radauIIA3" "gl4" "gl6" "sdirk2" "trbdf2"``
            (fixed-step), or ``pyjode.Implicit(name, jacobian="batch")``.
        rtol, atol: relative and absolute tolerances of adaptive methods (defaults 1e-7 and 1e-9).
        step_size: step of fixed-step methods (each output interval is split into equal steps no
            longer than this; without it a fixed-step method steps from output time to output time,
            landing on ``step_ts`` too); for adaptive methods, an optional first step.
        max_steps: cap on attempted steps, after which a ``RuntimeError`` is raised
            (default 100 000 for adaptive methods).
        adjoint: how gradients are computed: ``"direct"`` (the default: backprop through the solver),
            ``"checkpointed"`` (the same gradient from stored states, one step recomputed at a time),
            ``"backsolve"``, ``"quadrature"``, ``"reversible"``, ``"auto"`` (the fastest that fits a memory
            budget, see :class:`pyjode.Auto`), or an instance such as ``pyjode.Quadrature(...)``.
        adjoint_params: the tensors whose gradients continuous adjoints compute; defaults to
            ``func.parameters()`` when ``func`` is an ``nn.Module`` (its module's when it is a method bound to one).
        backend: ``"torch"`` (default), ``"julia"`` or ``"auto"`` (Julia when available).
        stats: a :class:`pyjode.Stats` filled in place with evaluation and step counts.
        first_step: the first step of an adaptive method (default: Hairer's selection).
        min_step, max_step: bounds on adaptive steps; a step failing its error test at ``min_step`` raises.
        step_ts: times every step sequence lands on.
        jump_ts: times where ``func`` is not smooth (kinks, jumps): steps land on them and the first stage is
            evaluated afresh after each. A field may also declare them as a ``jump_ts`` attribute (as
            :class:`pyjode.WongZakai` does for piecewise-linear noise); both are used.
        dense: keep every accepted step so that ``solution.evaluate(t)`` gives y anywhere in the span, by
            the method's own continuous extension (cubic Hermite for fixed-step tableaus). Needs a
            Runge–Kutta method and ``adjoint="direct"`` (the interpolant is then differentiable too).
        norm: the error norm of adaptive steps, ``norm(scaled_error) -> 0-dim tensor`` on a tensor shaped
            like ``y0`` (default :func:`pyjode.rms_norm`).
        controller: a :class:`pyjode.PIController` (its ``safety``, ``factor_min``, ``factor_max``).
        perturb: evaluate ``func`` just inside both ends of every step (see :class:`pyjode.StepControl`).
        accept_min_step: accept steps of ``min_step`` whatever their error (torchdiffeq's ``min_step``)
            instead of raising a ``RuntimeError``.
        per_sample: the samples along ``y0``'s first dimension are independent problems, each taking its own
            adaptive steps (and landing on every time in ``t``); ``func`` then receives ``t`` as a tensor of
            shape ``(B,)``, each sample's time. Needs an adaptive explicit Runge–Kutta method or
            ``pyjode.Implicit(..., jacobian="batch")``, and ``adjoint="direct"`` (see :mod:`pyjode.per_sample`).

    Step callbacks: ``func.callback_step``, ``callback_accept_step``, ``callback_reject_step`` and their
    ``_adjoint`` forms are called if present (see :mod:`pyjode.step_callbacks`).

    Returns:
        A :class:`pyjode.Solution`: ``ts``, ``ys`` of shape ``(len(t), *y0.shape)``, ``stats``, and
        ``evaluate(t)`` when ``dense``.
    """
    y0 = _check_y0(y0)
    t = _check_t(t, y0)
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    rtol, atol = _check_tolerances(rtol, atol)
    field_jumps = getattr(func, "jump_ts", None)
    extra = {} if norm is None else dict(norm=norm)
    if controller is not None:
        if not isinstance(controller, PIController):
            raise TypeError(f"controller must be a pyjode.PIController, got {type(controller).__name__}")
        extra["controller"] = controller
    control = StepControl(rtol=rtol, atol=atol, step_size=step_size, first_step=first_step, max_steps=max_steps,
                          min_step=min_step, max_step=max_step, step_ts=step_ts,
                          jump_ts=tuple(_times(jump_ts)) + tuple(_times(field_jumps)), perturb=perturb,
                          accept_min_step=accept_min_step, per_sample=per_sample, **extra)
    step_size = control.step_size
    if stats is not None and not isinstance(stats, Stats):
        raise TypeError(f"stats must be a pyjode.Stats() or None, got {type(stats).__name__}")
    stats = Stats() if stats is None else stats
    if not isinstance(dense, bool):
        raise TypeError(f"dense must be True or False, got {dense!r}")

    method = _resolve_method(method, step_size)
    callbacks = StepCallbacks.from_func(func, getattr(method, "adaptive", True))
    if callbacks is not None and hasattr(method, "run"):
        warnings.warn(f"method={method.name!r} steps outside pyjode: the step callbacks on func are never called",
                      stacklevel=2)
        callbacks = None
    if callbacks is not None:
        control = control.replace(callbacks=callbacks)
    if hasattr(method, "check_control"):
        method.check_control(control)
    grad_method = resolve_adjoint(adjoint)
    grad_method.check_method(method)
    if per_sample:
        _check_per_sample(method, grad_method, dense, backend, y0)
    check_function_transforms(grad_method.name)
    recorder = _dense_recorder(dense, method, grad_method, t, backend)
    if y0.numel() == 0:  # nothing to integrate: the empty trajectory, still attached to y0's graph
        return Solution(t, torch.stack([y0] * len(t)), stats)

    if _resolve_backend(backend, method, grad_method, step_size) == "julia":
        from ._julia import odeint_julia

        unsupported = [name for name, given in (("first_step", first_step is not None), ("min_step", min_step != 0),
                                                ("norm", norm is not None), ("controller", controller is not None),
                                                ("perturb", perturb), ("step callbacks", callbacks is not None),
                                                ("accept_min_step", accept_min_step),
                                                ("max_step", max_step != math.inf), ("step_ts", step_ts is not None),
                                                ("jump_ts", bool(control.jump_ts))) if given]
        if unsupported:
            raise ValueError(f"backend='julia' does not take {', '.join(unsupported)}; use backend='torch'")

        ys = odeint_julia(func, y0, t, method=method, rtol=rtol, atol=atol, step_size=step_size,
                          max_steps=max_steps, adjoint=grad_method, adjoint_params=adjoint_params, stats=stats)
        return Solution(t, ys, stats)

    params = _resolve_params(func, adjoint_params)
    ts = t.detach().double().cpu().tolist()
    spec = SolveSpec(func=func, y0=y0, t=t, ts=ts, method=method, control=control, params=params, stats=stats,
                     on_step=recorder, params_given=adjoint_params is not None)
    ys = grad_method.solve(spec)
    trajectory = None if recorder is None or len(ts) < 2 else recorder.finish(func, ts[-1], ys[-1])
    return Solution(t, ys, stats, trajectory)


def _dense_recorder(dense: bool, method, grad_method, t: torch.Tensor, backend: str):
    """The step recorder behind ``Solution.evaluate``, or None; refuses what it cannot honour."""
    if not dense:
        return None
    if not isinstance(method, ButcherTableau):
        raise ValueError(f"dense=True needs a Runge-Kutta method (a name or ButcherTableau), got {method!r}")
    if grad_method.name != "direct" or backend != "torch":
        raise ValueError(f"dense=True needs adjoint='direct' and backend='torch' (got adjoint={grad_method.name!r}, "
                         f"backend={backend!r}): only then is the stored trajectory part of the graph")
    if t.requires_grad:
        raise ValueError("dense=True cannot differentiate the output times: pass t.detach()")
    return TrajectoryRecorder()


def _check_per_sample(method, grad_method, dense: bool, backend: str, y0: torch.Tensor) -> None:
    """What ``per_sample=True`` cannot be combined with, refused before any work."""
    from .per_sample import WHAT_WORKS

    if grad_method.name != "direct":
        raise ValueError(f"per_sample=True works with adjoint='direct' only (backprop through the per-sample steps, "
                         f"or no gradient at all), got adjoint={grad_method.name!r}")
    if dense:
        raise ValueError("per_sample=True cannot give a dense solution (each sample has its own steps): pass the "
                         "times you need in t, or dense=False")
    if backend != "torch":
        raise ValueError(f"per_sample=True needs backend='torch', got backend={backend!r}")
    if hasattr(method, "run") or not getattr(method, "adaptive", False) or (
            isinstance(method, Implicit) and method.jacobian != "batch"):
        raise ValueError(f"per_sample=True cannot be used with method={method!r}. " + WHAT_WORKS)
    if y0.dim() < 1:
        raise ValueError("per_sample=True needs y0 of shape (B, ...) with the independent samples along its first "
                         "dimension, got a 0-dim y0")


def _times(values) -> tuple:
    if values is None:
        return ()
    if isinstance(values, torch.Tensor):
        return tuple(values.detach().double().cpu().reshape(-1).tolist())
    return tuple(values)


def _check_y0(y0) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        raise TypeError(
            f"y0 must be a torch.Tensor, got {type(y0).__name__}; for a tuple of tensors, concatenate them "
            "into one tensor"
        )
    if not y0.is_floating_point():
        raise TypeError(f"y0 must have a floating dtype (float32 or float64), got {y0.dtype}; use y0.float()")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"y0 has dtype {y0.dtype}; pyjode solves in float32 or float64 (half precision cannot carry the "
            f"step-size control). Pass y0.float() and run the field under torch.autocast for half-precision "
            f"arithmetic inside it: its output is cast back to the state's dtype")
    return y0.contiguous()


def _check_t(t, y0: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f"t must be a 1-D tensor or sequence of times, got {type(t).__name__}") from None
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor with at least one time, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(y0.dtype)
    tl = t.detach().double().cpu()
    if not torch.isfinite(tl).all():
        raise ValueError("t contains NaN or inf")
    if t.numel() > 1:
        d = tl[1:] - tl[:-1]
        if not ((d > 0).all() or (d < 0).all()):
            i = int(torch.nonzero((d <= 0) if d[0] > 0 else (d >= 0))[0]) if d[0] != 0 else 0
            raise ValueError(
                f"t must be strictly increasing or strictly decreasing; it is not at t[{i}]={tl[i].item():.6g}, "
                f"t[{i + 1}]={tl[i + 1].item():.6g}. Sort t and remove repeated times"
            )
    return t


def _check_tolerances(rtol, atol):
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a float (one tolerance for the whole state), got a tensor")
        if isinstance(v, bool):
            raise TypeError(f"{name} must be a number, got {v!r}")
        if isinstance(v, numbers.Real) and not isinstance(v, (int, float)):
            v = float(v)
        if not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0")
    return float(rtol), float(atol)


def _resolve_method(method, step_size):
    if isinstance(method, str) and method in IMPLICIT_METHODS:
        method = Implicit(method)
    if isinstance(method, Implicit):  # a fixed-step one without step_size steps on the output times
        return method
    if isinstance(method, str) and method not in TABLEAUS:
        raise ValueError(f"method={method!r} is not known; choose one of fixed-step {list(FIXED_STEP)} (with step_size, "
                         f"or stepping on the output times), adaptive {list(ADAPTIVE)}, implicit (stiff) {list(IMPLICIT_METHODS)}, a "
                         f"pyjode.ButcherTableau, pyjode.Implicit(...) or pyjode.Reversible(base)")
    if isinstance(method, (str, ButcherTableau)):
        return get_tableau(method)
    if hasattr(method, "stepper") or hasattr(method, "run"):
        return method
    return get_tableau(method)  # raises a TypeError naming the accepted kinds


def _resolve_params(func, adjoint_params):
    if adjoint_params is None:
        # an nn.Module, or a method bound to one (``model.field``): the module's parameters
        module = func if isinstance(func, torch.nn.Module) else getattr(func, "__self__", None)
        if isinstance(module, torch.nn.Module):
            return tuple(p for p in module.parameters() if p.requires_grad)
        return ()
    params = tuple(adjoint_params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params must be tensors, got {type(p).__name__}")
    return tuple(p for p in params if p.requires_grad)


def _resolve_backend(backend: str, method, grad_method, step_size) -> str:
    if backend == "torch":
        return "torch"
    if backend not in ("julia", "auto"):
        raise ValueError(f"backend must be 'torch', 'julia' or 'auto', got {backend!r}")
    from ._julia import resolve_backend  # never imports juliacall

    return resolve_backend(backend, method, grad_method, step_size)
