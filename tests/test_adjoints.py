"""Continuous adjoints (Backsolve, Quadrature): exact gradients, agreement with backprop, parameters, time."""

import pytest
import torch
from torch import nn

import pyjode
from problems import MLP, linear_exact_loss, linear_problem, rel_error

F64 = torch.float64

ADJOINTS = {
    "backsolve-seminorm": lambda: pyjode.Backsolve(norm="seminorm"),
    "backsolve-rms": lambda: pyjode.Backsolve(norm="rms"),
    "quadrature-stored": lambda: pyjode.Quadrature(state="stored"),
    "quadrature-resolve": lambda: pyjode.Quadrature(state="resolve"),
}


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
@pytest.mark.parametrize("name", sorted(ADJOINTS))
def test_linear_ode_exact_gradient(name, method):
    """y' = Ay: gradients from matrix_exp under autograd, with a loss on all five observation times."""
    A, y0, t, w = linear_problem()
    gA, gy0 = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method=method, rtol=1e-10, atol=1e-12,
                       adjoint=ADJOINTS[name](), adjoint_params=[A], stats=stats)
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    assert rel_error(hA, gA) < 1e-7
    assert rel_error(hy0, gy0) < 1e-8
    assert stats.nfe_backward > 0 and stats.steps_backward > 0


@pytest.mark.parametrize("name", ["quadrature-stored", "quadrature-resolve", "backsolve-seminorm"])
def test_linear_ode_fixed_step(name):
    A, y0, t, w = linear_problem(seed=1)
    gA, gy0 = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="rk4", step_size=0.01, adjoint=ADJOINTS[name](),
                       adjoint_params=[A])
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    assert rel_error(hA, gA) < 1e-8 and rel_error(hy0, gy0) < 1e-8


def test_decreasing_time():
    A, y0, t, w = linear_problem(seed=2)
    t = -t
    gA, gy0 = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    for name in ADJOINTS:
        ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, rtol=1e-10, atol=1e-12, adjoint=ADJOINTS[name](),
                           adjoint_params=[A])
        hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
        assert rel_error(hA, gA) < 1e-7, name
        assert rel_error(hy0, gy0) < 1e-8, name


def _grads(func, y0, t, w, **kw):
    ys = pyjode.odeint(func, y0, t, **kw)
    loss = (ys * w).sum()
    return torch.autograd.grad(loss, (y0, *func.parameters()))


@pytest.mark.parametrize("name", sorted(ADJOINTS))
def test_mlp_matches_direct_float64(name):
    func = MLP(depth=2)
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1.5, 4, dtype=F64)
    w = torch.randn(4, 4, 3, dtype=F64)
    ref = _grads(func, y0, t, w, rtol=1e-11, atol=1e-12)
    got = _grads(func, y0, t, w, rtol=1e-11, atol=1e-12, adjoint=ADJOINTS[name]())
    for r, g in zip(ref, got):
        assert rel_error(g, r) < 1e-7


@pytest.mark.parametrize("name", sorted(ADJOINTS))
def test_mlp_matches_direct_float32(name):
    func = MLP(dtype=torch.float32, depth=2)
    y0 = torch.randn(4, 3, requires_grad=True)
    t = torch.linspace(0, 1.0, 3)
    w = torch.randn(3, 4, 3)
    ref = _grads(func, y0, t, w, rtol=1e-6, atol=1e-7)
    got = _grads(func, y0, t, w, rtol=1e-6, atol=1e-7, adjoint=ADJOINTS[name]())
    for r, g in zip(ref, got):
        assert rel_error(g, r) < 1e-3  # float32 rounding of ~100 steps and the 1e-6 tolerance


def test_explicit_adjoint_params_including_unused():
    func = MLP(depth=2)
    unused = nn.Parameter(torch.ones(2, dtype=F64))
    y0 = torch.randn(2, 3, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    params = [func.net[0].weight, unused]
    for name in ADJOINTS:
        ys = pyjode.odeint(func, y0, t, rtol=1e-10, atol=1e-12, adjoint=ADJOINTS[name](), adjoint_params=params)
        gw, gu = torch.autograd.grad(ys.square().sum(), params)
        (ref,) = torch.autograd.grad(pyjode.odeint(func, y0, t, rtol=1e-10, atol=1e-12).square().sum(),
                                     [func.net[0].weight])
        assert torch.equal(gu, torch.zeros_like(unused)), name
        assert rel_error(gw, ref) < 1e-7, name
        # parameters left out of adjoint_params get no gradient
        assert func.net[2].weight.grad is None


def test_plain_function_closure():
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    for name in ADJOINTS:
        ys = pyjode.odeint(lambda t, y: -k * y + torch.sin(t), y0, t, rtol=1e-10, atol=1e-12,
                           adjoint=ADJOINTS[name](), adjoint_params=[k])
        gk, gy = torch.autograd.grad(ys[-1].sum() + ys[1].sum(), (k, y0))
        # closed form: y(t) = y0 e^{-kt} + ∫ e^{-k(t-s)} sin(s) ds, differentiated by autograd
        def exact(k, y0):
            out = 0
            for T in (1.0, 2.0):
                T = torch.tensor(T, dtype=F64)
                forced = (k * torch.sin(T) - torch.cos(T) + torch.exp(-k * T)) / (1 + k * k)
                out = out + (y0 * torch.exp(-k * T) + forced).sum()
            return out
        ek, ey = torch.autograd.grad(exact(k, y0), (k, y0))
        assert rel_error(gk, ek) < 1e-8, name
        assert rel_error(gy, ey) < 1e-8, name


@pytest.mark.parametrize("name", ["direct"] + sorted(ADJOINTS))
def test_time_gradients(name):
    """dL/dt against the exact derivative of y(t) = e^{A(t - t0)} y0."""
    A, y0, _, _ = linear_problem(seed=3)
    t = torch.tensor([0.2, 0.9, 1.6], dtype=F64, requires_grad=True)
    w = torch.randn(3, 2, 3, dtype=F64)

    def exact(t):
        return torch.stack([y0 @ torch.linalg.matrix_exp(A * (ti - t[0])).T for ti in t])

    (gt,) = torch.autograd.grad((exact(t) * w).sum(), t)
    adjoint = "direct" if name == "direct" else ADJOINTS[name]()
    ys = pyjode.odeint(lambda s, y: y @ A.T, y0, t, rtol=1e-10, atol=1e-12, adjoint=adjoint, adjoint_params=[A])
    (ht,) = torch.autograd.grad((ys * w).sum(), t)
    assert rel_error(ht, gt) < 1e-7


def test_time_gradients_non_autonomous():
    """y' = cos(t) y has y(t) = y0 exp(sin t - sin t0)."""
    y0 = torch.tensor([1.5], dtype=F64)
    t = torch.tensor([0.1, 0.8, 2.0], dtype=F64, requires_grad=True)
    (gt,) = torch.autograd.grad((y0 * torch.exp(torch.sin(t) - torch.sin(t[0]))).sum(), t)
    for name in ADJOINTS:
        ys = pyjode.odeint(lambda s, y: torch.cos(s) * y, y0, t, rtol=1e-10, atol=1e-12, adjoint=ADJOINTS[name]())
        (ht,) = torch.autograd.grad(ys.sum(), t)
        assert rel_error(ht, gt) < 1e-7, name


def test_seminorm_takes_fewer_backward_steps_than_rms():
    func = MLP(hidden=64, depth=2)
    y0 = torch.randn(16, 3, dtype=F64)
    t = torch.linspace(0, 2, 3, dtype=F64)
    nfe = {}
    for norm in ("seminorm", "rms"):
        stats = pyjode.Stats()
        ys = pyjode.odeint(func, y0, t, rtol=1e-6, atol=1e-8, adjoint=pyjode.Backsolve(norm=norm), stats=stats)
        ys.square().sum().backward()
        nfe[norm] = stats.nfe_backward
    assert nfe["seminorm"] < nfe["rms"]


def test_quadrature_nodes_per_step_and_stats():
    A, y0, t, w = linear_problem(seed=4)
    gA, _ = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    errs = {}
    for m in (1, 2, 3):
        stats = pyjode.Stats()
        ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, rtol=1e-9, atol=1e-11,
                           adjoint=pyjode.Quadrature(nodes_per_step=m), adjoint_params=[A], stats=stats)
        (hA,) = torch.autograd.grad((ys * w).sum(), A)
        errs[m] = rel_error(hA, gA)
    # the one-node midpoint rule is the least accurate; two nodes already reach solver accuracy
    assert errs[1] > errs[2] and errs[2] < 1e-6 and errs[3] < 1e-6


def test_bad_adjoint_arguments():
    y0 = torch.ones(2)
    t = torch.linspace(0, 1, 2)
    with pytest.raises(ValueError, match="norm"):
        pyjode.Backsolve(norm="l2")
    with pytest.raises(ValueError, match="state"):
        pyjode.Quadrature(state="cached")
    with pytest.raises(ValueError, match="nodes_per_step"):
        pyjode.Quadrature(nodes_per_step=0)
    with pytest.raises(ValueError, match="adjoint="):
        pyjode.odeint(lambda t, y: -y, y0, t, adjoint="magic")
    with pytest.raises(TypeError, match="instance"):
        pyjode.odeint(lambda t, y: -y, y0, t, adjoint=pyjode.Quadrature)


def test_no_parameter_vjp_on_the_state_path():
    """The backward solve asks autograd for the state VJP only: parameter .grad stays untouched and the
    parameter gradient appears only through the quadrature."""
    func = MLP(depth=2)
    y0 = torch.randn(2, 3, dtype=F64)
    t = torch.linspace(0, 1, 2, dtype=F64)
    calls = {"params": 0}
    orig = torch.autograd.grad

    def spy(outputs, inputs, *a, **k):
        ins = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        if any(any(x is p for p in func.parameters()) for x in ins):
            calls["params"] += 1
        return orig(outputs, inputs, *a, **k)

    torch.autograd.grad = spy
    try:
        ys = pyjode.odeint(func, y0, t, rtol=1e-8, atol=1e-9, adjoint="quadrature")
        ys.sum().backward()
    finally:
        torch.autograd.grad = orig
    assert calls["params"] == 1  # one batched parameter VJP for the whole backward pass
