"""Accuracy of the PyTorch engine: convergence orders, tolerance proportionality, torchdiffeq parity and
exact gradients of a linear ODE."""

from __future__ import annotations

import math

import pytest
import torch

import pyjode
from problems import MLP, linear_exact_loss, linear_problem

F64 = torch.float64


def rotation_decay():
    """y' = M(t) y with M(t) = cos(t) * [[-0.5, 2], [-2, -0.5]]: y(t) = expm(sin(t) M0) y0 (M0 commutes
    with itself, so the time-varying coefficient integrates in closed form)."""
    M0 = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)

    def field(t, y):
        return torch.cos(t) * (y @ M0.T)

    def exact(t):
        return torch.linalg.matrix_exp(math.sin(t) * M0) @ y0

    return field, y0, exact


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(method, order):
    field, y0, exact = rotation_decay()
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    errors = []
    for h in (0.1, 0.05, 0.025):
        ys = pyjode.odeint(field, y0, t, method=method, step_size=h)
        errors.append(max(float((ys[i] - exact(float(t[i]))).norm()) for i in range(1, 3)))
    rates = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:])]
    assert all(abs(r - order) < 0.15 for r in rates), (errors, rates)


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_error_falls_with_tolerance(method):
    field, y0, exact = rotation_decay()
    t = torch.linspace(0, 3, 7, dtype=F64)
    ref = torch.stack([exact(float(ti)) for ti in t])
    errors, steps = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, method=method, rtol=tol, atol=tol, stats=stats)
        errors.append(float((ys - ref).abs().max()))
        steps.append(stats.steps_forward)
    # each 100x tighter tolerance cuts the global error by more than 10x, with more steps
    assert errors[1] < errors[0] / 10 and errors[2] < errors[1] / 10, errors
    assert steps[0] < steps[1] < steps[2]
    # and the error stays tolerance-proportional (global error of a well-conditioned problem)
    assert errors[2] < 100 * 1e-8, errors


# ----------------------------------------------------------------------------------------------------
# Parity with torchdiffeq.

def _torchdiffeq():
    return pytest.importorskip("torchdiffeq")


def _mlp_problem():
    func = MLP()
    y0 = torch.randn(4, 3, dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    return func, y0, t


def test_tight_solution_parity_with_torchdiffeq():
    torchdiffeq = _torchdiffeq()
    func, y0, t = _mlp_problem()
    with torch.no_grad():
        ours = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-12, atol=1e-13)
        theirs = torchdiffeq.odeint(func, y0, t, method="dopri5", rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-11)


def test_adaptive_parity_with_torchdiffeq():
    """At a loose tolerance both dopri5 solutions differ by a tolerance-level amount (the step-size
    controllers differ, so they do not agree to rounding)."""
    torchdiffeq = _torchdiffeq()
    func, y0, t = _mlp_problem()
    rtol, atol = 1e-6, 1e-8
    with torch.no_grad():
        ours = pyjode.odeint(func, y0, t, method="dopri5", rtol=rtol, atol=atol)
        theirs = torchdiffeq.odeint(func, y0, t, method="dopri5", rtol=rtol, atol=atol)
    assert float(((ours - theirs).abs() / (atol + rtol * ours.abs())).max()) < 50


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_global_error_is_tolerance_level(method):
    func, y0, t = _mlp_problem()
    rtol, atol = 1e-6, 1e-8
    with torch.no_grad():
        ref = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-12, atol=1e-13)
        ours = pyjode.odeint(func, y0, t, method=method, rtol=rtol, atol=atol)
    assert float(((ours - ref).abs() / (atol + rtol * ref.abs())).max()) < 5


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_fixed_step_parity_with_torchdiffeq(method):
    """Same tableau, same grid (the outputs fall on grid points): equal to rounding."""
    torchdiffeq = _torchdiffeq()
    func = MLP()
    y0 = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    with torch.no_grad():
        ours = pyjode.odeint(func, y0, t, method=method, step_size=0.125)
        theirs = torchdiffeq.odeint(func, y0, t, method=method, options=dict(step_size=0.125))
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)


def test_direct_gradient_parity_with_torchdiffeq():
    torchdiffeq = _torchdiffeq()
    func = MLP()
    y0 = torch.randn(4, 3, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    w = torch.randn(3, 4, 3, dtype=F64)

    def grads(solver):
        func.zero_grad()
        (solver(func, y0, t, method="dopri5", rtol=1e-10, atol=1e-12) * w).sum().backward()
        return [p.grad.clone() for p in func.parameters()]

    for g_ours, g_theirs in zip(grads(pyjode.odeint), grads(torchdiffeq.odeint)):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# Exact gradients of y' = A y.


@pytest.mark.parametrize("method, kwargs, tol", [
    ("dopri5", dict(rtol=1e-11, atol=1e-12), 1e-8),
    ("tsit5", dict(rtol=1e-11, atol=1e-12), 1e-8),
    ("rk4", dict(step_size=0.01), 1e-8),
])
def test_direct_gradient_linear_ode_is_exact(method, kwargs, tol):
    A, y0, t, w = linear_problem(scale=0.5, times=(0.0, 0.4, 1.1, 1.5))
    loss = (pyjode.odeint(lambda t, y: y @ A.T, y0, t, method=method, **kwargs) * w).sum()
    gA, gy0 = torch.autograd.grad(loss, (A, y0))
    exact = linear_exact_loss(A, y0, t, w)
    eA, ey0 = torch.autograd.grad(exact, (A, y0))
    torch.testing.assert_close(loss, exact, rtol=tol, atol=tol)
    torch.testing.assert_close(gA, eA, rtol=tol, atol=tol)
    torch.testing.assert_close(gy0, ey0, rtol=tol, atol=tol)


def test_direct_gradient_with_respect_to_times():
    """dy(t_i)/dt_i = A y(t_i) and d/dt_0 shifts the whole trajectory: compare with matrix_exp."""
    A, y0, t, w = linear_problem(scale=0.5, times=(0.0, 0.4, 1.1, 1.5))
    t = t.clone().requires_grad_()
    loss = (pyjode.odeint(lambda s, y: y @ A.T, y0, t, rtol=1e-11, atol=1e-12) * w).sum()
    (gt,) = torch.autograd.grad(loss, t)
    exact = (torch.stack([y0 @ torch.linalg.matrix_exp((ti - t[0]) * A).T for ti in t]) * w).sum()
    (et,) = torch.autograd.grad(exact, t)
    torch.testing.assert_close(gt, et, rtol=1e-8, atol=1e-8)
