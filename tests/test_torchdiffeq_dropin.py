"""pyjode.torchdiffeq is a drop-in for torchdiffeq: same signatures, outputs and gradients."""

import inspect

import pytest
import torch
from torch import nn

torchdiffeq = pytest.importorskip("torchdiffeq")
import pyjode.torchdiffeq as dropin  # noqa: E402

F64 = torch.float64


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).to(F64)

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


def test_signatures_match():
    for name in ("odeint", "odeint_adjoint"):
        ours = inspect.signature(getattr(dropin, name))
        theirs = inspect.signature(getattr(torchdiffeq, name))
        assert list(ours.parameters) == list(theirs.parameters)
        for p in theirs.parameters.values():
            assert ours.parameters[p.name].default == p.default, (name, p.name)
            assert ours.parameters[p.name].kind == p.kind, (name, p.name)


def _grads(fn, func, y0, t, **kw):
    ys = fn(func, y0, t, **kw)
    return ys, torch.autograd.grad(ys.square().sum(), (y0, *func.parameters()))


@pytest.mark.parametrize("kw", [
    dict(rtol=1e-6, atol=1e-8),
    dict(rtol=1e-5, atol=1e-7, method="bosh3"),
    dict(method="rk4", options=dict(step_size=0.05)),
    dict(method="euler", options=dict(step_size=0.05)),
    dict(method="midpoint", options=dict(step_size=0.05)),
])
@pytest.mark.parametrize("fn", ["odeint", "odeint_adjoint"])
def test_outputs_and_gradients_match(fn, kw):
    func = Field()
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 5, dtype=F64)  # on the step grid, so fixed-step grids coincide
    ys, g = _grads(getattr(dropin, fn), func, y0, t, **kw)
    ys_ref, g_ref = _grads(getattr(torchdiffeq, fn), func, y0, t, **kw)
    if "options" in kw:
        # same step grid and the same tableau: equal to rounding
        assert (ys - ys_ref).abs().max() < 1e-12
        for a, b in zip(g, g_ref):
            assert ((a - b).norm() / b.norm()) < 1e-9
        return
    # Adaptive: step sequences differ, so compare the two libraries' errors against a tight solution.
    truth, g_truth = _grads(torchdiffeq.odeint, func, y0, t, rtol=1e-11, atol=1e-12)
    err, err_ref = (ys - truth).abs().max(), (ys_ref - truth).abs().max()
    assert err <= 3 * err_ref + 1e-12
    for a, b, c in zip(g, g_ref, g_truth):
        assert (a - c).norm() <= 3 * (b - c).norm() + 1e-10 * c.norm()


def test_seminorm_adjoint_option_and_adjoint_settings():
    func = Field()
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=F64)
    kw = dict(rtol=1e-7, atol=1e-8, adjoint_options=dict(norm="seminorm"), adjoint_rtol=1e-8, adjoint_atol=1e-9,
              adjoint_method="dopri5", adjoint_params=tuple(func.parameters()))
    _, g = _grads(dropin.odeint_adjoint, func, y0, t, **kw)
    _, g_ref = _grads(torchdiffeq.odeint_adjoint, func, y0, t, **kw)
    for a, b in zip(g, g_ref):
        assert ((a - b).norm() / b.norm()) < 1e-6


def test_tuple_state():
    def f(t, state):
        x, v = state
        return v, -x

    x0 = torch.tensor([1.0], dtype=F64)
    v0 = torch.tensor([0.0], dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)
    x, v = dropin.odeint(f, (x0, v0), t, rtol=1e-10, atol=1e-12)
    assert x.shape == (4, 1) and v.shape == (4, 1)
    assert torch.allclose(x[:, 0], torch.cos(t), atol=1e-8)
    assert torch.allclose(v[:, 0], -torch.sin(t), atol=1e-8)


def test_unsupported_options_are_rejected():
    y0 = torch.ones(1)
    t = torch.linspace(0, 1, 2)
    with pytest.raises(ValueError, match="grid_points"):
        dropin.odeint(lambda t, y: -y, y0, t, options=dict(grid_points=t))
    with pytest.raises(ValueError, match="scipy_solver"):
        dropin.odeint(lambda t, y: -y, y0, t, method="scipy_solver", event_fn=lambda t, y: y)
    with pytest.raises(ValueError, match="nn.Module"):
        dropin.odeint_adjoint(lambda t, y: -y, y0, t)
    with pytest.raises(ValueError, match="not known"):
        dropin.odeint(lambda t, y: -y, y0, t, method="radauIIA7")
    with pytest.raises(ValueError, match="perturb"):
        dropin.odeint(lambda t, y: -y, y0, t, method="scipy_solver", options=dict(solver="RK45", perturb=True))
    with pytest.raises(ValueError, match="min_step"):
        dropin.odeint(lambda t, y: -y, y0, t, method="scipy_solver", options=dict(solver="RK45", min_step=0.1))
    with pytest.raises(ValueError, match="mutually exclusive"):
        dropin.odeint(lambda t, y: -y, y0, t, method="euler",
                      options=dict(step_size=0.1, grid_constructor=lambda f, y0, t: t))
    with pytest.raises(ValueError, match="adjoint_options"):
        dropin.odeint_adjoint(lambda t, y: -y, y0, t, adjoint_params=(), adjoint_options=dict(first_step=0.1))
