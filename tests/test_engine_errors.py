"""Bad input raises a ValueError/TypeError naming the argument; numerical failure raises a RuntimeError
naming t. Every failing solve here is capped by a small max_steps or fails fast, so nothing can hang."""

from __future__ import annotations

import math
import re

import pytest
import torch

import pyjode
from problems import decay
from pyjode.adjoints import _BY_NAME
from pyjode.integrate import Counter, integrate
from pyjode.runge_kutta import RungeKutta
from pyjode.step_control import StepControl
from pyjode.tableau import TABLEAUS

F64 = torch.float64
Y0 = torch.ones(3, dtype=F64)
T = torch.tensor([0.0, 1.0], dtype=F64)


def _reported_t(message: str) -> float:
    match = re.search(r"at t=([-+0-9.e]+)", message)
    assert match, f"the error does not name t: {message}"
    return float(match.group(1))


# ----------------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("t", [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.5, 0.7]])
def test_non_monotonic_t(t):
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        pyjode.odeint(decay, Y0, torch.tensor(t, dtype=F64))


@pytest.mark.parametrize("t", [torch.zeros(2, 2), torch.tensor([0.0, math.nan])])
def test_bad_t_shape_or_value(t):
    with pytest.raises(ValueError, match="t "):
        pyjode.odeint(decay, Y0, t)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_field_wrong_shape(method):
    with pytest.raises(ValueError, match=r"func\(t, y\) returned shape \(1, 3\)"):
        pyjode.odeint(lambda t, y: y[None], Y0, T, method=method, step_size=0.1)


def test_field_wrong_dtype():
    with pytest.raises(ValueError, match="returned dtype torch.float32"):
        pyjode.odeint(lambda t, y: y.float(), Y0, T)


def test_field_not_a_tensor():
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        pyjode.odeint(lambda t, y: 1.0, Y0, T)


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="method='rk45' is not known") as err:
        pyjode.odeint(decay, Y0, T, method="rk45")
    for name in TABLEAUS:
        assert repr(name) in str(err.value)


@pytest.mark.parametrize("method, growth", [("euler", lambda h: 1 - h), ("midpoint", lambda h: 1 - h + h * h / 2),
                                            ("rk4", lambda h: 1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24)])
def test_fixed_step_without_step_size_steps_on_output_times(method, growth):
    # y' = -y: one step of size h multiplies y by the method's stability polynomial R(-h), exactly.
    t = torch.tensor([0.0, 0.1, 0.3, 0.7], dtype=torch.float64)
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: -y, y0, t, method=method, stats=stats)
    expected = [y0]
    for h in (t[1:] - t[:-1]).tolist():
        expected.append(expected[-1] * growth(h))
    torch.testing.assert_close(ys, torch.stack(expected), rtol=1e-14, atol=0)
    assert stats.steps_forward == 3


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(rtol=-1e-6), ValueError, "rtol"),
    (dict(atol=math.nan), ValueError, "atol"),
    (dict(rtol=math.inf), ValueError, "rtol"),
    (dict(rtol=0.0, atol=0.0), ValueError, "both be 0"),
    (dict(rtol=torch.tensor(1e-6)), TypeError, "rtol"),
    (dict(step_size=-0.1, method="rk4"), ValueError, "step_size"),
    (dict(max_steps=0), ValueError, "max_steps"),
    (dict(max_steps=2.5), ValueError, "max_steps"),
    (dict(stats={}), TypeError, "stats"),
    (dict(adjoint="nope"), ValueError, "adjoint='nope' is not known"),
])
def test_bad_keyword(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pyjode.odeint(decay, Y0, T, **kwargs)


@pytest.mark.parametrize("y0, exc", [([1.0, 2.0], TypeError), (torch.ones(3, dtype=torch.int64), TypeError)])
def test_bad_y0(y0, exc):
    with pytest.raises(exc, match="y0"):
        pyjode.odeint(decay, y0, T)


def test_func_not_callable():
    with pytest.raises(TypeError, match="func must be callable"):
        pyjode.odeint(3, Y0, T)


@pytest.mark.skipif("reversible" not in _BY_NAME, reason='adjoint="reversible" is not registered yet')
def test_reversible_adjoint_needs_reversible_method():
    with pytest.raises((ValueError, TypeError), match="Reversible"):
        pyjode.odeint(decay, Y0, T, method="dopri5", adjoint="reversible")


# ----------------------------------------------------------------------------------------------------
# Numerical failure.


def nan_after_half(t, y):
    return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_nan_is_rejected_then_raises_at_t(method):
    counter = Counter()
    with pytest.raises(RuntimeError, match="NaN or inf") as err:
        integrate(RungeKutta(TABLEAUS[method], Y0), nan_after_half, Y0, [0.0, 1.0],
                  StepControl(rtol=1e-6, atol=1e-8, max_steps=10_000), counter=counter)
    assert counter.rejected > 0 and counter.steps > 0  # it tried smaller steps before giving up
    assert abs(_reported_t(str(err.value)) - 0.5) < 1e-6


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_nan_names_the_interval(method):
    t = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64)
    with pytest.raises(RuntimeError, match=r"NaN or inf between t=0.25 and t=0.75"):
        pyjode.odeint(nan_after_half, Y0, t, method=method, step_size=0.05)


def test_adaptive_max_steps_names_t():
    fast = lambda t, y: torch.stack([y[1], -400.0 * y[0]])  # noqa: E731  (oscillates 3 times per unit)
    with pytest.raises(RuntimeError, match="max_steps=20 reached") as err:
        pyjode.odeint(fast, torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 10.0], dtype=F64),
                      max_steps=20)
    assert 0.0 < _reported_t(str(err.value)) < 10.0


def test_fixed_max_steps_raises_before_stepping():
    calls = []

    def field(t, y):
        calls.append(1)
        return -y

    with pytest.raises(RuntimeError, match=r"max_steps=5 is too small.*t=0 to t=1"):
        pyjode.odeint(field, Y0, T, method="rk4", step_size=0.1, max_steps=5)
    assert not calls


def test_finite_time_blow_up_raises():
    """y' = y^2, y(0) = 1 blows up at t = 1: the solve must stop with an error near there."""
    with pytest.raises(RuntimeError) as err:
        pyjode.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
                      max_steps=2000)
    assert 0.9 < _reported_t(str(err.value)) <= 1.0


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_step_below_the_time_resolution_is_named(per_sample, dtype):
    """max_step shorter than the times can resolve: the error names max_step and the fix; it used to say
    that the error estimate kept failing and suggest looser tolerances."""
    y0 = torch.ones(2, 1, dtype=dtype)
    with pytest.raises(pyjode.SolveError, match=r"max_step=1e-20 is below the resolution.*raise max_step") as info:
        pyjode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=dtype), max_step=1e-20,
                      per_sample=per_sample)
    assert info.value.cause == "max_step"
    # a max_step the times do resolve is honoured: exactly ceil(span / max_step) steps per sample
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=dtype), max_step=0.01, stats=stats,
                       per_sample=per_sample)
    assert stats.steps_forward == 100 * (y0.shape[0] if per_sample else 1)
    torch.testing.assert_close(ys[-1], y0 * math.exp(-1.0))
