"""Implicit Runge–Kutta methods for stiff problems, as steppers of the one adaptive and one fixed-step loop.

``pyjode.Implicit(name, jacobian=...)`` is the method object (``method=`` of :func:`pyjode.odeint`; the names
alone select it with the defaults). Its stepper solves the stage equations (see
:mod:`pyjode.implicit_tableau`) by the simplified Newton iteration of :mod:`pyjode.newton`:

* diagonally implicit methods (Kværnø's ESDIRKs, SDIRK2, TR-BDF2, implicit Euler/midpoint, trapezoid) one
  stage at a time, each stage's matrix ``I - h a_ii J`` factorised once per step size (one factorisation
  serves every stage of an SDIRK);
* fully implicit methods (Radau IIA, Gauss–Legendre) all stages at once with ``I - h A ⊗ J``.

**Convergence test** (Hairer & Wanner, *Solving ODEs II*, §IV.8): with ``||.||`` the solve's error norm
scaled by ``atol + rtol |y|`` and ``theta_k = ||dz_k|| / ||dz_{k-1}||`` the observed contraction, the
iteration stops when ``eta ||dz_k|| <= kappa``, ``eta = theta / (1 - theta)`` (the first iteration uses the
previous stage's ``eta``). It fails when ``theta >= 1`` or after ``max_iters`` iterations.

**Jacobian reuse.** ``J`` is evaluated at the start of a step and kept across stages and steps; it is
evaluated afresh at the next step when the last contraction rate exceeded ``recompute_above``, and at once
(the step retried) when the iteration fails with an old ``J``. When it fails with a fresh one the step is
rejected (error ``inf``), so the adaptive loop shrinks it; at the smallest step (``|h| <= 1e4 eps
max(1, |t|)``), or with a fixed step, a ``RuntimeError`` says where.

**Error estimates.** The ESDIRKs use their embedded method, ``h sum_i e_i k_i``; Radau IIA 5 uses Hairer &
Wanner's filtered estimate ``(I - h gamma0 J)^{-1} (gamma0 h f(t, y) + sum_i e_i (z_i - y))``, which stays
bounded for stiff components.

**Gradients through the solve** (``adjoint="direct"``). The Newton iterations run without a graph. The
converged stages ``Z*`` are then attached to the graph by one Newton step with the exact Jacobian of the
stage equations ``G(Z; y, θ) = 0`` at ``Z*``:

    Z = Z* - (C - C.detach()),   C = (∂G/∂Z)^{-1} G(Z*; y, θ),   so   dZ = -(∂G/∂Z)^{-1} ∂G/∂(y, θ)

which is the implicit function theorem. Only the derivative of the Newton correction ``C`` is kept, not its
value: the stages stay exactly the converged ones, so a solve with autograd takes the same steps and gives
the same values as one without. The gradient is therefore the exact derivative of the discrete
solution defined by exactly solved stage equations (the step sizes held fixed, as for explicit methods), at
the stages actually computed; it does not differentiate the iteration (whose derivative would depend on how
many iterations were taken and on the stale Jacobian). It costs one Jacobian per implicit stage and step,
and is taken only when the graph needs it.

**Continuous adjoints.** ``Backsolve``/``Quadrature`` accept an implicit method (forward, or ``method=`` for
the backward solve): their augmented fields declare the block Jacobian ``[J, -J^T, 0]`` of
``[y, a, a_θ]`` (:func:`pyjode.newton.adjoint_jacobian`), so the backward solve is implicit too. Their
gradients are those of the continuous adjoint, accurate to the backward tolerance, not exact for the
discrete solution. For a stiff *dissipative* problem re-solving y backwards is unstable whatever the method,
so use ``Backsolve(state="stored", norm="rms")``: y comes from the forward dense output, and the RMS norm
makes the backward steps resolve the integrand ``a^T ∂f/∂θ`` through y's fast transients (the seminorm, and
``Quadrature(state="stored")``, whose nodes sit in steps chosen from ``a`` alone, do not see them and lose
accuracy there; they are exact to tolerance when y has no fast transient).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from .implicit_tableau import IMPLICIT_TABLEAUS, ImplicitTableau
from .newton import (JACOBIAN_MODES, NewtonStats, factor_dirk, factor_firk, field_jacobian, find_blocks_hook,
                     solve_dirk, solve_firk, stage_jacobians)
from .norms import rms_norm
from .stepper import Stepper, time_maker
from .tableau import _hermite_interp

__all__ = ["Implicit", "ImplicitRungeKutta", "IMPLICIT_METHODS"]


def eigen_pair(a, eigenvalue: float):
    """The left and right eigenvectors ``u``, ``t`` of the matrix ``a`` for its real ``eigenvalue``,
    scaled so that ``u t = 1`` (NumPy arrays)."""
    a = np.asarray(a, dtype=np.float64)
    values, right = np.linalg.eig(a)
    k = int(np.argmin(np.abs(values - eigenvalue)))
    values_t, left = np.linalg.eig(a.T)
    m = int(np.argmin(np.abs(values_t - eigenvalue)))
    t, u = right[:, k].real, left[:, m].real
    return u / (u @ t), t


#: The names of the implicit methods: adaptive ``kvaerno3 kvaerno4 kvaerno5 radauIIA5``, fixed-step the rest.
IMPLICIT_METHODS = tuple(IMPLICIT_TABLEAUS)


class Implicit:
    """An implicit Runge–Kutta method for stiff problems (see the module docstring): the stages solve

        Z_i = h Σ_j a_ij f(t + c_j h, y + Z_j),   y_1 = y + h Σ_i b_i f(t + c_i h, y + Z_i),

    by simplified Newton iterations with the matrix ``I - h A ⊗ J`` (Hairer & Wanner, *Solving ODEs II*,
    §IV.8).

    Args:
        method: a name from ``IMPLICIT_METHODS`` or an :class:`~pyjode.implicit_tableau.ImplicitTableau`
            (default ``"kvaerno5"``).
        jacobian: ``"full"`` (default): the Jacobian of the whole flattened state. ``"batch"``: the
            per-sample ``(d x d)`` Jacobians of a field whose samples along ``y``'s first dimension are
            independent (a batch of separate problems): ``d`` vector-Jacobian products and ``B`` small
            factorisations instead of an ``(B d)^2`` matrix. Wrong when samples interact.
        adaptive: ``None`` uses the error estimate when the method has one; ``False`` makes an adaptive
            method fixed-step (it then needs ``step_size``).
        max_iters: Newton iterations per stage before the attempt counts as failed (default 10).
        kappa: the convergence tolerance, as a fraction of the solve's error tolerance (default 0.01).
        recompute_above: contraction rate above which the Jacobian is evaluated afresh at the next step
            (default 0.1).
        keep_step: when the controller proposes to grow an accepted step by a factor in ``[1, keep_step]``
            and the Jacobian is kept, the next step keeps the size of this one, so the factorised Newton
            matrices are reused (Hairer & Wanner's RADAU5 and scipy's Radau use ``1.2``). The default ``1``
            changes the step whenever the controller says so: with factorisations as cheap as a few
            Newton iterations here, holding the step saved no measurable time on the stiff benchmarks
            but took up to 8% more steps (benchmarks/RESULTS.md, stiff section).

    Attributes:
        stats: a :class:`~pyjode.newton.NewtonStats` (Jacobians, factorisations, Newton iterations and
            failures), accumulated over every solve run with this object, backward solves included.
    """

    implicit = True

    def __init__(self, method: Union[str, ImplicitTableau] = "kvaerno5", *, jacobian: str = "full",
                 adaptive: Optional[bool] = None, max_iters: int = 10, kappa: float = 0.01,
                 recompute_above: float = 0.1, keep_step: float = 1.0):
        if isinstance(method, str):
            if method not in IMPLICIT_TABLEAUS:
                raise ValueError(f"method={method!r} is not an implicit method; choose one of {list(IMPLICIT_METHODS)}")
            method = IMPLICIT_TABLEAUS[method]
        if not isinstance(method, ImplicitTableau):
            raise TypeError(f"method must be an implicit method name or an ImplicitTableau, got {type(method).__name__}")
        if jacobian not in JACOBIAN_MODES:
            raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {jacobian!r}")
        if adaptive is None:
            adaptive = method.adaptive
        elif adaptive and not method.adaptive:
            raise ValueError(f"adaptive=True: {method.name!r} has no error estimate; pass step_size and adaptive=None")
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        for name, v in (("kappa", kappa), ("recompute_above", recompute_above)):
            if not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
        if isinstance(keep_step, bool) or not isinstance(keep_step, (int, float)) or not 1 <= keep_step < 2:
            raise ValueError(f"keep_step must be a number in [1, 2), such as 1.2 (or 1 to turn the rule off), "
                             f"got {keep_step!r}")
        self.tableau = method
        self.name = method.name
        self.order = method.order
        self.adaptive = bool(adaptive)
        self.error_order = method.error_order if self.adaptive else None
        self.interp = method.interp
        self.jacobian = jacobian
        self.max_iters, self.kappa, self.recompute_above = max_iters, float(kappa), float(recompute_above)
        self.keep_step = float(keep_step)
        self.stats = NewtonStats()

    def stepper(self, like: torch.Tensor) -> "ImplicitRungeKutta":
        return ImplicitRungeKutta(self, like)

    def __repr__(self) -> str:
        return f"pyjode.Implicit({self.name!r}, jacobian={self.jacobian!r}, adaptive={self.adaptive})"


#: The state of an implicit stepper: ``(y, f)`` with ``f ≈ f(t, y)`` when known (the last stage of a
#: stiffly accurate method, or evaluated), else ``None``.
ImplicitState = Tuple[torch.Tensor, Optional[torch.Tensor]]


class _NewtonFailure(Exception):
    def __init__(self, t: float, rate: float):
        self.t, self.rate = t, rate


class ImplicitRungeKutta(Stepper):
    """The stepper of an :class:`Implicit` method for states like ``like``."""

    dense_output = True

    def __init__(self, method: Implicit, like: torch.Tensor):
        tab = method.tableau
        self.method, self.tableau, self.name = method, tab, method.name
        self.adaptive, self.order, self.error_order = method.adaptive, method.order, method.error_order
        self.stats = method.stats
        self.time = time_maker(like)
        self.shape, self.n = like.shape, like.numel()
        opts = dict(dtype=like.dtype, device=like.device)
        self._opts = opts
        self.eps = torch.finfo(like.dtype).eps
        self.a = tab.a.tolist()
        self.c = [float(x) for x in tab.c]
        self.s = tab.stages
        self.A = torch.as_tensor(tab.a, **opts)
        self.b = torch.as_tensor(tab.b, **opts)
        self.dirk = tab.diagonally_implicit
        self.A_inv = None if self.dirk else torch.linalg.inv(self.A)
        self.e = None if tab.b_error is None else torch.as_tensor(tab.b_error, **opts)
        self.radau = None
        if tab.radau_error is not None:
            self.radau = (float(tab.radau_error[0]), torch.as_tensor(tab.radau_error[1], **opts))
            if not self.dirk:  # the estimate's solve through the stages' factors (see `_error`)
                left, right = eigen_pair(tab.a, self.radau[0])
                self._radau_left = torch.as_tensor(left, **opts)
                self._radau_right = torch.as_tensor(right, **opts).unsqueeze(1)
        self.needs_f0 = tab.explicit_first_stage or self.radau is not None
        self.stiffly_accurate = tab.stiffly_accurate
        # the explicit part y + h sum_{j<i} a_ij k_j of each stage: its nonzero a_ij, and as a vector when
        # there are several (one matrix-vector product instead of a multiply and an add per term)
        self._base_terms = [[(j, self.a[i][j]) for j in range(i) if self.a[i][j] != 0] for i in range(self.s)]
        self._base_weights = [torch.tensor([a for _, a in terms], **opts) if len(terms) > 1 else None
                              for terms in self._base_terms]
        self._newton_slopes = None  # (Z, K) of the last diagonally implicit iteration
        # a 1-D state is passed to the field as the flat vectors the iteration works on (no view per call)
        self._flat = like.dim() == 1
        self._rms = False  # set by `prepare`: whether the norm is rms_norm (computed here in one call)
        self._sqrt_n = 1.0
        P = tab.interp if tab.interp is not None else _hermite_interp(tab.b, first=0, last=self.s - 1)
        # the dense output's weights b_i(theta) = sum_m P[i, m] theta^(m+1), for all thetas in one product
        self._interp_T = np.ascontiguousarray(np.asarray(P, dtype=np.float64).T)
        self._interp_powers = np.arange(1, P.shape[1] + 1)
        self._weights_at_1 = self._interp_T.sum(0)  # b_i(1) = b_i
        # step-control settings (set by the loop through `prepare`)
        self.rtol, self.atol, self.norm = 1e-7, 1e-9, rms_norm
        # Newton state kept across steps
        self.blocks = None  # the current Jacobian, as blocks
        self.jac_at: Any = None  # (t, y) where it was evaluated
        self.refresh = True
        self.factors: dict = {}
        self._factors_h: Optional[float] = None  # the step size the factors are for
        self._hook_of: Any = None  # the field whose `newton_blocks` hook is cached in _hook
        self._hook = None
        self.eta, self.eta_rate = 1.0, 0.0
        self._explicit_parts = False
        # whether the field's output needs a graph (it closes over tensors that require grad): found out by
        # the first step under autograd, so solves whose graph would be empty skip the extra evaluations
        self._graph = True
        self._last = None  # (t0, h, y0, y1, K) of the last step taken, for the stage predictor

    def prepare(self, control) -> None:
        """Take the solve's tolerances and norm for the Newton convergence test."""
        self.rtol, self.atol, self.norm = control.rtol, control.atol, control.norm
        self._rms = control.norm is rms_norm
        self._sqrt_n = math.sqrt(max(self.n, 1))

    def hold_step(self, ratio: float) -> bool:
        """Whether the adaptive loop should keep the step size instead of changing it by ``ratio``: a
        small growth with the Jacobian kept (``keep_step``; Hairer & Wanner's RADAU5), so the next step
        reuses the factorised Newton matrices."""
        return 1.0 <= ratio <= self.method.keep_step and not self.refresh

    # -- the stepper protocol --------------------------------------------------------------------------------

    def init(self, field, t0: float, y0: torch.Tensor) -> ImplicitState:
        return (y0, field(self.time(t0), y0) if self.needs_f0 else None)

    def restart(self, field, t: float, state: ImplicitState) -> ImplicitState:
        self._last = None  # the field jumped: the last step's polynomial says nothing past it
        return (state[0], field(self.time(t), state[0]) if self.needs_f0 else None)

    def output(self, state: ImplicitState) -> torch.Tensor:
        return state[0]

    def slope(self, field, t: float, state: ImplicitState) -> torch.Tensor:
        return state[1] if state[1] is not None else field(self.time(t), state[0])

    def interpolate(self, state: ImplicitState, K: torch.Tensor, t0: float, t1: float, thetas) -> torch.Tensor:
        out = torch.addmm(state[0].reshape(1, -1), self._interp_weights(thetas), K, alpha=t1 - t0)
        return out.view(len(thetas), *self.shape)

    def _interp_weights(self, thetas) -> torch.Tensor:
        """The dense output's weights ``b_i(theta)``, one row per theta (computed on the host in float64)."""
        return torch.from_numpy(self._host_weights(thetas)).to(**self._opts)

    def _host_weights(self, thetas) -> np.ndarray:
        th = np.asarray(thetas, dtype=np.float64)
        return (th[:, None] ** self._interp_powers) @ self._interp_T

    def _flat_values(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` flat and without a graph (no operation where it already is)."""
        if x.requires_grad:
            x = x.detach()
        return x if self._flat else x.reshape(-1)

    @property
    def per_sample_time(self) -> bool:
        """Whether steps take per-sample times (:mod:`pyjode.per_sample`): with per-sample Jacobians."""
        return self.method.jacobian == "batch"

    def step(self, field, t0: float, t1: float, state: ImplicitState, control=None):
        if isinstance(t0, torch.Tensor):  # a step size per sample
            from .implicit_per_sample import per_sample_step

            return per_sample_step(self, field, t0, t1, state)
        y, f0 = state
        h = t1 - t0
        if field is not self._hook_of:  # looked up once per field, not per step
            self._hook_of, self._hook = field, find_blocks_hook(field)
        hook = self._hook
        grad = torch.is_grad_enabled()
        if grad:  # the iteration records no graph (module docstring); entered only when needed, as it costs
            with torch.no_grad():
                Z = self._newton(field, hook, t0, h, y, f0)
        else:
            Z = self._newton(field, hook, t0, h, y, f0)
        if isinstance(Z, _NewtonFailure):
            return self._failed(Z, t0, h, hook, state)
        if grad and (self._graph or y.requires_grad):
            Z = self._attach(field, hook, t0, h, y, f0, Z)
        K = self._slopes(h, y, f0, Z)
        y1 = self._solution(h, y, Z, K)
        err = None
        if self.adaptive:
            if grad:
                with torch.no_grad():
                    err = self._error(h, y, f0, Z, K)
            else:
                err = self._error(h, y, f0, Z, K)
        f1 = (K[-1] if self._flat else K[-1].view(self.shape)) if self.stiffly_accurate else None
        self._last = (t0, h, y, y1, K)
        return (y1, f1), err, K

    def _newton(self, field, hook, t0: float, h: float, y: torch.Tensor, f0):
        """The converged stages (without a graph; called with autograd off), retried once with a fresh
        Jacobian when the iteration fails with an old one; the failure itself when it fails with a fresh one."""
        scale = torch.abs(self._flat_values(y)).mul_(self.rtol).add_(self.atol)
        for _ in range(2):
            fresh = self._ensure_jacobian(field, hook, t0, y)
            try:
                guess = self._predict(t0, h, y)
                Z = self._stages_dirk(field, t0, h, y, f0, scale, guess) if self.dirk else \
                    self._stages_firk(field, t0, h, y, scale, guess)
                break
            except _NewtonFailure as failure:
                self.stats.newton_failures += 1
                if not fresh:
                    self.refresh = True
                    continue
                return failure
        if self.eta_rate > self.method.recompute_above:
            self.refresh = True
        return Z

    def _predict(self, t0: float, h: float, y: torch.Tensor):
        """Starting values of the stages, ``(s, n)``: the dense output of the last step evaluated at the
        stage times (extrapolated past an accepted step, interpolated inside a rejected one), as Hairer's
        RADAU5 does; ``None`` on the first step and after a jump. A fully implicit method gets them as
        increments ``Z - y``."""
        last = self._last
        if last is None:
            return None
        t_prev, h_prev, y_prev, y1_prev, K_prev = last
        if not (y is y1_prev or y is y_prev) or abs(h) > 4 * abs(h_prev):
            return None
        thetas = [(t0 + ci * h - t_prev) / h_prev for ci in self.c]
        K_prev = K_prev.detach() if K_prev.requires_grad else K_prev
        weights = self._host_weights(thetas)
        if not self.dirk:
            # the increments W = Z - y the fully implicit iteration works on, in one product: y's own
            # weights, b(1) after an accepted step (y = y_prev + h_prev b^T K), are subtracted on the host
            if y is y1_prev:
                weights = weights - self._weights_at_1
            return torch.mm(torch.from_numpy(weights * h_prev).to(**self._opts), K_prev)
        return torch.addmm(self._flat_values(y_prev), torch.from_numpy(weights).to(**self._opts), K_prev,
                           alpha=h_prev)

    # -- Newton ------------------------------------------------------------------------------------------------

    def _ensure_jacobian(self, field, hook, t0: float, y: torch.Tensor) -> bool:
        """Evaluate J at (t0, y) when asked to; returns whether the J in use is fresh at this point."""
        if self.blocks is None or self.refresh:
            self.blocks = self._blocks(field, hook, t0, y.detach().reshape(-1))
            self.jac_at, self.refresh, self.factors, self._factors_h = (t0, y), False, {}, None
            self._explicit_parts = any(J is None for _, _, J in self.blocks)
            return True
        return self.jac_at[0] == t0 and self.jac_at[1] is y

    def _blocks(self, field, hook, t: float, s: torch.Tensor):
        self.stats.jacobians += 1
        tt = self.time(t)
        if hook is not None:
            return hook(tt, s, self.method.jacobian)
        return [(0, self.n, field_jacobian(field, tt, s.view(self.shape), self.method.jacobian))]

    def _factors_for(self, h: float) -> dict:
        """The factorised Newton matrices of step size ``h`` (those of other step sizes are dropped: the
        loop keeps a step size while it can, see `hold_step`)."""
        if h != self._factors_h:
            self.factors, self._factors_h = {}, h
        return self.factors

    def _dirk_factors(self, h: float, g: float):
        """Factors of ``I - h g J``."""
        cache = self._factors_for(h)
        f = cache.get(g)
        if f is None:
            f = cache[g] = factor_dirk(self.blocks, h * g, self.stats)
        return f

    def _firk_factors(self, h: float):
        """Factors of ``I - h A ⊗ J``."""
        cache = self._factors_for(h)
        f = cache.get("A")
        if f is None:
            f = cache["A"] = factor_firk(self.blocks, self.A, h, self.stats)
        return f

    def _converged(self, k: int, nd: float, prev: float, t: float) -> bool:
        """Hairer's test on the k-th increment norm ``nd`` (``prev`` the one before)."""
        self.stats.newton_iterations += 1
        if not math.isfinite(nd):
            raise _NewtonFailure(t, math.inf)
        if k == 0:
            eta = max(self.eta, self.eps) ** 0.8
            self.eta_rate = 0.0
        else:
            theta = nd / prev if prev > 0 else 0.0
            self.eta_rate = theta
            if theta >= 1.0:
                raise _NewtonFailure(t, theta)
            eta = theta / (1.0 - theta)
        self._eta_now = eta
        kappa = max(self.method.kappa, 10 * self.eps / max(self.rtol, 1e-300))
        # A part with no Jacobian block (an integral such as the adjoints' a_θ) is explicit in the other
        # stages but updated from their previous iterate: one more iteration after the first makes it
        # consistent with converged ones.
        if k == 0 and self._explicit_parts:
            return False
        if eta * nd <= kappa or nd == 0.0:
            self.eta = eta
            return True
        return False

    def _scaled(self, dz: torch.Tensor, scale: torch.Tensor) -> float:
        """The size of a Newton increment: ``||dz / scale||`` for one stage, the largest over the stages
        ``(s, n)`` of a fully implicit method (one host synchronisation either way)."""
        x = dz / scale
        if self._rms:  # rms_norm of each stage at once
            if x.dim() == 1:
                return float(torch.linalg.vector_norm(x)) / self._sqrt_n
            return float(torch.linalg.vector_norm(x, dim=1).max()) / self._sqrt_n
        if x.dim() == 1:
            return float(self.norm(x.view(self.shape)))
        return float(torch.stack([self.norm(row.view(self.shape)) for row in x]).max())

    def _field_flat(self, field, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f(t, z) for a flat stage value ``z``, flat."""
        if self._flat:
            return field(t, z)
        return field(t, z.view(self.shape)).reshape(-1)

    def _stages_dirk(self, field, t0: float, h: float, y: torch.Tensor, f0, scale, predicted=None):
        """The converged stages z_i (flat, without a graph) of a diagonally implicit method."""
        y_flat = self._flat_values(y)
        f0 = None if f0 is None else f0.detach().reshape(-1)
        Z, K = [], []
        self.eta_rate = 0.0
        rate = 0.0
        for i in range(self.s):
            g = self.a[i][i]
            base = self._stage_base(i, h, y_flat, K)
            if g == 0:  # the explicit first stage
                Z.append(y_flat)
                K.append(f0)
                continue
            hg = h * g
            factors = self._dirk_factors(h, g)
            if predicted is not None:
                z = predicted[i]  # never changed in place: each iterate is a new tensor
            else:
                guess = K[-1] if K else f0
                z = torch.add(base, guess, alpha=hg) if guess is not None else base
            ti = self.time(t0 + self.c[i] * h)
            prev = 0.0
            for k in range(self.method.max_iters):
                # r = base + hg f(z) - z, in two operations
                r = torch.add(base, self._field_flat(field, ti, z), alpha=hg).sub_(z)
                dz = solve_dirk(factors, r)
                z = z + dz
                nd = self._scaled(dz, scale)
                if self._converged(k, nd, prev, t0):
                    break
                prev = nd
            else:
                raise _NewtonFailure(t0, self.eta_rate)
            rate = max(rate, self.eta_rate)
            Z.append(z)
            K.append((z - base) / hg)
        self.eta_rate = rate
        self._newton_slopes = (Z, K)
        return Z

    def _stages_firk(self, field, t0: float, h: float, y: torch.Tensor, scale, predicted=None):
        """The converged stage increments W = Z - y, ``(s, n)`` without a graph, of a fully implicit method."""
        y_flat = self._flat_values(y)
        factors = self._firk_factors(h)
        W = torch.zeros(self.s, self.n, **self._opts) if predicted is None else predicted
        times = [self.time(t0 + ci * h) for ci in self.c]
        prev = 0.0
        self.eta_rate = 0.0
        for k in range(self.method.max_iters):
            Y = (W + y_flat).unbind(0)
            if self._flat:
                F = torch.stack([field(ti, z) for ti, z in zip(times, Y)])
            else:
                F = torch.stack([field(ti, z.view(self.shape)).reshape(-1) for ti, z in zip(times, Y)])
            R = torch.addmm(W, self.A, F, beta=-1.0, alpha=h)  # -W + h (A ⊗ I) F
            dW = solve_firk(factors, R)
            W = W + dW
            nd = self._scaled(dW, scale)
            if self._converged(k, nd, prev, t0):
                return W
            prev = nd
        raise _NewtonFailure(t0, self.eta_rate)

    def _failed(self, failure: _NewtonFailure, t0: float, h: float, hook, state):
        where = "the backward (adjoint) solve" if hook is not None else "the solve"
        smallest = abs(h) <= 1e4 * self.eps * max(1.0, abs(t0))
        if not self.adaptive or smallest:
            what = f"the fixed step {h:.3g}" if not self.adaptive else f"the smallest step {h:.3g}"
            raise RuntimeError(
                f"{self.name}: Newton's iteration for the implicit stages did not converge at t={t0:.6g} in "
                f"{where}, with {what} and a fresh Jacobian (contraction rate {failure.rate:.3g} after "
                f"{self.method.max_iters} iterations at most). "
                + ("Try a smaller step_size or an adaptive method such as 'kvaerno5'. " if not self.adaptive else "")
                + ("A backward solve that re-solves y (state='resolve') is unstable for a stiff dissipative y: "
                   "use pyjode.Backsolve(state='stored', norm='rms'). " if hook is not None else "")
                + "Check the vector field for NaN, inf or a singularity there, use float64, or, if the batch "
                  "samples interact, jacobian='full'")
        err = torch.full((self.n,), math.inf, **self._opts)
        return state, err, None

    # -- from the stages to the step ---------------------------------------------------------------------------

    def _attach(self, field, hook, t0: float, h: float, y: torch.Tensor, f0, Z):
        """Put the converged stages on the graph by the implicit function theorem (module docstring)."""
        y_flat = y.reshape(-1)
        if self.dirk:
            out, K = [], []
            for i in range(self.s):
                g = self.a[i][i]
                base = self._stage_base(i, h, y_flat, K)
                if g == 0:
                    out.append(y_flat)
                    K.append(f0.reshape(-1))
                    continue
                zs = Z[i]
                ti = self.time(t0 + self.c[i] * h)
                fz = field(ti, zs.view(self.shape))
                if not fz.requires_grad and not y.requires_grad:
                    self._graph = False  # nothing to differentiate: the converged stages stand
                    return Z
                G = zs - base - (h * g) * fz.reshape(-1)
                if G.requires_grad:
                    blocks = self._blocks(field, hook, t0 + self.c[i] * h, zs)
                    correction = solve_dirk(factor_dirk(blocks, h * g, self.stats), G)
                    z = zs - (correction - correction.detach())  # its derivative only (module docstring)
                else:
                    z = zs
                out.append(z)
                K.append((z - base) / (h * g))
            return out
        Ws = Z
        Zs = [y_flat.detach() + Ws[i] for i in range(self.s)]
        F = torch.stack([field(self.time(t0 + self.c[i] * h), (y_flat + Ws[i]).view(self.shape)).reshape(-1)
                         for i in range(self.s)])
        G = Ws - h * (self.A @ F)
        if not G.requires_grad:
            self._graph = F.requires_grad
            return Ws
        per_stage = stage_jacobians([self._blocks(field, hook, t0 + self.c[i] * h, Zs[i]) for i in range(self.s)])
        factors = factor_firk(self.blocks, self.A, h, self.stats, per_stage=per_stage)
        correction = solve_firk(factors, G)
        return Ws - (correction - correction.detach())  # its derivative only (module docstring)

    def _stage_base(self, i: int, h: float, y_flat: torch.Tensor, K) -> torch.Tensor:
        """y + h sum_{j<i} a_ij k_j: the known part of a diagonally implicit stage i."""
        terms = self._base_terms[i]
        if len(terms) > 1:
            slopes = torch.stack([K[j] for j, _ in terms])
            return torch.addmv(y_flat, slopes.t(), self._base_weights[i], alpha=h)
        if terms:
            j, a = terms[0]
            return torch.add(y_flat, K[j], alpha=h * a)
        return y_flat

    def _slopes(self, h: float, y: torch.Tensor, f0, Z) -> torch.Tensor:
        """The stage slopes k_i, ``(s, n)``, from the stage equations (no further evaluations of f)."""
        if not self.dirk:
            return torch.mm(self.A_inv, Z).div_(h)
        if self._newton_slopes is not None and self._newton_slopes[0] is Z:  # the iteration's own, unchanged
            return torch.stack(self._newton_slopes[1])
        y_flat = y.reshape(-1)
        K = []
        for i in range(self.s):
            g = self.a[i][i]
            if g == 0:
                K.append(f0.reshape(-1))
                continue
            K.append((Z[i] - self._stage_base(i, h, y_flat, K)) / (h * g))
        return torch.stack(K)

    def _solution(self, h: float, y: torch.Tensor, Z, K: torch.Tensor) -> torch.Tensor:
        if self.stiffly_accurate:  # y1 is the last stage: no cancellation in h sum b_i k_i
            last = Z[-1] if self.dirk else (y if self._flat else y.reshape(-1)) + Z[-1]
            return last if self._flat else last.view(self.shape)
        return torch.addmv(y.reshape(-1), K.t(), self.b, alpha=h).view(self.shape)

    def _error(self, h: float, y: torch.Tensor, f0, Z, K: torch.Tensor) -> torch.Tensor:
        """The embedded estimate; for Radau IIA 5 the filtered ``(I - h gamma0 J)^{-1} v``. With ``A t =
        gamma0 t``, ``u A = gamma0 u`` and ``u t = 1``, ``(I - h A ⊗ J)(t ⊗ x) = t ⊗ (I - h gamma0 J) x``, so
        ``(I - h gamma0 J)^{-1} v = (u ⊗ I) (I - h A ⊗ J)^{-1} (t ⊗ v)``: the stages' factors, which the
        step already has, serve the estimate too (Hairer & Wanner's RADAU5 likewise reuses the real block
        of its transformed system), instead of a factorisation of its own every step. Called with autograd
        off."""
        if self.radau is None:
            return torch.mv(K.detach().t(), self.e).mul_(h)
        gamma0, e = self.radau
        Zd = torch.stack(Z) if self.dirk else Z
        Zd = Zd.detach() if Zd.requires_grad else Zd
        v = torch.addmv(self._flat_values(f0), Zd.t(), e, beta=gamma0 * h)  # e^T Z + gamma0 h f(t, y)
        if self.dirk:
            return solve_dirk(self._dirk_factors(h, gamma0), v)
        X = solve_firk(self._firk_factors(h), self._radau_right * v)  # (t ⊗ v) as (s, n)
        return torch.mv(X.t(), self._radau_left)
