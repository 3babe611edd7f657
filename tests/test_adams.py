"""pyjode.Adams: observed orders of the Adams–Bashforth and –Moulton steppers on uniform and non-uniform
grids, the classical coefficients, and gradients through them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pyjode
from pyjode.adams import _weights

F64 = torch.float64


def test_uniform_weights_are_the_classical_coefficients():
    np.testing.assert_allclose(_weights((0, -1, -2, -3)), np.array([55, -59, 37, -9]) / 24, rtol=1e-13)
    np.testing.assert_allclose(_weights((1, 0, -1, -2)), np.array([9, 19, -5, 1]) / 24, rtol=1e-13)


def errors(method, ns, t_out):
    out = []
    for n in ns:
        t = torch.tensor(t_out, dtype=F64)
        ys = pyjode.odeint(lambda s, y: -y * torch.cos(s), torch.ones(2, dtype=F64), t, method=method,
                           step_size=(t_out[-1] - t_out[0]) / n)
        out.append(float((ys[:, 0] - torch.exp(-torch.sin(t))).abs().max()))
    return out


@pytest.mark.parametrize("implicit, slopes, order", [(False, 4, 4), (False, 3, 3), (True, 4, 5)])
@pytest.mark.parametrize("t_out", [[0.0, 2.0], [0.0, 0.3, 1.1, 2.0]])  # the second has unequal steps
def test_observed_order(implicit, slopes, order, t_out):
    method = pyjode.Adams(implicit=implicit, max_order=slopes + 1, max_iters=50, rtol=1e-14, atol=1e-14)
    errs = errors(method, [40, 80, 160], t_out)
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert abs(rates[-1] - order) < 0.35, (errs, rates)


def test_direct_gradient_matches_finite_differences_and_backsolve():
    p = torch.tensor(0.8, dtype=F64, requires_grad=True)

    def f(t, y):
        return -p * y * torch.cos(t)

    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    method = pyjode.Adams(implicit=False, max_order=5)
    y0 = torch.ones(2, dtype=F64)
    loss = pyjode.odeint(f, y0, t, method=method, step_size=0.01).sum()
    (g,) = torch.autograd.grad(loss, p)
    with torch.no_grad():
        eps = 1e-6
        plus = pyjode.odeint(lambda s, y: -(p + eps) * y * torch.cos(s), y0, t, method=method, step_size=0.01).sum()
        minus = pyjode.odeint(lambda s, y: -(p - eps) * y * torch.cos(s), y0, t, method=method, step_size=0.01).sum()
    assert abs(float(g) - float(plus - minus) / (2 * eps)) < 1e-7
    # the continuous adjoint through the same method agrees to its discretisation error
    loss = pyjode.odeint(f, y0, t, method=method, step_size=0.01, adjoint="backsolve", adjoint_params=(p,)).sum()
    (g_adj,) = torch.autograd.grad(loss, p)
    exact = float(-(2 * torch.sin(t) * torch.exp(-0.8 * torch.sin(t))).sum())
    assert abs(float(g) - exact) < 1e-6 and abs(float(g_adj) - exact) < 1e-6


def test_float32_and_errors():
    ys = pyjode.odeint(lambda s, y: -y, torch.ones(3), torch.tensor([0.0, 1.0]), method=pyjode.Adams(max_order=5), step_size=0.01)
    assert ys.dtype == torch.float32 and abs(float(ys[-1, 0]) - math.exp(-1)) < 1e-5
    with pytest.raises(ValueError, match="max_order"):
        pyjode.Adams(max_order=2)
    with pytest.raises(ValueError, match="quadrature|Runge"):
        pyjode.odeint(lambda s, y: -y, torch.ones(3), torch.tensor([0.0, 1.0]), method=pyjode.Adams(),
                      step_size=0.1, adjoint="quadrature")
