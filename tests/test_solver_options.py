"""Step options of pyjode.solve: fixed steps on the output times, perturb, norm and controller, step
callbacks, and SciPy solvers; each checked against what it must do, not only that it runs."""

from __future__ import annotations


import pytest
import torch

import pyjode

F64 = torch.float64


def linear_problem(dtype=F64):
    A = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=dtype)
    return A, torch.tensor([1.0, 0.5], dtype=dtype)


def test_perturb_evaluates_inside_every_step_and_sees_each_side_of_a_jump():
    # f = -y before t = 0.5 and +y from 0.5 on: with steps ending on 0.5 and perturb, every stage sees
    # its own step's side, so Euler gives exactly (1 - h)^5 (1 + h)^5.
    seen = []

    def f(t, y):
        seen.append(float(t))
        return -y if t < 0.5 else y

    h = 0.1
    ys = pyjode.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="euler",
                       step_size=h, perturb=True)
    assert abs(float(ys[-1]) - (1 - h) ** 5 * (1 + h) ** 5) < 1e-13
    grid = [k / 10 for k in range(11)]
    assert all(min(abs(s - g) for g in grid) > 0 for s in seen)  # never on a step end
    assert all(min(abs(s - g) for g in grid) < 1e-15 for s in seen)  # but next to one
    seen.clear()
    pyjode.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="euler", step_size=h)
    assert 0.5 in seen


@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature"])
def test_perturb_reaches_the_backward_solve(adjoint):
    seen = []
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def f(t, y):
        seen.append(float(t))
        return -p * y

    ys = pyjode.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="rk4", step_size=0.5,
                       perturb=True, adjoint=adjoint, adjoint_params=(p,))
    seen.clear()
    ys[-1].sum().backward()
    assert seen and not {0.0, 0.5, 1.0} & set(seen)


def test_norm_and_controller_change_the_steps():
    A, y0 = linear_problem()
    t = torch.tensor([0.0, 5.0], dtype=F64)
    base, loose, cautious = pyjode.Stats(), pyjode.Stats(), pyjode.Stats()
    ref = pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-6, atol=1e-8, stats=base)
    # a norm 100x smaller accepts larger errors: fewer steps, same answer to the looser tolerance
    ys = pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-6, atol=1e-8, norm=lambda x: x.abs().max() / 100,
                       stats=loose)
    assert loose.steps_forward < base.steps_forward
    torch.testing.assert_close(ys, ref, rtol=1e-3, atol=1e-5)
    pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-6, atol=1e-8, stats=cautious,
                  controller=pyjode.PIController(safety=0.5, factor_max=1.5))
    assert cautious.steps_forward > base.steps_forward
    with pytest.raises(TypeError, match="controller"):
        pyjode.odeint(lambda t, y: A @ y, y0, t, controller=dict(safety=0.5))


class CountingCallbacks(torch.nn.Module):
    def __init__(self, adaptive=True):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(-0.7, dtype=F64))
        self.counts = dict(step=0, accept=0, reject=0, step_adjoint=0, accept_adjoint=0, reject_adjoint=0)
        for name in list(self.counts):
            if adaptive or not name.startswith(("accept", "reject")):
                setattr(self, "callback_" + name.replace("accept", "accept_step").replace("reject", "reject_step"),
                        self._counter(name))

    def _counter(self, name):
        def count(t0, y0, dt):
            assert isinstance(t0, torch.Tensor) and isinstance(dt, float)
            self.counts[name] += 1
        return count

    def forward(self, t, y):
        return self.w * y * torch.cos(20 * t)


@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature"])
def test_adaptive_callbacks_count_every_attempt(adjoint):
    f = CountingCallbacks()
    stats = pyjode.Stats()
    ys = pyjode.odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-8, atol=1e-8,
                       adjoint=adjoint, stats=stats, first_step=1.0)
    c = f.counts
    assert c["accept"] == stats.steps_forward and c["reject"] == stats.rejected_forward > 0
    assert c["step"] == c["accept"] + c["reject"] and c["step_adjoint"] == 0
    ys.sum().backward()
    assert c["accept_adjoint"] == stats.steps_backward and c["reject_adjoint"] == stats.rejected_backward
    assert c["step_adjoint"] == c["accept_adjoint"] + c["reject_adjoint"] > 0


def test_fixed_step_callbacks_and_warning():
    f = CountingCallbacks(adaptive=False)
    pyjode.odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="rk4", step_size=0.1)
    assert f.counts["step"] == 10
    g = CountingCallbacks(adaptive=True)
    with pytest.warns(UserWarning, match="never called"):
        pyjode.odeint(g, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="rk4", step_size=0.1)


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "LSODA"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_scipy_solver_against_matrix_exponential(solver, dtype):
    A, y0 = linear_problem(dtype)
    t = torch.linspace(0, 3, 7, dtype=dtype)
    ys = pyjode.odeint(lambda t, y: A @ y, y0, t, method=pyjode.ScipySolver(solver), rtol=1e-9, atol=1e-11)
    exact = torch.stack([torch.linalg.matrix_exp(A * s) @ y0 for s in t])
    assert ys.dtype == dtype
    torch.testing.assert_close(ys, exact, rtol=1e-5 if dtype == F64 else 1e-5, atol=1e-6)


def test_scipy_solver_backsolve_gradients_are_exact():
    A, y0 = linear_problem()
    A = A.clone().requires_grad_(True)
    y0 = y0.clone().requires_grad_(True)

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(A.detach().clone())

        def forward(self, t, y):
            return self.A @ y

    f = Linear()
    t = torch.tensor([0.0, 1.0, 2.5], dtype=F64)
    ys = pyjode.odeint(f, y0, t, method=pyjode.ScipySolver("DOP853"), rtol=1e-11, atol=1e-12, adjoint="backsolve")
    ys.pow(2).sum().backward()
    A_ref = f.A.detach().clone().requires_grad_(True)
    y0_ref = y0.detach().clone().requires_grad_(True)
    loss = sum((torch.linalg.matrix_exp(A_ref * s) @ y0_ref).pow(2).sum() for s in t.tolist())
    loss.backward()
    torch.testing.assert_close(y0.grad, y0_ref.grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(f.A.grad, A_ref.grad, rtol=1e-7, atol=1e-9)


def test_scipy_solver_direct_outputs_carry_no_partial_gradient():
    """With adjoint="direct" SciPy's solve records no graph: every output, y(t0) included, is detached, as
    in torchdiffeq. The first output used to stay attached to y0, so backprop returned the gradient of that
    output alone (here 1 for each element of y0), silently missing the solve's."""
    A, y0 = linear_problem()
    y0 = y0.clone().requires_grad_(True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = pyjode.odeint(lambda t, y: A @ y, y0, t, method=pyjode.ScipySolver("RK45"), rtol=1e-9, atol=1e-11)
    assert not ys.requires_grad
    torch.testing.assert_close(ys[-1], torch.linalg.matrix_exp(A) @ y0.detach(), rtol=1e-6, atol=1e-8)


def test_scipy_solver_under_auto_gets_the_continuous_adjoint():
    """adjoint="auto" with a SciPy method (no graph, no checkpointed steps): the backsolve adjoint, whose
    gradient is the matrix exponential's; auto used to refuse the method."""
    A, y0 = linear_problem()
    A = A.clone().requires_grad_(True)
    y0 = y0.clone().requires_grad_(True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    (ref_A, ref_y0) = torch.autograd.grad((torch.linalg.matrix_exp(A) @ y0).pow(2).sum(), (A, y0))
    for _ in range(3):  # the first solve, then with a record
        stats = pyjode.Stats()
        ys = pyjode.odeint(lambda t, y: A @ y, y0, t, method=pyjode.ScipySolver("DOP853"), rtol=1e-11, atol=1e-12,
                           adjoint="auto", stats=stats)
        g_A, g_y0 = torch.autograd.grad(ys[-1].pow(2).sum(), (A, y0))
        assert stats.adjoint == "backsolve"
        torch.testing.assert_close(g_A, ref_A, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(g_y0, ref_y0, rtol=1e-7, atol=1e-9)


def test_scipy_solver_refuses_what_it_cannot_honour():
    A, y0 = linear_problem()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for kw, name in ((dict(norm=pyjode.max_norm), "norm"), (dict(max_steps=10), "max_steps"),
                     (dict(perturb=True), "perturb"), (dict(min_step=0.1), "min_step")):
        with pytest.raises(ValueError, match=name):
            pyjode.odeint(lambda t, y: A @ y, y0, t, method=pyjode.ScipySolver("RK45"), **kw)
    with pytest.raises(ValueError, match="Quadrature|quadrature"):
        pyjode.odeint(lambda t, y: A @ y, y0, t, method=pyjode.ScipySolver("RK45"), adjoint="quadrature")
    with pytest.raises(ValueError, match="solver="):
        pyjode.ScipySolver("rk45")


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "quadrature"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zero_dim_state_time_gradients(adjoint, dtype):
    # y' = k y, y(t) = y0 exp(k (t - t0)): dL/dt_i = k y(t_i), dL/dt0 = -k sum_i y(t_i) for L = sum y(t_i).
    k = -0.4
    t = torch.tensor([0.2, 0.9, 1.7], dtype=dtype, requires_grad=True)
    y0 = torch.tensor(1.5, dtype=dtype, requires_grad=True)
    ys = pyjode.odeint(lambda s, y: k * y, y0, t, adjoint=adjoint, rtol=1e-9, atol=1e-10)
    ys.sum().backward()
    exact = 1.5 * torch.exp(k * (t.detach() - 0.2))
    expected = k * exact
    expected[0] = -k * exact[1:].sum()
    tol = 1e-6 if dtype == F64 else 1e-4
    torch.testing.assert_close(t.grad, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(y0.grad, (exact / 1.5).sum(), rtol=tol, atol=tol)


@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature"])
def test_field_of_time_alone(adjoint):
    # y' = exp(-0.1 t): y does not enter f, so dL/dy0 = number of outputs and no error is raised.
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    ys = pyjode.odeint(lambda s, y: torch.exp(-0.1 * s) * torch.ones_like(y), y0, t, adjoint=adjoint)
    torch.testing.assert_close(ys[-1], 1 + (1 - torch.exp(torch.tensor(-0.2, dtype=F64))) / 0.1 * torch.ones(3, dtype=F64))
    ys.sum().backward()
    torch.testing.assert_close(y0.grad, torch.full((3,), 3.0, dtype=F64))


def test_accept_min_step():
    A, y0 = linear_problem()
    t = torch.tensor([0.0, 8.0], dtype=F64)
    with pytest.raises(RuntimeError, match="min_step"):
        pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-10, atol=1e-12, min_step=2.0)
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-10, atol=1e-12, min_step=2.0, accept_min_step=True,
                       stats=stats)
    # every step is forced at min_step: 4 steps of 2, no rejection
    assert stats.steps_forward == 4 and stats.rejected_forward == 0
    assert torch.isfinite(ys).all()
