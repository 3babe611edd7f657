"""adjoint="auto": the method predicted fastest among those whose estimated memory fits the budget."""

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


def _runner(field, y0, t, params):
    def run(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=adjoint,
                           adjoint_params=params, stats=stats)
        return torch.autograd.grad(ys.sum(), (y0, *params)), stats
    return run


def _check_gradient(g, ref, label):
    tol = 1e-4 if label.startswith(("quadrature", "backsolve")) else 1e-13  # continuous: the backward tolerance
    for a, b in zip(g, ref):
        assert rel_error(a, b) < tol, label


def test_many_outputs_rank_checkpointing_before_quadrature():
    """With 40 output times the quadrature adjoint's backward solve restarts 39 times (at least E + 3 = 9
    evaluations each), far more than the forward pass: the candidates rank direct, checkpointed, bounded
    checkpoints, quadrature, and shrinking the budget below each choice's estimate takes the next."""
    net, field, y0, _ = _problem()
    t = torch.linspace(0, 12, 40, dtype=F64)  # enough steps for bounded checkpoints to save memory
    params = tuple(net.parameters())
    run = _runner(field, y0, t, params)
    ref, st = run("direct")
    first = pyjode.Auto(memory_budget=10 ** 12, trials=0)
    g, stats = run(first)
    assert stats.adjoint == "checkpointed"  # nothing known yet: the graph-free forward pass counts the steps
    _check_gradient(g, ref, "checkpointed")
    est = None
    for budget, expected in ((10 ** 12, "direct"), (None, "checkpointed"), (None, "checkpointed(checkpoints="),
                             (None, "quadrature")):
        if budget is None:
            budget = est - 1  # just below the previous choice's estimate: the next candidate must be taken
        auto = pyjode.Auto(memory_budget=budget, trials=0)  # the prediction alone
        g, stats = run(auto)
        assert stats.adjoint.startswith(expected), (budget, stats.adjoint, auto.estimates)
        est = auto.estimates[stats.adjoint]
        assert est <= budget
        _check_gradient(g, ref, expected)
    # here memory and predicted time order the candidates the opposite ways (Backsolve, whose augmented
    # state carries the parameters, is the slowest and needs more than quadrature)
    labels = list(auto.estimates)
    assert labels[:2] == ["direct", "checkpointed"] and labels[2].startswith("checkpointed(checkpoints=")
    assert labels[3:] == [stats.adjoint, "backsolve"]
    need = list(auto.estimates.values())
    assert need[:4] == sorted(need[:4], reverse=True) and need[4] > need[3]
    assert list(auto.costs.values()) == sorted(auto.costs.values())
    # the prediction from the record of the previous solve: A = N E accepted evaluations, F in all
    steps, nfe = st.steps_forward, st.nfe_forward
    e = nfe / (steps + st.rejected_forward)  # evaluations per attempt (dopri5: 6, plus the first step's guess)
    assert 6 <= e < 6.5
    assert auto.costs["direct"] == int(nfe + 2 * steps * e)
    backward = 39 * (e + 3)  # B = (T - 1)(E + 3) > A here; m = ceil(4 / 2) = 2 nodes per dopri5 step
    assert auto.costs[stats.adjoint] == int(nfe + 2 * backward + 2 * backward / e) > auto.costs["checkpointed"]
    # with direct's real cost: a step's activations (E = 6 evaluations of 64 x 256 doubles and two states)
    assert steps >= 15
    P = sum(p.numel() * p.element_size() for p in params)  # and the gradient with one VJP into it
    assert auto.estimates["direct"] >= steps * 6 * 64 * 256 * 8 + 2 * P
    assert min(auto.estimates.values()) >= 2 * P


def test_few_outputs_rank_quadrature_before_checkpointing():
    """With two output times the backward solve takes about as many evaluations as the forward pass, each
    with a state-only VJP, so the quadrature adjoint is predicted faster than re-running every step with a
    graph (as measured on the CNFs and wide MLPs of benchmarks/RESULTS.md), and is taken as soon as direct
    does not fit."""
    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    run = _runner(field, y0, t, params)
    ref, _ = run("direct")
    run(pyjode.Auto(memory_budget=10 ** 12))  # the first solve records the steps
    auto = pyjode.Auto(memory_budget=10 ** 12, trials=0)
    run(auto)
    assert auto.choice.name == "direct"
    q = next(label for label in auto.costs if label.startswith("quadrature"))
    assert auto.costs["direct"] < auto.costs[q] < auto.costs["checkpointed"]
    tight = pyjode.Auto(memory_budget=auto.estimates["direct"] - 1, trials=0)
    g, stats = run(tight)
    assert stats.adjoint.startswith("quadrature"), (stats.adjoint, tight.costs)
    _check_gradient(g, ref, stats.adjoint)
    # and when even quadrature's smallest estimate does not fit, the smallest estimate is taken
    tiny = pyjode.Auto(memory_budget=1, trials=0)
    g, stats = run(tiny)
    assert stats.adjoint == min(tiny.estimates, key=tiny.estimates.get)
    _check_gradient(g, ref, stats.adjoint)


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
    for kw in ({"memory_budget": 0}, {"memory_budget": 1.5}, {"budget_fraction": 0}, {"budget_fraction": 2.0},
               {"trials": -1}, {"trials": 1.5}, {"trials": True}):
        with pytest.raises(ValueError):
            pyjode.Auto(**kw)


def test_close_contenders_are_timed_and_the_fastest_kept(monkeypatch):
    """Candidates predicted within 2x of the fastest that fits are each used for `trials` gradients, timed
    from the solve's start to the end of the backward pass through its outputs, and the one with the least
    time per forward evaluation is kept. A fake clock makes Backsolve (the slowest by prediction) the
    fastest by measurement: auto must take it once every contender is measured, and every gradient on the
    way must be right."""
    from pyjode.adjoints import auto_trials
    from pyjode.adjoints.backsolve import Backsolve
    from pyjode.adjoints.checkpointed import Checkpointed
    from pyjode.adjoints.quadrature import Quadrature

    clock = [0.0]
    monkeypatch.setattr(auto_trials, "_now", lambda device: clock[0])
    for cls, seconds in ((Backsolve, 1.0), (Checkpointed, 2.0), (Quadrature, 3.0)):
        def solve(self, spec, _orig=cls.solve, _s=seconds):
            clock[0] += _s  # the forward part of the measurement
            return _orig(self, spec)
        monkeypatch.setattr(cls, "solve", solve)

    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    run = _runner(field, y0, t, params)
    ref, _ = run("direct")
    probe = pyjode.Auto(memory_budget=10 ** 12, trials=0)
    run(probe)  # records the steps
    run(probe)
    budget = probe.estimates["direct"] - 1  # direct does not fit: quadrature, checkpointed, backsolve are close
    auto = pyjode.Auto(memory_budget=budget, trials=2)
    tried = []
    for _ in range(6):
        g, stats = run(auto)
        assert auto.measuring
        tried.append(stats.adjoint.split("(")[0])
        _check_gradient(g, ref, stats.adjoint)
    assert sorted(tried) == sorted(["quadrature", "checkpointed", "backsolve"] * 2), tried
    assert tried[:3] == ["quadrature", "checkpointed", "backsolve"]  # interleaved, predicted-fastest first
    for _ in range(2):
        g, stats = run(auto)
        assert stats.adjoint == "backsolve" and not auto.measuring
        _check_gradient(g, ref, "backsolve")
    assert set(auto.measured) == {"quadrature", "checkpointed", "backsolve"}
    assert min(auto.measured, key=auto.measured.get) == "backsolve"
    # the measurements belong to the problem: a new Auto with the same budget keeps the choice
    again = pyjode.Auto(memory_budget=budget, trials=2)
    assert run(again)[1].adjoint == "backsolve" and not again.measuring
    # trials=0 goes by the prediction
    assert run(pyjode.Auto(memory_budget=budget, trials=0))[1].adjoint.startswith("quadrature")


def test_a_measurement_spans_the_backward_pass():
    """The time reported for a solve includes the backward pass after it reaches the solve's outputs: a
    backward pass that sleeps 50 ms upstream of the outputs shows in the report, once, even when the graph
    is backpropagated twice."""
    import time

    from pyjode.adjoints.auto_trials import timed

    class Slow(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            time.sleep(0.05)
            return g * 2

    x = torch.ones(3, requires_grad=True)
    reports = []
    ys = timed(lambda: Slow.apply(x), x.device, lambda: 5, reports.append)
    assert reports == []  # nothing until the backward pass ends
    ys.sum().backward(retain_graph=True)
    assert len(reports) == 1 and reports[0] >= 0.05 / 5
    assert torch.equal(x.grad, torch.full((3,), 2.0))
    ys.sum().backward()
    assert len(reports) == 1
    # without a graph there is nothing to time
    with torch.no_grad():
        timed(lambda: x * 2, x.device, lambda: 1, reports.append)
    assert len(reports) == 1


def test_measuring_ends_when_no_backward_pass_comes():
    """Solves under autograd whose outputs are never backpropagated leave no measurement; after twice the
    tries each contender stops being measured and the prediction decides, so auto never keeps alternating."""
    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    probe = pyjode.Auto(memory_budget=10 ** 12, trials=0)
    for _ in range(2):
        pyjode.odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=probe, adjoint_params=params)
    auto = pyjode.Auto(memory_budget=probe.estimates["direct"] - 1, trials=1)
    measured = 0
    for _ in range(12):
        stats = pyjode.Stats()
        pyjode.odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=auto, adjoint_params=params,
                      stats=stats)
        measured += auto.measuring
    assert measured == 2 * 3  # three contenders, tried twice each
    assert not auto.measuring and stats.adjoint.startswith("quadrature")


def test_measurements_go_stale_when_the_steps_change():
    from pyjode.adjoints.auto_trials import Trials

    trials = Trials(steps=20)
    assert not trials.stale(14) and not trials.stale(30)
    assert trials.stale(13) and trials.stale(31)
    report = trials.start("a")
    assert trials.next(["a", "b"], 1) == "b"  # least tried first
    report(2.0)
    trials.start("b")(1.0)
    assert trials.next(["a", "b"], 1) is None and trials.best(["a", "b"]) == "b"
    trials.start("a")(0.5)  # the minimum is the score: noise only adds
    assert trials.best(["a", "b"]) == "a"


# ----------------------------------------------------------------------------------------------------
# What only the discrete gradients can do: captured tensors, and higher-order gradients.


def _tight_budget(field, y0, t, params):
    """A budget under direct's estimate, where the quadrature adjoint is chosen when it may be."""
    run = _runner(field, y0, t, params)
    run(pyjode.Auto(memory_budget=10 ** 12))  # the first solve records the steps
    auto = pyjode.Auto(memory_budget=10 ** 12, trials=0)
    run(auto)
    budget = auto.estimates["direct"] - 1
    _, stats = run(pyjode.Auto(memory_budget=budget, trials=0))
    assert stats.adjoint.startswith("quadrature")  # with adjoint_params given
    return budget


def test_closure_without_adjoint_params_gets_backprops_gradient():
    """A lambda closing over a module, without adjoint_params: every iteration's gradient is backprop's;
    it used to come back None under the first solve's checkpointed gradient, and to raise a ValueError
    once the quadrature adjoint was chosen."""
    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    budget = _tight_budget(field, y0, t, ())  # the estimates of a field without parameters, as this one seems
    ys = pyjode.odeint(field, y0, t, rtol=1e-6, atol=1e-8)
    ref = torch.autograd.grad(ys.sum(), (y0, *params))
    auto = pyjode.Auto(memory_budget=budget, trials=0)
    for _ in range(3):
        closure = lambda t, y: net(y)  # noqa: E731 - a new closure each iteration, as in a training loop
        stats = pyjode.Stats()
        ys = pyjode.odeint(closure, y0, t, rtol=1e-6, atol=1e-8, adjoint=auto, stats=stats)
        g = torch.autograd.grad(ys.sum(), (y0, *params))
        assert stats.adjoint in ("direct", "checkpointed") or stats.adjoint.startswith("checkpointed(")
        _check_gradient(g, ref, stats.adjoint)
    # the same closure solved again: its traced record is kept, and the choice stays discrete
    for _ in range(3):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, rtol=1e-6, atol=1e-8, adjoint=auto, stats=stats)
        _check_gradient(torch.autograd.grad(ys.sum(), (y0, *params)), ref, stats.adjoint)
        assert not stats.adjoint.startswith(("quadrature", "backsolve")), stats.adjoint


def test_create_graph_keeps_to_methods_with_second_derivatives():
    """A gradient penalty every iteration: the second derivative is backprop's throughout; once a backward
    pass asked for a graph, the quadrature adjoint (whose backward solve has none) is no longer chosen. It
    used to raise on the first solve (checkpointed) and then with DoubleBackwardError."""
    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    budget = _tight_budget(field, y0, t, params)

    def penalty_grad(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, rtol=1e-6, atol=1e-8, adjoint=adjoint, adjoint_params=params, stats=stats)
        (gy,) = torch.autograd.grad(ys.sum(), y0, create_graph=True)
        return torch.autograd.grad((gy ** 2).sum(), params), stats

    fresh = lambda t, y: net(y)  # noqa: E731 - a field auto has no record of
    field = fresh
    ref, _ = penalty_grad("direct")
    auto = pyjode.Auto(memory_budget=budget, trials=0)
    labels = []
    for _ in range(4):
        g, stats = penalty_grad(auto)
        labels.append(stats.adjoint)
        _check_gradient(g, ref, stats.adjoint)
    assert labels[0] == "checkpointed" and not any(x.startswith(("quadrature", "backsolve")) for x in labels)


@pytest.mark.parametrize("method", ["kvaerno5", "radauIIA5", "adams"])
def test_methods_checkpointed_cannot_step_use_the_other_candidates(method):
    """Implicit and Adams methods: auto chooses among the candidates that accept them (direct, and the
    continuous adjoints where they apply), and every gradient is direct's within the adjoint's tolerance. It
    used to refuse them with checkpointed's error."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    field = lambda t, y: net(y)  # noqa: E731
    params = tuple(net.parameters())
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    m = pyjode.Adams() if method == "adams" else method

    def run(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, method=m, rtol=1e-6, atol=1e-8, adjoint=adjoint, adjoint_params=params,
                           stats=stats)
        return torch.autograd.grad(ys.sum(), (y0, *params)), stats

    ref, _ = run("direct")
    labels = set()
    for budget in (10 ** 12, 10 ** 4):  # room for direct, then too little for it
        auto = pyjode.Auto(memory_budget=budget, trials=0)
        for _ in range(2):
            g, stats = run(auto)
            labels.add(stats.adjoint)
            _check_gradient(g, ref, stats.adjoint)
    assert "direct" in labels and not any(x.startswith("checkpointed") for x in labels), labels
    assert "backsolve" in auto.costs and "checkpointed" not in auto.costs, auto.costs
    if method != "adams":  # a continuous adjoint where direct does not fit
        assert labels - {"direct"}, labels


def test_closure_over_a_tensor_computed_outside_the_solve():
    """A hypernetwork's weight, computed from a leaf before the solve, used by a closure: auto's checkpointed
    gradient reaches the leaf through that graph at every step and equals backprop's. It used to free the
    graph after the first step and fail with autograd's 'backward through the graph a second time'."""
    torch.manual_seed(6)
    z = torch.randn(3, 3, dtype=F64, requires_grad=True)
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    auto = pyjode.Auto(trials=0)

    def grads(adjoint):
        W = torch.tanh(z) @ z  # a fresh graph each iteration, as a hypernetwork makes one
        stats = pyjode.Stats()
        ys = pyjode.odeint(lambda t, y: torch.tanh(y @ W), y0, t, rtol=1e-6, atol=1e-8, adjoint=adjoint, stats=stats)
        return torch.autograd.grad((ys ** 2).sum(), (y0, z)), stats

    ref, _ = grads("direct")
    for _ in range(3):
        g, stats = grads(auto)
        _check_gradient(g, ref, stats.adjoint)
        assert stats.adjoint in ("direct", "checkpointed") or stats.adjoint.startswith("checkpointed(")


def test_first_gradient_penalty_after_a_continuous_choice():
    """auto has chosen the quadrature adjoint for a field (first-order training so far); the first gradient
    penalty then gets a differentiable gradient (backprop's, recomputed) instead of a DoubleBackwardError, and
    later solves of the field keep to the discrete gradients."""
    net, field, y0, _ = _problem()
    t = torch.tensor([0.0, 12.0], dtype=F64)
    params = tuple(net.parameters())
    budget = _tight_budget(field, y0, t, params)
    auto = pyjode.Auto(memory_budget=budget, trials=0)

    def penalty_grad(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, rtol=1e-6, atol=1e-8, adjoint=adjoint, adjoint_params=params, stats=stats)
        (gy,) = torch.autograd.grad(ys.sum(), y0, create_graph=True)
        return (gy, *torch.autograd.grad((gy ** 2).sum(), params)), stats

    ref, _ = penalty_grad("direct")
    g, stats = penalty_grad(auto)
    assert stats.adjoint.startswith("quadrature")
    for a, b in zip(g, ref):  # sum(ys) is linear in ys: the whole chain is backprop's, to rounding
        assert rel_error(a, b) < 1e-10
    g, stats = penalty_grad(auto)
    assert not stats.adjoint.startswith(("quadrature", "backsolve"))
    for a, b in zip(g, ref):
        assert rel_error(a, b) < 1e-10


def test_first_gradient_penalty_after_the_reversible_choice():
    """The same for a pyjode.Reversible method, where auto's smallest-memory choice is the reversible adjoint:
    the gradient penalty's derivative equals backprop's through the same steps to rounding."""
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    field = lambda t, y: net(y)  # noqa: E731
    y0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    params = tuple(net.parameters())
    kw = dict(method=pyjode.Reversible("rk4"), step_size=0.01, adjoint_params=params)

    def penalty_grad(adjoint):
        stats = pyjode.Stats()
        ys = pyjode.odeint(field, y0, t, adjoint=adjoint, stats=stats, **kw)
        (gy,) = torch.autograd.grad(ys.sum(), y0, create_graph=True)
        return (gy, *torch.autograd.grad((gy ** 2).sum(), params)), stats

    auto = pyjode.Auto(memory_budget=1, trials=0)  # nothing fits: the smallest estimate is taken
    torch.autograd.grad(pyjode.odeint(field, y0, t, adjoint=auto, **kw).sum(), params)  # the record
    ref, _ = penalty_grad("direct")
    g, stats = penalty_grad(auto)
    assert stats.adjoint == "reversible", auto.estimates
    for a, b in zip(g, ref):
        assert rel_error(a, b) < 1e-10
