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

import warnings
from typing import Callable, Optional, Tuple, Union

import torch

from .norms import rms_norm
from .runge_kutta import RungeKutta
from .stepper import Stepper
from .tableau import ButcherTableau, get_tableau

__all__ = ["Reversible", "ReversibleStabilityWarning", "ReversibleStepper", "reverse_sweep", "warn_once"]

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
    """A Runge–Kutta base step ``Phi`` of the reversible scheme on one dtype/device: ``full`` has the
    embedded error estimate, ``short`` is the same map with the FSAL-only stage dropped. The control is
    ``None``: an ODE step has no driving increment."""

    def __init__(self, tableau: ButcherTableau, like: torch.Tensor):
        self.full = RungeKutta(tableau, like)
        short = _without_fsal_stage(tableau)
        self.short = self.full if short is tableau else RungeKutta(short, like)
        self.time = self.full.time
        self.adaptive, self.order, self.error_order = tableau.adaptive, tableau.order, self.full.error_order

    def phi(self, field, t0: float, t1: float, x: torch.Tensor, control=None) -> torch.Tensor:
        """``Phi_{t1 - t0}(t0, x)``: one base step from ``t0`` to ``t1`` (either direction), FSAL off."""
        return self.short.advance(field, t0, t1 - t0, x, None, self.time)[0]

    def phi_with_error(self, field, t0: float, t1: float, x: torch.Tensor, control=None):
        """``Phi_{t1 - t0}(t0, x)`` and its embedded local error estimate (flat)."""
        x1, K = self.full.advance(field, t0, t1 - t0, x, None, self.time)
        return x1, self.full.error(K, t1 - t0)

    @staticmethod
    def reverse(control):
        return control


class ReversibleStepper(Stepper):
    """The McCallum–Foster step over any base step ``Phi(t0, t1, x, control)`` (ODE or SDE), state ``(y, z)``:

        y1 = lambda (y - z) + Phi(t0, t1, z, c),     z1 = z + y1 - Phi(t1, t0, y1, -c).

    The error estimate, where the base has one, is that of the second (backward) base step.
    """

    dense_output = False

    def __init__(self, base, coupling: float):
        self.base, self.coupling, self.time = base, coupling, base.time
        self.adaptive, self.order, self.error_order = base.adaptive, base.order, base.error_order

    def init(self, field, t0: float, y0: torch.Tensor):
        return (y0, y0)

    def step(self, field, t0: float, t1: float, state, control=None):
        y, z = state
        y1 = torch.add(self.base.phi(field, t0, t1, z, control), y - z, alpha=self.coupling)
        back_control = self.base.reverse(control)
        if self.adaptive:
            back, err = self.base.phi_with_error(field, t1, t0, y1, back_control)
        else:
            back, err = self.base.phi(field, t1, t0, y1, back_control), None
        z1 = z + (y1 - back)
        # the pair is handed on as the step's dense information, so that a caller can keep the outputs' z
        return (y1, z1), err, (y1, z1)

    def output(self, state) -> torch.Tensor:
        return state[0]


def reverse_sweep(base, field, coupling: float, y: torch.Tensor, z: torch.Tensor, steps, grad_at: Callable,
                  params: Tuple[torch.Tensor, ...], restart_at: Optional[Callable] = None):
    """The exact reverse pass of a McCallum–Foster solve (arXiv 2410.11648, §3), for ODEs and SDEs alike.

    ``steps`` yields ``(n, t0, t1, control)`` for n = N, ..., 1 (step n runs t0 -> t1); ``grad_at(n)`` is
    dL/dy at step boundary n (or None); ``restart_at(n)``, where given, returns a stored ``(y_n, z_n)``
    to continue from instead of the rebuilt pair. For step n, with cotangents ybar, zbar of (y_n, z_n):

    1. ``s1 = Phi(t1, t0, y_n, -c)``; rebuild ``z_{n-1} = z_n - y_n + s1``. Backpropagating
       ``z_n = y_n + z_{n-1} - s1``:  ``ybar += zbar - (ds1/dy)^T zbar``,  ``thetabar -= (ds1/dtheta)^T zbar``.
    2. ``s2 = Phi(t0, t1, z_{n-1}, c)``; rebuild ``y_{n-1} = (y_n - s2) / lambda + z_{n-1}``.
       Backpropagating ``y_n = lambda (y_{n-1} - z_{n-1}) + s2``:  ``ybar_{n-1} = lambda ybar``,
       ``zbar_{n-1} = zbar - lambda ybar + (ds2/dz)^T ybar``,  ``thetabar += (ds2/dtheta)^T ybar``.

    The primal outputs of the two VJP calls are the values the reconstruction needs, so a backward step
    costs two base steps with VJPs. Returns ``(y_0, z_0, dL/dy_0, [dL/dtheta])``; ``dL/dy_0 = ybar_0 +
    zbar_0`` because ``z_0 = y_0``.
    """
    lam = coupling
    pbar = [torch.zeros_like(p) for p in params]
    ybar = grad_at(None)
    zbar: Optional[torch.Tensor] = None  # zbar_N = 0: the loss does not see z

    def vjp(x, t0, t1, control, cotangent):
        """``Phi(t0, t1, x, control)`` and its VJP with respect to ``(x, *params)``, in one autograd call."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = base.phi(field, t0, t1, xg, control)
            grads = torch.autograd.grad(out, (xg, *params), cotangent, allow_unused=True)
        for acc, g in zip(pbar, grads[1:]):
            if g is not None:
                acc.add_(g)
        return out.detach(), (torch.zeros_like(x) if grads[0] is None else grads[0])

    with torch.no_grad():
        for n, t0, t1, c in steps:
            back = base.reverse(c)
            if zbar is None:
                s1 = base.phi(field, t1, t0, y, back)
            else:
                s1, gy = vjp(y, t1, t0, back, -zbar)
                ybar = ybar + zbar + gy
            z_prev = z - y + s1
            s2, gz = vjp(z_prev, t0, t1, c, ybar)
            y_prev = (y - s2).div_(lam).add_(z_prev)
            zbar = (gz if zbar is None else zbar + gz) - lam * ybar
            ybar = lam * ybar
            g = grad_at(n - 1)
            if g is not None:
                ybar = ybar + g
            if restart_at is not None:
                stored = restart_at(n - 1)
                if stored is not None:
                    y_prev, z_prev = stored
            y, z = y_prev, z_prev
    grad_y0 = ybar if zbar is None else ybar + zbar
    return y, z, grad_y0, pbar


class Reversible:
    """McCallum–Foster algebraically reversible wrapper of an explicit Runge–Kutta method (McCallum & Foster,
    arXiv 2410.11648, §3). With the base step ``Phi_h`` and ``z_0 = y_0``:

        y_{n+1} = lambda (y_n - z_n) + Phi_h(t_n, z_n),    z_{n+1} = z_n + y_{n+1} - Phi_{-h}(t_{n+1}, y_{n+1}),

    which the backward pass inverts exactly (module docstring).

    Pass it as ``method=`` to :func:`pyjode.odeint`. With ``adjoint="reversible"`` the gradient is the
    exact gradient of this discretisation, computed backwards in O(1) memory in the number of steps by
    rebuilding the trajectory from its end; with ``adjoint="direct"`` autograd backpropagates through the
    scheme like any other method (the two agree to rounding). The reversible method keeps the order of
    its base method and costs two base steps per step.

    Args:
        base: an explicit Runge–Kutta method: a name (``"midpoint"``, ``"rk4"``, ``"tsit5"``, ...) or a
            :class:`pyjode.ButcherTableau`. Fixed-step bases take ``step_size`` (without it they step on the
            output times); adaptive bases choose their steps from the embedded error estimate of the
            backward base step.
        coupling: lambda in (0, 1] (default 0.999).

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

    def stepper(self, like: torch.Tensor) -> ReversibleStepper:
        """The stepper of this method over ODEs, for states like ``like``."""
        return ReversibleStepper(BaseSteps(self.tableau, like), self.coupling)

    def check_drift(self, y: torch.Tensor, z: torch.Tensor, t_end: float) -> None:
        """Warn when ``y`` and ``z``, which track each other to local-error size, have separated: the sign
        that the parasitic mode (growth ``lambda exp(-h mu)`` per step) is unstable for this step size."""
        if y is z or self.coupling == 1.0:
            return
        with torch.no_grad():
            gap = rms_norm((y - z).detach())
            drift = float(gap / rms_norm(y.detach()).clamp_min(torch.finfo(gap.dtype).tiny))
        if not drift <= DRIFT_WARN:
            warn_once(
                "parasitic",
                f"{self!r}: the two coupled states separated (|y - z| / |y| = {drift:.2g} at t={t_end:.6g}), "
                f"so the scheme's parasitic mode grew and the solution is unreliable. This happens on dissipative "
                f"fields when step_size * (decay rate) exceeds 1 - coupling = {1 - self.coupling:.3g}: take smaller "
                f"steps or lower the coupling (e.g. Reversible(base, coupling=0.9))",
            )
