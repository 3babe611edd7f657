"""SciPy's integrators as a pyjode method: ``method=pyjode.ScipySolver("RK45")``.

The solve runs in ``scipy.integrate.solve_ivp`` (float64 NumPy arrays, on the host), calling the torch
field once per evaluation. SciPy does not record an autograd graph, so:

* with ``adjoint="direct"`` the outputs carry no gradient (forward only; every output is detached, y(t0)
  included), as in torchdiffeq; ``adjoint="auto"`` takes the backsolve adjoint;
* with ``adjoint="backsolve"`` the backward solve of the augmented adjoint system runs in SciPy too, and
  gradients to ``y0``, ``t`` and the parameters are those of the continuous adjoint.

SciPy steps with its own error norm; ``rtol``, ``atol``, ``first_step``, ``max_step`` and, for ``"LSODA"``,
``min_step`` are passed on, and the span is split at ``step_ts`` and ``jump_ts`` (a fresh solve after
each). Options SciPy cannot honour (a custom norm, ``max_steps``, ``perturb``, ``step_size``, ``min_step``
for other solvers) raise a ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .integrate import Counter, Run
from .norms import rms_norm
from .step_control import StepControl

__all__ = ["ScipySolver"]

SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


class ScipySolver:
    """``scipy.integrate.solve_ivp`` with ``method=solver`` (one of ``"RK45" "RK23" "DOP853" "Radau"
    "BDF" "LSODA"``; default ``"LSODA"``), at the solve's ``rtol`` and ``atol``, as ``method=`` of
    :func:`pyjode.odeint`. SciPy integrates in float64 NumPy, so the forward solve has no autograd graph:
    take gradients with ``adjoint="backsolve"`` (whose backward solve also runs on this method)."""

    adaptive = True
    interp = None
    records_graph = False  # the steps run in SciPy: backprop through them ("direct") has nothing to go through

    def __init__(self, solver: str = "LSODA"):
        if solver not in SOLVERS:
            raise ValueError(f"solver={solver!r} is not a scipy.integrate.solve_ivp method; choose one of {SOLVERS}")
        self.solver = solver
        self.name = f"scipy_solver({solver})"

    def __repr__(self) -> str:
        return f"pyjode.ScipySolver({self.solver!r})"

    def check_control(self, control: StepControl) -> None:
        """Refuse the settings SciPy cannot honour (checked once, on the forward control)."""
        bad = []
        if control.norm is not rms_norm:
            bad.append("norm (SciPy uses its own error norm)")
        if control.max_steps is not None:
            bad.append("max_steps")
        if control.perturb:
            bad.append("perturb")
        if control.step_size is not None:
            bad.append("step_size")
        if control.min_step > 0 and self.solver != "LSODA":
            bad.append("min_step (only solver='LSODA' has one)")
        if bad:
            raise ValueError(f"method={self.name!r} cannot honour {', '.join(bad)}; drop it or use a pyjode method")

    def run(self, func: Callable, y0: torch.Tensor, ts: Sequence[float], control: StepControl,
            counter: Counter) -> Run:
        """Solve through ``ts`` (a backward adjoint solve passes its own norm, which SciPy replaces by its
        own RMS norm of the whole augmented state: the classic adjoint norm)."""
        import numpy as np
        from scipy.integrate import solve_ivp

        shape, dtype, device = y0.shape, y0.dtype, y0.device

        def rhs(t, y):
            counter.nfe += 1
            with torch.no_grad():
                f = func(torch.tensor(t, dtype=dtype, device=device), torch.as_tensor(y, dtype=dtype, device=device)
                         .view(shape))
            return f.detach().reshape(-1).cpu().double().numpy()

        options = dict(rtol=control.rtol, atol=control.atol)
        if control.first_step is not None:
            options["first_step"] = control.first_step
        if math.isfinite(control.max_step):
            options["max_step"] = control.max_step
        if control.min_step > 0:
            options["min_step"] = control.min_step
        # Every output is detached, y0's copy too: a y0 attached to the graph would give backprop the
        # gradient of the first output alone, silently missing the solve's
        y0 = y0.detach()
        if len(ts) == 1:
            return Run([y0], (y0, None))
        stops, _ = control.targets(ts[0], ts[-1])
        outputs, y, t = [y0], y0.reshape(-1).cpu().double().numpy(), ts[0]
        direction = 1.0 if ts[-1] >= ts[0] else -1.0
        k = 1
        for stop in stops:
            inside = []
            while k < len(ts) and (ts[k] - stop) * direction <= 0:
                inside.append(ts[k])
                k += 1
            sol = solve_ivp(rhs, (t, stop), y, method=self.solver, t_eval=inside + [stop] if not inside or
                            inside[-1] != stop else inside, **options)
            if not sol.success:
                raise RuntimeError(f"{self.name} failed between t={t:.6g} and t={stop:.6g}: {sol.message}")
            for j in range(len(inside)):
                outputs.append(torch.as_tensor(sol.y[:, j], dtype=dtype, device=device).view(shape))
            t, y = stop, np.ascontiguousarray(sol.y[:, -1])
        return Run(outputs, (outputs[-1], None))
