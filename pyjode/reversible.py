"""Algebraically reversible Runge–Kutta methods (McCallum & Foster, arXiv 2410.11648, §3).

Any explicit Runge–Kutta step ``Phi_h(t, x) = x + Psi_h(t, x)`` becomes reversible by carrying a second
state ``z`` (with ``z_0 = y_0``) and a coupling ``lambda`` in (0, 1]:

    y_{n+1} = lambda y_n + (1 - lambda) z_n + Psi_h(t_n, z_n)     = lambda (y_n - z_n) + Phi_h(t_n, z_n)
    z_{n+1} = z_n - Psi_{-h}(t_{n+1}, y_{n+1})                     = z_n + y_{n+1} - Phi_{-h}(t_{n+1}, y_{n+1})

whose exact algebraic inverse is

    z_n = z_{n+1} - y_{n+1} + Phi_{-h}(t_{n+1}, y_{n+1}),    y_n = (y_{n+1} - Phi_h(t_n, z_n)) / lambda + z_n.

The output is ``y``. Each step costs two base steps; FSAL is off because they start from different
states. Adaptive steps take their error estimate from the base method's embedded estimate on the second
(backward) base step. Steps are clipped so that every output time is a step boundary, which is what lets
:class:`pyjode.ReversibleAdjoint` replay the accepted step times (Python floats) backwards and rebuild the
whole trajectory from the final pair ``(y_N, z_N)``.
"""

from __future__ import annotations

import math
import warnings
from array import array
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

import torch

from .integrate import (DEFAULT_MAX_STEPS, Counter, CountingField, check_field_output, check_finite_outputs,
                        check_progress, fixed_step_counts, time_maker)
from .norms import rms_norm
from .runge_kutta import RungeKutta
from .step_size import PIController, initial_step_size
from .tableau import ButcherTableau, get_tableau

__all__ = ["Reversible", "ReversibleSolution", "ReversibleStabilityWarning", "warn_once"]

# |y_N - z_N| above this fraction of |y_N| means the parasitic mode has grown to the solution's size:
# where it is stable the gap stays at local-error size (below 0.1 even for a reversible Euler with h = 1 on
# a small neural ODE); where it is unstable it grows exponentially and ends up comparable to y itself.
DRIFT_WARN = 0.5


class ReversibleStabilityWarning(UserWarning):
    """A reversible solve ran where its forward solution or its backward reconstruction may be inaccurate."""


_warned: set = set()


def warn_once(kind: str, message: str) -> None:
    """Issue a :class:`ReversibleStabilityWarning` of this kind once per process: a training loop repeats
    the same risky solve every iteration, with slightly different numbers in the message each time."""
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, ReversibleStabilityWarning, stacklevel=3)


@dataclass
class ReversibleSolution:
    """A reversible solve: the outputs, the final coupled pair and the accepted step boundaries.

    ``times[0] = ts[0]`` and ``times[-1] = ts[-1]``; output ``i`` is the state after step
    ``output_steps[i]`` (so ``times[output_steps[i]] == ts[i]`` exactly). The times are a float64
    ``array``: 8 bytes per step is all that the backward pass of a long solve keeps besides two states.
    """

    ys: List[torch.Tensor]
    y: torch.Tensor
    z: torch.Tensor
    times: Sequence[float]
    output_steps: List[int]


def _without_fsal_stage(tableau: ButcherTableau) -> ButcherTableau:
    """The same step without the FSAL stage ``f(t + h, y_1)``, which only feeds the error estimate.

    FSAL means ``a[-1] == b`` with ``a`` strictly lower triangular, so ``b[-1] == 0``: dropping that stage
    leaves ``y_1`` unchanged and saves one evaluation on every base step that needs no error estimate.
    """
    if not tableau.fsal:
        return tableau
    return ButcherTableau(name=tableau.name, c=tableau.c[:-1], a=tableau.a[:-1, :-1], b=tableau.b[:-1],
                          order=tableau.order, _tol=tableau._tol)


class BaseSteps:
    """The base method's steps on one dtype/device: ``full`` has the embedded error estimate, ``short``
    is the same map ``Phi_h`` with the FSAL-only stage dropped."""

    def __init__(self, tableau: ButcherTableau, like: torch.Tensor):
        self.full = RungeKutta(tableau, like)
        short = _without_fsal_stage(tableau)
        self.short = self.full if short is tableau else RungeKutta(short, like)

    def phi(self, field, t0: float, t1: float, x: torch.Tensor, time) -> torch.Tensor:
        """``Phi_{t1 - t0}(t0, x)``: one base step from ``t0`` to ``t1`` (either direction), FSAL off."""
        return self.short.step(field, t0, t1 - t0, x, None, time)[0]

    def phi_with_error(self, field, t0: float, t1: float, x: torch.Tensor, time):
        """``Phi_{t1 - t0}(t0, x)`` and its embedded local error estimate (flat)."""
        x1, K = self.full.step(field, t0, t1 - t0, x, None, time)
        return x1, self.full.error(K, t1 - t0)


class Reversible:
    """McCallum–Foster algebraically reversible wrapper of an explicit Runge–Kutta method.

    Pass it as ``method=`` to :func:`pyjode.odeint`. With ``adjoint="reversible"`` the gradient is the
    exact gradient of this discretisation, computed backwards in O(1) memory in the number of steps by
    rebuilding the trajectory from its end; with ``adjoint="direct"`` autograd backpropagates through the
    scheme like any other method (the two agree to rounding). The reversible method keeps the order of
    its base method and costs two base steps per step.

    Args:
        base: an explicit Runge–Kutta method: a name (``"midpoint"``, ``"rk4"``, ``"tsit5"``, ...) or a
            :class:`pyjode.ButcherTableau`. Fixed-step bases need ``step_size``; adaptive bases choose
            their steps from the embedded error estimate of the backward base step.
        coupling: lambda in (0, 1].

    Choosing ``coupling``: two effects pull in opposite directions.

    * **Forward stability.** The scheme has a parasitic mode that grows like ``lambda * exp(-h mu)`` per
      step for a mode ``y' = mu y``. On dissipative problems it stays bounded only while
      ``h * Re(mu) >= ln(lambda) ~ -(1 - lambda)``: with the default 0.999 a decay rate of 10 needs
      ``h <= 1e-4``, whereas 0.9 allows ``h <= 0.01`` and 0.5 allows ``h <= 0.07``. Lower ``coupling``
      (or take smaller steps) for stiff or strongly damped fields.
    * **Backward reconstruction.** Rounding errors are amplified by about ``lambda**-n`` over ``n``
      steps. Keep ``n * (1 - lambda)`` below about 18 in float64 and about 8 in float32, i.e. ``coupling``
      closer to 1 for long solves.

    So pick the largest ``coupling`` with ``h * Re(mu) >= ln(coupling)`` for the fastest-decaying mode
    you expect, then check ``n * (1 - coupling)`` against the bound for your dtype. The default 0.999
    suits non-stiff neural ODEs up to about 18 000 steps in float64 and 8 000 in float32. A run in a
    risky regime issues a :class:`ReversibleStabilityWarning` saying which way to move. ``coupling=1``
    is neutral (volume-preserving, like reversible Heun): rounding is not amplified exponentially, but
    nothing damps the parasitic mode either.
    """

    def __init__(self, base: Union[str, ButcherTableau], coupling: float = 0.999):
        if isinstance(base, Reversible):
            raise TypeError("base is already a pyjode.Reversible: wrap the base method itself, e.g. Reversible('rk4')")
        self.tableau = get_tableau(base)
        if isinstance(coupling, bool) or not isinstance(coupling, (int, float)) or not 0.0 < coupling <= 1.0:
            raise ValueError(f"coupling must be a number in (0, 1], got {coupling!r}; the default 0.999 suits most "
                             f"problems (see the pyjode.Reversible docstring for how to choose it)")
        self.coupling = float(coupling)

    @property
    def name(self) -> str:
        return f"reversible_{self.tableau.name}"

    @property
    def adaptive(self) -> bool:
        return self.tableau.adaptive

    @property
    def order(self) -> int:
        return self.tableau.order

    def __repr__(self) -> str:
        return f"pyjode.Reversible({self.tableau.name!r}, coupling={self.coupling})"

    def step(self, field, steps: BaseSteps, t0: float, t1: float, y: torch.Tensor, z: torch.Tensor, time,
             with_error: bool = False):
        """One reversible step from ``t0`` to ``t1``; returns ``(y1, z1, err)`` (``err`` is ``None``
        unless ``with_error``: the base's error estimate of the backward base step)."""
        y1 = torch.add(steps.phi(field, t0, t1, z, time), y - z, alpha=self.coupling)
        if with_error:
            back, err = steps.phi_with_error(field, t1, t0, y1, time)
        else:
            back, err = steps.phi(field, t1, t0, y1, time), None
        return y1, z + (y1 - back), err

    def integrate(self, func: Callable, y0: torch.Tensor, ts: Sequence[float], *, rtol: float = 1e-7,
                  atol: float = 1e-9, step_size: Optional[float] = None, max_steps: Optional[int] = None,
                  norm: Callable = rms_norm, counter: Optional[Counter] = None, on_step: Optional[Callable] = None,
                  first_step: Optional[float] = None, tstops: Optional[Sequence[float]] = None) -> List[torch.Tensor]:
        """Solve from ``ts[0]`` through every time in ``ts``; return ``[y(ts[0]), y(ts[1]), ...]``.

        Arguments as in :func:`pyjode.integrate.integrate`. ``on_step(t0, t1, y0, y1, None, None)`` is
        called after each accepted step (the method has no stage-based dense output).
        """
        return self.solve(func, y0, ts, rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps,
                          norm=norm, counter=counter, on_step=on_step, first_step=first_step, tstops=tstops).ys

    def solve(self, func: Callable, y0: torch.Tensor, ts: Sequence[float], *, rtol: float = 1e-7,
              atol: float = 1e-9, step_size: Optional[float] = None, max_steps: Optional[int] = None,
              norm: Callable = rms_norm, counter: Optional[Counter] = None, on_step: Optional[Callable] = None,
              first_step: Optional[float] = None, tstops: Optional[Sequence[float]] = None) -> ReversibleSolution:
        """Like :meth:`integrate`, also returning the final pair ``(y_N, z_N)`` and the step times."""
        counter = counter if counter is not None else Counter()
        field = CountingField(_ShapeCheckedField(func), counter)
        time = time_maker(y0)
        ts = [float(t) for t in ts]
        steps = BaseSteps(self.tableau, y0)
        if self.adaptive:
            sol = self._adaptive_loop(field, steps, y0, ts, rtol, atol, first_step or step_size, max_steps, norm,
                                      counter, on_step, time, tstops)
        else:
            sol = self._fixed_loop(field, steps, y0, ts, step_size, max_steps, counter, on_step, time)
            check_finite_outputs(sol.ys, ts, step_size)
        self._check_drift(sol)
        return sol

    def _fixed_loop(self, field, steps, y0, ts, step_size, max_steps, counter, on_step, time):
        if step_size is None:
            raise ValueError(f"{self!r} wraps the fixed-step method {self.tableau.name!r}: pass step_size=...")
        n_steps = fixed_step_counts(ts, step_size, max_steps)
        y = z = y0
        ys, times, output_steps = [y0], array("d", ts[:1]), [0]
        for (ta, tb), n in zip(zip(ts[:-1], ts[1:]), n_steps):
            h = (tb - ta) / n
            for j in range(n):
                t0 = times[-1]
                t1 = tb if j == n - 1 else ta + (j + 1) * h
                y1, z1, _ = self.step(field, steps, t0, t1, y, z, time)
                if on_step is not None:
                    on_step(t0, t1, y, y1, None, None)
                y, z = y1, z1
                times.append(t1)
            counter.steps += n
            ys.append(y)
            output_steps.append(len(times) - 1)
        return ReversibleSolution(ys, y, z, times, output_steps)

    def _adaptive_loop(self, field, steps, y0, ts, rtol, atol, first_step, max_steps, norm, counter, on_step,
                       time, tstops=None):
        tableau = self.tableau
        max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
        controller = PIController()
        k = min(tableau.order, tableau.error_order) + 1
        t_end = ts[-1]
        direction = 1.0 if t_end > ts[0] else -1.0
        eps = torch.finfo(y0.dtype).eps
        if first_step is None:
            with torch.no_grad():
                f0 = field(time(ts[0]), y0)
                h = initial_step_size(field, ts[0], y0, f0, tableau.order, rtol, atol, norm, direction, time)
        else:
            h = abs(float(first_step))

        y = z = y0
        t, ys, times, output_steps = ts[0], [y0], array("d", ts[:1]), [0]
        idx, attempts, prev_ratio, last_bad = 1, 0, 1.0, False
        # Steps end exactly on every output time and on every tstop inside the span (points where the field
        # is not smooth); the backward pass replays them as ordinary step boundaries.
        inside = [float(s) for s in (tstops or ()) if 0 < (s - ts[0]) * direction < (t_end - ts[0]) * direction]
        targets = sorted(set(ts[1:]) | set(inside), key=lambda s: (s - ts[0]) * direction)
        outputs, target_idx = set(ts[1:]), 0
        while idx < len(ts):
            check_progress(h, t, t_end, eps, attempts, max_steps, counter, last_bad)
            attempts += 1
            # Land on the next target; stretch a step that would leave a sliver before it, rather than take
            # the sliver next.
            target = targets[target_idx]
            clipped = h >= 0.99 * (target - t) * direction
            t1 = target if clipped else t + direction * h
            y1, z1, err = self.step(field, steps, t, t1, y, z, time, with_error=True)
            with torch.no_grad():  # step control is not differentiated
                scale = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
                ratio = float(norm(err.view(y.shape).div_(scale)))
            h_used = abs(t1 - t)
            if not ratio <= 1.0:  # also catches NaN
                last_bad = not math.isfinite(ratio)
                counter.rejected += 1
                h = h_used * controller.reject_factor(ratio, k)
                continue
            last_bad = False
            counter.steps += 1
            if on_step is not None:
                on_step(t, t1, y, y1, None, None)
            t, y, z = t1, y1, z1
            times.append(t1)
            if clipped:
                target_idx += 1
                if t1 in outputs:
                    ys.append(y1)
                    output_steps.append(len(times) - 1)
                    idx += 1
            proposal = h_used * controller.accept_factor(ratio, prev_ratio, k)
            # A step shortened only to land on a target says nothing against the step proposed before.
            h = max(proposal, h) if clipped else proposal
            prev_ratio = max(ratio, 1e-4)
        return ReversibleSolution(ys, y, z, times, output_steps)

    def _check_drift(self, sol: ReversibleSolution) -> None:
        """Warn when ``y`` and ``z``, which track each other to local-error size, have separated: the sign
        that the parasitic mode (growth ``lambda exp(-h mu)`` per step) is unstable for this step size."""
        if len(sol.times) < 2 or self.coupling == 1.0:
            return
        with torch.no_grad():
            gap = rms_norm((sol.y - sol.z).detach())
            drift = float(gap / rms_norm(sol.y.detach()).clamp_min(torch.finfo(gap.dtype).tiny))
        if not drift <= DRIFT_WARN:
            warn_once(
                "parasitic",
                f"{self!r}: the two coupled states separated (|y - z| / |y| = {drift:.2g} at t={sol.times[-1]:.6g}), "
                f"so the scheme's parasitic mode grew and the solution is unreliable. This happens on dissipative "
                f"fields when step_size * (decay rate) exceeds 1 - coupling = {1 - self.coupling:.3g}: take smaller "
                f"steps or lower the coupling (e.g. Reversible(base, coupling=0.9))",
            )


class _ShapeCheckedField:
    """Checks the vector field's shape and dtype on its first evaluation only (base steps never pass f0)."""

    __slots__ = ("func", "checked")

    def __init__(self, func):
        self.func, self.checked = func, False

    def __call__(self, t, y):
        f = self.func(t, y)
        if not self.checked:
            check_field_output(f, y)
            self.checked = True
        return f
