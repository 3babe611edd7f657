"""The McCallum–Foster reversible method and its exact O(1)-memory adjoint.

Exactness tests run in float64. The float32 test documents its tolerances where it sets them.
"""

import math
import warnings

import pytest
import torch
from torch import nn

import pyjode
from problems import cos_growth, decay, rel_error
from pyjode.adjoints.reversible import ReversibleAdjoint
from pyjode import reversible as reversible_module
from pyjode.integrate import integrate
from pyjode.reversible import Reversible, ReversibleStabilityWarning
from pyjode.step_control import StepControl

F64 = torch.float64


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Stability warnings are issued once per process; each test starts from none issued."""
    reversible_module._warned.clear()
    yield
    reversible_module._warned.clear()


class TimeField(nn.Module):
    """A small non-autonomous MLP field, so the backward pass must replay the step times correctly."""

    def __init__(self, dim=3, hidden=16, dtype=F64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(dim + 1, hidden).to(dtype)
        self.l2 = nn.Linear(hidden, dim).to(dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)

    def forward(self, t, y):
        tt = t.expand(*y.shape[:-1], 1)
        return self.l2(torch.tanh(self.l1(torch.cat([y, tt], dim=-1))))


def _grads(func, y0, t, method, adjoint, **kw):
    y0 = y0.detach().requires_grad_(True)
    ys = pyjode.odeint(func, y0, t, method=method, adjoint=adjoint, **kw)
    # a loss touching every output time, with different weights, so each dL/dy(t_i) matters
    w = torch.arange(1, len(t) + 1, dtype=ys.dtype).view(-1, *([1] * (ys.dim() - 1)))
    loss = (w * ys).square().sum() + ys.sin().sum()
    return ys.detach(), torch.autograd.grad(loss, (y0, *func.parameters()))


# --------------------------------------------------------------------------------------------------------
# Order of accuracy: y' = cos(t) y has y(t) = y0 exp(sin t).

def _error(method, T=2.0, **kw):
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    ys = pyjode.odeint(cos_growth, y0, [0.0, T], method=method, **kw)
    return (ys[-1] - y0 * math.exp(math.sin(T))).abs().max().item()


@pytest.mark.parametrize("base, order", [("midpoint", 2), ("rk4", 4)])
def test_fixed_step_base_order_is_kept(base, order):
    hs = [0.1, 0.05, 0.025]
    errs = [_error(Reversible(base), step_size=h) for h in hs]
    observed = [math.log2(e1 / e2) for e1, e2 in zip(errs[:-1], errs[1:])]
    assert all(abs(p - order) < 0.25 for p in observed), observed


def test_adaptive_base_order_is_kept():
    # error against the number of accepted steps: slope -order on a log-log plot for bosh3 (order 3)
    errs, steps = [], []
    for rtol in [1e-5, 1e-6, 1e-7, 1e-8]:
        stats = pyjode.Stats()
        errs.append(_error(Reversible("bosh3"), T=4.0, rtol=rtol, atol=rtol, stats=stats))
        steps.append(stats.steps_forward)
    x = torch.tensor(steps, dtype=F64).log()
    y = torch.tensor(errs, dtype=F64).log()
    slope = (((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()).item()
    assert abs(-slope - 3) < 0.4, (slope, steps, errs)


def test_adaptive_solution_meets_tolerance_and_hits_output_times():
    ts = [0.0, 0.3, 1.1, 1.7, 3.0]
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    method = Reversible("tsit5")
    sol = integrate(method.stepper(y0), cos_growth, y0, ts, StepControl(rtol=1e-8, atol=1e-10), keep_times=True)
    for i, t in enumerate(ts):
        assert sol.times[sol.output_steps[i]] == t
        assert torch.allclose(sol.ys[i], y0 * math.exp(math.sin(t)), rtol=1e-6, atol=0)
    assert list(sol.times) == sorted(sol.times)
    with_stop = integrate(method.stepper(y0), cos_growth, y0, ts, StepControl(rtol=1e-8, atol=1e-10, step_ts=[0.77]),
                          keep_times=True)
    assert 0.77 in with_stop.times and len(with_stop.ys) == len(ts)
    assert torch.allclose(with_stop.ys[-1], sol.ys[-1], rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------------------
# adjoint="reversible" equals backprop through the same reversible discretisation.

CASES = [
    ("rk4", dict(step_size=0.05), [0.0, 0.3, 0.7, 1.0]),
    ("midpoint", dict(step_size=0.1), [0.0, 0.45, 1.2]),
    ("tsit5", dict(rtol=1e-6, atol=1e-8), [0.0, 0.25, 0.6, 1.5]),
    ("bosh3", dict(rtol=1e-5, atol=1e-7), [1.0, 0.4, -0.5]),  # decreasing time
]


@pytest.mark.parametrize("base, kw, t", CASES, ids=[c[0] for c in CASES])
def test_reversible_adjoint_matches_direct(base, kw, t):
    func = TimeField()
    y0 = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(t, dtype=F64)
    method = Reversible(base, coupling=0.99)
    ys_d, g_direct = _grads(func, y0, t, method, "direct", **kw)
    ys_r, g_rev = _grads(func, y0, t, method, ReversibleAdjoint(), **kw)
    assert torch.equal(ys_d, ys_r)  # the same forward computation
    for a, b in zip(g_rev, g_direct):
        assert rel_error(a, b) < 1e-9


def test_gradient_matches_matrix_exponential():
    # y' = A y: y(1) = expm(A) y0; the discrete gradient approaches the exact one at the base's order
    g = torch.Generator().manual_seed(3)
    A = (torch.randn(3, 3, dtype=F64, generator=g) * 0.5).requires_grad_(True)
    y0 = torch.randn(3, dtype=F64, generator=g).requires_grad_(True)
    ys = pyjode.odeint(lambda t, y: A @ y, y0, [0.0, 1.0], method=Reversible("rk4"), step_size=0.02,
                       adjoint=ReversibleAdjoint(), adjoint_params=(A,))
    gA, gy = torch.autograd.grad(ys[-1].square().sum(), (A, y0))
    exact = torch.linalg.matrix_exp(A) @ y0
    eA, ey = torch.autograd.grad(exact.square().sum(), (A, y0))
    assert rel_error(gA, eA) < 1e-8 and rel_error(gy, ey) < 1e-8  # rk4 with h = 0.02: measured 2e-10


def test_reconstruction_returns_y0_to_rounding():
    func = TimeField()
    y0 = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    adjoint = ReversibleAdjoint()
    ys = pyjode.odeint(func, y0, [0.0, 2.0], method=Reversible("rk4"), step_size=0.01, adjoint=adjoint)
    ys[-1].sum().backward()
    assert adjoint.reconstruction_error < 1e-13


def test_stats_count_both_passes():
    func = TimeField()
    y0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    stats = pyjode.Stats()
    ys = pyjode.odeint(func, y0, [0.0, 0.5, 1.0], method=Reversible("rk4"), step_size=0.1,
                       adjoint=ReversibleAdjoint(), stats=stats)
    assert (stats.steps_forward, stats.nfe_forward, stats.nfe_backward) == (10, 80, 0)
    ys.sum().backward()
    # two four-stage base steps per step, on each pass
    assert (stats.steps_backward, stats.nfe_backward) == (10, 80)

    stats = pyjode.Stats()
    ys = pyjode.odeint(func, y0, [0.0, 1.0], method=Reversible("tsit5"), rtol=1e-6, atol=1e-8,
                       adjoint=ReversibleAdjoint(), stats=stats)
    ys.sum().backward()
    n, rejected = stats.steps_forward, stats.rejected_forward
    # forward: 2 for the initial step, then 6 stages (FSAL stage dropped) + 7 (with the error estimate);
    # backward: two 6-stage base steps per step
    assert stats.nfe_forward == 2 + 13 * (n + rejected)
    assert (stats.steps_backward, stats.nfe_backward) == (n, 12 * n)


# --------------------------------------------------------------------------------------------------------
# float32: documented tolerances.

def test_float32_gradient_against_float64():
    """float32 tolerances. With the default coupling and 400 rk4 steps (n (1 - lambda) = 0.4, amplification
    about 1.5), the rebuilt y0 is within 2e-6 relative (measured: 2e-7) and the gradients agree with the
    float64 gradients of the same scheme to 1e-5 relative (measured: 1e-6): float32 rounding (6e-8 per
    operation) accumulated over 400 steps and two passes, with a 10x margin."""
    f64 = TimeField()
    f32 = TimeField(dtype=torch.float32)
    f32.load_state_dict({k: v.float() for k, v in f64.state_dict().items()})
    y0 = torch.randn(16, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 1.0, 2.0])
    method = Reversible("rk4")
    _, g64 = _grads(f64, y0, t.double(), method, ReversibleAdjoint(), step_size=0.005)
    adjoint = ReversibleAdjoint()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReversibleStabilityWarning)
        _, g32 = _grads(f32, y0.float(), t, method, adjoint, step_size=0.005)
    assert adjoint.reconstruction_error < 2e-6
    for a, b in zip(g32, g64):
        assert rel_error(a.double(), b) < 1e-5


# --------------------------------------------------------------------------------------------------------
# Stability warnings.

def test_parasitic_mode_warns_and_lower_coupling_fixes_it():
    # y' = -y with h = 0.01: h Re(mu) = -0.01 < ln(0.999), so the parasitic mode grows like 1.009^n
    y0 = torch.ones(1, dtype=F64)
    with pytest.warns(ReversibleStabilityWarning, match="lower the coupling"):
        pyjode.odeint(decay, y0, [0.0, 20.0], method=Reversible("rk4"), step_size=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReversibleStabilityWarning)
        ys = pyjode.odeint(decay, y0, [0.0, 20.0], method=Reversible("rk4", coupling=0.9), step_size=0.01)
    assert ys[-1].item() == pytest.approx(math.exp(-20.0), rel=1e-8)


def test_long_run_with_low_coupling_warns_before_and_after_backward():
    y0 = torch.ones(1, dtype=F64, requires_grad=True)
    adjoint = ReversibleAdjoint()
    with pytest.warns(ReversibleStabilityWarning, match="coupling closer to 1"):
        ys = pyjode.odeint(decay, y0, [0.0, 20.0], method=Reversible("rk4", 0.9), step_size=0.01, adjoint=adjoint)
    with pytest.warns(ReversibleStabilityWarning, match="rebuilt y0 with relative error"):
        ys[-1].sum().backward()
    assert adjoint.reconstruction_error > 1.0


def test_each_warning_is_issued_once():
    y0 = torch.ones(1, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for T in (20.0, 21.0, 22.0):  # different figures in each message
            pyjode.odeint(decay, y0, [0.0, T], method=Reversible("rk4"), step_size=0.01)
    assert sum(issubclass(w.category, ReversibleStabilityWarning) for w in caught) == 1


def test_benign_run_is_silent():
    func = TimeField()
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReversibleStabilityWarning)
        ys = pyjode.odeint(func, y0, [0.0, 1.0], method=Reversible("tsit5"), adjoint=ReversibleAdjoint())
        ys.sum().backward()


# --------------------------------------------------------------------------------------------------------
# Errors.

def test_reversible_adjoint_needs_reversible_method():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"pyjode\.Reversible"):
        pyjode.odeint(decay, y0, [0.0, 1.0], method="rk4", step_size=0.1, adjoint=ReversibleAdjoint())
    with pytest.raises(ValueError, match=r"pyjode\.Reversible"):
        pyjode.odeint(decay, y0, [0.0, 1.0], method="dopri5", adjoint=ReversibleAdjoint())


def test_bad_arguments():
    y0 = torch.ones(2, dtype=F64)
    for coupling in [0.0, 1.5, -0.2, float("nan")]:
        with pytest.raises(ValueError, match="coupling"):
            Reversible("rk4", coupling=coupling)
    # without step_size a fixed-step base steps from output time to output time
    torch.testing.assert_close(pyjode.odeint(decay, y0, [0.0, 0.5, 1.0], method=Reversible("rk4")),
                               pyjode.odeint(decay, y0, [0.0, 0.5, 1.0], method=Reversible("rk4"), step_size=0.5),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="not known"):
        Reversible("rk5")
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="with respect to t"):
        pyjode.odeint(decay, y0.requires_grad_(), t, method=Reversible("rk4"), step_size=0.1,
                      adjoint=ReversibleAdjoint())
    with pytest.raises(ValueError, match="shape"):
        pyjode.odeint(lambda t, y: y[:1], y0, [0.0, 1.0], method=Reversible("rk4"), step_size=0.1)


def test_numerical_failures_raise():
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(RuntimeError, match="max_steps"):
        pyjode.odeint(cos_growth, y0, [0.0, 10.0], method=Reversible("tsit5"), rtol=1e-10, atol=1e-12, max_steps=5)
    with pytest.raises(RuntimeError, match="NaN or inf"):  # y' = y^2 blows up at t = 1
        pyjode.odeint(lambda t, y: y * y, y0, [0.0, 2.0], method=Reversible("rk4"), step_size=0.01)
    with pytest.raises(RuntimeError, match=r"underflowed .* at t=(1|0\.99)"):
        pyjode.odeint(lambda t, y: y * y, y0, [0.0, 2.0], method=Reversible("tsit5"))
