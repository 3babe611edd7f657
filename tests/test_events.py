"""pyjode.odeint_event: the event time and state of a falling body, and their gradients (implicit function
theorem) against closed forms, for each gradient method."""

from __future__ import annotations

import math

import pytest
import torch

import pyjode

F64 = torch.float64


class Fall(torch.nn.Module):
    """y = (height, velocity), y' = (v, -g): height(t) = h0 + v0 (t - t0) - g (t - t0)^2 / 2."""

    def __init__(self, g=9.8):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[1], -self.g * torch.ones_like(y[1])])


def closed_form_time(h0, v0, g, t0):
    return t0 + (v0 + math.sqrt(v0 * v0 + 2 * g * h0)) / g


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "quadrature"])
@pytest.mark.parametrize("method, kw", [("dopri5", {}), ("tsit5", {}), ("dopri8", {}), ("rk4", dict(step_size=0.05))])
def test_event_time_state_and_gradients(adjoint, method, kw):
    fall = Fall()
    y0 = torch.tensor([10.0, 1.0], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    t_event, ys = pyjode.odeint_event(fall, y0, t0, event_fn=lambda t, y: y[0], method=method, rtol=1e-10,
                                      atol=1e-12, adjoint=adjoint, **kw)
    h0, v0, g = 10.0, 1.0, 9.8
    exact = closed_form_time(h0, v0, g, 0.5)
    assert abs(float(t_event.detach()) - exact) < 1e-8
    assert abs(float(ys[1, 0].detach())) < 1e-7 and abs(float(ys[1, 1].detach()) - (v0 - g * (exact - 0.5))) < 1e-7
    (t_event + 0.3 * ys[1, 1]).backward()
    # d t*/d h0 = 1 / s, d t*/d v0 = (1 + v0 / s) / g, d t*/d g = -(t* - t0) / g + h0 / (g s), s = sqrt(v0^2 + 2 g h0)
    s = math.sqrt(v0 * v0 + 2 * g * h0)
    dt_dh, dt_dv, dt_dg = 1 / s, (1 + v0 / s) / g, -(exact - 0.5) / g + h0 / (g * s)
    # v* = v0 - g (t* - t0): dv*/dh0 = -g dt_dh, dv*/dv0 = 1 - g dt_dv, dv*/dg = -(t* - t0) - g dt_dg
    expected_y0 = [dt_dh + 0.3 * (-g * dt_dh), dt_dv + 0.3 * (1 - g * dt_dv)]
    expected_g = dt_dg + 0.3 * (-(exact - 0.5) - g * dt_dg)
    # dt*/dt0 = 1 (shift), and dv*/dt0 = 0
    torch.testing.assert_close(y0.grad, torch.tensor(expected_y0, dtype=F64), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fall.g.grad, torch.tensor(expected_g, dtype=F64), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(t0.grad, torch.tensor(1.0, dtype=F64), rtol=1e-6, atol=1e-7)


def test_first_of_several_events_terminates_and_reverse_time():
    # y' = 1 from y(0) = 0: events y = 2 and y = 0.7 (the second fires first); backwards, y = -1.5.
    def events(t, y):
        return torch.stack([y[0] - 2.0, y[0] - 0.7, y[0] + 1.5])

    y0 = torch.zeros(1, dtype=F64)
    t_event, ys = pyjode.odeint_event(lambda t, y: torch.ones_like(y), y0, 0.0, event_fn=events)
    assert abs(float(t_event.detach()) - 0.7) < 1e-12 and abs(float(ys[-1, 0]) - 0.7) < 1e-12
    t_back, _ = pyjode.odeint_event(lambda t, y: torch.ones_like(y), y0, 0.0, event_fn=events, reverse_time=True)
    assert abs(float(t_back) + 1.5) < 1e-12


def test_event_float32_without_autograd():
    fall = Fall().float()
    with torch.no_grad():
        t_event, ys = pyjode.odeint_event(fall, torch.tensor([10.0, 0.0]), 0.0, event_fn=lambda t, y: y[0])
    assert ys.dtype == torch.float32 and abs(float(t_event.detach()) - math.sqrt(2 * 10 / 9.8)) < 1e-5


def test_event_errors():
    with pytest.raises(ValueError, match="already 0"):
        pyjode.odeint_event(lambda t, y: y, torch.zeros(1), 0.0, event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match="step_size"):
        pyjode.odeint_event(lambda t, y: -y, torch.ones(1), 0.0, event_fn=lambda t, y: y[0] - 0.5, method="rk4")
    with pytest.raises(RuntimeError, match="no event"):
        pyjode.odeint_event(lambda t, y: -y, torch.ones(1), 0.0, event_fn=lambda t, y: y[0] + 1, max_steps=50)
