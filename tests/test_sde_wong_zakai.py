"""Wong–Zakai: the ODE driven by smoothed noise converges to the Stratonovich SDE."""
import math

import numpy as np
import pytest
import torch

import pyjode
from pyjode.sde import BrownianPath, CosineNoise, PiecewiseLinearNoise, WongZakai, sdeint

class Nonlinear(torch.nn.Module):
    """Drift and diffusion that do not commute, so the smoothed path matters between grid points."""
    noise_type, sde_type = "diagonal", "stratonovich"

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.6, dtype=torch.float64))

    def f(self, t, y):
        return -y + torch.sin(2 * y)

    def g(self, t, y):
        return self.a * torch.cos(y) + 0.2


class NonlinearIto(Nonlinear):
    """The same SDE in Itô form: f_Ito = f_Strat + ½ g ∂g/∂y."""
    sde_type = "ito"

    def f(self, t, y):
        return super().f(t, y) + 0.5 * self.g(t, y) * (-self.a * torch.sin(y))


def _wong_zakai_error(sde, bm, y0, reference, intervals):
    grid = torch.linspace(0, 1, intervals + 1, dtype=torch.float64)
    field = WongZakai(sde, PiecewiseLinearNoise(bm, grid))
    y1 = pyjode.odeint(field, y0, grid, method="midpoint", step_size=0.25 / intervals)[-1]
    return (y1 - reference).abs().mean().item()


def test_piecewise_linear_noise_converges_to_stratonovich_solution():
    n = 100
    bm = BrownianPath(0.0, 1.0, (n, 1), seed=3, dtype=torch.float64)
    y0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    sde = Nonlinear()
    reference = sdeint(sde, y0, [0.0, 1.0], method="heun", dt=2 ** -11, bm=bm)[-1]
    intervals = [4, 16, 64]
    errors = [_wong_zakai_error(sde, bm, y0, reference, k) for k in intervals]
    assert errors[0] > errors[1] > errors[2]
    observed = -np.polyfit(np.log(intervals), np.log(errors), 1)[0]
    assert observed > 0.8, errors          # first order in the grid spacing for scalar noise
    # The Itô form with the built-in drift correction gives the same ODE.
    ito = NonlinearIto()
    assert _wong_zakai_error(ito, bm, y0, reference, 64) == pytest.approx(errors[2], rel=1e-9)


def test_parameters_are_the_sdes_own():
    sde = Nonlinear()
    field = WongZakai(sde, t0=0.0, t1=1.0, shape=(3, 1))
    assert list(field.parameters()) == list(sde.parameters())
    assert field.parameters().__next__() is sde.a


def test_cosine_noise_variance_tends_to_brownian_variance():
    n, span = 20000, 2.0
    times = [0.25, 1.0, 2.0]
    for k_terms in (1, 5, 40):
        noise = CosineNoise(0.0, span, (n,), n_terms=k_terms, seed=1, dtype=torch.float64)
        for t in times:
            expected = sum(2 * span / ((k - 0.5) ** 2 * math.pi ** 2)
                           * math.sin((k - 0.5) * math.pi * t / span) ** 2
                           for k in range(1, k_terms + 1))
            sample = noise.value(torch.tensor(t, dtype=torch.float64)).var().item()
            assert abs(sample / expected - 1) < 4 * math.sqrt(2 / n)
            # The missing tail sum_{k>K} 2c/((k-1/2)^2 pi^2) bounds the gap to Var W(t) = t.
            assert 0 <= t - expected <= 2 * span / (math.pi ** 2 * (k_terms - 0.5))


def test_cosine_rate_integrates_to_value_and_resample_is_fresh():
    noise = CosineNoise(0.0, 1.0, (3, 2), n_terms=8, seed=4, dtype=torch.float64)
    ts = torch.linspace(0, 1, 2001, dtype=torch.float64)
    rates = torch.stack([noise.rate(t) for t in ts])
    integral = torch.trapezoid(rates, ts, dim=0)
    torch.testing.assert_close(integral, noise.value(torch.tensor(1.0, dtype=torch.float64)),
                               rtol=1e-5, atol=1e-6)
    first = noise.rate(torch.tensor(0.3, dtype=torch.float64))
    assert torch.equal(first, noise.rate(torch.tensor(0.3, dtype=torch.float64)))
    noise.resample()
    assert not torch.equal(first, noise.rate(torch.tensor(0.3, dtype=torch.float64)))
    replay = CosineNoise(0.0, 1.0, (3, 2), n_terms=8, seed=4, dtype=torch.float64)
    assert torch.equal(first, replay.rate(torch.tensor(0.3, dtype=torch.float64)))


def test_train_through_ode_gradients_flow_to_the_sde():
    sde = Nonlinear()
    field = WongZakai(sde, t0=0.0, t1=1.0, shape=(8, 1), n_terms=10)
    y0 = torch.zeros(8, 1, dtype=torch.float64)
    ys = pyjode.odeint(field, y0, torch.linspace(0, 1, 5, dtype=torch.float64), method="rk4",
                       step_size=0.05)
    ys.pow(2).sum().backward()
    assert sde.a.grad is not None and sde.a.grad.abs().item() > 0


def test_errors():
    class General(Nonlinear):
        noise_type, sde_type = "general", "ito"

    with pytest.raises(ValueError, match="Stratonovich"):
        WongZakai(General(), t0=0.0, t1=1.0, shape=(2, 1))
    with pytest.raises(ValueError, match="t0, t1 and shape"):
        WongZakai(Nonlinear())
    noise = PiecewiseLinearNoise(BrownianPath(0.0, 1.0, (2, 1)), [0.0, 0.5, 1.0])
    with pytest.raises(TypeError, match="BrownianPath"):
        WongZakai(Nonlinear(), noise).resample()


def test_quadrature_adjoint_through_wong_zakai_matches_direct():
    """The field works under the quadrature adjoint's batched VJPs, Itô correction included."""
    sde = NonlinearIto()
    field = WongZakai(sde, t0=0.0, t1=1.0, shape=(4, 1), n_terms=6, seed=2)
    y0 = torch.linspace(-1, 1, 4, dtype=torch.float64)[:, None]
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    grads = []
    for adjoint in ("direct", "quadrature"):
        ys = pyjode.odeint(field, y0, t, adjoint=adjoint, rtol=1e-9, atol=1e-11)
        grads.append(torch.autograd.grad(ys.pow(2).sum(), sde.a)[0])
    # Both are accurate to the solver tolerance; they agree to about 1e-6 relative here.
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=0)
