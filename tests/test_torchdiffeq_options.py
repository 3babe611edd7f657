"""pyjode.torchdiffeq translates every torchdiffeq option onto pyjode's own; each is checked against
torchdiffeq itself or a closed form."""

import math

import pytest
import torch

torchdiffeq = pytest.importorskip("torchdiffeq")
import pyjode.torchdiffeq as dropin  # noqa: E402

F64 = torch.float64


@pytest.mark.parametrize("method", ["dopri8", "adaptive_heun", "fehlberg2", "bosh3"])
def test_new_adaptive_methods_agree_with_torchdiffeq(method):
    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0, 4, 5, dtype=F64)
    tol = dict(rtol=1e-10, atol=1e-12) if method == "dopri8" else dict(rtol=1e-6, atol=1e-8)
    ours = dropin.odeint(lambda s, y: A @ y, y0, t, method=method, **tol)
    exact = torch.stack([torch.linalg.matrix_exp(A * s) @ y0 for s in t])
    theirs = torchdiffeq.odeint(lambda s, y: A @ y, y0, t, method=method, **tol)
    # dense outputs inside the steps: no worse than torchdiffeq's (both interpolate with the same degree)
    ours_err, theirs_err = (ours - exact).abs().max(), (theirs - exact).abs().max()
    assert ours_err < 1.5 * theirs_err
    # at the end of the solve (a step end), the error is the method's own global error
    assert (ours[-1] - exact[-1]).abs().max() < {"dopri8": 1e-9}.get(method, 1e-3)


@pytest.mark.parametrize("method", ["heun2", "heun3", "rk4", "explicit_adams"])
def test_fixed_methods_match_torchdiffeq_on_the_grid(method):
    # outputs on the step grid: torchdiffeq and pyjode take the same steps, so they agree to rounding
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    f = lambda s, y: -y * torch.cos(s)  # noqa: E731
    ours = dropin.odeint(f, y0, t, method=method, options=dict(step_size=0.05))
    theirs = torchdiffeq.odeint(f, y0, t, method=method, options=dict(step_size=0.05))
    # Adams weights come from a Vandermonde solve (11 slopes): the classical ones to ~1e-10
    tol = 1e-9 if method == "explicit_adams" else 1e-12
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_tuple_state_with_zero_dim_part_and_tuple_norm():
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts)

    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(2, 2, dtype=F64))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = dropin.odeint(lambda s, y: (-y[0], -2 * y[1]), y0, t, options=dict(norm=norm))
    assert seen and seen[0] == (torch.Size([]), torch.Size([2, 2]))
    assert abs(float(ys[0][-1]) - math.exp(-1)) < 1e-6 and abs(float(ys[1][-1, 0, 0]) - math.exp(-2)) < 1e-6


def test_jump_t_and_grid_constructor():
    calls = [0]

    def f(s, y):
        calls[0] += 1
        return -0.5 * y if s < 0.5 else y ** 2

    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    plain = dropin.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    n_plain, calls[0] = calls[0], 0
    jumped = dropin.odeint(f, y0, t, rtol=1e-8, atol=1e-8, options=dict(jump_t=torch.tensor([0.5])))
    assert calls[0] < n_plain
    # exact: y(0.5) = y0 e^-0.25, then y' = y^2: y(1) = y(0.5) / (1 - 0.5 y(0.5))
    mid = y0 * math.exp(-0.25)
    torch.testing.assert_close(jumped[-1], mid / (1 - 0.5 * mid), rtol=1e-6, atol=0)
    assert (plain[-1] - jumped[-1]).abs().max() < 1e-4
    # grid_constructor: Euler on a 10-step grid gives (1.1)^10 for y' = y
    x0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    xs = dropin.odeint_adjoint(lambda s, x: x, x0, t, method="euler", adjoint_params=(),
                               options=dict(grid_constructor=lambda func, y0, t: torch.linspace(0, 1, 11)))
    assert abs(float(xs[-1].detach()) - 1.1 ** 10) < 1e-12
    xs[-1].backward()
    assert abs(float(x0.grad) - 1.1 ** 10) < 1e-12


def test_controller_options_and_max_num_steps():
    f = lambda s, y: -y * torch.cos(10 * s)  # noqa: E731
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 3.0], dtype=F64)
    with pytest.raises(RuntimeError, match="max_steps=5"):
        dropin.odeint(f, y0, t, options=dict(max_num_steps=5))
    ys = dropin.odeint(f, y0, t, rtol=1e-8, atol=1e-8, options=dict(safety=0.5, ifactor=1.5, dfactor=0.5,
                                                                    first_step=1e-3, max_step=0.1))
    torch.testing.assert_close(ys[-1], torch.exp(-torch.sin(torch.tensor(30.0, dtype=F64)) / 10) * y0, rtol=1e-6,
                               atol=0)


def test_callbacks_on_a_tuple_state():
    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(-1.0, dtype=F64))
            self.shapes = []

        def forward(self, t, y):
            return (self.k * y[0], self.k * y[1])

        def callback_step(self, t0, y0, dt):
            self.shapes.append(tuple(v.shape for v in y0))

    f = F()
    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(3, dtype=F64))
    dropin.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4", options=dict(step_size=0.25))
    assert f.shapes == [(torch.Size([]), torch.Size([3]))] * 4


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_odeint_event_drop_in(interface):
    # a ball dropped from 10 m: t* = sqrt(2 h / g), dt*/dg = -t* / (2 g)
    class Ball(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g = torch.nn.Parameter(torch.tensor([9.8], dtype=F64))

        def forward(self, t, state):
            return state[1], -self.g * torch.ones_like(state[1])

    ball = Ball()
    state = (torch.tensor([10.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    event_t, solution = dropin.odeint_event(ball, state, torch.tensor([0.0], dtype=F64),
                                            event_fn=lambda t, s: s[0], rtol=1e-10, atol=1e-12,
                                            odeint_interface=getattr(dropin, interface))
    exact = math.sqrt(2 * 10 / 9.8)
    assert abs(float(event_t.detach()) - exact) < 1e-9 and solution[0].shape == (2, 1)
    event_t.sum().backward()
    assert abs(float(ball.g.grad) - (-exact / (2 * 9.8))) < 1e-7
