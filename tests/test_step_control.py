"""StepControl: step_ts, jump_ts, min_step/max_step, its validation, and the lower-level pyjode.solve."""

from __future__ import annotations

import math

import pytest
import torch

import pyjode
from problems import GBM
from pyjode.integrate import integrate
from pyjode.runge_kutta import RungeKutta
from pyjode.sde import BrownianPath, PiecewiseLinearNoise, WongZakai
from pyjode.tableau import get_tableau

F64 = torch.float64
JUMP = 0.37


def piecewise_rate(t, y):
    """y' = r(t) with r = 1 before JUMP and -2 from JUMP on (right-continuous): y(t) is piecewise linear,
    so Euler is exact when its steps land on the jump and see each side of it."""
    return torch.where(t < JUMP, 1.0, -2.0) * torch.ones_like(y)


def piecewise_exact(t):
    return 0.5 + (t if t < JUMP else JUMP - 2.0 * (t - JUMP))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("direction", [1, -1])
def test_fixed_steps_on_jump_ts_are_exact_for_a_piecewise_constant_field(direction, dtype):
    ends = [0.0, 1.0][::direction]
    y0 = torch.tensor([piecewise_exact(ends[0])], dtype=dtype)
    t = torch.tensor(ends, dtype=dtype)
    with_jump = pyjode.odeint(piecewise_rate, y0, t, method="euler", step_size=0.1, jump_ts=[JUMP])
    without = pyjode.odeint(piecewise_rate, y0, t, method="euler", step_size=0.1)
    exact = piecewise_exact(ends[1])
    eps = torch.finfo(dtype).eps
    assert abs(float(with_jump[-1]) - exact) < 50 * eps
    assert abs(float(without[-1]) - exact) > 0.01  # a step straddling the jump sees one side only


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("direction", [1, -1])
def test_adaptive_jump_ts_resolve_a_kink_without_rejections(method, direction):
    ends = [0.0, 1.0][::direction]
    y0 = torch.tensor([piecewise_exact(ends[0])], dtype=F64)
    t = torch.tensor(ends, dtype=F64)
    with_jump, without = pyjode.Stats(), pyjode.Stats()
    ys = pyjode.odeint(piecewise_rate, y0, t, method=method, rtol=1e-9, atol=1e-9, jump_ts=[JUMP],
                       stats=with_jump)
    pyjode.odeint(piecewise_rate, y0, t, method=method, rtol=1e-9, atol=1e-9, stats=without)
    assert abs(float(ys[-1]) - piecewise_exact(ends[1])) < 1e-12
    assert with_jump.rejected_forward == 0 and without.rejected_forward > 5
    assert with_jump.nfe_forward < without.nfe_forward / 3


def test_step_ts_are_landed_on_and_change_nothing_else():
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    field = lambda t, y: y * torch.cos(t)  # noqa: E731
    stops = [0.31, 1.7, 2.05]
    run = integrate(RungeKutta(get_tableau("dopri5"), y0), field, y0, [0.0, 3.0],
                    pyjode.StepControl(rtol=1e-9, atol=1e-9, step_ts=stops + [5.0]), keep_times=True)
    assert all(s in run.times for s in stops) and 5.0 not in run.times
    exact = y0 * math.exp(math.sin(3.0))
    torch.testing.assert_close(run.ys[-1], exact, rtol=1e-7, atol=0)


def test_max_step_and_min_step():
    y0 = torch.tensor([1.0], dtype=F64)
    field = lambda t, y: -y  # noqa: E731
    run = integrate(RungeKutta(get_tableau("dopri5"), y0), field, y0, [0.0, 2.0],
                    pyjode.StepControl(rtol=1e-3, atol=1e-3, max_step=0.05), keep_times=True)
    widths = torch.tensor(run.times, dtype=F64).diff()
    assert float(widths.max()) <= 0.05 * (1 + 1e-12)
    with pytest.raises(RuntimeError, match="min_step=0.5 failed its error test"):
        pyjode.odeint(lambda t, y: torch.cos(40 * t) * y, y0, torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-10,
                      atol=1e-10, min_step=0.5)


@pytest.mark.parametrize("bad, match", [
    (dict(rtol=-1.0), "rtol must be a non-negative number"),
    (dict(rtol=0.0, atol=0.0), "cannot both be 0"),
    (dict(norm="rms"), "norm must be callable"),
    (dict(first_step=0.0), "first_step must be a positive number"),
    (dict(max_steps=0), "max_steps must be a positive integer"),
    (dict(min_step=0.2, max_step=0.1), "min_step <= max_step"),
    (dict(jump_ts=[0.1, float("nan")]), "jump_ts contains NaN"),
    (dict(step_ts="abc"), "step_ts must be a sequence"),
])
def test_step_control_validation_names_the_argument(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pyjode.StepControl(**bad)


def test_odeint_passes_step_options_through_every_adjoint():
    """jump_ts reach the backward solves too: gradients through a kink match the closed form."""
    a = torch.tensor(0.8, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def field(t, y):  # y' = a y before JUMP and -a y after: y(1) = exp(a (2 JUMP - 1))
        return torch.where(t < JUMP, 1.0, -1.0) * a * y

    exact = math.exp(0.8 * (2 * JUMP - 1)) * (2 * JUMP - 1)
    for adjoint in ["direct", "backsolve", "quadrature", pyjode.Quadrature(state="stored")]:
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, rtol=1e-10, atol=1e-10, jump_ts=[JUMP], adjoint=adjoint,
                           adjoint_params=[a], stats=stats)
        (g,) = torch.autograd.grad(ys[-1].sum(), a)
        assert abs(float(g) - exact) < 1e-8, (adjoint, float(g), exact)
        assert stats.rejected_forward == 0 and stats.rejected_backward == 0, (adjoint, stats)
    ys = pyjode.odeint(field, y0, t, method=pyjode.Reversible("tsit5", coupling=0.99), rtol=1e-10, atol=1e-10,
                       jump_ts=[JUMP], adjoint="reversible", adjoint_params=[a])
    (g,) = torch.autograd.grad(ys[-1].sum(), a)
    assert abs(float(g) - exact) < 1e-7


def test_wong_zakai_hands_its_kinks_to_the_solver():
    """With piecewise-linear noise the Wong–Zakai ODE of geometric Brownian motion solves to
    y0 exp(0.3 t + 0.8 W(t)) at every grid time, the Stratonovich solution on the same path. Before
    the grid was handed over as jump_ts, dopri5 straddled the kinks: 2047 steps and 2238 rejections
    for 128 intervals, with errors of 1.5e-5 to 4.7e-5 that did not fall as the grid was refined."""
    bm = BrownianPath(0.0, 1.0, (16, 1), seed=5, dtype=F64)
    y0 = torch.ones(16, 1, dtype=F64)
    w1 = bm.values(torch.tensor([0.0, 1.0], dtype=F64))[-1]
    exact = y0 * torch.exp(0.3 + 0.8 * w1)
    errors = []
    for intervals in (8, 32, 128):
        grid = torch.linspace(0, 1, intervals + 1, dtype=F64)
        field = WongZakai(GBM(mu=0.3), PiecewiseLinearNoise(bm, grid))
        assert field.jump_ts == tuple(grid.tolist())
        stats = pyjode.Stats()
        y1 = pyjode.odeint(field, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-8, atol=1e-8, stats=stats)[-1]
        errors.append(float((y1 - exact).abs().max()))
        # a few steps per smooth piece: 255 attempts for 128 intervals, against 4285 before
        assert stats.steps_forward + stats.rejected_forward <= 3 * intervals + 30, stats
    assert errors[0] > errors[1] > errors[2] and errors[0] < 1e-6, errors


def test_solve_returns_a_solution_with_a_differentiable_dense_output():
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    field = lambda t, y: torch.stack([-w * y[1], w * y[0]])  # noqa: E731  rotation at rate w
    sol = pyjode.solve(field, y0, [0.0, 2.0], rtol=1e-10, atol=1e-10, dense=True)
    assert isinstance(sol, pyjode.Solution) and sol.stats.steps_forward > 0
    torch.testing.assert_close(sol.ys, pyjode.odeint(field, y0, [0.0, 2.0], rtol=1e-10, atol=1e-10))
    ts = torch.tensor([0.1, 0.77, 1.5], dtype=F64)
    ys = sol.evaluate(ts)
    exact = torch.stack([torch.cos(w * ts), torch.sin(w * ts)], dim=-1)
    torch.testing.assert_close(ys, exact.detach(), rtol=0, atol=1e-8)
    (g,) = torch.autograd.grad(ys[:, 1].sum(), w)
    assert abs(float(g) - float((ts * torch.cos(1.3 * ts)).sum())) < 1e-7
    with pytest.raises(ValueError, match="span"):
        sol.evaluate(2.5)
    with pytest.raises(ValueError, match="dense=True"):
        pyjode.solve(field, y0, [0.0, 1.0]).evaluate(0.5)
    with pytest.raises(ValueError, match="adjoint='direct'"):
        pyjode.solve(field, y0, [0.0, 1.0], adjoint="backsolve", dense=True)
    with pytest.raises(TypeError, match="pyjode.solve"):
        pyjode.odeint(field, y0, [0.0, 1.0], dense=True)


@pytest.mark.parametrize("method", ["dopri5", "rk4", "sdirk2", "trbdf2", "radauIIA5", pyjode.Reversible("rk4")])
def test_a_single_output_time_takes_no_step(method):
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: -y, y0, torch.tensor([8.0], dtype=F64), method=method, stats=stats)
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0) and stats.steps_forward == 0
    (g,) = torch.autograd.grad(ys.sum(), y0)
    torch.testing.assert_close(g, torch.ones_like(y0))
