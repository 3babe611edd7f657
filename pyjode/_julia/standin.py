"""A pure-Python stand-in for the Julia package PyJODE, for checking the Python half of the protocol.

It exposes the functions Python calls (``wrap``, ``make_field``, ``tableau_rowmajor``, ``forward_b``,
``quadrature_adjoint_b``, ``backsolve_adjoint_b``, ``reversible_forward_b``, ``reversible_adjoint_b``)
with the Julia signatures, receives tensors as DLPack capsules exactly as Julia does, drives the
callbacks of :class:`~pyjode._julia.field.TorchField` only through the shared buffers, and follows
the Julia code line for line (``julia/PyJODE/src``): same restarts, node placement, weights and signs.
Where Julia calls OrdinaryDiffEq, it calls pyjode's own Runge–Kutta loop, so its results can be
compared with the PyTorch backend to rounding. It is a test tool, not a backend.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any, Tuple

import numpy as np
import torch

from ..integrate import Counter, integrate
from ..norms import rms_norm
from ..runge_kutta import RungeKutta
from ..step_control import StepControl
from ..norms import PartsNorm
from ..tableau import get_tableau
from ..trajectory import TrajectoryRecorder

__all__ = ["StandInPyJODE"]

API_VERSION = 1

Tableau = namedtuple("Tableau", "a b c")


class StandInField:
    """``PyField`` of pyfield.jl: the same buffers, copies and callback calls."""

    def __init__(self, field: Any, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf):
        self.py_rhs, self.py_vjp_state = field.rhs, field.vjp_state
        self.py_vjp_all, self.py_vjp_params = field.vjp_all, field.vjp_params
        self.tbuf, self.Tbuf, self.wbuf = tbuf, Tbuf, wbuf
        self.ubuf, self.dubuf, self.abuf, self.dabuf, self.gpbuf = ubuf, dubuf, abuf, dabuf, gpbuf
        n = ubuf.numel()
        # Julia's reshape(Ubuf, n, :) column k is PyTorch's row k of the (K, n) buffer.
        self.U, self.A = Ubuf.view(-1, n), Abuf.view(-1, n)

    def rhs(self, u, t):
        self.ubuf.copy_(u)
        self.tbuf[0] = t
        self.py_rhs()
        return self.dubuf.clone()

    def vjp_state(self, u, a, t):
        self.ubuf.copy_(u)
        self.abuf.copy_(a)
        self.tbuf[0] = t
        self.py_vjp_state()
        return self.dubuf.clone(), self.dabuf.clone()

    def vjp_all(self, u, a, t):
        self.ubuf.copy_(u)
        self.abuf.copy_(a)
        self.tbuf[0] = t
        self.py_vjp_all()
        return self.dubuf.clone(), self.dabuf.clone(), self.gpbuf.clone()

    def vjp_params(self, k: int):
        if k > self.Tbuf.numel():
            raise ValueError(f"this field stages at most {self.Tbuf.numel()} points per parameter VJP, {k} were asked for")
        self.py_vjp_params(k)
        return self.gpbuf.clone()

    def nparams(self) -> int:
        return self.gpbuf.numel()


def _counts(c: Counter) -> Tuple[int, int, int]:
    return (c.nfe, c.steps, c.rejected)


def _nsteps(ta: float, tb: float, step_size: float) -> int:
    return max(1, math.ceil(abs(tb - ta) / step_size - 1e-9))


def _hermite(y0, y1, f0, f1, h: float, theta: float):
    """Cubic Hermite interpolation on a step of size h from (y0, f0) to (y1, f1)."""
    return ((1 - theta) * y0 + theta * y1
            + theta * (theta - 1) * ((1 - 2 * theta) * (y1 - y0) + (theta - 1) * h * f0 + theta * h * f1))


def _substep(ta: float, tb: float, m: int, j: int):
    h = (tb - ta) / m
    t = ta + j * h
    return t, (tb if j == m - 1 else t + h), h


class StandInPyJODE:
    """The functions of the Julia module ``PyJODE`` that pyjode calls, in Python."""

    API_VERSION = API_VERSION

    @staticmethod
    def wrap(capsule):
        return torch.from_dlpack(capsule)

    @staticmethod
    def make_field(field, *buffers):
        return StandInField(field, *buffers)

    @staticmethod
    def tableau_rowmajor(aflat, b, c):
        s = b.numel()
        return Tableau(aflat.view(s, s).clone(), b.tolist(), c.tolist())

    # forward.jl

    @staticmethod
    @torch.no_grad()
    def forward_b(F, y0, ts, out, *, method, rtol, atol, step_size, max_steps, keep=False):
        n, N = y0.numel(), ts.numel()
        Y = out.view(N, n)
        counter = Counter()
        recorder = TrajectoryRecorder() if keep else None
        rhs = lambda t, u: F.rhs(u, float(t))  # noqa: E731
        ys = _integrate(rhs, y0.clone(), ts.tolist(), get_tableau(method), rtol=rtol, atol=atol,
                       step_size=step_size or None, max_steps=max_steps, counter=counter, on_step=recorder)
        for i, y in enumerate(ys):
            Y[i].copy_(y)
        if not keep:
            return _counts(counter)
        # One dense solution covers every interval here (Julia keeps one per fixed-step interval).
        return (*_counts(counter), recorder.finish(rhs, float(ts[-1]), ys[-1]))

    # quadrature.jl

    @staticmethod
    @torch.no_grad()
    def quadrature_adjoint_b(F, ys, ts, gys, gy0, gtheta, *, method, rtol, atol, step_size, max_steps, nodes,
                             forward=None):
        tab = get_tableau(method)
        n, N = gy0.numel(), ts.numel()
        Y, G, tsl = ys.view(N, n), gys.view(N, n), ts.tolist()
        K = nodes if nodes > 0 else math.ceil((tab.order + 1) / 2)
        x, w = np.polynomial.legendre.leggauss(K)
        stored = forward is not None
        state = torch.empty(n if stored else 2 * n, dtype=gy0.dtype, device=gy0.device)
        a = state if stored else state[n:]
        a.copy_(G[N - 1])
        gtheta.zero_()
        counter = Counter()
        opts = dict(dtype=gy0.dtype, device=gy0.device)

        def u_at(t: float):
            return forward(torch.full((), t, **opts)).reshape(-1)

        def adjoint_rhs(t, zz):
            if stored:
                _, ua = F.vjp_state(u_at(float(t)), zz, float(t))
                return -ua
            du, ua = F.vjp_state(zz[:n], zz[n:], float(t))
            return torch.cat([du, -ua])

        def on_step(ta, tb, z0, z1, Kst, stepper):
            half, mid, h = (tb - ta) / 2, (ta + tb) / 2, tb - ta
            # Methods without their own continuous extension get cubic Hermite, as in OrdinaryDiffEq.
            f1 = adjoint_rhs(tb, z1) if tab.interp is None else None
            for k in range(K):
                tau = mid + half * x[k]
                if f1 is None:
                    zk = stepper.dense(z0, Kst, h, (tau - ta) / h)
                else:
                    zk = _hermite(z0, z1, Kst[0].view(z0.shape), f1, h, (tau - ta) / h)
                if stored:
                    F.U[k].copy_(u_at(tau))
                    F.A[k].copy_(zk)
                else:
                    F.U[k].copy_(zk[:n])
                    F.A[k].copy_(zk[n:])
                F.Tbuf[k] = tau
                F.wbuf[k] = -half * w[k]
            gtheta.add_(F.vjp_params(K))
            counter.nfe += K

        norm = {} if stored else {"norm": PartsNorm([n, n])}
        for i in range(N - 1, 0, -1):
            if not stored:
                state[:n] = Y[i]
            zs = _integrate(adjoint_rhs, state.clone(), [tsl[i], tsl[i - 1]], tab, rtol=rtol, atol=atol,
                           step_size=step_size or None, max_steps=max_steps, counter=counter, on_step=on_step,
                           **norm)
            state.copy_(zs[-1])
            a += G[i - 1]
        gy0.copy_(a)
        return _counts(counter)

    # backsolve.jl

    @staticmethod
    @torch.no_grad()
    def backsolve_adjoint_b(F, ys, ts, gys, gy0, gtheta, *, method, rtol, atol, step_size, max_steps, norm):
        tab = get_tableau(method)
        n, N, P = gy0.numel(), ts.numel(), F.nparams()
        if norm == "seminorm":
            errnorm = PartsNorm([n, n, P], include=[0, 1])
        elif norm == "rms":
            errnorm = PartsNorm([n, n, P])
        else:
            raise ValueError(f'norm="{norm}" is not known; choose "seminorm" or "rms"')
        Y, G, tsl = ys.view(N, n), gys.view(N, n), ts.tolist()
        z = torch.zeros(2 * n + P, dtype=gy0.dtype, device=gy0.device)
        z[n:2 * n] = G[N - 1]
        counter = Counter()

        def backsolve_rhs(t, zz):
            du, ua, up = F.vjp_all(zz[:n], zz[n:2 * n], float(t))
            return torch.cat([du, -ua, -up])

        for i in range(N - 1, 0, -1):
            z[:n] = Y[i]
            zs = _integrate(backsolve_rhs, z.clone(), [tsl[i], tsl[i - 1]], tab, rtol=rtol, atol=atol,
                           step_size=step_size or None, max_steps=max_steps, norm=errnorm, counter=counter)
            z.copy_(zs[-1])
            z[n:2 * n] += G[i - 1]
        gy0.copy_(z[n:2 * n])
        gtheta.copy_(z[2 * n:])
        return _counts(counter)

    # reversible.jl

    @staticmethod
    def _rk_step(F, tab, t, h, x):
        s = len(tab.b)
        Ystage, Kstage = [], []
        for i in range(s):
            yi = x.clone()
            for j in range(i):
                aij = float(tab.a[i, j])
                if aij != 0.0:
                    yi += (h * aij) * Kstage[j]
            Ystage.append(yi)
            Kstage.append(F.rhs(yi, t + tab.c[i] * h))
        out = x.clone()
        for i in range(s):
            if tab.b[i] != 0.0:
                out += (h * tab.b[i]) * Kstage[i]
        return out, Ystage

    @classmethod
    def _rk_step_vjp(cls, F, tab, sign, gtheta, t, h, x, v):
        out, Ystage = cls._rk_step(F, tab, t, h, x)
        s = len(tab.b)
        Ybar = [None] * s
        xbar = v.clone()
        for i in range(s - 1, -1, -1):
            kbar = (h * tab.b[i]) * v
            for j in range(i + 1, s):
                aji = float(tab.a[j, i])
                if aji != 0.0:
                    kbar = kbar + (h * aji) * Ybar[j]
            ti = t + tab.c[i] * h
            F.U[i].copy_(Ystage[i])
            F.A[i].copy_(kbar)
            F.Tbuf[i] = ti
            F.wbuf[i] = sign
            _, Ybar[i] = F.vjp_state(Ystage[i], kbar, ti)
            xbar += Ybar[i]
        gtheta.add_(F.vjp_params(s))
        return out, xbar

    @classmethod
    @torch.no_grad()
    def reversible_forward_b(cls, F, y0, ts, out, zout, *, tableau, step_size, coupling):
        lam, tab = coupling, tableau
        n, N, tsl = y0.numel(), ts.numel(), ts.tolist()
        Y = out.view(N, n)
        Y[0].copy_(y0)
        y, z = y0.clone(), y0.clone()
        total = 0
        for i in range(1, N):
            m = _nsteps(tsl[i - 1], tsl[i], step_size)
            for j in range(m):
                t, t1, h = _substep(tsl[i - 1], tsl[i], m, j)
                phi, _ = cls._rk_step(F, tab, t, h, z)
                y = lam * (y - z) + phi
                phi, _ = cls._rk_step(F, tab, t1, -h, y)
                z = z + y - phi
            total += m
            Y[i].copy_(y)
        zout.copy_(z)
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"the reversible solve became NaN or inf with step_size={step_size}; try a smaller "
                               "step_size, a smaller coupling, or float64")
        return (2 * len(tab.b) * total, total, 0)

    @classmethod
    @torch.no_grad()
    def reversible_adjoint_b(cls, F, ys, zN, ts, gys, gy0, gtheta, *, tableau, step_size, coupling):
        lam, tab = coupling, tableau
        n, N, tsl = gy0.numel(), ts.numel(), ts.tolist()
        Y, G = ys.view(N, n), gys.view(N, n)
        y, z = Y[N - 1].clone(), zN.clone()
        ybar, zbar = G[N - 1].clone(), torch.zeros_like(gy0)
        gtheta.zero_()
        total = 0
        for i in range(N - 1, 0, -1):
            m = _nsteps(tsl[i - 1], tsl[i], step_size)
            for j in range(m - 1, -1, -1):
                t, t1, h = _substep(tsl[i - 1], tsl[i], m, j)
                s1, xbar = cls._rk_step_vjp(F, tab, -1.0, gtheta, t1, -h, y, zbar)
                z = z - y + s1
                ybar = ybar + zbar - xbar
                s2, xbar = cls._rk_step_vjp(F, tab, 1.0, gtheta, t, h, z, ybar)
                y = (y - s2) / lam + z
                zbar = zbar - lam * ybar + xbar
                ybar = lam * ybar
            total += m
            ybar = ybar + G[i - 1]
        gy0.copy_(ybar + zbar)
        return (6 * len(tab.b) * total, total, 0)


def _integrate(func, y0, ts, tableau, *, rtol, atol, step_size, max_steps, counter, on_step=None, norm=rms_norm):
    """The torch backend's loop with the settings of one Julia call."""
    control = StepControl(rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps, norm=norm)
    return integrate(RungeKutta(tableau, y0), func, y0, ts, control, counter=counter, on_step=on_step).ys
