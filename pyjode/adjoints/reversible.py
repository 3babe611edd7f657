"""Exact O(1)-memory gradients of a reversible solve (McCallum & Foster, arXiv 2410.11648, §3).

The forward pass runs without autograd and keeps only the accepted step times (Python floats) and the
final pair ``(y_N, z_N)``. The backward pass walks the steps in reverse. For step n (``t_{n-1} -> t_n``,
``h = t_n - t_{n-1}``) it takes two base steps, each with one vector-Jacobian product:

1. ``s1 = Phi_{-h}(t_n, y_n)``; rebuild ``z_{n-1} = z_n - y_n + s1``. Backpropagating
   ``z_n = y_n + z_{n-1} - s1`` gives  ``ybar_n += zbar_n - (d s1/d y)^T zbar_n``,
   ``thetabar -= (d s1/d theta)^T zbar_n``.
2. ``s2 = Phi_h(t_{n-1}, z_{n-1})``; rebuild ``y_{n-1} = (y_n - s2) / lambda + z_{n-1}``.
   Backpropagating ``y_n = lambda (y_{n-1} - z_{n-1}) + s2`` gives  ``ybar_{n-1} = lambda ybar_n``,
   ``zbar_{n-1} = zbar_n - lambda ybar_n + (d s2/d z)^T ybar_n``,  ``thetabar += (d s2/d theta)^T ybar_n``.

The primal outputs of the two VJP calls are the ones the reconstruction needs, so a backward step costs
two base steps with VJPs (not a reconstruction followed by a recomputation). ``dL/dy(t_i)`` is added to
``ybar`` when the walk reaches output time ``t_i``, and ``dL/dy_0 = ybar_0 + zbar_0`` because ``z_0 = y_0``.
These are the exact gradients of the discrete reversible solution, to rounding.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..exact_adjoint import ExactReversibleAdjoint
from ..integrate import Counter, CountingField, integrate
from ..norms import rms_norm
from ..reversible import Reversible, reverse_sweep, warn_once
from .backward_checks import all_finite, check_no_captured_tensors, nonfinite_gradient
from .base import GradientMethod, SolveSpec, record_backward, record_forward

__all__ = ["ReversibleAdjoint"]


def _reconstruction_tolerance(dtype: torch.dtype) -> float:
    """Relative error of the rebuilt ``y_0`` above which gradients are untrustworthy: sqrt(eps)."""
    return math.sqrt(torch.finfo(dtype).eps)


class ReversibleAdjoint(GradientMethod):
    """Exact gradients of a :class:`pyjode.Reversible` solve in O(1) memory in the number of steps.

    Use as ``odeint(func, y0, t, method=pyjode.Reversible("rk4"), step_size=..., adjoint="reversible")``.
    The forward pass stores no activations: only the final coupled pair and the accepted step times.
    The backward pass rebuilds each state by the scheme's algebraic inverse and costs two base steps
    with vector-Jacobian products per step (about twice the forward pass). The gradient equals that of
    ``adjoint="direct"`` through the same method, up to rounding amplified by about
    ``coupling**-n`` over ``n`` steps (see :class:`pyjode.Reversible` for choosing the coupling).

    Gradients flow to ``y0`` and to the parameters (``adjoint_params``, or ``func.parameters()``), not to
    ``t``: detach ``t`` or use ``adjoint="direct"`` for time gradients.

    After each backward pass ``reconstruction_error`` holds the relative error of the rebuilt ``y_0``
    against the ``y_0`` given; above ``sqrt(eps)`` of the dtype a :class:`ReversibleStabilityWarning`
    is issued (once per process, like the other reversible stability warnings).
    """

    name = "reversible"

    def __init__(self):
        self.reconstruction_error: Optional[float] = None

    def check_method(self, method) -> None:
        if not isinstance(method, Reversible):
            got = getattr(method, "name", type(method).__name__)
            raise ValueError(
                f"adjoint='reversible' needs a reversible method, got method={got!r}; wrap it as "
                f"method=pyjode.Reversible({got!r}) or choose another adjoint such as 'direct'"
            )

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        self.check_method(spec.method)
        if spec.t.requires_grad:
            raise ValueError(
                "adjoint='reversible' does not compute gradients with respect to t; pass t.detach(), or use "
                "adjoint='direct' to differentiate the output times"
            )
        if not spec.params_given and torch.is_grad_enabled() and not (
                spec.y0.requires_grad or any(p.requires_grad for p in spec.params)):
            # no input requires grad, so no backward pass would look for captured tensors: look now
            check_no_captured_tensors(spec.func, spec.ts[0], spec.y0, spec.params, self.name)
        return ExactReversibleAdjoint.apply(_ReversibleSolve(self, spec), spec.y0, *spec.params)


class _ReversibleSolve:
    """One reversible ODE solve for :class:`~pyjode.exact_adjoint.ExactReversibleAdjoint`: the forward pass
    keeps the accepted step times (Python floats) and the final pair; the backward pass replays the steps."""

    def __init__(self, adjoint: ReversibleAdjoint, spec: SolveSpec):
        self.adjoint, self.spec = adjoint, spec

    def forward(self, y0: torch.Tensor):
        spec, method = self.spec, self.spec.method
        counter = Counter()
        try:
            run = integrate(method.stepper(y0), spec.func, y0, spec.ts, spec.control, counter=counter,
                            keep_times=True)
        finally:
            record_forward(spec.stats, counter)
        y_end, z_end = run.state
        method.check_drift(y_end, z_end, spec.ts[-1])
        self.times, self.output_steps = run.times, run.output_steps
        _warn_if_reconstruction_risky(method, len(run.times) - 1, y0.dtype)
        return torch.stack(run.ys), (y0, y_end, z_end)

    def graph_vjp(self, grad_ys: torch.Tensor):
        """For a backward pass with a graph (create_graph=True) when adjoint="auto" chose this adjoint: the
        differentiable gradient of the same discrete solve, recomputed under autograd; else None."""
        if not getattr(self.adjoint, "graph_fallback", False):
            return None
        from .checkpointed import differentiable_vjp

        return differentiable_vjp(self.spec, self.spec.y0, grad_ys)

    def backward(self, saved, grad_ys: torch.Tensor, params):
        spec, method, times = self.spec, self.spec.method, self.times
        y0, y_end, z_end = saved
        if not spec.params_given:
            check_no_captured_tensors(spec.func, spec.ts[-1], y_end, params, "reversible")
        counter = Counter()
        stepper = method.stepper(y0)
        output_at = {n: i for i, n in enumerate(self.output_steps)}

        def grad_at(n):
            if n is None:
                return grad_ys[-1].clone()
            return grad_ys[output_at[n]] if n in output_at else None

        span = spec.control.evaluation_span  # the times each step was evaluated between (jumps)
        steps = ((n, *span(times[n - 1], times[n], y0.dtype), None) for n in range(len(times) - 1, 0, -1))
        y0_rebuilt, z0_rebuilt, grad_y0, grad_params = reverse_sweep(
            stepper.base, CountingField(spec.func, counter), method.coupling, y_end, z_end, steps, grad_at, params)
        counter.steps = len(times) - 1
        record_backward(spec.stats, counter)
        self.adjoint.reconstruction_error = _check_reconstruction(method, y0, y0_rebuilt, z0_rebuilt,
                                                                  len(times) - 1)
        if not all_finite([grad_y0, *grad_params]) and all_finite([grad_ys]):
            part = "state adjoint" if not all_finite([grad_y0]) else "parameter adjoint"
            raise nonfinite_gradient(part, spec.ts[0], spec.ts[-1], "reversible")
        return grad_y0, grad_params


def _warn_if_reconstruction_risky(method: Reversible, n_steps: int, dtype: torch.dtype) -> None:
    """A priori check: rounding grows like ``coupling**-n`` in the reconstruction; warn when that
    reaches ``1/sqrt(eps)``, i.e. ``n (1 - coupling) > ~18`` in float64 and ``~8`` in float32."""
    if method.coupling == 1.0 or n_steps == 0:
        return
    growth_log = -n_steps * math.log(method.coupling)
    budget = 0.5 * math.log(1.0 / torch.finfo(dtype).eps)
    if growth_log > budget:
        float64 = "" if dtype == torch.float64 else ", float64"
        warn_once(
            "reconstruction-risk",
            f"{method!r} took {n_steps} steps in {dtype}: the backward reconstruction amplifies rounding by "
            f"about coupling**-n = {math.exp(growth_log):.1e}, so gradients from adjoint='reversible' may be "
            f"inaccurate. Use a coupling closer to 1 (at least {math.exp(-budget / n_steps):.6g}){float64}, or "
            f"fewer steps; or use adjoint='direct'",
        )


def _check_reconstruction(method: Reversible, y0: torch.Tensor, y_rebuilt: torch.Tensor, z_rebuilt: torch.Tensor,
                          n_steps: int) -> float:
    """Measure the rebuilt ``y_0`` and ``z_0`` against the ``y_0`` given; warn or raise if far off."""
    with torch.no_grad():
        errs = torch.stack([rms_norm(y_rebuilt - y0), rms_norm(z_rebuilt - y0), rms_norm(y0)])
        err_y, err_z, size = errs.tolist()
    error = max(err_y, err_z) / max(size, torch.finfo(y0.dtype).tiny)
    if not math.isfinite(error):
        raise RuntimeError(
            f"the backward pass of adjoint='reversible' became NaN or inf while rebuilding the {n_steps} steps of "
            f"{method!r}; use float64, a coupling closer to 1, or adjoint='direct'"
        )
    if error > _reconstruction_tolerance(y0.dtype):
        float64 = "" if y0.dtype == torch.float64 else "float64, "
        warn_once(
            "reconstruction-error",
            f"adjoint='reversible' rebuilt y0 with relative error {error:.1e} after {n_steps} steps of {method!r} "
            f"in {y0.dtype}, so the gradients carry errors of about that size. Use {float64}a coupling closer "
            f"to 1, or fewer steps; if the field is strongly dissipative, smaller steps help too",
        )
    return error
