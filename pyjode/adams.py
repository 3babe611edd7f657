"""Adams–Bashforth(–Moulton) linear multistep methods on a fixed step grid.

With the past slopes f_{n-j} = f(t_{n-j}, y_{n-j}), j = 0..k-1, the Adams–Bashforth step is

    y_{n+1} = y_n + h Σ_j β_j f_{n-j},   β_j = (1/h) ∫_{t_n}^{t_{n+1}} ℓ_j(s) ds,

with ℓ_j the Lagrange basis on the past times (Hairer, Nørsett & Wanner, *Solving ODEs I*, §III.1 and
§III.5 for variable steps). The weights are computed for the actual past times, so a grid whose steps
change length (pyjode splits each output interval into equal steps) keeps the method's order; on a uniform
grid they are the classical coefficients (β = (55, -59, 37, -9)/24 for k = 4). The implicit (Moulton)
corrector adds the node t_{n+1},

    y_{n+1} = y_n + h (β*_0 f(t_{n+1}, y_{n+1}) + Σ_j β*_{j+1} f_{n-j}),

solved by functional iteration from the Bashforth predictor (PECE...), at most ``max_iters`` times, until
successive iterates agree to rtol/atol (max norm).

The first steps, before ``min(max_order - 1, ...)`` slopes are known, are taken by Kutta's 3/8 rule (as
torchdiffeq does), and the history grows one slope a step up to ``max_order - 1`` slopes (k steps).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .tableau import get_tableau
from .runge_kutta import RungeKutta
from .stepper import Stepper, time_maker

__all__ = ["Adams"]

_MIN_HISTORY = 3  # slopes needed before the multistep formula takes over from the Runge–Kutta start


def _weights(nodes: tuple) -> np.ndarray:
    """β_j = ∫_0^1 ℓ_j(x) dx for the Lagrange basis on ``nodes`` (times in units of the step, from t_n)."""
    x = np.asarray(nodes, dtype=np.float64)
    k = len(x)
    V = np.vander(x, k, increasing=True).T  # V[i, j] = x_j^i
    moments = 1.0 / np.arange(1, k + 1)
    return np.linalg.solve(V, moments)


class Adams:
    """Adams–Bashforth (``implicit=False``) or Adams–Bashforth–Moulton (``implicit=True``), a fixed-step
    multistep method for :func:`pyjode.solve`:

        y_{n+1} = y_n + h Σ_j β_j f(t_{n-j}, y_{n-j}),

    with the weights β_j of the actual past step times (see the module docstring; Hairer, Nørsett &
    Wanner, *Solving ODEs I*, §III.1).

    Args:
        implicit: correct each Bashforth prediction with the Moulton formula (functional iteration);
            default ``False``.
        max_order: the history holds up to ``max_order - 1`` past slopes (default 12, as torchdiffeq);
            at least 4. The stability region of Adams–Bashforth shrinks fast with the number of steps
            (AB4 is stable for h λ in about [-0.3, 0], AB11 for a far smaller interval): for a field with
            strongly negative eigenvalues choose ``max_order=5`` or a Runge–Kutta method.
        max_iters: corrector iterations per step (implicit only; default 4).
        rtol, atol: convergence test of the corrector iteration (defaults 1e-7 and 1e-9).
    """

    adaptive = False
    interp = None

    def __init__(self, implicit: bool = False, max_order: int = 12, max_iters: int = 4, rtol: float = 1e-7,
                 atol: float = 1e-9):
        if not isinstance(max_order, int) or not 4 <= max_order <= 20:
            raise ValueError(f"max_order must be an integer from 4 to 20, got {max_order!r}")
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        self.implicit, self.max_order, self.max_iters = bool(implicit), max_order, max_iters
        self.rtol, self.atol = float(rtol), float(atol)
        self.name = "implicit_adams" if implicit else "explicit_adams"

    def __repr__(self) -> str:
        return f"pyjode.Adams(implicit={self.implicit}, max_order={self.max_order}, max_iters={self.max_iters})"

    def stepper(self, like: torch.Tensor) -> "AdamsStepper":
        return AdamsStepper(self, like)


class AdamsStepper(Stepper):
    """State ``(y, history)``; ``history`` is a tuple of ``(t, f)`` pairs, newest first."""

    adaptive = False
    dense_output = False

    def __init__(self, method: Adams, like: torch.Tensor):
        self.method = method
        self.order = 4
        self.time = time_maker(like)
        self._cache: dict = {}
        self._start = RungeKutta(get_tableau("rk4_38"), like)

    def _coefficients(self, nodes) -> np.ndarray:
        key = tuple(round(x, 12) for x in nodes)
        w = self._cache.get(key)
        if w is None:
            w = self._cache[key] = _weights(nodes)
        return w

    def init(self, field, t0: float, y0: torch.Tensor):
        return (y0, ())

    def output(self, state):
        return state[0]

    def restart(self, field, t: float, state):
        return (state[0], ())  # the history does not reach across a jump

    def step(self, field, t0: float, t1: float, state, control=None):
        y, history = state
        m = self.method
        f0 = field(self.time(t0), y)
        history = ((t0, f0),) + history[: m.max_order - 2]
        h = t1 - t0
        if len(history) < _MIN_HISTORY:
            y1, K = self._start.advance(field, t0, h, y, f0, self.time, t1)
            return (y1, history), None, K
        nodes = [(s - t0) / h for s, _ in history]
        beta = self._coefficients(nodes)
        slopes = [f for _, f in history]
        y1 = y + h * sum(float(b) * f for b, f in zip(beta, slopes))
        if m.implicit:
            beta_c = self._coefficients([1.0] + nodes)
            known = y + h * sum(float(b) * f for b, f in zip(beta_c[1:], slopes))
            converged = False
            for _ in range(m.max_iters):
                y_prev = y1
                y1 = known + (h * float(beta_c[0])) * field(self.time(t1), y1)
                with torch.no_grad():
                    scale = m.atol + m.rtol * torch.maximum(y_prev.abs(), y1.abs())
                    converged = bool(((y1 - y_prev).abs() / scale).max() < 1)
                if converged:
                    break
            if not converged:
                warnings.warn(f"the Adams–Moulton corrector did not converge in max_iters={m.max_iters} at "
                              f"t={t1:.6g}; the solution may be inaccurate: use a smaller step_size or raise "
                              f"max_iters", RuntimeWarning, stacklevel=2)
        return (y1, history), None, f0.reshape(1, -1)
