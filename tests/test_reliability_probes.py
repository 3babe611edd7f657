"""Adversarial probes: bad input, numerical failure, unusual autograd use and concurrency, each asserting the good
behaviour (a correct result, or a clear error naming what happened, where and what to try, within a second).

Probes that used to run for tens of seconds (bad starts) run in a subprocess with a timeout, so a regression
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from torch import nn

import pyjode
from problems import MLP, linear_exact_loss, linear_problem
from pyjode.errors import BadStartError, DoubleBackwardError, SolveError

F64, F32 = torch.float64, torch.float32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTINUOUS = {"backsolve": lambda: pyjode.Backsolve(), "backsolve_rms": lambda: pyjode.Backsolve(norm="rms"),
              "quadrature": lambda: pyjode.Quadrature(), "stored": lambda: pyjode.Quadrature(state="stored")}


def _linear_field(A):
    return lambda t, y: y @ A.T


# ----------------------------------------------------------------------------------------------------
# Bad starts: reported at once (well under a second of solving), naming what is wrong.

_BAD_STARTS = {
    "nan_y0": ("odeint(lambda t, y: -y, torch.tensor([1.0, float('nan'), 2.0], dtype=torch.float64), [0.0, 1.0])",
               "BadStartError", "y0 contains NaN at index (1,)"),
    "inf_y0": ("odeint(lambda t, y: -y, torch.tensor([[1.0, 2.0], [3.0, float('inf')]]), [0.0, 1.0])",
               "BadStartError", "y0 contains inf at index (1, 1)"),
    "nan_field_at_t0": ("odeint(lambda t, y: (y - 1) / (y - 1), torch.ones(3, dtype=torch.float64), [0.0, 1.0])",
                        "BadStartError", "f(t0, y0) is NaN"),
    "atol0_zero_component": ("odeint(lambda t, y: -y, torch.tensor([1.0, 0.0]), [0.0, 1.0], rtol=1e-6, atol=0.0)",
                             "BadStartError", "error scale atol + rtol*|y| is zero at index (1,)"),
    "atol_underflow_f32": ("odeint(lambda t, y: -y, torch.ones(2), [0.0, 1.0], rtol=0.0, atol=1e-300)",
                           "BadStartError", "below the smallest normal torch.float32"),
    "fixed_step_nan_y0": ("odeint(lambda t, y: -y, torch.tensor([float('nan')]), [0.0, 1.0], method='rk4', "
                          "step_size=0.1)", "BadStartError", "y0 contains NaN at index (0,)"),
    "float16_y0": ("odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float16), [0.0, 1.0])", "TypeError",
                   "float32 or float64"),
    "bfloat16_y0": ("odeint(lambda t, y: -y, torch.ones(2, dtype=torch.bfloat16), [0.0, 1.0])", "TypeError",
                    "float32 or float64"),
}

_RUNNER = textwrap.dedent("""
    import json, signal, sys, time, torch
    from pyjode import odeint
    torch.set_num_threads(1)
    class Timeout(Exception):
        pass
    def alarm(*_):
        raise Timeout()
    signal.signal(signal.SIGALRM, alarm)
    out = {}
    for name, code in json.loads(sys.argv[1]).items():
        start = time.perf_counter()
        signal.alarm(10)
        try:
            eval(code)
            out[name] = ["returned", "", time.perf_counter() - start]
        except Timeout:
            out[name] = ["timeout", "", time.perf_counter() - start]
        except Exception as e:
            out[name] = [type(e).__name__, str(e), time.perf_counter() - start]
        signal.alarm(0)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def bad_start_results():
    codes = {k: v[0] for k, v in _BAD_STARTS.items()}
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(codes)], capture_output=True, text=True,
                          timeout=200, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(_BAD_STARTS))
def test_bad_start_reported_at_once(bad_start_results, name):
    kind, message, seconds = bad_start_results[name]
    _, want_kind, want_text = _BAD_STARTS[name]
    assert kind == want_kind, (kind, message)
    assert want_text in message, message
    assert seconds < 1.0, f"{name} took {seconds:.2f} s to report"


def test_bad_start_error_carries_fields():
    with pytest.raises(BadStartError) as info:
        pyjode.odeint(lambda t, y: -y, torch.tensor([1.0, math.nan], dtype=F64), torch.tensor([0.5, 1.0]))
    err = info.value
    assert isinstance(err, SolveError) and isinstance(err, RuntimeError)
    assert (err.t, err.phase, err.cause) == (0.5, "forward", "nonfinite_start") and err.hint


def test_field_nan_just_after_t0_reported_quickly():
    # finite at t0 but NaN everywhere after it: every step is rejected until the step size underflows
    f = lambda t, y: torch.where(t > 0, torch.full_like(y, math.nan), -y)
    stats = pyjode.Stats()
    with pytest.raises(SolveError, match="underflowed .* at t=0: the vector field kept returning NaN or inf") as info:
        pyjode.odeint(f, torch.ones(2, dtype=F64), [0.0, 1.0], stats=stats)
    assert info.value.cause == "nonfinite_field" and stats.rejected_forward < 100


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_atol_zero_with_a_nonzero_state_still_trains(name):
    """The zero-scale check must not refuse what works: atol=0 with no zero state component, where the
    adjoint's a_θ starts at zero (it leaves zero on the first step, which has a given first step)."""
    func = MLP()
    y0 = torch.ones(2, 3, dtype=F64)
    kw = dict(rtol=1e-9, atol=0.0)
    (g,) = torch.autograd.grad(pyjode.odeint(func, y0, [0.0, 1.0], adjoint=CONTINUOUS[name](), **kw)[-1].sum(),
                               func.net[0].weight)
    (e,) = torch.autograd.grad(pyjode.odeint(func, y0, [0.0, 1.0], rtol=1e-13, atol=1e-14)[-1].sum(),
                               func.net[0].weight)
    # measured norm-wise, as a solver tolerance bounds it (the quadrature's error at rtol=1e-9 is ~1.4e-7 of
    # the largest entry, the same with atol=0 as with atol=1e-12)
    assert float((g - e).abs().max()) <= 1e-6 * float(e.abs().max())


# ----------------------------------------------------------------------------------------------------
# Half precision and autocast.


def test_sdeint_refuses_half_precision():
    from problems import GBM

    with pytest.raises(TypeError, match="float32 or float64"):
        pyjode.sdeint(GBM(), torch.ones(2, 1, dtype=torch.float16), [0.0, 1.0], dt=0.1, method="heun")


class _HalfField(nn.Module):
    """Computes in bfloat16 whatever the state's dtype, as a layer under autocast does."""

    def forward(self, t, y):
        return -(y.to(torch.bfloat16) * 0.5)


def test_autocast_output_cast_to_the_state_dtype():
    y0 = torch.ones(3, dtype=F32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ys = pyjode.odeint(_HalfField(), y0, [0.0, 1.0], rtol=1e-3, atol=1e-5)
    assert ys.dtype == F32
    # bf16 arithmetic in the field: accurate to its 8-bit mantissa
    torch.testing.assert_close(ys[-1], y0 * math.exp(-0.5), rtol=2e-2, atol=0.0)
    with pytest.raises(ValueError, match="returned dtype torch.bfloat16"):  # outside autocast: refused
        pyjode.odeint(_HalfField(), y0, [0.0, 1.0])


# ----------------------------------------------------------------------------------------------------
# Continuous adjoints: repeated backward passes, jacobian, double backward.


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_repeated_backward_passes(name):
    A, y0, t, w = linear_problem()
    field = _linear_field(A)
    ys = pyjode.odeint(field, y0, t, adjoint=CONTINUOUS[name](), adjoint_params=(A,), rtol=1e-10, atol=1e-12)
    w2 = torch.randn_like(w)
    for weights in (w, w2, w):  # three passes through one graph
        gA, gy0 = torch.autograd.grad((ys * weights).sum(), (A, y0), retain_graph=True)
        eA, ey0 = torch.autograd.grad(linear_exact_loss(A, y0, t, weights), (A, y0))
        torch.testing.assert_close(gA, eA, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(gy0, ey0, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_jacobian_through_an_adjoint(name):
    A = torch.tensor([[-0.3, 0.8], [-0.5, 0.1]], dtype=F64)
    t = torch.tensor([0.0, 1.3], dtype=F64)
    y0 = torch.tensor([0.4, -1.1], dtype=F64)
    J = torch.autograd.functional.jacobian(
        lambda y: pyjode.odeint(_linear_field(A), y, t, adjoint=CONTINUOUS[name](), rtol=1e-10, atol=1e-12)[-1], y0)
    torch.testing.assert_close(J, torch.linalg.matrix_exp(1.3 * A), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", [*sorted(CONTINUOUS), "reversible"])
def test_double_backward_refused_by_name(name):
    A, y0, t, w = linear_problem()
    if name == "reversible":
        kw = dict(method=pyjode.Reversible("rk4"), step_size=0.05, adjoint="reversible")
    else:
        kw = dict(adjoint=CONTINUOUS[name]())
    ys = pyjode.odeint(_linear_field(A), y0, t, adjoint_params=(A,), **kw)
    loss = (ys * w).sum()
    # the first derivative may be taken with create_graph=True (torchdiffeq's and torchsde's users do) and is
    # right; the second derivative through the adjoint is what is refused
    (g,) = torch.autograd.grad(loss, y0, create_graph=True)
    (e,) = torch.autograd.grad(linear_exact_loss(A, y0, t, w), y0)
    torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)
    with pytest.raises(DoubleBackwardError, match='adjoint="direct"'):
        torch.autograd.grad((g ** 2).sum(), A)


def test_gradient_penalty_direct_matches_closed_form():
    """What the refused modes would have to match: direct gives the exact penalty gradient."""
    A, y0, t, w = linear_problem()
    ys = pyjode.odeint(_linear_field(A), y0, t, rtol=1e-10, atol=1e-12)
    loss = (ys * w).sum()
    (g,) = torch.autograd.grad(loss, y0, create_graph=True)
    (gA,) = torch.autograd.grad(loss + (g ** 2).sum(), A)
    exact = linear_exact_loss(A, y0, t, w)
    (ge,) = torch.autograd.grad(exact, y0, create_graph=True)
    (eA,) = torch.autograd.grad(exact + (ge ** 2).sum(), A)
    torch.testing.assert_close(gA, eA, rtol=1e-6, atol=1e-8)


def test_julia_bridge_double_backward_refused():
    from pyjode._julia.odeint import odeint_with_module
    from pyjode._julia.standin import StandInPyJODE

    A, y0, t, w = linear_problem()
    ys = odeint_with_module(lambda: StandInPyJODE, _linear_field(A), y0, t, adjoint="quadrature", adjoint_params=(A,),
                            rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad((ys * w).sum(), A, retain_graph=True)  # a first derivative works
    (e,) = torch.autograd.grad(linear_exact_loss(A, y0, t, w), A)
    torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)
    (g,) = torch.autograd.grad((ys * w).sum(), A, create_graph=True)
    with pytest.raises(DoubleBackwardError, match="backend='julia'.*adjoint=\"direct\" with backend=\"torch\""):
        torch.autograd.grad((g ** 2).sum(), A)


def test_reversible_sde_double_backward_refused():
    from problems import GBM

    sde = GBM()
    y0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
    bm = pyjode.BrownianPath(t0=0.0, t1=1.0, shape=(2, 1), seed=0, dtype=F64)
    ys = pyjode.sdeint(sde, y0, [0.0, 1.0], dt=0.1, bm=bm, method="reversible_heun", adjoint="reversible")
    (g,) = torch.autograd.grad(ys.sum(), y0, create_graph=True)
    with pytest.raises(DoubleBackwardError, match="reversible"):
        torch.autograd.grad((g ** 2).sum(), y0)


# ----------------------------------------------------------------------------------------------------
# Tensors captured by a closure.


@pytest.mark.parametrize("y0_grad", [False, True])
@pytest.mark.parametrize("name", [*sorted(CONTINUOUS), "reversible"])
def test_captured_tensor_needs_adjoint_params(name, y0_grad):
    torch.manual_seed(1)
    W = (0.5 * torch.randn(3, 3, dtype=F64)).requires_grad_()
    y0 = torch.randn(2, 3, dtype=F64).requires_grad_(y0_grad)
    f = lambda t, y: torch.tanh(y @ W)
    kw = (dict(method=pyjode.Reversible("rk4"), step_size=0.05, adjoint="reversible") if name == "reversible"
          else dict(adjoint=CONTINUOUS[name](), rtol=1e-9, atol=1e-11))
    with pytest.raises(ValueError, match="adjoint_params"):  # at the solve, or at the backward pass
        pyjode.odeint(f, y0, [0.0, 1.0], **kw).sum().backward()
    assert W.grad is None
    ys = pyjode.odeint(f, y0, [0.0, 1.0], adjoint_params=(W,), **kw)
    (g,) = torch.autograd.grad(ys.sum(), W)
    direct = {k: v for k, v in kw.items() if k != "adjoint"}
    (e,) = torch.autograd.grad(pyjode.odeint(f, y0, [0.0, 1.0], **direct).sum(), W)
    torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_bound_method_of_module_defaults_to_its_parameters(name):
    """A field given as a method of an nn.Module (``model.field``) is differentiated with respect to that
    module's parameters, as the module itself would be; it used to get none of them by default."""
    torch.manual_seed(2)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()

        def field(self, t, y):
            return torch.tanh(self.lin(y))

    model = Model()
    y0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    params = list(model.parameters())
    kw = dict(rtol=1e-9, atol=1e-11)
    ys = pyjode.odeint(model.field, y0, [0.0, 1.0], adjoint=CONTINUOUS[name](), **kw)
    g = torch.autograd.grad(ys.sum(), [y0, *params])
    e = torch.autograd.grad(pyjode.odeint(model.field, y0, [0.0, 1.0], **kw).sum(), [y0, *params])
    for a, b in zip(g, e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------
# NaN in the backward pass: one behaviour in every adjoint.


class _NaNParamGrad(nn.Module):
    """f = -y + 0 * sqrt(theta) at theta = 0: finite, and d f/d theta = 0 * inf = NaN."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3, dtype=F64))

    def forward(self, t, y):
        return -y + 0.0 * torch.sqrt(self.theta)


class _NaNStateGrad(nn.Module):
    """f = -a y + 0 * sqrt(y - y): finite, and d f/d y = 0 / sqrt(0) is NaN."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones((), dtype=F64))

    def forward(self, t, y):
        return -self.a * y + 0.0 * torch.sqrt(y - y)


_ADJOINT_KW = {**{k: (lambda v=v: dict(adjoint=v())) for k, v in CONTINUOUS.items()},
               "reversible": lambda: dict(method=pyjode.Reversible("rk4"), step_size=0.1, adjoint="reversible")}


@pytest.mark.parametrize("name", sorted(_ADJOINT_KW))
@pytest.mark.parametrize("field, part", [(_NaNParamGrad, "parameter adjoint"), (_NaNStateGrad, "state adjoint")])
def test_nan_in_backward_is_one_clear_error(name, field, part):
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    ys = pyjode.odeint(field(), y0, [0.0, 0.5, 1.0], **_ADJOINT_KW[name]())
    assert torch.isfinite(ys).all()
    with pytest.raises(SolveError) as info:
        ys.sum().backward()
    err = info.value
    assert err.phase == "backward" and err.part == part, str(err)
    assert "in the backward pass" in str(err) and part in str(err) and "t=" in str(err), str(err)
    assert err.t is not None and 0.0 <= err.t <= 1.0


# ----------------------------------------------------------------------------------------------------
# The field's output and its treatment of y, checked on every call.


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_in_place_change_of_y_detected(method):
    y0 = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="modified y in place"):
        pyjode.odeint(lambda t, y: y.mul_(-1.0), y0, [0.0, 1.0], method=method, step_size=0.1)


class _Changing:
    """Correct for the first ``n`` calls, then returns a broadcastable shape or another dtype."""

    def __init__(self, n, kind):
        self.n, self.kind, self.calls = n, kind, 0

    def __call__(self, t, y):
        self.calls += 1
        if self.calls <= self.n:
            return -y
        return -y[:1] if self.kind == "shape" else (-y).float()


@pytest.mark.parametrize("kind, match", [("shape", r"returned shape \(1, 3\)"),
                                         ("dtype", "returned dtype torch.float32")])
def test_later_bad_output_detected(kind, match):
    with pytest.raises(ValueError, match=match):
        pyjode.odeint(_Changing(5, kind), torch.ones(2, 3, dtype=F64), [0.0, 1.0])


# ----------------------------------------------------------------------------------------------------
# Taylor mode: no stale traces.


def test_taylor_function_attribute_change_retraces():
    y = torch.tensor([1.0, 2.0], dtype=F64)

    def f(t, y):
        return f.k * torch.tanh(y)

    for k in (1.0, 2.0, -0.5):
        f.k = k
        torch.testing.assert_close(pyjode.taylor_coefficients(f, 0.0, y, 3)[1], k * torch.tanh(y))


def test_taylor_rebound_closure_tensor_retraces():
    y = torch.tensor([1.0, 2.0], dtype=F64)
    W = torch.eye(2, dtype=F64)
    f = lambda t, y: torch.sin(y @ W)
    pyjode.taylor_coefficients(f, 0.0, y, 2)
    W = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)  # noqa: F841 - read by f through its closure
    torch.testing.assert_close(pyjode.taylor_coefficients(f, 0.0, y, 2)[1], torch.sin(y.flip(0)))


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.k, self.lin = 1.0, nn.Linear(2, 2).double()
        self.drop = nn.Dropout(0.5)

    def forward(self, t, y):
        return self.k * torch.tanh(self.drop(self.lin(y)))


def test_taylor_module_attribute_and_mode_change_retrace():
    y = torch.tensor([[0.3, -0.2]], dtype=F64)
    m = _Scaled().eval()
    first = pyjode.taylor_coefficients(m, 0.0, y, 2)[1]
    m.k = 3.0
    torch.testing.assert_close(pyjode.taylor_coefficients(m, 0.0, y, 2)[1], 3.0 * first)
    m.train()  # dropout now drops: over many draws some coefficient must be zeroed, as with a plain call
    zeros = sum(int((pyjode.taylor_coefficients(m, 0.0, y, 2)[1] == 0).any()) for _ in range(20))
    assert zeros > 0


def test_taylor_lagrange_fixed_graph_follows_attribute_change():
    m = _Scaled().eval()
    tl = pyjode.TaylorLagrange(m, order=2, steps=3, remainder=False)
    y0 = torch.tensor([[0.3, -0.2]], dtype=F64)
    with torch.no_grad():
        tl(y0)
        m.k = 2.0
        torch.testing.assert_close(tl(y0), tl.solve_eager(y0)[0])


def test_taylor_lagrange_infers_dim():
    tl = pyjode.TaylorLagrange(lambda t, y: -y, order=2, steps=2)
    y0 = torch.ones(4, 3, dtype=F64)
    y1 = tl(y0)
    assert tl.midpoint.dim == 3 and y1.shape == y0.shape and next(tl.midpoint.parameters()).dtype == F64


# ----------------------------------------------------------------------------------------------------
# WongZakai.


def test_wong_zakai_shape_and_span():
    from problems import GBM

    wz = pyjode.WongZakai(GBM(), t0=0.0, t1=1.0, shape=(3, 2))
    with pytest.raises(ValueError, match=r"noise has shape \(3, 2\).*needs \(2, 2\)"):
        pyjode.odeint(wz, torch.ones(2, 2, dtype=F32), [0.0, 1.0])
    wz = pyjode.WongZakai(GBM(), t0=0.0, t1=1.0, shape=(2, 2))
    ys = pyjode.odeint(wz, torch.ones(2, 2), [0.0, 1.0])
    assert torch.isfinite(ys).all()
    with pytest.raises(ValueError, match=r"outside the noise's interval \[0, 1\]"):
        pyjode.odeint(wz, torch.ones(2, 2), [0.0, 2.0])


# ----------------------------------------------------------------------------------------------------
# Smaller items.


def test_numbers_and_booleans():
    f, y0 = (lambda t, y: -y), torch.ones(2, dtype=F64)
    for bad in (dict(rtol=True), dict(atol=False)):
        with pytest.raises(TypeError, match="must be a number"):
            pyjode.odeint(f, y0, [0.0, 1.0], **bad)
    a = pyjode.odeint(f, y0, [0.0, 1.0], method="rk4", step_size=torch.tensor(0.1), max_steps=np.int64(100))
    b = pyjode.odeint(f, y0, [0.0, 1.0], method="rk4", step_size=0.1, max_steps=100)
    assert torch.equal(a, b)
    c = pyjode.odeint(f, y0, [0.0, 1.0], rtol=np.float32(1e-6), atol=np.float64(1e-8))
    torch.testing.assert_close(c[-1], y0 * math.exp(-1), rtol=1e-5, atol=0)


def test_empty_state_gives_empty_trajectory():
    y0 = torch.ones(0, 3, requires_grad=True)
    ys = pyjode.odeint(lambda t, y: -y, y0, [0.0, 0.5, 1.0])
    assert ys.shape == (3, 0, 3)
    ys.sum().backward()
    assert y0.grad.shape == (0, 3)


def test_function_transforms():
    y0, W = torch.ones(2, 3, dtype=F64), torch.eye(3, dtype=F64)
    with pytest.raises(TypeError, match="vmap over pyjode"):
        torch.func.vmap(lambda y: pyjode.odeint(lambda t, y: -y, y, [0.0, 1.0]))(y0)
    with pytest.raises(TypeError, match='use adjoint="direct"'):
        torch.func.grad(lambda W: pyjode.odeint(lambda t, y: y @ W, y0, [0.0, 1.0], adjoint="backsolve",
                                                adjoint_params=(W,)).sum())(W)
    g = torch.func.grad(lambda W: pyjode.odeint(lambda t, y: y @ W, y0, [0.0, 1.0], rtol=1e-10, atol=1e-12).sum())(W)
    Wr = W.clone().requires_grad_()
    (e,) = torch.autograd.grad((y0 @ torch.linalg.matrix_exp(Wr)).sum(), Wr)
    torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_stats_filled_when_a_solve_raises(adjoint):
    stats = pyjode.Stats()
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(SolveError, match="max_steps=7"):
        pyjode.odeint(lambda t, y: -y, y0, [0.0, 100.0], max_steps=7, stats=stats, adjoint=adjoint)
    assert stats.nfe_forward > 7 and stats.steps_forward + stats.rejected_forward == 7


def test_neural_ode_keeps_float64_times():
    func = MLP(dtype=F64)
    model = pyjode.NeuralODE(func, [0.0, 0.1, 0.7])
    assert model.t.dtype == F64
    y0 = torch.randn(2, 3, dtype=F64)
    torch.testing.assert_close(model(y0), pyjode.odeint(func, y0, torch.tensor([0.0, 0.1, 0.7], dtype=F64)),
                               rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# What already worked and must keep working: concurrent solves are bit-identical to sequential ones.


def test_threads_bit_identical():
    func = MLP(dtype=F64)
    inputs = [torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    ref = [pyjode.odeint(func, y, [0.0, 0.5, 1.0], adjoint="quadrature") for y in inputs]
    out = [None] * len(inputs)

    def work(i):
        out[i] = pyjode.odeint(func, inputs[i], [0.0, 0.5, 1.0], adjoint="quadrature")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
