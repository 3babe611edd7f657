"""A pure-Python stand-in for the Julia package PyJODE, for testing the Python half of the protocol.

It has the functions Python calls (``wrap``, ``make_field``, ``tableau_rowmajor`` and the five entry
points), receives every tensor as a DLPack capsule, and reaches the vector field only through
:class:`~pyjode._julia.field.TorchField`'s callbacks and shared buffers, as ``PyJODEPythonCallExt``
does. So it checks what Python owns: buffers and their layout, the row-major tableau, parameter sizes,
sign and weight conventions, and the autograd wiring.

It does not re-implement the algorithms: where Julia calls OrdinaryDiffEq, it runs the PyTorch
backend's own building blocks (the Runge–Kutta loop, its error norms, the quadrature adjoint's node
placement, the reversible solver), driven through the callbacks. Its numbers therefore agree with the
PyTorch backend to rounding for fixed-step methods, and tell nothing about the Julia code itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..adjoints.quadrature import _NodeCollector
from ..integrate import Counter, integrate
from ..norms import PartsNorm, rms_norm
from ..reversible import Reversible
from ..runge_kutta import RungeKutta
from ..step_control import StepControl
from ..tableau import ButcherTableau, get_tableau
from ..trajectory import TrajectoryRecorder

__all__ = ["StandInPyJODE", "backsolve_norm"]


def backsolve_norm(n: int, param_sizes: Sequence[int], norm: str) -> PartsNorm:
    """The backsolve error norm: PyJODE's ``seminorm``/``fullnorm``, the PyTorch backend's ``Backsolve``."""
    if norm not in ("seminorm", "rms"):
        raise ValueError(f'norm="{norm}" is not known; choose "seminorm" or "rms"')
    return PartsNorm([n, n, *param_sizes], include=[0, 1] if norm == "seminorm" else None)


class _Field:
    """``PyField``: the same buffers, copies and callback calls, with the PyTorch backend's ``f(t, y)``
    calling convention so that its building blocks can drive it."""

    def __init__(self, field: Any, param_sizes, tbuf, Tbuf, wbuf, ubuf, dubuf, abuf, dabuf, Ubuf, Abuf, gpbuf):
        self.cb = field
        self.param_sizes = tuple(int(s) for s in param_sizes)
        if sum(self.param_sizes) != gpbuf.numel():
            raise ValueError(f"param_sizes {self.param_sizes} do not add up to the {gpbuf.numel()} entries of gpbuf")
        self.tbuf, self.Tbuf, self.wbuf = tbuf, Tbuf, wbuf
        self.ubuf, self.dubuf, self.abuf, self.dabuf, self.gpbuf = ubuf, dubuf, abuf, dabuf, gpbuf
        n = ubuf.numel()
        # Julia's reshape(Ubuf, n, :) column k is row k of the (K, n) PyTorch buffer.
        self.U, self.A = Ubuf.view(-1, n), Abuf.view(-1, n)

    def _set(self, t, u, a=None):
        self.ubuf.copy_(u.reshape(-1))
        if a is not None:
            self.abuf.copy_(a.reshape(-1))
        self.tbuf[0] = float(t)

    def rhs(self, t, u):
        self._set(t, u)
        self.cb.rhs()
        return self.dubuf.clone().view(u.shape)

    def vjp_state(self, t, u, a):
        self._set(t, u, a)
        self.cb.vjp_state()
        return self.dubuf.clone(), self.dabuf.clone()

    def vjp_all(self, t, u, a):
        self._set(t, u, a)
        self.cb.vjp_all()
        return self.dubuf.clone(), self.dabuf.clone(), self.gpbuf.clone()

    def params_vjp(self, T, U, A, W) -> torch.Tensor:
        """Σ_j W_j A_jᵀ ∂f/∂θ(T_j, U_j), staged through the node buffers as many at a time as they hold."""
        total = torch.zeros_like(self.gpbuf)
        cap = self.Tbuf.numel()
        for s in range(0, len(T), cap):
            k = min(cap, len(T) - s)
            self.U[:k].copy_(U[s:s + k].reshape(k, -1))
            self.A[:k].copy_(A[s:s + k].reshape(k, -1))
            self.Tbuf[:k].copy_(torch.as_tensor(T[s:s + k], dtype=torch.float64))
            self.wbuf[:k].copy_(torch.as_tensor(W[s:s + k], dtype=torch.float64))
            self.cb.vjp_params(k)
            total += self.gpbuf
        return total


def _counts(c: Counter):
    return (c.nfe, c.steps, c.rejected)


def _integrate(func, y0, ts, tableau, *, rtol, atol, step_size, max_steps, counter, on_step=None, norm=rms_norm,
               first_step=None):
    """The torch backend's loop with the settings of one Julia call; returns the states at ``ts``."""
    control = StepControl(rtol=rtol, atol=atol, step_size=step_size or None, max_steps=max_steps, norm=norm,
                          first_step=first_step)
    return integrate(RungeKutta(tableau, y0), func, y0, ts, control, counter=counter, on_step=on_step).ys


class StandInPyJODE:
    """The functions of the Julia module ``PyJODE`` that pyjode calls, in Python."""

    API_VERSION = 2

    @staticmethod
    def wrap(capsule, owner):
        view = torch.from_dlpack(capsule)
        if view.data_ptr() != owner.data_ptr() or view.dim() != 1:
            raise AssertionError("the capsule must export its owner, flat")
        return view

    @staticmethod
    def make_field(field, param_sizes, *buffers):
        return _Field(field, param_sizes, *buffers)

    @staticmethod
    def tableau_rowmajor(aflat, b, c):
        s = b.numel()
        # ButcherTableau checks a strictly lower triangular with row sums c: a column-major a fails.
        return ButcherTableau(name="from Python", c=c.tolist(), a=aflat.view(s, s).tolist(), b=b.tolist(), order=1)

    @staticmethod
    @torch.no_grad()
    def forward_b(F, y0, ts, out, *, method, rtol, atol, step_size, max_steps, keep=False):
        counter, recorder = Counter(), (TrajectoryRecorder() if keep else None)
        ys = _integrate(F.rhs, y0.clone(), ts.tolist(), get_tableau(method), counter=counter, on_step=recorder,
                        rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps)
        out.view(len(ys), -1).copy_(torch.stack(ys).reshape(len(ys), -1))
        if not keep:
            return _counts(counter)
        return (*_counts(counter), recorder.finish(F.rhs, float(ts[-1]), ys[-1]))

    @staticmethod
    @torch.no_grad()
    def quadrature_adjoint_b(F, ys, ts, gys, gy0, gtheta, *, method, rtol, atol, step_size, max_steps, nodes,
                             forward=None):
        tab, n, N = get_tableau(method), gy0.numel(), ts.numel()
        Y, G, tsl = ys.view(N, n), gys.view(N, n), ts.tolist()
        stored = forward is not None
        counter = Counter()
        gtheta.zero_()

        def consume(T, S, W):  # the PyTorch backend's nodes, through the Julia-side staging
            U, A = (forward(T).reshape(len(T), n), S) if stored else (S[:, :n], S[:, n:])
            gtheta.add_(F.params_vjp(T.tolist(), U, A, W.tolist()))
            counter.nfe += len(T)

        if stored:
            def field(t, a):
                return -F.vjp_state(t, forward(t).reshape(-1), a)[1]
        else:
            def field(t, s):
                du, ua = F.vjp_state(t, s[:n], s[n:])
                return torch.cat([du, -ua])

        xi, wq = np.polynomial.legendre.leggauss(nodes)
        collector = _NodeCollector(tab, (1 + xi) / 2, wq / 2, gy0, None, consume, F.Tbuf.numel())
        norm = rms_norm if stored else PartsNorm([n, n])
        a = G[N - 1].clone()
        for i in range(N - 1, 0, -1):
            s = a if stored else torch.cat([Y[i], a])
            s = _integrate(field, s, [tsl[i], tsl[i - 1]], tab, counter=counter, on_step=collector,
                           first_step=collector.last_h if tab.adaptive else None, norm=norm,
                           rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps)[-1]
            collector.close_interval(field, counter)
            a = (s if stored else s[n:]) + G[i - 1]
        collector.flush()
        gy0.copy_(a)
        return _counts(counter)

    @staticmethod
    @torch.no_grad()
    def backsolve_adjoint_b(F, ys, ts, gys, gy0, gtheta, *, method, rtol, atol, step_size, max_steps, norm):
        tab, n, N = get_tableau(method), gy0.numel(), ts.numel()
        errnorm = backsolve_norm(n, F.param_sizes, norm)
        Y, G, tsl = ys.view(N, n), gys.view(N, n), ts.tolist()
        counter = Counter()

        def field(t, z):
            du, ua, up = F.vjp_all(t, z[:n], z[n:2 * n])
            return torch.cat([du, -ua, -up])

        z = torch.cat([Y[N - 1], G[N - 1], torch.zeros_like(gtheta)])
        for i in range(N - 1, 0, -1):
            z[:n] = Y[i]
            z = _integrate(field, z, [tsl[i], tsl[i - 1]], tab, norm=errnorm, counter=counter,
                           rtol=rtol, atol=atol, step_size=step_size, max_steps=max_steps)[-1].clone()
            z[n:2 * n] += G[i - 1]
        gy0.copy_(z[n:2 * n])
        gtheta.copy_(z[2 * n:])
        return _counts(counter)

    @staticmethod
    @torch.no_grad()
    def reversible_forward_b(F, y0, ts, out, zout, *, tableau, step_size, coupling):
        counter = Counter()
        y0 = y0.clone()
        sol = integrate(Reversible(tableau, coupling).stepper(y0), F.rhs, y0, ts.tolist(),
                        StepControl(step_size=step_size), counter=counter)
        out.view(len(sol.ys), -1).copy_(torch.stack(sol.ys))
        zout.copy_(sol.state[1])
        s = tableau.stages
        return (2 * s * counter.steps, counter.steps, 0)

    @staticmethod
    def _step(F, tab, t, h, x):
        """Φ_h(t, x) of reversible.jl's ``rk_step!``, keeping the stage inputs."""
        Ys, Ks = [], []
        for i in range(tab.stages):
            y = x.clone()
            for j in range(i):
                if tab.a[i, j] != 0.0:
                    y += (h * tab.a[i, j]) * Ks[j]
            Ys.append(y)
            Ks.append(F.rhs(t + tab.c[i] * h, y))
        out = x.clone()
        for i in range(tab.stages):
            out += (h * tab.b[i]) * Ks[i]
        return out, Ys

    @classmethod
    def _step_vjp(cls, F, tab, sign, gtheta, t, h, x, v):
        """reversible.jl's ``rk_step_vjp!``: one ``vjp_state`` per stage, last first, and one batched
        parameter VJP over all stages with weight ``sign``."""
        out, Ys = cls._step(F, tab, t, h, x)
        s = tab.stages
        Ybar, xbar, T, A = [None] * s, v.clone(), [0.0] * s, [None] * s
        for i in range(s - 1, -1, -1):
            kbar = (h * tab.b[i]) * v
            for j in range(i + 1, s):
                if tab.a[j, i] != 0.0:
                    kbar = kbar + (h * tab.a[j, i]) * Ybar[j]
            T[i], A[i] = t + tab.c[i] * h, kbar
            _, Ybar[i] = F.vjp_state(T[i], Ys[i], kbar)
            xbar += Ybar[i]
        gtheta.add_(F.params_vjp(T, torch.stack(Ys), torch.stack(A), [float(sign)] * s))
        return out, xbar

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
            m = max(1, int(np.ceil(abs(tsl[i] - tsl[i - 1]) / step_size - 1e-9)))
            h = (tsl[i] - tsl[i - 1]) / m
            for j in range(m - 1, -1, -1):
                t0 = tsl[i - 1] + j * h
                t1 = tsl[i] if j == m - 1 else t0 + h
                s1, xbar = cls._step_vjp(F, tab, -1, gtheta, t1, -h, y, zbar)
                z = z - y + s1
                ybar = ybar + zbar - xbar
                s2, xbar = cls._step_vjp(F, tab, 1, gtheta, t0, h, z, ybar)
                y = (y - s2) / lam + z
                zbar = zbar - lam * ybar + xbar
                ybar = lam * ybar
            total += m
            ybar = ybar + G[i - 1]
        gy0.copy_(ybar + zbar)
        return (6 * tab.stages * total, total, 0)
