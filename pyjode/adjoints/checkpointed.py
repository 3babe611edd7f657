"""The checkpointed discrete adjoint: backprop's gradient, with states stored instead of activations.

A solve is a composition of accepted steps  s_{n+1} = Φ(t_n, t_{n+1}, s_n; θ)  (``s`` the stepper state:
``(y, f)`` for a Runge–Kutta method with its first-same-as-last stage, ``(y, z)`` for a reversible one),
and each output is either a step end ``y(s_{n+1})`` or a dense output ``y_n + h Σ b_i(ϑ) K_i`` inside a
step. Backprop through the solve (``adjoint="direct"``) keeps every stage's activations alive until the
backward pass. Here the forward pass runs without a graph and stores only the states ``s_n`` that
start the accepted steps (or a bounded number of them), with the step times as Python floats. The
backward pass walks the steps in reverse and, for step n, recomputes Φ under autograd from the stored
``s_n`` and the same ``(t_n, t_{n+1})``, then takes one vector–Jacobian product

    (s̄_n, θ̄ += ...) = (∂Φ/∂s_n, ∂Φ/∂θ)^T s̄_{n+1} + (∂ outputs_n / ∂(s_n, θ))^T (dL/d outputs_n),

so at most one step's activations are alive at once. This is the reverse mode of Griewank & Walther's
checkpointing (Evaluating Derivatives, 2nd ed., ch. 12; Algorithm 799 "revolve", ACM TOMS 2000) applied
to an ODE solve, as diffrax's ``RecursiveCheckpointAdjoint`` does (Kidger, "On Neural Differential
Equations", 2021, §5.1.2.2). The gradient is that of the discrete solution: it equals ``adjoint="direct"``
to rounding. As in ``direct``, the step-size decisions (error norm, controller, rejected attempts) are
not differentiated: the accepted step times are constants of the discretisation.

**Memory.** With ``checkpoints=None`` every accepted step's start state is kept: ``steps x state``
elements (x2 for FSAL methods, whose state carries f), plus one step's activations during the backward
pass. With ``checkpoints=c`` at most ``c`` states are kept: whenever a new state would exceed ``c``
every other stored state is dropped and the stride doubles, so a solve of ``n`` steps keeps states
``stride`` apart with ``n / c <= stride < 2 n / c``. The backward pass then re-runs each stretch of
``stride`` steps without a graph from its checkpoint (keeping those ``stride`` states) before
backpropagating through it: memory ``O(c + n / c)`` states, ``O(sqrt(n))`` for ``c ~ sqrt(n)``, for one
extra forward pass of the accepted steps.

**Parameter gradients.** θ̄ is one buffer per parameter, filled in place. For a field with large
parameters (an ``nn.Module`` holding at least ``param_sink.MIN_SINK_ELEMENTS`` of them) each evaluation's
parameter VJP is added into it as soon as it is formed (:mod:`pyjode.adjoints.param_sink`), so a step's
backward pass holds two parameter-sized buffers (the sum and one evaluation's VJP) instead of autograd's
sum over the step's stages beside the caller's (five on the 1 M-parameter wide MLP).

**Time.** One forward pass without a graph (rejected attempts included) plus one recomputation of the
accepted steps under autograd and its backward pass: direct backprop's work plus a forward pass without
graph bookkeeping, and no backward tolerance to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..integrate import Counter, CountingField, integrate
from ..reversible import Reversible
from ..stepper import Stepper
from ..tableau import ButcherTableau
from .base import (GradientMethod, SolveSpec, make_stepper, record_backward, record_forward,
                   run_method)
from .backward_checks import captured_tensors
from ..function_transforms import check_batched_backward
from .param_sink import sink_field

__all__ = ["Checkpointed"]


def _tensors(state) -> Tuple[Optional[torch.Tensor], ...]:
    """A stepper state as a tuple (``None`` entries allowed: an RK state without FSAL has no f)."""
    return tuple(state) if isinstance(state, tuple) else (state,)


def _rebuild(like, parts):
    return tuple(parts) if isinstance(like, tuple) else parts[0]


def _copy(state):
    """A private copy: a stepper without autograd reuses its stage buffers, and an RK state's f is a view
    of one of them, which a later step overwrites."""
    return _rebuild(state, [None if x is None else x.detach().clone() for x in _tensors(state)])


@dataclass
class StepRecord:
    """One accepted step as the loop took it: evaluation times, the dense-output fractions of the outputs
    inside it, whether its end is an output, and the time of a restart after it (a jump), if any."""

    t0: float
    t1: float
    thetas: Tuple[float, ...] = ()
    end_output: bool = False
    restart_at: Optional[float] = None


class _Recording(Stepper):
    """Passes every call through to the real stepper and notes what the loop did with the accepted steps.

    The loop calls ``step`` once per attempt, then, for an accepted step, ``interpolate`` (outputs inside
    it), ``on_step`` and ``restart`` (a jump at its end) in that order; the start state of the pending
    attempt becomes a checkpoint when ``on_step`` accepts it.
    """

    def __init__(self, inner: Stepper, max_states: Optional[int]):
        self.inner = inner
        self.adaptive, self.order, self.error_order = inner.adaptive, inner.order, inner.error_order
        self.dense_output, self.time = inner.dense_output, inner.time
        self.steps: List[StepRecord] = []
        self.states: Dict[int, Any] = {}  # step index -> its start state
        self.stride, self.max_states = 1, max_states
        self.t_init: Optional[float] = None
        self._pending = None
        self._thetas: Tuple[float, ...] = ()

    def init(self, field, t0, y0):
        self.t_init = t0
        return self.inner.init(field, t0, y0)

    def step(self, field, t0, t1, state, control=None):
        self._pending, self._thetas = (t0, t1, state), ()
        return self.inner.step(field, t0, t1, state, control)

    def interpolate(self, state, dense, t0, t1, thetas):
        self._thetas = tuple(float(x) for x in thetas)
        return self.inner.interpolate(state, dense, t0, t1, thetas)

    def restart(self, field, t, state):
        self.steps[-1].restart_at = t
        return self.inner.restart(field, t, state)

    def output(self, state):
        return self.inner.output(state)

    def slope(self, field, t, state):
        return self.inner.slope(field, t, state)

    def on_step(self, *_):
        t0, t1, state = self._pending
        n = len(self.steps)
        self.steps.append(StepRecord(t0, t1, self._thetas))
        if n % self.stride == 0:
            self.states[n] = _copy(state)
            if self.max_states is not None and len(self.states) > self.max_states:
                self.stride *= 2
                self.states = {k: v for k, v in self.states.items() if k % self.stride == 0}


class _CheckpointedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, method, spec, retain, y0, *params):
        counter = Counter()
        stepper = make_stepper(spec.method, y0)
        rec = _Recording(stepper, method.checkpoints)
        with torch.no_grad():
            run = integrate(rec, spec.func, y0, spec.ts, spec.control, counter=counter, on_step=rec.on_step,
                            keep_times=True)
            if isinstance(spec.method, Reversible):
                spec.method.check_drift(*run.state, spec.ts[-1])
            ys = torch.stack(run.ys)
        record_forward(spec.stats, counter)
        for k in run.output_steps[1:]:
            rec.steps[k - 1].end_output = True
        # The stored states go through save_for_backward, so autograd frees them after a backward pass
        # (and refuses a second one without retain_graph=True) exactly as it does backprop's activations.
        keys = sorted(rec.states)
        layout, flat = [], []
        for k in keys:
            parts = _tensors(rec.states[k])
            layout.append((k, isinstance(rec.states[k], tuple), [x is not None for x in parts]))
            flat.extend(x for x in parts if x is not None)
        ctx.save_for_backward(y0, *flat)
        ctx.method, ctx.spec, ctx.stepper, ctx.layout = method, spec, stepper, layout
        ctx.steps, ctx.stride, ctx.t_init = rec.steps, rec.stride, rec.t_init
        ctx.retain = retain
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        check_batched_backward("checkpointed", grad_ys)
        y0, *flat = ctx.saved_tensors
        spec = ctx.spec
        if torch.is_grad_enabled():  # create_graph=True: the gradient must itself be differentiable
            return (None, None, None, *differentiable_vjp(spec, y0, grad_ys))
        states, it = {}, iter(flat)
        for k, is_tuple, present in ctx.layout:
            parts = [next(it) if p else None for p in present]
            states[k] = tuple(parts) if is_tuple else parts[0]
        counter = Counter()
        grad_params = [torch.zeros_like(p) for p in spec.params]
        # large parameters: each evaluation's parameter VJP goes straight into grad_params (param_sink.py)
        sink = sink_field(spec.func, spec.params, grad_params)
        field = CountingField(spec.func if sink is None else sink, counter)
        grad_y0 = _backward_sweep(ctx.stepper, field, spec.params, y0, ctx.t_init, ctx.steps, states, ctx.stride,
                                  grad_ys, counter, grad_params, sink, retain=ctx.retain)
        record_backward(spec.stats, counter)
        return (None, None, None, grad_y0, *grad_params)


def _output_slots(steps: List[StepRecord]) -> List[Tuple[int, int, bool]]:
    """For each step, ``(first output index, number of dense outputs, end is an output)``: the loop emits a
    step's dense outputs, then its end, in order after ``y0``."""
    slots, i = [], 1
    for s in steps:
        slots.append((i, len(s.thetas), s.end_output))
        i += len(s.thetas) + (1 if s.end_output else 0)
    return slots


def differentiable_vjp(spec: SolveSpec, y0: torch.Tensor, grad_ys: torch.Tensor) -> list:
    """The VJP with a graph, for ``create_graph=True`` (a gradient penalty, a Hessian-vector product): the
    stored states are constants, so the second derivative cannot pass through them. The same discrete
    solution (the same accepted steps: the solve is deterministic) is recomputed under autograd from ``y0``
    and the parameters, and differentiated with ``create_graph=True``, which is ``adjoint="direct"``'s
    gradient, its memory included, for this backward pass only."""
    counter = Counter()
    ys = torch.stack(run_method(spec.method, spec.func, y0, spec.ts, spec.control, counter=counter).ys)
    record_backward(spec.stats, counter)
    inputs = (y0, *spec.params)
    wanted = [x for x in inputs if x.requires_grad]
    grads = iter(torch.autograd.grad(ys, wanted, grad_ys, create_graph=True, allow_unused=True) if wanted else ())
    return [next(grads) if x.requires_grad else None for x in inputs]


def _backward_sweep(stepper: Stepper, field, params, y0, t_init, steps, states, stride, grad_ys, counter,
                    grad_params, sink, retain: bool = False):
    """Reverse over the steps: recompute each under autograd from its start state, backpropagate into
    ``(start state, params)``, adding dL/dθ into ``grad_params``. Returns dL/dy0.

    With a ``sink`` the field adds its parameter VJPs into ``grad_params`` itself, and only the sink's
    anchor is asked for in place of the parameters. ``retain`` keeps the graphs the VJPs pass through
    (needed when a differentiated tensor is reached through a graph built outside the solve, which every
    step's VJP traverses again)."""
    wrt = (sink.anchor,) if sink is not None else tuple(params)
    slots = _output_slots(steps)
    grad_y0 = None
    cot: Optional[Tuple] = None  # cotangent of the state after the current step; None: the loss ignores it
    n = len(steps)
    for start in range(((n - 1) // stride) * stride, -1, -stride):
        stop = min(start + stride, n)
        # The stretch's start states: the checkpoint, and the rest re-run without a graph.
        local = [states[start]]
        with torch.no_grad():
            for j in range(start, stop - 1):
                s = steps[j]
                nxt = stepper.step(field, s.t0, s.t1, local[-1], None)[0]
                if s.restart_at is not None:
                    nxt = stepper.restart(field, s.restart_at, nxt)
                local.append(_copy(nxt))
        for j in range(stop - 1, start - 1, -1):
            s = steps[j]
            counter.steps += 1
            first, n_dense, end_output = slots[j]
            with torch.enable_grad():
                if j == 0:
                    # The first step's start state comes from init (f(t0, y0) for FSAL methods): recompute it too.
                    leaves = (y0.detach().requires_grad_(True),)
                    state = stepper.init(field, t_init, leaves[0])
                else:
                    state = _rebuild(local[j - start], [None if x is None else x.detach().requires_grad_(True)
                                                        for x in _tensors(local[j - start])])
                    leaves = tuple(x for x in _tensors(state) if x is not None)
                state1, _, dense = stepper.step(field, s.t0, s.t1, state, None)
                outs, cots = [], []
                if n_dense:
                    outs.append(stepper.interpolate(state, dense, s.t0, s.t1, s.thetas))
                    cots.append(grad_ys[first:first + n_dense])
                if end_output:
                    outs.append(stepper.output(state1))
                    cots.append(grad_ys[first + n_dense])
                if s.restart_at is not None:
                    state1 = stepper.restart(field, s.restart_at, state1)
                if cot is not None:
                    for x, c in zip(_tensors(state1), cot):
                        if x is not None and c is not None and x.requires_grad:
                            outs.append(x)
                            cots.append(c)
                grads = _vjp(outs, cots, leaves + wrt, retain)
            if sink is None:
                for acc, g in zip(grad_params, grads[len(leaves):]):
                    if g is not None:
                        acc.add_(g)
            g_state = iter(grads[:len(leaves)])
            cot = tuple(None if x is None else next(g_state) for x in _tensors(state)) if j > 0 else None
            if j == 0:
                grad_y0 = grads[0]
            del outs, cots, state1, dense, state, grads  # this step's graph and outputs, before the next step
            local[j - start] = None  # a re-run state is done with once its step is
        del local
    return grad_ys[0] if grad_y0 is None else grad_y0 + grad_ys[0]


def _vjp(outs, cots, inputs, retain: bool = False):
    live = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    if not live:
        return (None,) * len(inputs)
    return torch.autograd.grad([o for o, _ in live], inputs, [c for _, c in live], allow_unused=True,
                               retain_graph=retain)


class Checkpointed(GradientMethod):
    """Exact gradient of the discrete solution (as ``adjoint="direct"``) with memory for states, not
    activations: the forward pass keeps the accepted steps' start states, the backward pass recomputes
    each step under autograd and backpropagates through it (see the module docstring for the equations,
    memory and time).

    Works with every explicit Runge–Kutta method (fixed-step or adaptive, with or without dense output)
    and with :class:`pyjode.Reversible`. Gradients flow to ``y0`` and to the parameters
    (``adjoint_params``, or ``func.parameters()``), not to ``t``: detach ``t`` or use
    ``adjoint="direct"`` for time gradients. Without ``adjoint_params``, tensors that the field uses besides
    those (captured by a closure) are found by tracing the field at each end of the span and differentiated
    as well (a tensor used only strictly inside the span needs ``adjoint_params``). With
    ``create_graph=True`` (higher-order gradients) the backward pass recomputes the solve under autograd and
    returns direct backprop's differentiable gradient, with direct backprop's memory.

    Args:
        checkpoints: ``None`` (default) keeps every accepted step's start state, the fastest choice;
            an integer ``c >= 2`` keeps at most ``c`` of them and recomputes the stretches between,
            for ``O(c + steps / c)`` states at the cost of one more forward pass.
    """

    name = "checkpointed"

    def __init__(self, checkpoints: Optional[int] = None):
        if checkpoints is not None and (isinstance(checkpoints, bool) or not isinstance(checkpoints, int)
                                        or checkpoints < 2):
            raise ValueError(f"checkpoints must be an integer >= 2 or None (keep every step), got {checkpoints!r}")
        self.checkpoints = checkpoints

    def check_method(self, method) -> None:
        if not isinstance(method, (ButcherTableau, Reversible)):
            raise ValueError(f"adjoint='checkpointed' needs a Runge–Kutta method or pyjode.Reversible, "
                             f"got {method!r}")

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        if spec.t.requires_grad and torch.is_grad_enabled():
            raise ValueError("adjoint='checkpointed' does not differentiate the output times t: pass t.detach(), "
                             "or use adjoint='direct' for time gradients")
        if not torch.is_grad_enabled():  # nothing to differentiate: solve without storing anything
            counter = Counter()
            ys = run_method(spec.method, spec.func, spec.y0, spec.ts, spec.control, counter=counter).ys
            record_forward(spec.stats, counter)
            return torch.stack(ys)
        captured = ()
        if not spec.params_given:
            # Tensors the field uses besides y and its module's parameters (captured by a closure, or the
            # module behind a bound method) are differentiated too, as backprop would: they become inputs
            # of the autograd function. An evaluation of the field under autograd at each end of the span finds
            # them (a tensor used only inside the span needs adjoint_params).
            captured = tuple(captured_tensors(spec.func, (spec.ts[0], spec.ts[-1]), spec.y0, spec.params))
            if captured:
                spec = replace(spec, params=tuple(spec.params) + captured)
        return _CheckpointedFunction.apply(self, spec, bool(captured), spec.y0, *spec.params)

    def __repr__(self) -> str:
        return f"pyjode.Checkpointed(checkpoints={self.checkpoints})"

