"""One explicit Runge–Kutta step and its dense output, for any :class:`~pyjode.tableau.ButcherTableau`.

The stages live in one ``(s, n)`` buffer ``K`` (``n`` = elements of the state); each stage input is a
single fused ``addmv``:  y_i = y + h * K[:i]^T a_i.  Without autograd one buffer is allocated once and
reused by every step; under autograd each step gets a fresh one, because the graph keeps it alive. The
state after a step holds its FSAL stage ``f``, and a state must stay valid while the next step is attempted
(a retry after a rejection starts from it again): without autograd ``f`` is copied out of the buffer into
one of two state-sized rows, the one the step's input ``f`` is not in. (Two whole stage buffers used in
turn would do the same with ``s - 2`` more states of memory: 5 for dopri5, whose stage buffer is 7 states;
it matters where the state is large, as the augmented state of the continuous adjoints, which carries the
parameters.) A step's stages (its dense output) are valid until the next step is attempted.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .stepper import Stepper, time_maker
from .tableau import ButcherTableau

#: The state of an RK stepper: ``(y, f)`` with ``f = f(t, y)`` known (an FSAL stage, or evaluated after a
#: jump) or ``None``.
RKState = Tuple[torch.Tensor, Optional[torch.Tensor]]


def _coefficients(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device):
    """The tableau's coefficients as tensors on ``dtype``/``device``, made once per tableau and kept on it:
    a small solve costs little more than building them. They are never written to, so solves in several
    threads can share them.

    Returns ``(A, b, b_error, a_rows, c, interp)``: ``a_rows[i] = A[i, :i]`` (slicing every stage costs as
    much as the arithmetic on a small state), ``c`` and the dense-output matrix ``interp`` as Python floats
    (the weights of all output times of a step become one small tensor).
    """
    cache = tableau.__dict__.setdefault("_tensors", {})
    key = (dtype, device)
    if key not in cache:
        A = torch.as_tensor(tableau.a, dtype=dtype, device=device)
        b = torch.as_tensor(tableau.b, dtype=dtype, device=device)
        e = None if tableau.b_error is None else torch.as_tensor(tableau.b_error, dtype=dtype, device=device)
        cache[key] = (A, b, e, [A[i, :i] for i in range(tableau.stages)], [float(x) for x in tableau.c],
                      None if tableau.interp is None else tableau.interp.tolist())
    return cache[key]


class RungeKutta(Stepper):
    """The explicit RK step of one tableau, with its coefficients cached on the state's dtype/device.

    As a :class:`~pyjode.stepper.Stepper` its state is ``(y, f)``, its error estimate the embedded one and
    its dense output the tableau's continuous extension (``dense`` is the stage matrix ``K``).
    """

    def __init__(self, tableau: ButcherTableau, like: torch.Tensor):
        self.tableau = tableau
        self.adaptive = tableau.adaptive
        self.order = tableau.order
        self.error_order = tableau.error_order if tableau.adaptive else None
        self.dense_output = tableau.interp is not None
        self.time = time_maker(like)
        self.shape = like.shape
        self.numel = like.numel()
        self._opts = dict(dtype=like.dtype, device=like.device)
        self.A, self.b, self.e, self._a_rows, self.c, self._interp = _coefficients(tableau, like.dtype, like.device)
        self.fsal = tableau.fsal
        self._buffers: list = []
        self._held: list = []  # without autograd: the two rows an FSAL stage is kept in (see the docstring)

    def _new_buffer(self) -> tuple:
        K = torch.empty(self.tableau.stages, self.numel, **self._opts)
        prefix_t = [K[:i].t() for i in range(self.tableau.stages)]
        rows = [K[i].view(self.shape) for i in range(self.tableau.stages)]
        return K, prefix_t, rows

    def _stages(self, f0: Optional[torch.Tensor]):
        """``(K, K_prefix_T, K_rows)``: the stage buffer, ``K[:i].t()`` and ``K[i]`` shaped like ``y``.

        Without autograd the buffer and its views are made once and reused (their contents change, the
        views stay valid). ``f0`` is never in it when it comes from :meth:`step` (its FSAL stage is kept
        outside); a caller of :meth:`advance` that passes a row of the last ``K`` as ``f0`` gets a second
        buffer, made when first needed. Under autograd each step needs a fresh buffer, and no views.
        """
        if torch.is_grad_enabled():
            return torch.empty(self.tableau.stages, self.numel, **self._opts), None, None
        buffers = self._buffers
        if not buffers:
            buffers.append(self._new_buffer())
        if f0 is not None and f0.data_ptr() == buffers[0][2][-1].data_ptr():
            if len(buffers) == 1:
                buffers.append(self._new_buffer())
            return buffers[1]
        return buffers[0]

    # -- the stepper protocol ------------------------------------------------------------------------------

    def init(self, field, t0: float, y0: torch.Tensor) -> RKState:
        # FSAL methods need f(t0, y0) as their first stage; the others evaluate it inside each step.
        return (y0, field(self.time(t0), y0) if self.fsal else None)

    def step(self, field, t0: float, t1: float, state: RKState, control=None):
        if isinstance(t0, torch.Tensor):
            return self.step_per_sample(field, t0, t1, state)
        y, f = state
        h = t1 - t0
        y1, K = self.advance(field, t0, h, y, f, self.time, t1)
        err = self.error(K, h) if self.e is not None else None
        return (y1, self._hold(K[-1], f) if self.fsal else None), err, K

    def _hold(self, last: torch.Tensor, f0: Optional[torch.Tensor]) -> torch.Tensor:
        """The FSAL stage ``last`` as the new state's ``f``: a view of the stage buffer under autograd (each
        step has its own), else a copy in the held row that does not hold this step's input ``f0``."""
        if torch.is_grad_enabled():
            return last.view(self.shape)
        if not self._held:
            self._held = [torch.empty(self.shape, **self._opts) for _ in range(2)]
        row = self._held[1] if f0 is not None and f0.data_ptr() == self._held[0].data_ptr() else self._held[0]
        return row.copy_(last.view(self.shape))

    #: takes per-sample times (see :mod:`pyjode.per_sample`)
    per_sample_time = True

    def step_per_sample(self, field, t0: torch.Tensor, t1: torch.Tensor, state: RKState):
        """One step of each sample ``b`` from ``t0[b]`` to ``t1[b]`` (float64 tensors of shape ``(B,)``):
        y_i = y + h_b sum_j a_ij k_j, each stage evaluated at the ``(B,)`` times ``t0 + c_i h``. Returns the
        error with ``y``'s shape and the stages ``(s, *y.shape)``."""
        y, f = state
        h = t1 - t0
        hv = h.to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        if f is None:
            f = field(self.time(t0), y)
        a, c = self.tableau.a, self.c
        stages = [f]
        yi = y
        for i in range(1, len(c)):
            incr = sum(float(a[i][j]) * stages[j] for j in range(i) if a[i][j] != 0)
            yi = y + hv * incr if not isinstance(incr, int) else y
            ti = t1 if c[i] == 1.0 else t0 + c[i] * h
            stages.append(field(self.time(ti), yi))
        K = torch.stack(stages)
        y1 = yi if self.fsal else y + hv * torch.tensordot(self.b, K, dims=1)
        err = hv * torch.tensordot(self.e, K, dims=1) if self.e is not None else None
        return (y1, stages[-1] if self.fsal else None), err, K

    def restart(self, field, t: float, state: RKState) -> RKState:
        return (state[0], field(self.time(t), state[0]))

    def output(self, state: RKState) -> torch.Tensor:
        return state[0]

    def slope(self, field, t: float, state: RKState) -> torch.Tensor:
        return state[1] if state[1] is not None else field(self.time(t), state[0])

    def interpolate(self, state: RKState, K: torch.Tensor, t0: float, t1: float, thetas) -> torch.Tensor:
        return self.dense_many(state[0], K, t1 - t0, thetas)

    # -- one step ----------------------------------------------------------------------------------------

    def advance(self, func: Callable, t: float, h: float, y: torch.Tensor, f0: Optional[torch.Tensor],
                time: Callable[[float], torch.Tensor], t_end: Optional[float] = None):
        """Advance ``y`` from ``t`` to ``t + h``; returns ``(y1, K)``.

        ``f0 = f(t, y)`` may be passed in (FSAL reuse); otherwise it is evaluated. For FSAL tableaus
        ``K[-1]`` is ``f(t + h, y1)``. ``y1`` is always a new tensor (never a view of ``K``). Stages with
        ``c == 1`` are evaluated at ``t_end`` when given: ``t + (t_end - t)`` may round off an end that was
        moved just inside the step (a jump, ``perturb``).
        """
        stage_t = [t + ci * h if ci != 1.0 or t_end is None else t_end for ci in self.c]
        K, prefix_t, rows = self._stages(f0)
        y_flat = y.reshape(-1)
        if f0 is None:
            f0 = func(time(t), y)
        shape, a_rows, c = self.shape, self._a_rows, self.c
        if rows is not None:
            rows[0].copy_(f0)
            for i in range(1, len(c)):
                yi = torch.addmv(y_flat, prefix_t[i], a_rows[i], alpha=h)
                rows[i].copy_(func(time(stage_t[i]), yi.view(shape)))
        else:
            K[0].copy_(f0.reshape(-1))
            for i in range(1, len(c)):
                yi = torch.addmv(y_flat, K[:i].t(), a_rows[i], alpha=h)
                K[i].copy_(func(time(stage_t[i]), yi.view(shape)).reshape(-1))
        if self.fsal:
            y1 = yi  # the last stage's input is y1, because a[-1] == b
        else:
            y1 = torch.addmv(y_flat, K.t(), self.b, alpha=h)
        return y1.view(shape), K

    def error(self, K: torch.Tensor, h: float) -> torch.Tensor:
        """The embedded local error estimate ``h * K^T (b - b_hat)``, flat."""
        return torch.mv(K.t(), self.e).mul_(h)

    def _interp_weights(self, thetas) -> torch.Tensor:
        """``W[j, i] = b_i(theta_j)``, built from Python floats into one tensor."""
        P = self._interp
        rows = []
        for th in thetas:
            th = float(th)
            powers = [th]
            for _ in range(len(P[0]) - 1):
                powers.append(powers[-1] * th)
            rows.append([sum(p * q for p, q in zip(row, powers)) for row in P])
        return torch.tensor(rows, **self._opts)

    def dense(self, y: torch.Tensor, K: torch.Tensor, h: float, theta: float) -> torch.Tensor:
        """The method's own continuous extension at ``t + theta h`` (``0 <= theta <= 1``)."""
        w = self._interp_weights((theta,))[0]
        return torch.addmv(y.reshape(-1), K.t(), w, alpha=h).view(self.shape)

    def dense_many(self, y: torch.Tensor, K: torch.Tensor, h: float, thetas) -> torch.Tensor:
        """Dense output at several ``theta`` at once; returns ``(len(thetas), *shape)``."""
        W = self._interp_weights(thetas)
        out = torch.addmm(y.reshape(1, -1), W, K, alpha=h)
        return out.view(len(W), *self.shape)
