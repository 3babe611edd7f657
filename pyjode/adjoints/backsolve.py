"""The continuous adjoint with seminorm step control (Kidger, Chen & Lyons, ICML 2021)."""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import SolveError
from ..integrate import Counter
from ..newton import adjoint_jacobian
from ..norms import PartsNorm
from ..start_checks import backward_failure
from .backward_checks import all_finite, nonfinite_gradient
from .base import SolveSpec, run_method
from .continuous import ContinuousAdjoint, StepHint, interval_pairs, stored_forward_solve, vjp_or_none


class Backsolve(ContinuousAdjoint):
    """Solve the augmented state s = [y, a, a_θ] backwards, interval by interval:

        y' = f(t, y),   a' = -a^T ∂f/∂y,   a_θ' = -a^T ∂f/∂θ,

    restarting y from the stored forward output at each observation time t_i and adding dL/dy(t_i) to a;
    dL/dθ = a_θ(t_0). Each evaluation takes one VJP of f with respect to (y, θ).

    Args:
        norm: ``"seminorm"`` (default) measures only [y, a] in the step-size control: a_θ is an integral
            that feeds nothing back, so its error need not limit the step (Kidger, Chen & Lyons 2021, §3).
            ``"rms"`` is the classic norm (max over the RMS of y, a and each parameter tensor, as
            torchdiffeq's default adjoint norm), for comparison. A callable is used as it is, on the flat
            scaled error of ``[y, a, a_θ]`` (``a_θ`` holding the parameters in order, each flattened).
        rtol, atol, method: backward-solve settings; default to the forward ones.
        state: ``"resolve"`` (default) re-solves y backwards as above. ``"stored"`` keeps the accepted
            forward steps and reads y(t) from the forward method's dense output, so the backward state is
            [a, a_θ] alone (an interpolating adjoint). Choose it for stiff dissipative problems: y' = f(t, y)
            run backwards is then exponentially unstable (a decaying mode e^{λt}, λ << 0, grows as e^{|λ|t}
            backwards) and no method can re-solve it, while the adjoint a' = -J^T a is stable backwards.
    """

    name = "backsolve"

    def __init__(self, norm: str = "seminorm", rtol: Optional[float] = None, atol: Optional[float] = None,
                 method=None, state: str = "resolve"):
        if not callable(norm) and norm not in ("seminorm", "rms"):
            raise ValueError(f"norm must be 'seminorm', 'rms' or a callable, got {norm!r}")
        if state not in ("resolve", "stored"):
            raise ValueError(f"state must be 'resolve' or 'stored', got {state!r}")
        if callable(norm) and state == "stored":
            raise ValueError("a callable norm measures [y, a, a_θ]; with state='stored' the backward state is "
                             "[a, a_θ]: use norm='seminorm' or 'rms' there")
        super().__init__(rtol=rtol, atol=atol, method=method)
        self.norm, self.state = norm, state

    def forward_solve(self, spec: SolveSpec, counter: Counter):
        if self.state == "resolve":
            return super().forward_solve(spec, counter)
        return stored_forward_solve(spec, counter)

    def backward_solve(self, spec: SolveSpec, ys, grad_ys, record, counter: Counter):
        func, params, shape = spec.func, spec.params, spec.y0.shape
        n = spec.y0.numel()
        sizes = [p.numel() for p in params]
        parts = [n, n] + sizes
        trajectory = record.trajectory
        if trajectory is not None:  # state [a, a_θ], y from the forward solve's dense output
            parts = parts[1:]
        lead = 0 if trajectory is not None else n  # where a starts; a_θ starts at lead + n
        measured = list(range(len(parts) - len(sizes)))  # [y, a] or [a]: the seminorm's parts
        norm = self.norm if callable(self.norm) else PartsNorm(parts, include=measured if self.norm == "seminorm"
                                                                 else None)

        def field(t, s):
            a = s[lead:lead + n].view(shape)
            with torch.enable_grad():
                y = (trajectory(t) if trajectory is not None else s[:n].view(shape)).detach().requires_grad_(True)
                f = func(t, y)
                vjps = vjp_or_none(f, (y, *params), -a)
            out = [] if trajectory is not None else [f.detach().reshape(-1)]
            for v, like in zip(vjps, (y, *params)):
                out.append((torch.zeros_like(like) if v is None else v).reshape(-1))
            return torch.cat(out)

        # for an implicit backward method
        field.newton_blocks = adjoint_jacobian(func, shape, sum(sizes), y_of_t=trajectory)
        tableau = self.backward_tableau(spec)
        a = grad_ys[-1].reshape(-1)
        a_theta = ys.new_zeros(sum(sizes))
        last_h = StepHint(record.first_step)
        seminorm = PartsNorm(parts, include=measured)
        for i, t_hi, t_lo in interval_pairs(spec.ts):
            s = torch.cat(([] if trajectory is not None else [ys[i + 1].reshape(-1)]) + [a, a_theta])
            control = self.backward_control(spec, norm, last_h.h if tableau.adaptive else None)
            try:
                s1 = run_method(tableau, field, s, [t_hi, t_lo], control, counter=counter, on_step=last_h).ys[-1]
            except SolveError as e:  # which part failed: re-run the interval measuring [y, a] only
                raise self._diagnose(e, tableau, field, s, t_hi, t_lo, control.replace(norm=seminorm),
                                     lead + n) from None
            if sizes and not all_finite([s1[lead + n:]]):
                raise self._diagnose(None, tableau, field, s, t_hi, t_lo, control.replace(norm=seminorm), lead + n)
            s = s1
            a = s[lead:lead + n] + (grad_ys[i].reshape(-1) if i > 0 else 0)
            a_theta = s[lead + n:]
        grads, offset = [], 0
        for p, k in zip(params, sizes):
            grads.append(a_theta[offset:offset + k].view_as(p))
            offset += k
        return a.view(shape), grads

    def _diagnose(self, err, tableau, field, s, t_hi, t_lo, control, theta_start):
        """The failure path of one backward interval: re-run it with the seminorm (``control``), checking a_θ
        (from ``theta_start`` on) after every step, to say whether the state or the parameter adjoint failed
        and at which t."""
        if err is not None and err.cause not in ("nonfinite_field", "step_underflow", "max_steps"):
            return backward_failure(err, "state adjoint")
        found = []

        def watch(t0, t1, s0, s1, *_):
            if not found and not all_finite([s1[theta_start:]]):
                found.append(t1)

        try:
            run_method(tableau, field, s, [t_hi, t_lo], control, counter=Counter(), on_step=watch)
        except SolveError as e:
            return backward_failure(e, "state adjoint")
        return nonfinite_gradient("parameter adjoint", t_lo, t_hi, self.name, found[0] if found else None)
