"""Per-sample step sizes: each sample along ``y``'s first dimension takes its own adaptive steps.

A batch of *independent* problems (``y`` of shape ``(B, ...)``, sample ``b`` of the field depending on sample
``b`` of ``y`` only) solved with one shared step size steps as finely as its hardest sample needs at every
time: a batch of stiff oscillators with different periods, each with short fast transients, ends up with the
union of all their small steps. With ``per_sample=True`` (a :class:`~pyjode.StepControl` setting, also a
keyword of :func:`pyjode.solve`/:func:`pyjode.odeint`) every sample carries its own time ``t_b``, step
``h_b``, error ratio and controller history, as torchode does (Lienen & Günnemann, *torchode: A Parallel
ODE Solver for PyTorch*, 2022). Each loop iteration makes one batched step attempt in which sample ``b``
goes from ``t_b`` to ``t_b + h_b``; samples that have finished take zero-length steps until all are done.

**The field's time.** The field receives ``t`` as a tensor of shape ``(B,)`` (in ``y``'s dtype), the time
of each sample: write it to broadcast, e.g. ``torch.sin(t)[:, None] * y`` (torchode's convention).

**The rules** are those of :func:`pyjode.integrate.adaptive_loop`, applied to each sample with
``torch.where``, so that a sample takes the same accepted steps (to rounding) as the same problem solved on
its own with ``step_ts=t``:

* Hairer's initial step per sample (one batched evaluation), unless ``first_step`` is given;
* a step is accepted when ``norm(err_b / (atol + rtol max(|y_b|, |y1_b|))) <= 1``, the control's norm taken
  over the sample alone (``rms_norm`` and ``max_norm`` per row; any other norm is mapped over the samples);
* the PI controller's factors from each sample's own ratio and previous ratio; no growth after a rejection;
* steps land exactly on the output times and ``step_ts`` (each sample lands on every output time, so outputs
  are the solution's own step values, as in the ordinary loop with ``step_ts=t``), and a step that would leave
  a sliver before a target is stretched onto it;
* ``min_step``/``max_step``, ``accept_min_step`` and ``max_steps`` (counted per sample) as in the ordinary
  loop; a step size that underflows (a field returning NaN or inf, or an error estimate that keeps failing)
  raises a :class:`~pyjode.SolveError` naming the sample and its time.

**When it pays.** A per-sample attempt does more small-tensor work than a shared step (per-sample norms,
controller factors and selections, and for implicit methods a batch of Newton matrices factorised every step),
so it pays when the samples need different steps at different times (stiff problems with transients at
different times: 256 Van der Pol problems with mu in [900, 1000] take 345 attempts instead of 29621 shared
steps, benchmarks/RESULTS.md); for a few samples that step alike, the shared step is cheaper.

Times are kept in float64 tensors whatever ``y``'s dtype (as the ordinary loop keeps Python floats), and the
loop synchronises with the host once per iteration, to learn whether every sample is done, whether a guard
fired and which samples landed on an output time.

**Steppers** opt in with ``per_sample_time = True``: their ``step(field, t0, t1, state, control)`` then also
accepts ``t0``, ``t1`` as float64 tensors of shape ``(B,)`` (a zero-length step leaves the sample where it
is) and returns the error with ``y``'s shape. The explicit Runge–Kutta steppers do, and the implicit ones with
``jacobian="batch"`` (per-sample Jacobians, Newton matrices and Newton convergence; a sample whose iteration
fails gets an infinite error, so only its step is rejected). Gradients: ``adjoint="direct"`` only (backprop
through the per-sample steps; step sizes are not differentiated, as in the ordinary loop).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, List, Optional, Sequence

import torch

from .errors import SolveError
from .norms import max_norm, rms_norm
from .start_checks import check_start
from .step_control import StepControl
from .integrate import max_step_unresolved

__all__ = ["per_sample_loop", "PerSampleRun", "per_sample_norm", "check_per_sample"]

#: What works with per_sample=True, for the error messages.
WHAT_WORKS = ("per_sample=True works with the adaptive explicit Runge-Kutta methods (such as 'dopri5', 'tsit5') "
              "and the adaptive implicit ones with per-sample Jacobians (pyjode.Implicit('radauIIA5', "
              "jacobian='batch'), 'kvaerno3/4/5' likewise)")


@dataclass
class PerSampleRun:
    """What :func:`per_sample_loop` returns: the outputs (each ``y``-shaped), the final stepper state, and per
    sample the accepted and rejected steps (``(B,)`` int64 tensors), the number of batched step attempts, and,
    when asked for, each sample's accepted step boundaries (a float64 ``array`` per sample)."""

    ys: List[torch.Tensor]
    state: Any
    steps: torch.Tensor
    rejected: torch.Tensor
    iterations: int
    sample_times: Optional[List[array]] = None
    times: Optional[array] = None  # the ordinary loop's shared step times: none here (see sample_times)
    output_steps: List[int] = dc_field(default_factory=list)


def check_per_sample(stepper, y0: torch.Tensor, control: StepControl, on_step=None) -> None:
    """Refuse, naming ``per_sample`` and what works, what the per-sample loop cannot do."""
    if not getattr(stepper, "per_sample_time", False) or not getattr(stepper, "adaptive", False):
        name = getattr(stepper, "name", None) or type(stepper).__name__
        raise ValueError(f"per_sample=True: the method {name!r} cannot take per-sample steps. " + WHAT_WORKS)
    if y0.dim() < 1 or y0.shape[0] < 1:
        raise ValueError(f"per_sample=True needs y0 of shape (B, ...) with the independent samples along its "
                         f"first dimension, got shape {tuple(y0.shape)}")
    keep_step = getattr(getattr(stepper, "method", None), "keep_step", 1.0)
    if keep_step != 1.0:
        raise ValueError(f"per_sample=True: keep_step={keep_step} has nothing to keep (each sample's Newton matrices "
                         f"are factorised at every step, as a batch); use keep_step=1")
    unsupported = [name for name, given in (("jump_ts", bool(control.jump_ts)), ("perturb", control.perturb),
                                            ("step callbacks", control.callbacks is not None),
                                            ("dense output (on_step)", on_step is not None)) if given]
    if unsupported:
        raise ValueError(f"per_sample=True does not support {', '.join(unsupported)} (each sample has its own "
                         f"step times); drop {'it' if len(unsupported) == 1 else 'them'} or use per_sample=False")


def per_sample_norm(norm: Callable, x: torch.Tensor) -> torch.Tensor:
    """``norm`` of each sample ``x[b]``, as a ``(B,)`` tensor: the same arithmetic as ``norm(x[b])`` for the
    built-in norms, ``torch.vmap(norm)`` (or a loop, for a norm vmap cannot trace) for any other."""
    B = x.shape[0]
    rows = x.reshape(B, -1)
    if norm is rms_norm:
        return torch.linalg.vector_norm(rows, dim=1) / math.sqrt(max(rows.shape[1], 1))
    if norm is max_norm:
        return rows.abs().amax(dim=1)
    try:
        return torch.vmap(norm)(x)
    except Exception:  # noqa: BLE001 - a norm torch.func cannot trace (a host sync, a Python branch)
        return torch.stack([torch.as_tensor(norm(x[b])) for b in range(B)])


def _column(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor shaped to broadcast against ``like`` (``(B, 1, ..., 1)``)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def select_state(mask: torch.Tensor, new, old):
    """The stepper state taking ``new`` where ``mask`` (per sample) and ``old`` elsewhere; a state is a
    tensor, ``None`` or a tuple of them (a part that is ``None`` in either is ``None``)."""
    if isinstance(new, tuple):
        return tuple(select_state(mask, a, b) for a, b in zip(new, old))
    if new is None or old is None:
        return None
    if new is old:
        return new
    return torch.where(_column(mask, new), new, old)


def initial_steps(stepper, field, t0: float, y0: torch.Tensor, state, control: StepControl,
                  direction: float) -> torch.Tensor:
    """Hairer's starting step (:func:`pyjode.step_size.initial_step_size`) for every sample, ``(B,)`` float64:
    d0 = ||y0||, d1 = ||f0||, h0 = 0.01 d0 / d1 (1e-6 when either is below 1e-5), d2 = ||f(t0 + h0, y0 + h0
    f0) - f0|| / h0, h1 = (0.01 / max(d1, d2))^(1/(order+1)), h = min(100 h0, h1); norms per sample."""
    rtol, atol, norm, dtype = control.rtol, control.atol, control.norm, y0.dtype
    B = y0.shape[0]
    with torch.no_grad():
        tt = torch.full((B,), t0, dtype=torch.float64, device=y0.device)
        f0 = stepper.slope(field, tt, state)
        scale = y0.abs().mul(rtol).add(atol)
        d0 = per_sample_norm(norm, y0 / scale).double()
        d1 = per_sample_norm(norm, f0 / scale).double()
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.where(torch.isfinite(d0) & torch.isfinite(d1), h0, torch.full_like(h0, 1e-6))
        y1 = y0 + _column((direction * h0).to(dtype), y0) * f0
        f1 = field((tt + direction * h0).to(dtype), y1)
        d2 = per_sample_norm(norm, (f1 - f0) / scale).double() / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / dmax) ** (1.0 / (stepper.order + 1)))
        h = torch.minimum(100.0 * h0, h1)
        # a non-finite start gives NaN here: say what is wrong with it (only then: it costs a sync)
        bad = ~(h > 0) | ~(torch.isfinite(d0) & torch.isfinite(d1))
        if bool(bad.any()):
            check_start(t0, y0, f0, rtol, atol, norm)
            b = int(torch.nonzero(bad)[0])
            raise SolveError(f"the initial step size of sample {b} came out {float(h[b])} at t={t0:.6g}: the vector "
                             f"field is not finite just after t0", t=t0, cause="nonfinite_field",
                             hint="check the field near the initial time, or pass first_step=...")
    return h


def per_sample_loop(stepper, field, y0: torch.Tensor, ts: Sequence[float], control: StepControl, counter,
                    on_step=None, keep_times: bool = False) -> PerSampleRun:
    """Adaptive steps of every sample from ``ts[0]`` through every output time (see the module docstring)."""
    check_per_sample(stepper, y0, control, on_step)
    rtol, atol, norm, ctl = control.rtol, control.atol, control.norm, control.controller
    k = min(stepper.order, stepper.error_order) + 1
    t0, t_end = ts[0], ts[-1]
    direction = 1.0 if t_end > t0 else -1.0
    dtype, device = y0.dtype, y0.device
    eps = torch.finfo(dtype).eps
    B = y0.shape[0]
    f64 = dict(dtype=torch.float64, device=device)
    targets, _ = control.targets(t0, t_end, extra=ts[1:])
    n_targets, n_out = len(targets), len(ts)
    target_t = torch.tensor(targets, **f64)
    out_position = {x: i for i, x in enumerate(ts)}
    target_out = torch.tensor([out_position.get(x, -1) for x in targets], dtype=torch.long, device=device)
    min_step, max_step, cap = control.min_step, control.max_step, control.attempt_cap
    accept_min_step = control.accept_min_step

    state = stepper.init(field, torch.full((B,), t0, **f64), y0)
    first = control.first_step if control.first_step is not None else control.step_size
    if first is None:
        h = initial_steps(stepper, field, t0, y0, state, control, direction)
    else:
        check_start(t0, y0)
        h = torch.full((B,), first, **f64)
    h = h.clamp(min_step, max_step)

    y = y0
    t = torch.full((B,), t0, **f64)
    ti = torch.zeros(B, dtype=torch.long, device=device)
    attempts = torch.zeros(B, dtype=torch.long, device=device)
    steps = torch.zeros(B, dtype=torch.long, device=device)
    rejected = torch.zeros(B, dtype=torch.long, device=device)
    prev_ratio = torch.ones(B, **f64)
    just_rejected = torch.zeros(B, dtype=torch.bool, device=device)
    last_bad = torch.zeros(B, dtype=torch.bool, device=device)
    min_fail = torch.zeros(B, dtype=torch.bool, device=device)
    fail_ratio = torch.zeros(B, **f64)
    landed = torch.full((B,), -1, dtype=torch.long, device=device)
    ys: List[Optional[torch.Tensor]] = [y0] + [None] * (n_out - 1)
    history = [] if keep_times else None
    iterations = 0
    zero = torch.zeros((), **f64)
    while True:
        active = ti < n_targets
        target = target_t[ti.clamp(max=n_targets - 1)]
        remaining = (target - t) * direction
        # land on the target; stretch a step that would leave a sliver before it (as adaptive_loop)
        clipped = active & (h >= 0.99 * remaining)
        h_used = torch.where(active, torch.where(clipped, remaining, h), zero)
        t1 = torch.where(clipped, target, t + direction * h_used)
        underflow = active & ~(h_used > 4 * eps * torch.clamp(t.abs(), min=1.0))
        capped = active & (attempts >= cap)
        # the loop's one host synchronisation per iteration
        flags = torch.stack([active.any(), underflow.any(), capped.any(), min_fail.any()]).long()
        sync = torch.cat([flags, landed]).tolist()
        any_active, any_underflow, any_capped, any_min_fail = sync[:4]
        for j in set(sync[4:]) - {-1}:  # samples that landed on output time ts[j] at the last step
            mask = _column(landed == j, y)
            ys[j] = torch.where(mask, y, y if ys[j] is None else ys[j])
        if any_min_fail:
            b = int(torch.nonzero(min_fail)[0])
            tb = float(t[b])
            raise SolveError(f"sample {b}: a step of min_step={min_step:.3g} failed its error test at t={tb:.6g} "
                             f"(error ratio {float(fail_ratio[b]):.3g})", t=tb, cause="min_step",
                             hint="lower min_step, loosen rtol/atol, or check the vector field there")
        if any_underflow:
            b = int(torch.nonzero(underflow)[0])
            tb, hb, nonfinite = float(t[b]), float(h_used[b]), bool(last_bad[b])
            if hb >= max_step:
                raise max_step_unresolved(max_step, tb, eps)
            what = "the vector field kept returning NaN or inf" if nonfinite else "the error estimate kept failing"
            raise SolveError(
                f"sample {b}: step size underflowed ({hb:.3g}) at t={tb:.6g}: {what}; the problem may be stiff or "
                f"singular there", t=tb, cause="nonfinite_field" if nonfinite else "step_underflow",
                hint="try looser rtol/atol, a different method, float64, or check the vector field")
        if any_capped:
            b = int(torch.nonzero(capped)[0])
            tb = float(t[b])
            raise SolveError(
                f"sample {b}: max_steps={cap} reached at t={tb:.6g} before t={t_end:.6g} ({int(steps[b])} accepted, "
                f"{int(rejected[b])} rejected steps)", t=tb, cause="max_steps",
                hint="raise max_steps, loosen rtol/atol, or check whether the problem is stiff")
        if not any_active:
            break
        iterations += 1
        state1, err, _ = stepper.step(field, t, t1, state, None)
        y1 = stepper.output(state1)
        with torch.no_grad():  # step control is not differentiated
            scale = torch.maximum(y.detach().abs(), y1.detach().abs()).mul_(rtol).add_(atol)
            ratio = per_sample_norm(norm, err.detach().view(y.shape) / scale).double()
            finite = torch.isfinite(ratio)
            ok = ratio <= 1.0
            if accept_min_step:
                ok = ok | ((h_used <= min_step) & finite)
            accept = active & ok
            reject = active & ~ok
            attempts += active
            steps += accept
            rejected += reject
            last_bad = torch.where(reject, ~finite, last_bad & ~accept)
            min_fail = reject & (h_used <= min_step)
            fail_ratio = ratio
            # rejected: shrink (no more than factor_min; a NaN ratio by factor_min), never below min_step
            rej_fac = torch.where(finite, (ctl.safety * ratio ** (-1.0 / k)).clamp(ctl.factor_min, 1.0),
                                  torch.full_like(ratio, ctl.factor_min))
            h_rej = torch.clamp(h_used * rej_fac, min=min_step)
            # accepted: the PI controller; Hairer's rule: no growth right after a rejection
            fac = (ctl.safety * ratio.clamp(min=1e-10) ** (-(1.0 / k - 0.75 * ctl.beta))
                   * prev_ratio ** ctl.beta).clamp(ctl.factor_min, ctl.factor_max)
            proposal = h_used * torch.where(just_rejected, fac.clamp(max=1.0), fac)
            # a step shortened only to land on a target says nothing against the step proposed before it
            h_acc = torch.where(clipped, torch.maximum(proposal, h), proposal).clamp(min_step, max_step)
            h = torch.where(accept, h_acc, torch.where(reject, h_rej, h))
            just_rejected = torch.where(accept, False, just_rejected | reject)
            prev_ratio = torch.where(accept, ratio.clamp(min=1e-4), prev_ratio)
            landing = accept & clipped
            landed = torch.where(landing, target_out[ti.clamp(max=n_targets - 1)], -1)
            ti = ti + landing
            t = torch.where(accept, t1, t)
            if history is not None:
                history.append((accept, t))
        state = select_state(accept, state1, state)
        y = stepper.output(state)
    counter.steps += int(steps.sum())
    counter.rejected += int(rejected.sum())
    sample_times = None
    if history is not None:
        sample_times = [array("d", [t0]) for _ in range(B)]
        for acc, tt in history:
            for b in torch.nonzero(acc).flatten().tolist():
                sample_times[b].append(float(tt[b]))
    return PerSampleRun(ys, state, steps, rejected, iterations, sample_times)
