"""One implicit Runge–Kutta step with a step size per sample, for the per-sample loop (:mod:`pyjode.per_sample`).

A batch of ``B`` independent problems with ``d`` elements each (``pyjode.Implicit(..., jacobian="batch")``):
sample ``b`` steps from ``t0[b]`` to ``t1[b]`` with its own ``h_b``, and every piece of the simplified Newton
iteration (Hairer & Wanner, *Solving ODEs II*, §IV.8) is taken per sample:

* the Jacobians ``J_b`` (``(B, d, d)``, one batched reverse-mode Jacobian, :func:`pyjode.newton.field_jacobian`);
* the Newton matrices ``I - h_b a_ii J_b`` of a diagonally implicit method and ``I - h_b A ⊗ J_b`` of a fully
  implicit one, LU-factorised as a batch each step (each sample's ``h_b`` changes every step);
* the convergence test ``eta_b ||dz_b|| <= kappa`` with each sample's own contraction rate
  ``theta_b = ||dz_b^k|| / ||dz_b^{k-1}||`` and ``eta_b = theta_b / (1 - theta_b)``; a converged sample stops
  changing while the others iterate. A sample whose iteration diverges (``theta_b >= 1``, a NaN) or runs out
  of iterations gets an infinite error estimate, so the loop rejects that sample's step alone (with a stale
  Jacobian the step is first retried with a fresh one); at the smallest step a ``RuntimeError`` says where;
* the stage predictor: each sample's dense output of its last step at the new stage times (as RADAU5 does);
* the error estimate: the embedded one, ``h_b sum_i e_i k_i``, or Radau IIA's filtered
  ``(I - h_b gamma0 J_b)^{-1} (gamma0 h_b f(t, y) + sum_i e_i (z_i - y))``;
* under autograd the converged stages are attached to the graph by one Newton step with the exact Jacobian
  of the stage equations (the implicit function theorem, as in :mod:`pyjode.implicit`), so the gradient is
  that of the discrete solution with every sample's steps held fixed.

A sample with ``h_b = 0`` (finished) stays where it is.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .newton import field_jacobian
from .norms import rms_norm
from .per_sample import per_sample_norm
from .tableau import _hermite_interp


class _Failed(Exception):
    pass


class PerSampleNewton:
    """The Newton state an :class:`~pyjode.implicit.ImplicitRungeKutta` stepper keeps across per-sample steps."""

    def __init__(self, stepper, B: int):
        tab = stepper.tableau
        opts = stepper._opts
        self.stepper, self.B, self.d = stepper, B, stepper.n // B
        self.s = tab.stages
        self.a = tab.a.tolist()
        self.c = [float(x) for x in tab.c]
        self.A = torch.as_tensor(tab.a, **opts)
        self.b = torch.as_tensor(tab.b, **opts)
        self.dirk = tab.diagonally_implicit
        self.A_inv = None if self.dirk else torch.linalg.inv(self.A)
        self.e = None if tab.b_error is None else torch.as_tensor(tab.b_error, **opts)
        self.radau = None if tab.radau_error is None else (float(tab.radau_error[0]),
                                                              torch.as_tensor(tab.radau_error[1], **opts))
        self.stiffly_accurate = tab.stiffly_accurate
        P = tab.interp if tab.interp is not None else _hermite_interp(tab.b, first=0, last=self.s - 1)
        self.P = torch.as_tensor(P, **opts)  # (s, m): b_j(theta) = sum_m P[j, m] theta^(m+1)
        self.opts = opts
        self.J: Optional[torch.Tensor] = None
        self.J_at = None  # (t, Y) where J was evaluated, per sample
        self.refresh = True
        self.eta = torch.ones(B, **opts)
        self.last = None  # (t0, h, Y, K) of the last step attempted, per sample

    # -- pieces ----------------------------------------------------------------------------------------------

    def jacobian(self, field, t: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        st = self.stepper
        st.stats.jacobians += 1
        shape, B, d = st.shape, self.B, self.d
        return field_jacobian(lambda tt, z: field(tt, z.reshape(shape)).reshape(B, d), st.time(t), Y, "batch")

    def ensure_jacobian(self, field, t0: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Evaluate J at (t0, Y) when asked to; returns per sample whether the J in use is fresh here."""
        if self.J is None or self.refresh:
            self.J = self.jacobian(field, t0, Y)
            self.J_at, self.refresh = (t0, Y), False
            return torch.ones(self.B, dtype=torch.bool, device=Y.device)
        tj, yj = self.J_at
        return (tj == t0) & (yj == Y).all(dim=1)

    def factor(self, M: torch.Tensor):
        self.stepper.stats.factorizations += 1
        return torch.linalg.lu_factor(M)

    @staticmethod
    def solve(factors, r: torch.Tensor) -> torch.Tensor:
        LU, piv = factors
        return torch.linalg.lu_solve(LU, piv, r.unsqueeze(-1)).squeeze(-1)

    def dirk_matrix(self, hg: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.d, **self.opts)
        return eye - hg.view(-1, 1, 1) * J

    def firk_matrix(self, h: torch.Tensor, Js: torch.Tensor) -> torch.Tensor:
        """``I - h_b [a_ij J_j]`` as ``(B, s d, s d)`` from stage Jacobians ``(B, s, d, d)``."""
        B, s, d = self.B, self.s, self.d
        M = self.A[None, :, None, :, None] * Js.permute(0, 2, 1, 3)[:, None, :, :, :]
        return torch.eye(s * d, **self.opts) - h.view(-1, 1, 1) * M.reshape(B, s * d, s * d)

    def firk_solve(self, factors, R: torch.Tensor) -> torch.Tensor:
        """Solve with the ``(B, s d, s d)`` factors for stage residuals ``R`` of shape ``(s, B, d)``."""
        s, B, d = R.shape
        x = self.solve(factors, R.permute(1, 0, 2).reshape(B, s * d))
        return x.reshape(B, s, d).permute(1, 0, 2)

    def scaled(self, dz: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Each sample's norm of ``dz`` (``(B, d)``, or ``(s, B, d)``: the largest over the stages)."""
        st = self.stepper
        if dz.dim() == 2:
            return per_sample_norm(st.norm, (dz / scale).reshape(st.shape))
        if st.norm is rms_norm:  # every stage's RMS at once, as per_sample_norm takes it
            return (torch.linalg.vector_norm(dz / scale, dim=2) / math.sqrt(self.d)).amax(0)
        return torch.stack([per_sample_norm(st.norm, (row / scale).reshape(st.shape)) for row in dz]).amax(0)

    def predict(self, t0: torch.Tensor, h: torch.Tensor, Y: torch.Tensor):
        """Starting stages ``(s, B, d)`` from each sample's last step's dense output at the new stage times, and
        the samples where that applies (a last step of nonzero length, the new step at most 4 times longer)."""
        if self.last is None:
            return None, None
        t_prev, h_prev, Y_prev, K_prev = self.last
        usable = (h_prev != 0) & (h != 0) & (h.abs() <= 4 * h_prev.abs())
        safe = torch.where(h_prev != 0, h_prev, torch.ones_like(h_prev))
        c = torch.tensor(self.c, dtype=torch.float64, device=t0.device)
        theta = ((t0[:, None] + c[None, :] * h[:, None] - t_prev[:, None]) / safe[:, None]).to(Y.dtype)  # (B, s)
        m = self.P.shape[1]
        powers = theta[..., None] ** torch.arange(1, m + 1, device=Y.device, dtype=Y.dtype)  # (B, s, m)
        W = torch.einsum("bim,jm->bij", powers, self.P)  # (B, s_new, s_old)
        Z = Y_prev[None] + safe.to(Y.dtype)[None, :, None] * torch.einsum("bij,jbd->ibd", W, K_prev)
        return Z, usable

    def converged(self, k: int, nd: torch.Tensor, prev: torch.Tensor, done: torch.Tensor, rate: torch.Tensor):
        """Hairer's test per sample on the k-th increment norms ``nd``; returns (converged, failed, rate)."""
        st = self.stepper
        st.stats.newton_iterations += 1
        eps = st.eps
        kappa = max(st.method.kappa, 10 * eps / max(st.rtol, 1e-300))
        if k == 0:
            eta = self.eta.clamp(min=eps) ** 0.8
            theta = torch.zeros_like(nd)
            failed = ~torch.isfinite(nd)
        else:
            theta = torch.where(prev > 0, nd / torch.where(prev > 0, prev, torch.ones_like(prev)),
                                torch.zeros_like(nd))
            failed = ~torch.isfinite(nd) | (theta >= 1.0)
            eta = theta / (1.0 - theta).clamp(min=eps)
        ok = ((eta * nd <= kappa) | (nd == 0)) & ~failed & ~done
        self.eta = torch.where(ok, eta, self.eta)
        rate = torch.where(done, rate, theta)
        return ok, failed & ~done, rate


def per_sample_step(stepper, field, t0: torch.Tensor, t1: torch.Tensor, state):
    """The per-sample step of ``stepper`` (an ``ImplicitRungeKutta`` with ``jacobian="batch"``); see the module."""
    y, f0 = state
    B = y.shape[0]
    ps = getattr(stepper, "_per_sample", None)
    if ps is None or ps.B != B:
        ps = stepper._per_sample = PerSampleNewton(stepper, B)
    d = ps.d
    h64 = t1 - t0
    h = h64.to(y.dtype)
    h_div = torch.where(h == 0, torch.ones_like(h), h)  # a finished sample's zero step divides nothing by zero
    Y = y.detach().reshape(B, d)
    F0 = None if f0 is None else f0.detach().reshape(B, d)
    with torch.no_grad():
        scale = (stepper.rtol * Y.abs()).add_(stepper.atol)
        for attempt in range(2):
            fresh = ps.ensure_jacobian(field, t0, Y)
            guess, usable = ps.predict(t0, h64, Y)
            if ps.dirk:
                Z, failed, rate = _stages_dirk(ps, stepper, field, t0, h64, h, Y, F0, scale, guess, usable)
            else:
                Z, failed, rate = _stages_firk(ps, stepper, field, t0, h64, h, Y, scale, guess, usable)
            bad = bool(failed.any())
            if bad:
                stepper.stats.newton_failures += 1
            if bad and attempt == 0 and not bool((fresh | ~failed).all()):
                ps.refresh = True  # a failure with an old Jacobian: retry the step with a fresh one
                continue
            break
        # a slow contraction asks for a fresh Jacobian at the next step (a failed sample's retry gets one anyway)
        if bool(((rate > stepper.method.recompute_above) & ~failed).any()):
            ps.refresh = True
        if bad:
            smallest = failed & (h64.abs() <= 1e4 * stepper.eps * t0.abs().clamp(min=1.0))
            if bool(smallest.any()):
                b = int(torch.nonzero(smallest)[0])
                raise RuntimeError(
                    f"{stepper.name}: Newton's iteration for the implicit stages of sample {b} did not converge at "
                    f"t={float(t0[b]):.6g}, with the smallest step {float(h64[b]):.3g} and a fresh Jacobian "
                    f"(contraction rate {float(rate[b]):.3g} after {stepper.method.max_iters} iterations at most). "
                    f"Check the vector field for NaN, inf or a singularity there, or use float64")
    if torch.is_grad_enabled():
        Z = _attach(ps, stepper, field, t0, h64, h, y, f0, Z)
    K = _slopes(ps, h, h_div, y.reshape(B, d), None if f0 is None else f0.reshape(B, d), Z)
    if ps.stiffly_accurate:
        y1 = (Z[-1] if ps.dirk else y.reshape(B, d) + Z[-1]).reshape(stepper.shape)
    else:
        y1 = (y.reshape(B, d) + h[:, None] * torch.einsum("i,ibd->bd", ps.b, K)).reshape(stepper.shape)
    with torch.no_grad():
        Kd = K.detach()
        if ps.radau is None:
            err = h[:, None] * torch.einsum("i,ibd->bd", ps.e, Kd)
        else:
            gamma0, e = ps.radau
            Zd = Z.detach() if not ps.dirk else torch.stack([z.detach() for z in Z])
            v = torch.einsum("i,ibd->bd", e, Zd) + (gamma0 * h)[:, None] * F0
            err = ps.solve(ps.factor(ps.dirk_matrix(gamma0 * h, ps.J)), v)
        err = torch.where(failed[:, None], torch.full_like(err, math.inf), err)
        # a failed sample's stages say nothing: its retry predicts from its last good step, as the scalar stepper does
        new = (t0, h64, Y, Kd)
        if ps.last is not None and bad:
            keep = failed
            new = tuple(torch.where(keep.view(-1, *([1] * (n.dim() - 1))) if n.dim() < 3 else keep[None, :, None],
                                    o, n) for n, o in zip(new, ps.last))
        ps.last = new
    f1 = K[-1].reshape(stepper.shape) if ps.stiffly_accurate else None
    return (y1, f1), err.reshape(stepper.shape), K


def _stage_base(ps, i: int, h: torch.Tensor, Y: torch.Tensor, K) -> torch.Tensor:
    """y + h sum_{j<i} a_ij k_j, per sample."""
    base = Y
    for j in range(i):
        if ps.a[i][j] != 0:
            base = base + (h * ps.a[i][j])[:, None] * K[j]
    return base


def _stages_dirk(ps, stepper, field, t0, h64, h, Y, F0, scale, predicted, usable):
    """The converged stages (a list of ``(B, d)``), the failed samples and the largest contraction rates."""
    B, d, shape = ps.B, ps.d, stepper.shape
    done = h == 0
    Z, K = [], []
    failed = torch.zeros(B, dtype=torch.bool, device=Y.device)
    rate_all = torch.zeros(B, dtype=Y.dtype, device=Y.device)
    factors = {}
    for i in range(ps.s):
        g = ps.a[i][i]
        base = _stage_base(ps, i, h, Y, K)
        if g == 0:
            Z.append(Y)
            K.append(F0)
            continue
        hg = h * g
        if g not in factors:
            factors[g] = ps.factor(ps.dirk_matrix(hg, ps.J))
        fac = factors[g]
        guess = K[-1] if K and K[-1] is not None else F0
        z = base + hg[:, None] * guess if guess is not None else base.clone()
        if predicted is not None:
            z = torch.where(usable[:, None], predicted[i], z)
        ti = stepper.time(t0 + ps.c[i] * h64)

        def update(conv, z):  # called within this stage only: the closure sees this stage's values
            r = base + hg[:, None] * field(ti, z.reshape(shape)).reshape(B, d) - z
            dz = torch.where(conv[:, None], torch.zeros_like(r), ps.solve(fac, r))
            return z + dz, ps.scaled(dz, scale)

        z, failed, rate = _iterate(ps, stepper, update, z, done | failed, failed)
        rate_all = torch.maximum(rate_all, rate)
        Z.append(z)
        K.append((z - base) / (torch.where(hg == 0, torch.ones_like(hg), hg))[:, None])
    return Z, failed, rate_all


def _stages_firk(ps, stepper, field, t0, h64, h, Y, scale, predicted, usable):
    """The converged stage increments ``W = Z - y`` (``(s, B, d)``), the failed samples, the contraction rates."""
    B, d, s, shape = ps.B, ps.d, ps.s, stepper.shape
    done = h == 0
    fac = ps.factor(ps.firk_matrix(h, ps.J.unsqueeze(1).expand(-1, s, -1, -1)))
    W = torch.zeros(s, B, d, dtype=Y.dtype, device=Y.device)
    if predicted is not None:
        W = torch.where(usable[None, :, None], predicted - Y[None], W)
    times = [stepper.time(t0 + ci * h64) for ci in ps.c]

    def update(conv, W):
        F = torch.stack([field(times[i], (Y + W[i]).reshape(shape)).reshape(B, d) for i in range(s)])
        R = h[None, :, None] * (ps.A @ F.reshape(s, -1)).view(s, B, d) - W
        dW = torch.where(conv[None, :, None], torch.zeros_like(R), ps.firk_solve(fac, R))
        return W + dW, ps.scaled(dW, scale)

    return _iterate(ps, stepper, update, W, done.clone(), torch.zeros(B, dtype=torch.bool, device=Y.device))


def _iterate(ps, stepper, update, x, conv, failed):
    """The per-sample simplified Newton iteration: ``x, nd = update(conv, x)`` applies one increment to the
    samples not yet done (``conv``: converged, failed, or not stepping) and returns the increments' scaled
    norms; iterate until every sample has converged or failed, a sample still iterating after ``max_iters``
    counting as failed. Returns ``(x, failed, contraction rates)``."""
    prev = torch.zeros(conv.shape[0], dtype=x.dtype, device=x.device)
    rate = torch.zeros_like(prev)
    for k in range(stepper.method.max_iters):
        x, nd = update(conv, x)
        ok, bad, rate = ps.converged(k, nd, prev, conv, rate)
        failed = failed | bad
        conv = conv | ok | bad
        if bool(conv.all()):
            break
        prev = nd
    else:
        failed = failed | ~conv
    return x, failed, rate


def _attach(ps, stepper, field, t0, h64, h, y, f0, Z):
    """Put the converged stages on the graph by the implicit function theorem, per sample."""
    B, d, s, shape = ps.B, ps.d, ps.s, stepper.shape
    Yg = y.reshape(B, d)
    if ps.dirk:
        out, K = [], []
        for i in range(s):
            g = ps.a[i][i]
            base = _stage_base(ps, i, h, Yg, K)
            if g == 0:
                out.append(Yg)
                K.append(f0.reshape(B, d))
                continue
            zs = Z[i]
            ti = t0 + ps.c[i] * h64
            hg = h * g
            fz = field(stepper.time(ti), zs.reshape(shape)).reshape(B, d)
            G = zs - base - hg[:, None] * fz
            if G.requires_grad:
                J = ps.jacobian(field, ti, zs)
                correction = ps.solve(ps.factor(ps.dirk_matrix(hg, J)), G)
                z = zs - (correction - correction.detach())
            else:
                z = zs
            out.append(z)
            K.append((z - base) / torch.where(hg == 0, torch.ones_like(hg), hg)[:, None])
        return out
    Zs = [Yg.detach() + Z[i] for i in range(s)]
    F = torch.stack([field(stepper.time(t0 + ps.c[i] * h64), (Yg + Z[i]).reshape(shape)).reshape(B, d)
                     for i in range(s)])
    G = Z - h[None, :, None] * torch.einsum("ij,jbd->ibd", ps.A, F)
    if not G.requires_grad:
        return Z
    Js = torch.stack([ps.jacobian(field, t0 + ps.c[i] * h64, Zs[i]) for i in range(s)], dim=1)
    correction = ps.firk_solve(ps.factor(ps.firk_matrix(h, Js)), G)
    return Z - (correction - correction.detach())


def _slopes(ps, h, h_div, Yg, F0g, Z) -> torch.Tensor:
    """The stage slopes ``(s, B, d)`` from the stage equations (no further evaluations)."""
    if not ps.dirk:
        return torch.einsum("ij,jbd->ibd", ps.A_inv, Z) / h_div[None, :, None]
    K = []
    for i in range(ps.s):
        g = ps.a[i][i]
        if g == 0:
            K.append(F0g)
            continue
        hg = h_div * g
        K.append((Z[i] - _stage_base(ps, i, h, Yg, K)) / hg[:, None])
    return torch.stack(K)
