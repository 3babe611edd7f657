"""The two loops that drive every stepper: one adaptive, one fixed-step.

``integrate`` solves from ``ts[0]`` through every output time in ``ts`` (increasing or decreasing) with any
:class:`~pyjode.stepper.Stepper` (Runge–Kutta, reversible, SDE methods) under one
:class:`~pyjode.StepControl`, and returns the states there. Counting, saving, the progress guards and the
rejection rule live here once.

* **Fixed step**: the span is cut at the output, ``step_ts`` and ``jump_ts`` times, and each stretch is
  split into ``ceil(|Δt| / step_size)`` equal steps; an SDE solve passes its own grid and one control
  (Brownian increment) per step.
* **Adaptive**: Hairer's initial step, then steps chosen by a PI controller on the embedded error
  estimate, measured by the control's norm. Steps land exactly on ``step_ts``, ``jump_ts`` and the final
  time; outputs inside a step come from the stepper's dense output (a stepper without one lands on every
  output time too). After a jump the stepper restarts (its cached first stage is evaluated afresh).

Time is carried as Python floats (float64 precision whatever the state's dtype), so the loop's only host
synchronisation is the error norm that decides acceptance. A NaN or inf in a step rejects it and shrinks
the step; when that repeats until the step size underflows, or ``max_steps`` is reached, a
``RuntimeError`` says where and what to try.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Iterable, List, Optional, Sequence

import torch

from .errors import SolveError
from .start_checks import CheckedField, check_start
from .step_control import StepControl, beside
from .step_size import initial_step_size
from .stepper import Stepper


@dataclass
class Counter:
    """Work done by one solve: evaluations of the field (counted by wrapping it), accepted and rejected steps."""

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


@dataclass
class Run:
    """What a loop returns: the outputs, the final stepper state and, when asked for, the accepted step
    boundaries (``times[output_steps[i]] == ts[i]`` exactly; a float64 ``array``, 8 bytes a step)."""

    ys: List[torch.Tensor]
    state: Any
    times: Optional[array] = None
    output_steps: List[int] = dc_field(default_factory=list)


def integrate(stepper: Stepper, func: Callable, y0: torch.Tensor, ts: Sequence[float], control: StepControl, *,
              counter: Optional[Counter] = None, on_step: Optional[Callable] = None, keep_times: bool = False,
              check_field: bool = True) -> Run:
    """Solve from ``ts[0]`` through every time in ``ts`` with ``stepper``.

    Args:
        stepper: the method, as a :class:`~pyjode.stepper.Stepper` built for ``y0``'s dtype and device.
        func: the vector field ``f(t, y)``; ``t`` is passed as a 0-dim tensor.
        y0: the state at ``ts[0]``.
        ts: strictly monotonic output times, as Python floats.
        control: the step-size settings.
        counter: filled with evaluations, accepted and rejected steps.
        on_step: called as ``on_step(t0, t1, y0, y1, dense, stepper)`` after each accepted step (for a
            Runge–Kutta stepper ``dense`` is its stage matrix, a reused buffer without autograd: copy
            what you keep).
        keep_times: record the accepted step boundaries in the result.
        check_field: check the field's output (shape, dtype, no in-place change of y) on every call.
    """
    counter = counter if counter is not None else Counter()
    field = CheckedField(func, counter) if check_field else CountingField(func, counter)
    ts = [float(t) for t in ts]
    prepare = getattr(stepper, "prepare", None)
    if prepare is not None:  # steppers with inner iterations (implicit methods) take the tolerances
        prepare(control)
    if len(ts) == 1:  # nothing to integrate: no step, not even one of zero length (an implicit step divides by h)
        return Run([y0], stepper.init(field, ts[0], y0), array("d", ts) if keep_times else None, [0])
    if control.per_sample:  # every sample along y's first dimension takes its own steps
        from .per_sample import per_sample_loop

        return per_sample_loop(stepper, field, y0, ts, control, counter, on_step, keep_times)
    if stepper.adaptive:
        return adaptive_loop(stepper, field, y0, ts, control, counter, on_step, keep_times)
    grid, is_output = fixed_grid(ts, control)
    return fixed_loop(stepper, field, y0, grid, is_output, control, counter, on_step, keep_times)


def fixed_grid(ts: Sequence[float], control: StepControl):
    """The step times of a fixed-step solve and which of them are outputs: every stretch between output,
    step and jump times is split into equal steps no longer than ``control.step_size`` (one step per
    stretch when ``step_size`` is None: the steps land on the output and ``step_ts`` times only)."""
    step_size = control.step_size
    targets, _ = control.targets(ts[0], ts[-1], extra=ts[1:])
    grid, is_output, outputs = [ts[0]], [True], set(ts[1:])
    for b in targets:
        a = grid[-1]
        n = 1 if step_size is None else max(1, math.ceil(abs(b - a) / step_size - 1e-9))
        h = (b - a) / n
        grid.extend(a + j * h for j in range(1, n))
        is_output.extend([False] * (n - 1))
        grid.append(b)
        is_output.append(b in outputs)
    if control.max_steps is not None and len(grid) - 1 > control.max_steps:
        raise SolveError(
            f"max_steps={control.max_steps} is too small: step_size={step_size} needs {len(grid) - 1} steps from "
            f"t={ts[0]:.6g} to t={ts[-1]:.6g}", t=ts[0], cause="max_steps",
            hint="raise max_steps or increase step_size")
    return grid, is_output


def fixed_loop(stepper: Stepper, field, y0: torch.Tensor, grid: Sequence[float], is_output: Sequence[bool],
               control: StepControl, counter: Counter, on_step=None, keep_times: bool = False,
               controls: Optional[Iterable] = None) -> Run:
    """Step through ``grid`` (Python floats); ``controls`` yields one driving increment per step (SDEs)."""
    dtype = y0.dtype
    # a grid of one time (output at t0 only) takes no step: the state starts there
    state = stepper.init(field, control.evaluation_span(grid[0], grid[1], dtype)[0] if len(grid) > 1 else grid[0], y0)
    ys, times, output_steps = [y0], (array("d", grid) if keep_times else None), [0]
    controls = iter(controls) if controls is not None else None
    moves_ends, has_jumps, callbacks = control.moves_ends, bool(control.jump_ts), control.callbacks
    for k in range(len(grid) - 1):
        t0, t1 = control.evaluation_span(grid[k], grid[k + 1], dtype) if moves_ends else (grid[k], grid[k + 1])
        c = next(controls) if controls is not None else None
        if callbacks is not None:
            callbacks.step(t0, stepper.output(state), t1 - t0)
        state1, _, dense = stepper.step(field, t0, t1, state, c)
        if on_step is not None:
            on_step(t0, t1, stepper.output(state), stepper.output(state1), dense, stepper)
        if has_jumps and control.is_jump(grid[k + 1]) and k < len(grid) - 2:
            state1 = stepper.restart(field, control.evaluation_span(grid[k + 1], grid[k + 2], dtype)[0], state1)
        state = state1
        if is_output[k + 1]:
            ys.append(stepper.output(state))
            output_steps.append(k + 1)
    counter.steps += len(grid) - 1
    check_finite_outputs(ys, [grid[k] for k in output_steps], control.step_size)
    return Run(ys, state, times, output_steps)


def check_progress(h: float, t: float, t_end: float, eps: float, attempts: int, control: StepControl,
                   counter: Counter, last_bad: bool) -> None:
    """The adaptive loop's guards: a step size that underflowed, or max_steps attempts used up."""
    if not h > 4 * eps * max(1.0, abs(t)):  # also catches a NaN step
        if h >= control.max_step:  # as long as allowed: max_step itself is below the resolution of t here
            raise max_step_unresolved(control.max_step, t, eps)
        what = "the vector field kept returning NaN or inf" if last_bad else "the error estimate kept failing"
        raise SolveError(
            f"step size underflowed ({h:.3g}) at t={t:.6g}: {what}; the problem may be stiff or singular there",
            t=t, cause="nonfinite_field" if last_bad else "step_underflow",
            hint="try looser rtol/atol, a different method, float64, or check the vector field")
    if attempts >= control.attempt_cap:
        raise SolveError(
            f"max_steps={control.attempt_cap} reached at t={t:.6g} before t={t_end:.6g} "
            f"({counter.steps} accepted, {counter.rejected} rejected steps)", t=t, cause="max_steps",
            hint="raise max_steps, loosen rtol/atol, or check whether the problem is stiff")


def max_step_unresolved(max_step: float, t: float, eps: float) -> SolveError:
    """The error for a ``max_step`` too short to advance ``t`` in its precision (``t + max_step == t``)."""
    return SolveError(f"max_step={max_step:.3g} is below the resolution of the times at t={t:.6g} (steps must exceed "
                      f"{4 * eps * max(1.0, abs(t)):.3g} there), so no step can advance", t=t, cause="max_step",
                      hint="raise max_step (or leave it out)")


def check_finite_outputs(ys, ts, step_size):
    """One host check at the end: fixed steps cannot be retried, so report where the solve blew up."""
    finite = torch.stack([torch.isfinite(y).all() for y in ys]).tolist()
    if not all(finite):
        i = finite.index(False)
        if i == 0:
            check_start(ts[0], ys[0])  # raises, naming where y0 is not finite
        raise SolveError(
            f"the solution became NaN or inf between t={ts[i - 1]:.6g} and t={ts[i]:.6g} with fixed steps of "
            f"at most {step_size}", t=ts[i], cause="nonfinite_solution",
            hint="try a smaller step (step_size, or dt for sdeint), a more stable or adaptive method (such as "
                 "method='dopri5' for an ODE), or check the field for overflow there")


def adaptive_loop(stepper: Stepper, field, y0: torch.Tensor, ts: List[float], control: StepControl,
                  counter: Counter, on_step=None, keep_times: bool = False) -> Run:
    """Adaptive steps from ``ts[0]`` through every output time (see the module docstring)."""
    rtol, atol, norm, controller = control.rtol, control.atol, control.norm, control.controller
    k = min(stepper.order, stepper.error_order) + 1
    t0, t_end = ts[0], ts[-1]
    direction = 1.0 if t_end > t0 else -1.0
    eps = torch.finfo(y0.dtype).eps
    # Steps land on these; a stepper without dense output lands on every output time as well.
    targets, jumps = control.targets(t0, t_end, extra=() if stepper.dense_output else ts[1:])

    dtype = y0.dtype
    moves_ends, callbacks = control.moves_ends, control.callbacks
    min_step, max_step, accept_min_step = control.min_step, control.max_step, control.accept_min_step
    # a stepper may ask to keep the step size through small changes (implicit methods reuse their
    # factorised Newton matrices: Hairer's rule)
    hold_step = getattr(stepper, "hold_step", None)
    state = stepper.init(field, control.evaluation_span(t0, t_end, dtype)[0], y0)
    first = control.first_step if control.first_step is not None else control.step_size
    if first is None:
        with torch.no_grad():
            f0 = stepper.slope(field, t0, state)
            h = initial_step_size(field, t0, y0, f0, stepper.order, rtol, atol, norm, direction, stepper.time)
            if not h > 0:  # say what is wrong with the start, if anything (costs nothing on a good start)
                check_start(t0, y0, f0, rtol, atol, norm)
        if not h > 0:  # NaN or zero: f at the first trial step was not finite
            raise SolveError(f"the initial step size came out {h} at t={t0:.6g}: the vector field is not finite "
                             f"just after t0", t=t0, cause="nonfinite_field",
                             hint="check the field near the initial time, or pass first_step=...")
    else:
        # no scale check here: with a given first step the error test scales by max(|y0|, |y1|), which a
        # component starting at zero (an adjoint's a_θ) leaves at once
        check_start(t0, y0)
        h = first
    h = min(max(h, control.min_step), control.max_step)
    y = y0
    ys, times, output_steps = [y0], (array("d", [t0]) if keep_times else None), [0]
    t, idx, ti, attempts, accepted, prev_ratio, last_bad, just_rejected = t0, 1, 0, 0, 0, 1.0, False, False
    n_out = len(ts)
    while idx < n_out:
        target = targets[ti]
        remaining = (target - t) * direction
        # Land on the target; stretch a step that would leave a sliver before it, rather than take the
        # sliver next.
        clipped = h >= 0.99 * remaining
        h_used = remaining if clipped else h
        check_progress(h_used, t, t_end, eps, attempts, control, counter, last_bad)
        attempts += 1
        t1 = target if clipped else t + direction * h_used
        # the times the step is evaluated between: just inside any jump it starts or ends on
        ta, tb = control.evaluation_span(t, t1, dtype) if moves_ends else (t, t1)
        if callbacks is not None:
            callbacks.step(ta, y, tb - ta)
        state1, err, dense = stepper.step(field, ta, tb, state, None)
        y1 = stepper.output(state1)
        with torch.no_grad():  # step control is not differentiated
            scale = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
            ratio = float(norm(err.view(y.shape).div_(scale)))
        forced = accept_min_step and h_used <= min_step and math.isfinite(ratio)
        if not ratio <= 1.0 and not forced:  # also catches NaN
            last_bad = not math.isfinite(ratio)
            counter.rejected += 1
            just_rejected = True
            if callbacks is not None:
                callbacks.reject(ta, y, tb - ta)
            if h_used <= min_step:
                raise SolveError(
                    f"a step of min_step={control.min_step:.3g} failed its error test at t={t:.6g} (error ratio "
                    f"{ratio:.3g})", t=t, cause="min_step",
                    hint="lower min_step, loosen rtol/atol, or check the vector field there")
            h = max(h_used * controller.reject_factor(ratio, k), min_step)
            continue
        last_bad = False
        if callbacks is not None:
            callbacks.accept(ta, y, tb - ta)
        counter.steps += 1
        accepted += 1
        thetas = []
        while idx < n_out and (ts[idx] - t1) * direction < 0:
            thetas.append((ts[idx] - ta) / (tb - ta))
            idx += 1
        if thetas:  # every output inside this step from one dense-output product
            ys.extend(stepper.interpolate(state, dense, ta, tb, thetas).unbind(0))
        if keep_times:
            times.append(t1)
        if idx < n_out and ts[idx] == t1:
            ys.append(y1)
            output_steps.append(accepted)
            idx += 1
        if on_step is not None:
            on_step(ta, tb, y, y1, dense, stepper)
        if clipped:
            ti += 1
            if t1 in jumps and idx < n_out:
                state1 = stepper.restart(field, beside(t1, t1 + direction, dtype), state1)
        t, y, state = t1, y1, state1
        fac = controller.accept_factor(ratio, prev_ratio, k)
        # Hairer's rule: the step after a rejection may not grow, which stops reject/accept cascades.
        proposal = h_used * (min(fac, 1.0) if just_rejected else fac)
        # A step shortened only to land on a target says nothing against the step proposed before it.
        h = max(proposal, h) if clipped else proposal
        h = min(max(h, min_step), max_step)
        if hold_step is not None and not clipped and hold_step(h / h_used):
            h = h_used
        just_rejected = False
        prev_ratio = max(ratio, 1e-4)
    return Run(ys, state, times, output_steps)
