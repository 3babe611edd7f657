"""TaylorLagrange: local order of the truncated step, exactness at the mean-value midpoint, gradients to
both networks, and the midpoint fit against an accurate solve."""

import math

import pytest
import torch
from torch import nn

from pyjode.odeint import odeint
from pyjode.taylor_lagrange import MidpointNet, TaylorLagrange, fit_midpoint, taylor_lagrange_step, train_alternating

D = torch.float64


def _observed_orders(step_error, hs):
    errs = [step_error(h) for h in hs]
    return [math.log(errs[i] / errs[i + 1]) / math.log(hs[i] / hs[i + 1]) for i in range(len(hs) - 1)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_truncated_step_local_order(order):
    # y' = t y + y^2 from (t0, y0); the reference is a tight adaptive solve. Local error ~ h^(order + 1).
    field = lambda t, y: t * y + y ** 2  # noqa: E731
    t0, y0 = 0.3, torch.tensor([0.5], dtype=D)

    def step_error(h):
        tt, hh = torch.tensor(t0, dtype=D), torch.tensor(h, dtype=D)
        y1, rem = taylor_lagrange_step(field, tt, y0, hh, order)
        assert rem is None
        ref = odeint(field, y0, torch.tensor([t0, t0 + h], dtype=D), method="dopri5", rtol=1e-13, atol=1e-15)[-1]
        return (y1 - ref).abs().item()

    orders = _observed_orders(step_error, [0.08, 0.04, 0.02])
    assert all(abs(p - (order + 1)) < 0.15 for p in orders), orders


class _ExactMidpoint:
    """For y' = a y, xi = y + gamma a y with gamma from the mean-value form of the remainder."""

    def __init__(self, a, order):
        self.a, self.order = a, order

    def __call__(self, y, dt):
        z = self.a * dt
        head = sum(z ** i / math.factorial(i) for i in range(self.order + 1))
        ratio = math.factorial(self.order + 1) * (torch.exp(z) - head) / z ** (self.order + 1)  # xi / y
        return (ratio - 1) / self.a * torch.ones_like(y), torch.zeros_like(dt)


@pytest.mark.parametrize("order", [1, 2])
def test_exact_midpoint_reproduces_linear_solution(order):
    a = -1.3
    y0 = torch.tensor([[0.7], [-2.0]], dtype=D)
    tl = TaylorLagrange(lambda t, y: a * y, order=order, steps=3, midpoint=_ExactMidpoint(a, order))
    y1 = tl(y0, 0.0, 1.2)
    torch.testing.assert_close(y1, y0 * math.exp(a * 1.2), rtol=1e-13, atol=0)
    truncated = TaylorLagrange(lambda t, y: a * y, order=order, steps=3, remainder=False)(y0, 0.0, 1.2)
    assert (truncated - y0 * math.exp(a * 1.2)).abs().max() > 1e-4  # the remainder is what made it exact


class _Field(nn.Module):
    def __init__(self, dim=3, hidden=12, scale=2.0):
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden)
        self.l2 = nn.Linear(hidden, dim)
        with torch.no_grad():
            self.l2.weight.mul_(scale)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([y, t.expand(*y.shape[:-1], 1)], -1))))


def test_gradients_reach_both_networks():
    torch.manual_seed(0)
    f = _Field().to(D)
    tl = TaylorLagrange(f, order=1, steps=2, dim=3).to(D)
    with torch.no_grad():  # move xi away from y so that every midpoint weight has a gradient path
        for p in tl.midpoint.parameters():
            p.uniform_(-0.3, 0.3)
    y0 = torch.randn(5, 3, dtype=D)
    loss = tl(y0).pow(2).mean() + 10.0 * tl.remainder_penalty()
    named = [(n, p) for n, p in tl.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    for (name, _), g in zip(named, grads):
        assert g.abs().sum() > 0, name
    # and they are the right gradients: central differences on one weight of each network
    for name, g in zip([n for n, _ in named], grads):
        if name not in ("func.l1.weight", "midpoint.net.0.weight"):
            continue
        p = dict(tl.named_parameters())[name]
        eps = 1e-6
        with torch.no_grad():
            p[0, 0] += eps
            up = tl(y0).pow(2).mean() + 10.0 * tl.remainder_penalty()
            p[0, 0] -= 2 * eps
            down = tl(y0).pow(2).mean() + 10.0 * tl.remainder_penalty()
            p[0, 0] += eps
        assert abs((up - down).item() / (2 * eps) - g[0, 0].item()) < 1e-7 * max(1.0, abs(g[0, 0].item()))


def test_midpoint_fit_reduces_step_error():
    torch.manual_seed(1)
    f = _Field(scale=3.0).to(D)
    tl = TaylorLagrange(f, order=1, steps=2, dim=3).to(D)
    y_fit, y_new = torch.randn(32, 3, dtype=D), torch.randn(32, 3, dtype=D)
    span = torch.tensor([0.0, 1.0], dtype=D)

    def error(y):
        with torch.no_grad():
            ref = odeint(f, y, span, method="dopri5", rtol=1e-10, atol=1e-10)[-1]
            return (tl(y) - ref).abs().mean().item()

    before_fit, before_new = error(y_fit), error(y_new)
    dynamics = [p.detach().clone() for p in f.parameters()]
    losses = fit_midpoint(tl, y_fit, iters=40, lr=1e-2)
    assert len(losses) == 40 and losses[-1] < losses[0]
    # the dynamics were frozen for the fit, and are trainable again after it
    assert all(p.requires_grad and p.grad is None and torch.equal(p, q) for p, q in zip(f.parameters(), dynamics))
    assert error(y_fit) < 0.25 * before_fit
    assert error(y_new) < 0.5 * before_new  # it learns a map, not this batch


def test_train_alternating_lowers_the_task_loss():
    torch.manual_seed(2)
    f = _Field(scale=1.0).to(D)
    tl = TaylorLagrange(f, order=1, steps=2, dim=3).to(D)
    head = nn.Linear(3, 1).to(D)
    model = lambda x: head(tl(x))  # noqa: E731
    x = torch.randn(64, 3, dtype=D)
    target = torch.sin(x.sum(-1, keepdim=True))
    opt = torch.optim.Adam([*f.parameters(), *head.parameters()], lr=2e-2)
    history = train_alternating(model, tl, [(x, target)] * 80, nn.functional.mse_loss, opt,
                                remainder_weight=1.0, midpoint_every=10, midpoint_iters=3)
    assert len(history) == 80 and history[-1] < 0.5 * history[0]
    with pytest.raises(ValueError, match="midpoint"):
        train_alternating(model, tl, [(x, target)], nn.functional.mse_loss, torch.optim.Adam(tl.parameters()))


def test_construction_errors():
    with pytest.raises(ValueError, match="order"):
        TaylorLagrange(lambda t, y: y, order=0, dim=2)
    with pytest.raises(ValueError, match="steps"):
        TaylorLagrange(lambda t, y: y, steps=0, dim=2)
    with pytest.raises(ValueError, match="dim"):
        MidpointNet(2)(torch.ones(4, 3), torch.tensor(0.1))


def test_default_midpoint_starts_at_y():
    net = MidpointNet(3)
    gy, gt = net(torch.randn(7, 3), torch.tensor(0.5))
    assert gy.abs().max() < 1e-3 and gt.abs().max() < 1e-3


def test_evaluation_graph_matches_the_step_by_step_solve():
    # without autograd, forward runs a traced fixed graph: same numbers as the eager steps, for each shape
    torch.manual_seed(3)
    f = _Field(scale=2.0).to(D)
    tl = TaylorLagrange(f, order=2, steps=3, dim=3).to(D)
    with torch.no_grad():
        for p in tl.midpoint.parameters():
            p.uniform_(-0.3, 0.3)
    for batch in (5, 2):
        y0 = torch.randn(batch, 3, dtype=D)
        ref, ref_rem = tl.solve_eager(y0, 0.2, 1.1)
        with torch.no_grad():
            out = tl(y0, 0.2, 1.1)
        torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
        for r, q in zip(tl.remainders, ref_rem):
            torch.testing.assert_close(r, q, rtol=1e-14, atol=1e-14)
        with torch.inference_mode():
            torch.testing.assert_close(tl(y0, 0.2, 1.1), ref, rtol=1e-14, atol=1e-14)
    with torch.no_grad():  # the graph reads the current weights: training needs no re-trace
        f.l2.weight.mul_(0.5)
        torch.testing.assert_close(tl(y0, 0.2, 1.1), tl.solve_eager(y0, 0.2, 1.1)[0], rtol=1e-14, atol=1e-14)


def test_evaluation_graph_rejects_value_dependent_branches():
    tl = TaylorLagrange(lambda t, y: y if y.sum() > 0 else -y, order=1, steps=2, remainder=False)
    with torch.no_grad(), pytest.raises(TypeError, match="branch"):
        tl(torch.ones(2, 3, dtype=D))


def test_dynamics_step_leaves_the_midpoint_alone():
    torch.manual_seed(4)
    f = _Field(scale=1.0).to(D)
    tl = TaylorLagrange(f, order=1, steps=2, dim=3).to(D)
    mid = [p.detach().clone() for p in tl.midpoint.parameters()]
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    x = torch.randn(16, 3, dtype=D)
    train_alternating(tl, tl, [(x, x)] * 3, nn.functional.mse_loss, opt, midpoint_iters=0)
    assert all(p.requires_grad and p.grad is None and torch.equal(p, q) for p, q in zip(tl.midpoint.parameters(), mid))
