"""taylor_coefficients: exact series on fields with closed forms, agreement with nested jvp, gradients."""

import math

import pytest
import torch
from torch import nn
from torch.func import jvp

from pyjode.taylor_mode import taylor_coefficients, taylor_series

D = torch.float64


def _close(a, b, rtol=1e-13, atol=1e-14):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_exponential_growth():
    y = torch.tensor([0.3, -1.7, 2.0], dtype=D)
    c = taylor_coefficients(lambda t, y: y, 0.0, y, 8)
    _close(c, torch.stack([y / math.factorial(k) for k in range(9)]))


def test_riccati_coefficients_are_powers():
    # y' = y^2 has y(t+s) = y / (1 - y s) = sum_k y^(k+1) s^k
    y = torch.tensor([0.3, -1.2, 0.9], dtype=D)
    for field in (lambda t, y: y ** 2, lambda t, y: y * y):
        c = taylor_coefficients(field, 0.0, y, 7)
        _close(c, torch.stack([y ** (k + 1) for k in range(8)]))


def test_linear_system_batched():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=D)
    y = torch.randn(3, 4, generator=g, dtype=D)
    c = taylor_coefficients(lambda t, y: y @ a.T, 0.0, y, 6)
    expected = [y @ torch.linalg.matrix_power(a, k).T / math.factorial(k) for k in range(7)]
    _close(c, torch.stack(expected))


def test_time_dependent_linear_field():
    # y' = t y  =>  y(t+s) = y exp(t s + s^2 / 2): the product of two exponential series
    t0, y = 0.7, torch.tensor([1.5, -0.4], dtype=D)
    order = 6
    e_ts = [t0 ** i / math.factorial(i) for i in range(order + 1)]
    e_half = [0.0] * (order + 1)
    for j in range(order // 2 + 1):
        e_half[2 * j] = 0.5 ** j / math.factorial(j)
    series = [sum(e_ts[i] * e_half[k - i] for i in range(k + 1)) for k in range(order + 1)]
    c = taylor_coefficients(lambda t, y: t * y, torch.tensor(t0, dtype=D), y, order)
    _close(c, torch.stack([y * s for s in series]))


def test_time_only_field_through_sin():
    # y' = sin(t)  =>  y_k = -cos^(k)(t0) / k!  for k >= 1
    t0, y = 0.4, torch.tensor([2.0], dtype=D)
    c = taylor_coefficients(lambda t, y: torch.sin(t) * torch.ones_like(y), t0, y, 6)
    cos_derivs = [math.cos(t0), -math.sin(t0), -math.cos(t0), math.sin(t0)]
    expected = [y] + [-cos_derivs[k % 4] / math.factorial(k) * torch.ones_like(y) for k in range(1, 7)]
    _close(c, torch.stack(expected))


class _ManyOps(nn.Module):
    """A field touching every nonlinear rule, the time input and the affine/linear ops."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(6, 3)

    def forward(self, t, y):
        h = torch.cat([torch.sigmoid(y), t.expand(y.shape[0], 1)], dim=-1)
        out = self.l2(torch.tanh(self.l1(h)))
        out = out + nn.functional.softplus(y, beta=2.0) - 0.3 * y ** 3 + torch.sin(y) * torch.exp(-y)
        out = out + nn.functional.silu(y) / (2 + torch.cos(y)) + torch.log(3 + y) - torch.sqrt(4 + y)
        return out + torch.relu(y) + (1.5 + y) ** -0.5 + torch.reciprocal(2.5 + y).sum(-1, keepdim=True)


def _nested_jvp_series(func, t, y, order):
    """Reference: d^k/dt^k of the solution by nesting jvp (cost 2^k, fine for small k)."""
    derivs = [lambda t, y: func(t, y)]
    for _ in range(order - 1):
        prev = derivs[-1]
        derivs.append(lambda t, y, prev=prev: jvp(prev, (t, y), (torch.ones_like(t), func(t, y)))[1])
    return torch.stack([y] + [derivs[k](t, y) / math.factorial(k + 1) for k in range(order)])


def test_matches_nested_jvp_on_a_network():
    torch.manual_seed(0)
    f = _ManyOps().to(D)
    y = 0.5 * torch.randn(5, 3, dtype=D)
    t = torch.tensor(0.3, dtype=D)
    ours = taylor_coefficients(f, t, y, 5)
    ref = _nested_jvp_series(f, t, y, 5)
    _close(ours, ref, rtol=1e-10, atol=1e-11)


def test_series_list_matches_stacked_coefficients_and_its_gradients():
    torch.manual_seed(1)
    f = _ManyOps().to(D)
    y = (0.5 * torch.randn(4, 3, dtype=D)).requires_grad_()
    t = torch.tensor(0.2, dtype=D)
    series = taylor_series(f, t, y, 3)
    stacked = taylor_coefficients(f, t, y, 3)
    assert len(series) == 4
    _close(torch.stack(series), stacked, rtol=0, atol=0)
    w = torch.randn(4, 3, dtype=D)
    (g_list,) = torch.autograd.grad((series[3] * w).sum(), y)
    (g_stack,) = torch.autograd.grad((stacked[3] * w).sum(), y)
    _close(g_list, g_stack)


def test_gradients_are_exact():
    # y' = y^2: d y_k / d y = (k + 1) y^k
    y = torch.tensor([0.4, -0.8], dtype=D, requires_grad=True)
    c = taylor_coefficients(lambda t, y: y ** 2, 0.0, y, 5)
    for k in range(6):
        (g,) = torch.autograd.grad(c[k].sum(), y, retain_graph=True)
        _close(g, (k + 1) * y.detach() ** k)
    # parameters of a module field: y_3 = A^3 y / 3!, differentiated in A
    lin = nn.Linear(3, 3, bias=False).to(D)
    x = torch.randn(3, dtype=D)
    c3 = taylor_coefficients(lambda t, y: lin(y), 0.0, x, 3)[3]
    (ga,) = torch.autograd.grad(c3.sum(), lin.weight)
    a = lin.weight.detach().clone().requires_grad_(True)
    (gref,) = torch.autograd.grad((torch.linalg.matrix_power(a, 3) @ x / 6).sum(), a)
    _close(ga, gref)


def test_module_retrained_without_retrace():
    lin = nn.Linear(2, 2, bias=False).to(D)
    y = torch.tensor([1.0, 2.0], dtype=D)
    taylor_coefficients(lin_field := (lambda t, y: lin(y)), 0.0, y, 2)
    with torch.no_grad():
        lin.weight.mul_(2.0)  # closed-over tensors are used by reference
    c = taylor_coefficients(lin_field, 0.0, y, 2)
    w = lin.weight.detach()
    _close(c[2], w @ w @ y / 2)


def test_order_zero_and_one():
    y = torch.tensor([1.0, 2.0], dtype=D)
    _close(taylor_coefficients(lambda t, y: -y, 0.0, y, 0), y[None])
    _close(taylor_coefficients(lambda t, y: -y, 0.0, y, 1), torch.stack([y, -y]))


def test_errors():
    y = torch.ones(3, dtype=D)
    with pytest.raises(ValueError, match="order"):
        taylor_coefficients(lambda t, y: y, 0.0, y, -1)
    with pytest.raises(TypeError, match="floating"):
        taylor_coefficients(lambda t, y: y, 0.0, torch.ones(3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="shaped like y"):
        taylor_coefficients(lambda t, y: y.sum(), 0.0, y, 3)
    with pytest.raises(TypeError, match="erf"):
        taylor_coefficients(lambda t, y: torch.erf(y), 0.0, y, 3)
    with pytest.raises(TypeError, match="branch"):
        taylor_coefficients(lambda t, y: y if t > 0 else -y, 0.0, y, 3)
