"""adjoint="auto": the first method, fastest first, whose estimated memory fits the budget."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import pyjode
from pyjode.adjoints.auto import activation_bytes
from problems import F64, rel_error


def _problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 256), nn.Tanh(), nn.Linear(256, 8)).double()
    field = lambda t, y: net(y)  # noqa: E731
    y0 = torch.randn(64, 8, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 3, 5, dtype=F64)
    return net, field, y0, t


def test_activation_bytes_closed_form():
    """Linear saves its input (y0, excluded) and weight (a parameter, excluded); tanh its output, which the
    second Linear saves again as its input (counted once): 64 x 256 float64s."""
    net, field, y0, t = _problem()
    assert activation_bytes(field, t[0], y0, tuple(net.parameters())) == 64 * 256 * 8


def test_choices_follow_the_budget():
    net, field, y0, _ = _problem()
    t = torch.linspace(0, 12, 5, dtype=F64)  # enough steps for bounded checkpoints to save memory
    params = tuple(net.parameters())

    def run(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=adjoint,
                           adjoint_params=params, stats=stats)
        return torch.autograd.grad(ys.sum(), (y0, *params)), stats

    ref, st = run("direct")
    first = pyjode.Auto(memory_budget=10 ** 12)
    g, stats = run(first)
    assert stats.adjoint == "checkpointed"  # nothing known yet: the graph-free forward pass counts the steps
    for a, b in zip(g, ref):
        assert rel_error(a, b) < 1e-13
    est = None
    for budget, expected in ((10 ** 12, "direct"), (None, "checkpointed"), (None, "checkpointed(checkpoints="),
                             (None, "quadrature")):
        if budget is None:
            budget = est - 1  # just below the previous choice's estimate: the next candidate must be taken
        auto = pyjode.Auto(memory_budget=budget)
        g, stats = run(auto)
        assert stats.adjoint.startswith(expected), (budget, stats.adjoint, auto.estimates)
        est = auto.estimates[stats.adjoint]
        assert est <= budget
        tol = 1e-13 if expected != "quadrature" else 1e-4
        for a, b in zip(g, ref):
            assert rel_error(a, b) < tol
    # the estimates order the candidates by memory
    values = list(auto.estimates.values())
    assert values == sorted(values, reverse=True)
    # with direct's real cost: a step's activations (E = 6 evaluations of 64 x 256 doubles and two states)
    assert st.steps_forward >= 15
    assert auto.estimates["direct"] >= st.steps_forward * 6 * 64 * 256 * 8


def test_reported_in_the_debug_log(caplog):
    net, field, y0, t = _problem()
    with caplog.at_level(logging.DEBUG, logger="pyjode"):
        pyjode.odeint(field, y0, t, adjoint="auto", adjoint_params=tuple(net.parameters()))
    assert "adjoint='auto' chose" in caplog.text


def test_without_autograd_and_time_gradients():
    net, field, y0, t = _problem()
    stats = pyjode.Stats()
    with torch.no_grad():
        pyjode.odeint(field, y0, t, adjoint="auto", stats=stats)
    assert stats.adjoint == "direct"
    stats.reset()
    assert stats.adjoint == "" and stats.nfe_forward == 0
    tg = t.clone().requires_grad_()
    ys = pyjode.odeint(field, y0, tg, adjoint="auto", stats=stats)
    (gt,) = torch.autograd.grad(ys.sum(), tg)
    assert stats.adjoint == "direct" and torch.isfinite(gt).all()


def test_bad_arguments():
    for kw in ({"memory_budget": 0}, {"memory_budget": 1.5}, {"budget_fraction": 0}, {"budget_fraction": 2.0}):
        with pytest.raises(ValueError):
            pyjode.Auto(**kw)
