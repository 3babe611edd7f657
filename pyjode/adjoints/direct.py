"""Discretise-then-optimise: backpropagate through the solver's own operations."""

from __future__ import annotations

import torch

from ..integrate import Counter
from .base import GradientMethod, SolveSpec, record_forward, run_method


class Direct(GradientMethod):
    """Backprop through every step of the solve (the gradient of the discrete solution).

    Memory grows with the number of steps times the activations of the vector field. When ``t``
    requires grad, each output interval [t_i, t_{i+1}] is solved in the rescaled time s in [0, 1]:
    dy/ds = (t_{i+1} - t_i) f(t_i + s (t_{i+1} - t_i), y), which makes the output times part of the graph.
    """

    name = "direct"

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        counter = Counter()
        # The solve follows the caller's grad mode: under torch.no_grad() it records no graph.
        # (a solver with its own loop, such as SciPy's, records no graph: nothing to rescale for)
        try:
            if spec.t.requires_grad and torch.is_grad_enabled() and not hasattr(spec.method, "run"):
                ys = self._solve_rescaled(spec, counter)
            else:
                ys = run_method(spec.method, spec.func, spec.y0, spec.ts, spec.control, counter=counter,
                                on_step=spec.on_step).ys
        finally:  # the work done counts also when the solve raises
            record_forward(spec.stats, counter)
        return torch.stack(ys)

    @staticmethod
    def _solve_rescaled(spec: SolveSpec, counter: Counter):
        t = spec.t.to(spec.y0.dtype)
        ys, y = [spec.y0], spec.y0
        control = spec.control
        for i in range(len(spec.ts) - 1):
            ta, dt = t[i], t[i + 1] - t[i]
            span = spec.ts[i + 1] - spec.ts[i]
            local = _rescaled_control(control, spec.ts[i], span)

            def field(s, y, ta=ta, dt=dt):
                return dt * spec.func(ta + s * dt, y)

            y = run_method(spec.method, field, y, [0.0, 1.0], local, counter=counter).ys[-1]
            ys.append(y)
        return ys


def _rescaled_control(control, ta: float, span: float):
    """The control of one output interval in the time s = (t - ta) / span in [0, 1]."""
    def rescale(times):
        return tuple((x - ta) / span for x in times)

    def length(x):
        return None if x is None else x / abs(span)

    return control.replace(step_size=length(control.step_size), first_step=length(control.first_step),
                           min_step=control.min_step / abs(span), max_step=control.max_step / abs(span),
                           step_ts=rescale(control.step_ts), jump_ts=rescale(control.jump_ts))
