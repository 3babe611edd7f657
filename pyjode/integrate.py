"""The integrate loop shared by every explicit Runge–Kutta method.

``integrate`` solves y' = f(t, y) from ``ts[0]`` through every output time in ``ts`` (increasing or
decreasing) and returns the states there.

* **Fixed step**: each output interval is split into ``ceil(|Δt| / step_size)`` equal steps, so steps land
  on every output time.
* **Adaptive**: Hairer's initial step, then steps chosen by a PI controller on the embedded error
  estimate, measured by a pluggable norm. Outputs inside a step come from the method's dense output, so
  asking for more output times adds no steps. Only the final time is hit exactly.

Time is carried as Python floats (float64 precision whatever the state's dtype), so the loop's only host
synchronisation is the error norm that decides acceptance. A NaN or inf in a step rejects it and shrinks
the step; when that repeats until the step size underflows, or ``max_steps`` is reached, a
``RuntimeError`` says where and what to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from .norms import rms_norm
from .runge_kutta import RungeKutta
from .step_size import PIController, initial_step_size
from .tableau import ButcherTableau

DEFAULT_MAX_STEPS = 100_000


@dataclass
class Counter:
    """Work done by one call of :func:`integrate`."""

    nfe: int = 0
    steps: int = 0
    rejected: int = 0


class CountingField:
    """Wraps the vector field to count evaluations without touching the user's module."""

    __slots__ = ("func", "counter")

    def __init__(self, func, counter: Counter):
        self.func, self.counter = func, counter

    def __call__(self, t, y):
        self.counter.nfe += 1
        return self.func(t, y)


def time_maker(like: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """0-dim time tensors on the state's device and dtype; ``torch.full`` never synchronises on CUDA."""
    dtype, device = like.dtype, like.device
    return lambda value: torch.full((), value, dtype=dtype, device=device)


def check_field_output(f: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"func(t, y) must return a torch.Tensor, got {type(f).__name__}")
    if f.shape != y.shape:
        raise ValueError(
            f"func(t, y) returned shape {tuple(f.shape)} but y has shape {tuple(y.shape)}; "
            "the vector field must return dy/dt with the shape of y"
        )
    if f.dtype != y.dtype:
        raise ValueError(
            f"func(t, y) returned dtype {f.dtype} but y has dtype {y.dtype}; "
            "return dy/dt in the dtype of y (e.g. cast the module with .to(y.dtype))"
        )


def integrate(
    func: Callable,
    y0: torch.Tensor,
    ts: Sequence[float],
    tableau: ButcherTableau,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: Optional[float] = None,
    max_steps: Optional[int] = None,
    norm: Callable = rms_norm,
    counter: Optional[Counter] = None,
    on_step: Optional[Callable] = None,
    first_step: Optional[float] = None,
) -> List[torch.Tensor]:
    """Solve from ``ts[0]`` to ``ts[-1]``; return ``[y(ts[0]), y(ts[1]), ...]``.

    Args:
        func: the vector field ``f(t, y)``; ``t`` is passed as a 0-dim tensor.
        y0: the state at ``ts[0]``, any shape.
        ts: strictly monotonic output times, as Python floats.
        tableau: the Runge–Kutta method.
        rtol, atol: tolerances of adaptive methods.
        step_size: the step of fixed-step methods; for adaptive ones, the first step (instead of
            Hairer's selection).
        max_steps: cap on attempted steps (accepted + rejected); defaults to 100 000 for adaptive
            methods and no cap for fixed-step ones.
        norm: error norm applied to the scaled error estimate (see :mod:`pyjode.norms`).
        counter: filled with evaluations, accepted and rejected steps.
        on_step: called as ``on_step(t0, t1, y0, y1, K, stepper)`` after each accepted step. Without
            autograd ``K`` is a reused buffer: copy what you keep.
        first_step: alias of ``step_size`` for adaptive methods (used by adjoints to restart).
    """
    counter = counter if counter is not None else Counter()
    field = CountingField(func, counter)
    time = time_maker(y0)
    stepper = RungeKutta(tableau, y0)
    ts = [float(t) for t in ts]
    if tableau.adaptive:
        ys = _adaptive_loop(field, y0, ts, stepper, rtol, atol, first_step or step_size, max_steps, norm,
                            counter, on_step, time)
    else:
        ys = _fixed_loop(field, y0, ts, stepper, step_size, max_steps, counter, on_step, time)
    return ys


def _fixed_loop(field, y0, ts, stepper: RungeKutta, step_size, max_steps, counter, on_step, time):
    if step_size is None:
        raise ValueError(f"method={stepper.tableau.name!r} is a fixed-step method: pass step_size=...")
    n_steps = fixed_step_counts(ts, step_size, max_steps)
    f0 = field(time(ts[0]), y0)
    check_field_output(f0, y0)
    ys, y = [y0], y0
    for (ta, tb), n in zip(zip(ts[:-1], ts[1:]), n_steps):
        h = (tb - ta) / n
        for j in range(n):
            t = ta + j * h
            t1 = tb if j == n - 1 else t + h
            y1, K = stepper.step(field, t, h, y, f0, time)
            f0 = K[-1].view(y.shape) if stepper.fsal else None
            if on_step is not None:
                on_step(t, t1, y, y1, K, stepper)
            y = y1
        counter.steps += n
        ys.append(y)
    check_finite_outputs(ys, ts, step_size)
    return ys


def fixed_step_counts(ts: Sequence[float], step_size: float, max_steps: Optional[int]) -> List[int]:
    """Equal steps per output interval, none longer than ``step_size``; raises if they exceed max_steps."""
    n_steps = [max(1, math.ceil(abs(b - a) / step_size - 1e-9)) for a, b in zip(ts[:-1], ts[1:])]
    if max_steps is not None and sum(n_steps) > max_steps:
        raise RuntimeError(
            f"max_steps={max_steps} is too small: step_size={step_size} needs {sum(n_steps)} steps from "
            f"t={ts[0]:.6g} to t={ts[-1]:.6g}; raise max_steps or increase step_size"
        )
    return n_steps


def check_progress(h: float, t: float, t_end: float, eps: float, attempts: int, max_steps: int, counter: Counter,
                   last_bad: bool) -> None:
    """The adaptive loops' guards: a step size that underflowed, or max_steps attempts used up."""
    if h <= 4 * eps * max(1.0, abs(t)):
        what = "the vector field kept returning NaN or inf" if last_bad else "the error estimate kept failing"
        raise RuntimeError(
            f"step size underflowed ({h:.3g}) at t={t:.6g}: {what}; the problem may be stiff or "
            f"singular there. Try looser rtol/atol, a different method, float64, or check the vector field"
        )
    if attempts >= max_steps:
        raise RuntimeError(
            f"max_steps={max_steps} reached at t={t:.6g} before t={t_end:.6g} "
            f"({counter.steps} accepted, {counter.rejected} rejected steps); raise max_steps, loosen "
            f"rtol/atol, or check whether the problem is stiff"
        )


def check_finite_outputs(ys, ts, step_size):
    """One host check at the end: fixed steps cannot be retried, so report where the solve blew up."""
    finite = torch.stack([torch.isfinite(y).all() for y in ys]).tolist()
    if not all(finite):
        i = finite.index(False)
        raise RuntimeError(
            f"the solution became NaN or inf between t={ts[i - 1]:.6g} and t={ts[i]:.6g} with the "
            f"fixed step_size={step_size}; try a smaller step_size, an adaptive method such as "
            f"method='dopri5', or check the vector field for overflow there"
        )


def _adaptive_loop(field, y0, ts, stepper: RungeKutta, rtol, atol, first_step, max_steps, norm, counter,
                   on_step, time):
    tableau = stepper.tableau
    if max_steps is None:
        max_steps = DEFAULT_MAX_STEPS
    controller = PIController()
    k = min(tableau.order, tableau.error_order) + 1
    t0, t_end = ts[0], ts[-1]
    direction = 1.0 if t_end > t0 else -1.0
    eps = torch.finfo(y0.dtype).eps

    y = y0
    f = field(time(t0), y0)
    check_field_output(f, y0)
    if first_step is None:
        with torch.no_grad():
            h = initial_step_size(field, t0, y0, f, tableau.order, rtol, atol, norm, direction, time)
    else:
        h = abs(float(first_step))
    ys = [y0]
    t, idx, attempts, prev_ratio, last_bad, just_rejected = t0, 1, 0, 1.0, False, False
    n_out = len(ts)
    while idx < n_out:
        remaining = (t_end - t) * direction
        if h >= 0.99 * remaining:
            # stretch a step that would leave a sliver, rather than take a sliver step next
            h = remaining
        check_progress(h, t, t_end, eps, attempts, max_steps, counter, last_bad)
        attempts += 1
        hs = direction * h
        y1, K = stepper.step(field, t, hs, y, f, time)
        with torch.no_grad():  # step control is not differentiated
            scale = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
            ratio = float(norm(stepper.error(K, hs).view(y.shape).div_(scale)))
        if not ratio <= 1.0:  # also catches NaN
            last_bad = not math.isfinite(ratio)
            counter.rejected += 1
            just_rejected = True
            h *= controller.reject_factor(ratio, k)
            continue
        last_bad = False
        counter.steps += 1
        t1 = t_end if h == remaining else t + hs
        thetas = []
        while idx < n_out and (ts[idx] - t1) * direction < 0:
            thetas.append((ts[idx] - t) / hs)
            idx += 1
        if thetas:  # every output inside this step from one dense-output product
            ys.extend(stepper.dense_many(y, K, hs, thetas).unbind(0))
        if idx < n_out and ts[idx] == t1:
            ys.append(y1)
            idx += 1
        if on_step is not None:
            on_step(t, t1, y, y1, K, stepper)
        f = K[-1].view(y.shape) if stepper.fsal else field(time(t1), y1)
        t, y = t1, y1
        fac = controller.accept_factor(ratio, prev_ratio, k)
        # Hairer's rule: the step after a rejection may not grow, which stops reject/accept cascades.
        h *= min(fac, 1.0) if just_rejected else fac
        just_rejected = False
        prev_ratio = max(ratio, 1e-4)
    return ys
