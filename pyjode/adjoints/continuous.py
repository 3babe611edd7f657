"""Machinery shared by the continuous adjoints (Backsolve, Quadrature).

For y' = f(t, y; θ) and a loss on y(t_0), ..., y(t_N), the adjoint a(t) = dL/dy(t) solves
    a' = -a^T ∂f/∂y,  a(t_N) = dL/dy_N,  jumping by dL/dy_i at every output time t_i,
and the gradients are
    dL/dy0 = a(t_0),   dL/dθ = ∫_{t_0}^{t_N} a^T ∂f/∂θ dt,
    dL/dt_i = dL/dy_i · f(t_i, y_i)  (i >= 1),   dL/dt_0 = -a(t_0^+) · f(t_0, y_0),
where a(t_0^+) excludes the direct dL/dy_0 term. The time gradients follow from dΦ(t; t_0, y_0)/dt_0 =
-∂Φ/∂y_0 f(t_0, y_0), so they need no extra integral: f at the output times is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

from ..errors import SolveError, refuse_double_backward
from ..function_transforms import check_batched_backward
from ..integrate import Counter
from ..start_checks import backward_failure
from .backward_checks import all_finite, check_no_captured_tensors, nonfinite_gradient
from ..newton import adjoint_jacobian
from .base import GradientMethod, SolveSpec, record_backward, record_forward, run_method
from .vmap_support import try_vmap


class StepHint:
    """An ``on_step`` callback that keeps a first-step guess for the next solve.

    The guess is the larger of the last two accepted steps: the last one is usually clipped short to land
    on an output time. The adjoint a' = -(∂f/∂y)^T a has the Jacobian of the forward problem, so the step
    the forward solve ended with is a good start for the backward one, and saves Hairer's initial-step
    evaluation and the short steps that follow it.
    """

    def __init__(self, h: Optional[float] = None):
        self.h, self._prev = h, 0.0

    def __call__(self, t0, t1, *_):
        h = abs(t1 - t0)
        self.h, self._prev = max(h, self._prev), h


@dataclass
class ForwardRecord:
    """What a continuous adjoint's forward solve leaves for its backward solve."""

    first_step: Optional[float] = None  # for the first backward interval (see StepHint)
    trajectory: Any = None  # a pyjode.trajectory.DenseTrajectory when the forward steps are kept


def stored_forward_solve(spec: SolveSpec, counter: Counter):
    """The forward solve of a continuous adjoint that keeps its accepted steps: the outputs and a
    :class:`ForwardRecord` whose trajectory gives y(t) by the forward method's own dense output."""
    from ..trajectory import TrajectoryRecorder

    recorder = TrajectoryRecorder()
    ys = run_method(spec.method, spec.func, spec.y0, spec.ts, spec.control, counter=counter, on_step=recorder).ys
    if spec.method.interp is None:
        counter.nfe += 1  # Hermite interpolation needs f at the final time
    first_step = max(abs(h) for h in recorder.h[-2:]) if recorder.h else None
    return ys, ForwardRecord(first_step, recorder.finish(spec.func, spec.ts[-1], ys[-1]))


def state_vjp_field(func, shape):
    """The [y, a] system  y' = f(t, y),  a' = -(∂f/∂y)^T a  on a flat state; no parameter VJP is taken."""
    n = int(torch.Size(shape).numel())

    def field(t, s):
        y, a = s[:n].view(shape), s[n:].view(shape)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = func(t, y)
            (vjp,) = vjp_or_none(f, (y,), -a)
        if vjp is None:
            vjp = torch.zeros_like(a)
        return torch.cat([f.detach().reshape(-1), vjp.reshape(-1)])

    field.newton_blocks = adjoint_jacobian(func, shape, 0)  # for an implicit backward method
    return field


def vjp_or_none(out: torch.Tensor, inputs, cotangent):
    """``autograd.grad`` with ``None`` for every input when ``out`` depends on none of them (a field of t
    alone): that derivative is zero, not an error."""
    if not out.requires_grad:
        return (None,) * len(inputs)
    return torch.autograd.grad(out, inputs, cotangent, allow_unused=True)


def batched_field(func, T: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """f at several (t_k, y_k) in one call through ``torch.func.vmap``, falling back to a loop for fields
    that vmap cannot trace (in-place updates, ``.item()``, data-dependent control flow); whether it can is
    decided once per field (:mod:`pyjode.adjoints.vmap_support`)."""
    F = try_vmap(func, T, Y)
    if F is None:
        F = torch.stack([func(T[k], Y[k]) for k in range(T.shape[0])])
    return F


def weighted_param_vjp(func, params: Sequence[torch.Tensor], T, Y, A, W, max_nodes: int = 512,
                       out: Optional[List[torch.Tensor]] = None):
    """sum_k W_k A_k^T ∂f/∂θ(T_k, Y_k) for every tensor in ``params``: one batched VJP per chunk of nodes.
    With ``out`` the sums are added into those tensors in place (and returned): a caller that accumulates
    over many calls then holds no second parameter-sized buffer.

    Only the parameters are asked for (``inputs=params``), so autograd never forms the state VJP here.
    For a field that ``vmap`` cannot batch each node gets its own VJP, so that at most one node's graph is
    alive: a loop that stacked the nodes first would hold all their graphs at once.
    """
    grads = [torch.zeros_like(p) for p in params] if out is None else out
    if not params or T.numel() == 0:
        return grads

    def accumulate(F, cot):
        g = vjp_or_none(F, params, cot)
        for acc, gi in zip(grads, g):
            if gi is not None:
                acc.add_(gi)

    cot_all = A * W.view(-1, *([1] * (A.dim() - 1)))
    for s in range(0, T.shape[0], max_nodes):
        sl = slice(s, s + max_nodes)
        with torch.enable_grad():
            F = try_vmap(func, T[sl], Y[sl])
            if F is not None:
                accumulate(F, cot_all[sl])
                continue
            for k in range(s, min(s + max_nodes, T.shape[0])):
                accumulate(func(T[k], Y[k]), cot_all[k])
    return grads


def output_time_gradients(func, t: torch.Tensor, ts, ys: torch.Tensor, grad_ys: torch.Tensor,
                          a0_plus: torch.Tensor) -> torch.Tensor:
    """dL/dt from the end-point formulas in the module docstring (N+1 evaluations of f, batched)."""
    T = torch.tensor(ts, dtype=ys.dtype, device=ys.device)
    with torch.no_grad():
        F = batched_field(func, T, ys)
        g = (grad_ys * F).reshape(len(ts), -1).sum(1)
        g[0] = -(a0_plus * F[0]).sum()
    return g.to(t.dtype)


class _ContinuousAdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, method, spec, y0, t, *params):
        counter = Counter()
        try:
            with torch.no_grad():
                ys, memo = method.forward_solve(spec, counter)
                ys = torch.stack(ys)
        finally:
            record_forward(spec.stats, counter)
        ctx.method, ctx.spec, ctx.memo = method, spec, memo
        # torchdiffeq's adjoint exposes its backward options on grad_fn; pyjode.torchdiffeq sets this dict
        ctx.adjoint_options = getattr(method, "adjoint_options", None)
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        method, spec = ctx.method, ctx.spec
        check_batched_backward(method.name, grad_ys)
        if torch.is_grad_enabled() and getattr(method, "graph_fallback", False):
            # chosen by adjoint="auto", not by the user: a backward pass asked for a graph (create_graph=True)
            # gets the differentiable gradient of the discrete solution, not a DoubleBackwardError later
            from .checkpointed import differentiable_vjp

            grad_y0, *grad_params = differentiable_vjp(spec, spec.y0, grad_ys)
            return (None, None, grad_y0, None, *grad_params)
        (ys,) = ctx.saved_tensors
        if not spec.params_given:
            check_no_captured_tensors(spec.func, spec.ts[-1], ys[-1], spec.params, method.name)
        counter = Counter()
        try:
            with torch.no_grad():
                # a repeated backward pass (retain_graph=True, jacobian) after the stored trajectory was
                # released re-records it: the forward solve is deterministic
                memo = ctx.memo if ctx.memo is not None else method.forward_solve(spec, counter)[1]
                a0_plus, grad_params = method.backward_solve(spec, ys, grad_ys, memo, counter)
        except SolveError as e:
            if e.phase == "backward":
                raise
            raise backward_failure(e, "state adjoint") from None
        finally:
            record_backward(spec.stats, counter)
        # a kept trajectory is O(steps) memory: release it now, a second pass rebuilds it
        ctx.memo = None if memo.trajectory is not None else memo
        if not all_finite([a0_plus, *grad_params]) and all_finite([grad_ys]):
            part = "state adjoint" if not all_finite([a0_plus]) else "parameter adjoint"
            raise nonfinite_gradient(part, spec.ts[0], spec.ts[-1], method.name)
        grad_y0 = a0_plus + grad_ys[0]
        grad_t = None
        if ctx.needs_input_grad[3]:
            grad_t = output_time_gradients(spec.func, spec.t, spec.ts, ys, grad_ys, a0_plus)
        # the backward solve runs outside autograd: a second derivative through it is refused by name
        return (None, None, *refuse_double_backward(method.name, "", (grad_y0, grad_t, *grad_params),
                                                    (spec.y0, spec.t, *spec.params)))


class ContinuousAdjoint(GradientMethod):
    """A gradient method whose forward pass keeps no graph and whose backward pass solves for a(t).

    Subclasses implement ``forward_solve(spec, counter) -> (ys, ForwardRecord)`` and
    ``backward_solve(spec, ys, grad_ys, record, counter) -> (a(t_0^+), [dL/dθ])``.
    """

    def __init__(self, rtol: Optional[float] = None, atol: Optional[float] = None, method=None):
        for name, v in (("rtol", rtol), ("atol", atol)):
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")
        self.rtol, self.atol, self.method = rtol, atol, method
        self._implicit = None  # the Implicit object of a backward method given by name

    def check_method(self, method) -> None:
        from ..scipy_solver import ScipySolver
        from ..tableau import ButcherTableau

        from ..adams import Adams

        if isinstance(method, (ScipySolver, Adams)) and self.name == "backsolve":
            return
        # an implicit method's stepper solves the (equally stiff) adjoint system too
        if not isinstance(method, ButcherTableau) and not getattr(method, "implicit", False):
            raise ValueError(
                f"adjoint={self.name!r} needs a Runge–Kutta method (a name, ButcherTableau or pyjode.Implicit), got "
                f"{method!r}; for pyjode.Reversible use adjoint='reversible'"
            )

    def backward_tableau(self, spec: SolveSpec):
        from ..implicit import IMPLICIT_METHODS, Implicit
        from ..tableau import get_tableau

        if self.method is None:
            return spec.method
        if getattr(self.method, "implicit", False):
            return self.method
        if isinstance(self.method, str) and self.method in IMPLICIT_METHODS:
            # the forward method's Jacobian mode when it is implicit too
            jacobian = getattr(spec.method, "jacobian", "full")
            if self._implicit is None or self._implicit.name != self.method or self._implicit.jacobian != jacobian:
                self._implicit = Implicit(self.method, jacobian=jacobian)
            return self._implicit
        return get_tableau(self.method)

    def backward_control(self, spec: SolveSpec, norm=None, first_step=None):
        """The forward solve's control with this adjoint's tolerances, norm and first-step guess: options
        such as ``max_steps``, ``max_step`` and ``jump_ts`` (the field's kinks) hold backwards too."""
        callbacks = spec.control.callbacks
        control = spec.control.replace(rtol=self.rtol, atol=self.atol, first_step=first_step,
                                       callbacks=None if callbacks is None else callbacks.backward())
        return control if norm is None else control.replace(norm=norm)

    def forward_solve(self, spec: SolveSpec, counter: Counter):
        hint = StepHint()
        ys = run_method(spec.method, spec.func, spec.y0, spec.ts, spec.control, counter=counter, on_step=hint).ys
        return ys, ForwardRecord(first_step=hint.h)

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        if self.method is not None:
            self.check_method(self.backward_tableau(spec))
        if not spec.params_given and torch.is_grad_enabled() and not (
                spec.y0.requires_grad or spec.t.requires_grad or any(p.requires_grad for p in spec.params)):
            # nothing the function sees requires grad, so its output would not either, and there would be no
            # backward pass to find a captured tensor in: look now (one uncounted evaluation)
            check_no_captured_tensors(spec.func, spec.ts[0], spec.y0, spec.params, self.name)
        return _ContinuousAdjointFunction.apply(self, spec, spec.y0, spec.t, *spec.params)

    def __repr__(self) -> str:
        return f"pyjode.{type(self).__name__}(rtol={self.rtol}, atol={self.atol}, method={self.method!r})"


def interval_pairs(ts: Sequence[float]) -> Tuple[Tuple[int, float, float], ...]:
    """(i, t_{i+1}, t_i) for i = N-1 ... 0: the backward sweep's intervals."""
    return tuple((i, ts[i + 1], ts[i]) for i in range(len(ts) - 2, -1, -1))
