"""``pyjode.odeint`` and ``pyjode.NeuralODE``: output times, direction, shapes, dtypes, devices, stats."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pyjode
from conftest import DEVICES
from pyjode.tableau import TABLEAUS

F64 = torch.float64
ADAPTIVE = ["bosh3", "dopri5", "tsit5"]


def oscillator(t, y):
    """y'' = -y written as a first-order system on the last axis; closed form (cos, -sin) rotation."""
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def oscillator_exact(y0, t):
    c, s = torch.cos(t), torch.sin(t)
    c = c.reshape(-1, *([1] * (y0.dim() - 1)))
    s = s.reshape(-1, *([1] * (y0.dim() - 1)))
    return torch.stack([c * y0[..., 0] + s * y0[..., 1], -s * y0[..., 0] + c * y0[..., 1]], dim=-1)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_more_output_times_add_no_steps(method):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    few, many = pyjode.Stats(), pyjode.Stats()
    t_few = torch.tensor([0.0, 5.0], dtype=F64)
    t_many = torch.linspace(0.0, 5.0, 101, dtype=F64)
    pyjode.odeint(oscillator, y0, t_few, method=method, rtol=1e-8, atol=1e-10, stats=few)
    ys = pyjode.odeint(oscillator, y0, t_many, method=method, rtol=1e-8, atol=1e-10, stats=many)
    assert (many.steps_forward, many.nfe_forward, many.rejected_forward) == (
        few.steps_forward, few.nfe_forward, few.rejected_forward)
    # the dense outputs between steps are accurate too, not just present
    err = (ys - oscillator_exact(y0, t_many)).abs().max()
    assert float(err) < 1e-6


@pytest.mark.parametrize("method, kwargs", [("dopri5", dict(rtol=1e-9, atol=1e-11)),
                                            ("rk4", dict(step_size=0.01))])
def test_backwards_in_time(method, kwargs):
    y0 = torch.tensor([0.3, -1.0], dtype=F64)
    t = torch.tensor([2.0, 1.2, 0.0, -1.5], dtype=F64)
    ys = pyjode.odeint(oscillator, y0, t, method=method, **kwargs)
    expected = oscillator_exact(y0, t - t[0])
    torch.testing.assert_close(ys, expected, rtol=1e-7, atol=1e-7)
    # forward then back returns to the start
    back = pyjode.odeint(oscillator, ys[-1], t.flip(0), method=method, **kwargs)
    torch.testing.assert_close(back[-1], y0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("shape", [(2,), (5, 2), (3, 4, 2)])
@pytest.mark.parametrize("method, kwargs", [("tsit5", dict(rtol=1e-9, atol=1e-11)),
                                            ("heun", dict(step_size=1e-3))])
def test_batched_shapes(shape, method, kwargs):
    y0 = torch.randn(*shape, dtype=F64)
    t = torch.linspace(0, 1, 4, dtype=F64)
    ys = pyjode.odeint(oscillator, y0, t, method=method, **kwargs)
    assert ys.shape == (4, *shape)
    torch.testing.assert_close(ys, oscillator_exact(y0, t), rtol=1e-5, atol=1e-6)


def test_scalar_state():
    y0 = torch.tensor(2.0, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    ys = pyjode.odeint(lambda t, y: -y, y0, t, rtol=1e-10, atol=1e-12)
    assert ys.shape == (3,)
    torch.testing.assert_close(ys, 2.0 * torch.exp(-t), rtol=1e-8, atol=1e-10)


def test_single_output_time_returns_y0():
    y0 = torch.randn(3, 2, dtype=F64)
    ys = pyjode.odeint(oscillator, y0, torch.tensor([0.5], dtype=F64))
    assert ys.shape == (1, 3, 2)
    torch.testing.assert_close(ys[0], y0, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_dtypes_and_devices(device, dtype, tol, method):
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=dtype, device=device)
    t = torch.linspace(0, 2, 5, dtype=dtype, device=device)
    kwargs = dict(step_size=0.01) if method == "rk4" else dict(rtol=tol / 10, atol=tol / 10)
    ys = pyjode.odeint(oscillator, y0, t, method=method, **kwargs)
    assert ys.dtype == dtype and ys.device.type == device
    torch.testing.assert_close(ys, oscillator_exact(y0, t), rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_direct_gradient_on_device(device):
    A = torch.tensor([[-0.2, 1.0], [-1.0, -0.2]], dtype=F64, device=device, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, device=device)
    t = torch.tensor([0.0, 1.0], dtype=F64, device=device)
    y1 = pyjode.odeint(lambda t, y: A @ y, y0, t, rtol=1e-11, atol=1e-12)[-1]
    (g,) = torch.autograd.grad(y1.sum(), A)
    (e,) = torch.autograd.grad((torch.linalg.matrix_exp(A) @ y0).sum(), A)
    torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-8)


def test_t_as_list_and_dtype_of_t_ignored():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float32)
    a = pyjode.odeint(oscillator, y0, [0.0, 0.5, 1.0])
    b = pyjode.odeint(oscillator, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# Stats.


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return oscillator(t, y)


@pytest.mark.parametrize("method", sorted(TABLEAUS))
def test_stats_count_the_work(method):
    tab = TABLEAUS[method]
    func = Counting()
    stats = pyjode.Stats()
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    pyjode.odeint(func, y0, torch.tensor([0.0, 0.4, 1.0], dtype=F64), method=method, step_size=0.1,
                  rtol=1e-6, atol=1e-8, stats=stats)
    assert stats.nfe_forward == func.calls
    attempts = stats.steps_forward + stats.rejected_forward
    if tab.adaptive:
        # FSAL: f(t0, y0), one probe for the initial step (not taken here: step_size is the first step),
        # then stages - 1 per attempt; without FSAL every attempt evaluates all its stages
        expected = 1 + (tab.stages - 1) * attempts if tab.fsal else tab.stages * attempts
        assert stats.nfe_forward == expected
        assert stats.steps_forward > 0
    else:
        assert stats.steps_forward == 10 and stats.rejected_forward == 0
        assert stats.nfe_forward == tab.stages * stats.steps_forward
    assert (stats.nfe_backward, stats.steps_backward, stats.rejected_backward) == (0, 0, 0)


def test_stats_with_hairer_initial_step_and_rejections():
    func = Counting()
    stats = pyjode.Stats()
    # a sharp change in the field forces rejections
    field = lambda t, y: func(t, y) * (1 + 50 * torch.exp(-((t - 1.0) * 20) ** 2))  # noqa: E731
    pyjode.odeint(field, torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
                  method="dopri5", rtol=1e-7, atol=1e-9, stats=stats)
    assert stats.rejected_forward > 0
    assert stats.nfe_forward == func.calls == 2 + 6 * (stats.steps_forward + stats.rejected_forward)
    stats.reset()
    assert stats == pyjode.Stats()


# ----------------------------------------------------------------------------------------------------
# NeuralODE.


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


def test_neural_ode_matches_odeint_and_trains():
    field = Field().double()
    t = torch.linspace(0, 1, 3, dtype=F64)
    model = pyjode.NeuralODE(field, t, method="tsit5", rtol=1e-8, atol=1e-10)
    assert [p for p in model.parameters()] == [p for p in field.parameters()]
    y0 = torch.randn(4, 2, dtype=F64)
    out = model(y0)
    torch.testing.assert_close(out, pyjode.odeint(field, y0, t, method="tsit5", rtol=1e-8, atol=1e-10),
                               rtol=0, atol=0)
    t2 = torch.tensor([0.0, 2.0], dtype=F64)
    assert model(y0, t2).shape == (2, 4, 2)
    out.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_neural_ode_needs_times():
    with pytest.raises(ValueError, match="needs output times"):
        pyjode.NeuralODE(Field())(torch.randn(2))


def test_neural_ode_moves_with_module():
    model = pyjode.NeuralODE(Field(), [0.0, 1.0]).double()
    assert model(torch.randn(3, 2, dtype=F64)).dtype == F64
    assert math.isclose(float(model.t[-1]), 1.0)


def test_no_grad_solve_records_no_graph():
    grad_modes = set()
    field = Field()

    def spy(t, y):
        grad_modes.add(torch.is_grad_enabled())
        return field(t, y)

    with torch.no_grad():
        pyjode.odeint(spy, torch.randn(3, 2), [0.0, 1.0])
    assert grad_modes == {False}
