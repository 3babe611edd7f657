"""sdeint against closed forms on a shared BrownianPath: strong orders and OU moments."""
import math

import numpy as np
import pytest
import torch

import pyjode
from problems import GBM
from pyjode.sde import BrownianPath, sdeint

@pytest.mark.parametrize("sde_type,method,order", [
    ("ito", "euler", 0.5), ("ito", "milstein", 1.0), ("stratonovich", "heun", 1.0),
    ("stratonovich", "midpoint", 1.0), ("stratonovich", pyjode.Reversible("heun"), 1.0)])
def test_strong_order_on_geometric_brownian_motion(sde_type, method, order):
    n = 2000
    bm = BrownianPath(0.0, 1.0, (n, 1), seed=5, dtype=torch.float64)
    sde = GBM(sde_type)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    exact = sde.exact(y0, 1.0, bm(0.0, 1.0))
    steps = [2.0 ** -k for k in range(3, 8)]
    errors = []
    for dt in steps:
        y1 = sdeint(sde, y0, torch.tensor([0.0, 1.0]), method=method, dt=dt, bm=bm)[-1]
        errors.append((y1 - exact).abs().mean().item())
    observed = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(observed - order) < 0.12, (errors, observed)


def test_additive_noise_lifts_euler_and_reversible_heun_to_order_one():
    """dX = -X dt + 0.5 dW: X(1) = e^-1 X0 + 0.5 ∫ e^{-(1-s)} dW(s), taken on a fine grid."""
    class OU(torch.nn.Module):
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.full((*y.shape, 1), 0.5, dtype=y.dtype)

    n, fine = 1000, 2 ** 12
    bm = BrownianPath(0.0, 1.0, (n, 1), seed=9, dtype=torch.float64)
    grid = torch.linspace(0, 1, fine + 1, dtype=torch.float64)
    dw = bm.increments(grid)
    # Exact stochastic integral of a smooth integrand: midpoint weights on the fine grid.
    weights = torch.exp(-(1 - 0.5 * (grid[1:] + grid[:-1])))
    exact = math.exp(-1.0) + 0.5 * (weights[:, None, None] * dw).sum(0)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    for method in ("euler", "reversible_heun"):
        steps = [2.0 ** -k for k in range(3, 7)]
        errors = [(sdeint(OU(), y0, torch.tensor([0.0, 1.0]), method=method, dt=dt, bm=bm)[-1]
                   - exact).abs().mean().item() for dt in steps]
        observed = np.polyfit(np.log(steps), np.log(errors), 1)[0]
        assert abs(observed - 1.0) < 0.12, (method, errors, observed)


@pytest.mark.parametrize("method", ["euler", "reversible_heun"])
def test_ornstein_uhlenbeck_moments(method):
    """dX = theta (mu - X) dt + sigma dW: mean mu + (x0 - mu) e^{-theta t},
    variance sigma^2 (1 - e^{-2 theta t}) / (2 theta)."""
    theta, mu, sigma, x0 = 1.5, 0.7, 0.8, -1.0

    class OU(torch.nn.Module):
        # Constant diffusion: Itô and Stratonovich agree; declared as each method expects.
        noise_type = "diagonal"
        sde_type = "ito" if method == "euler" else "stratonovich"

        def f(self, t, y):
            return theta * (mu - y)

        def g(self, t, y):
            return torch.full_like(y, sigma)

    n = 10000
    t = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    bm = BrownianPath(0.0, 2.0, (n,), seed=4, dtype=torch.float64)
    ys = sdeint(OU(), torch.full((n,), x0, dtype=torch.float64), t, method=method, dt=2 ** -8,
                bm=bm)
    for k in (1, 2):
        tk = t[k].item()
        mean = mu + (x0 - mu) * math.exp(-theta * tk)
        var = sigma ** 2 * (1 - math.exp(-2 * theta * tk)) / (2 * theta)
        assert abs(ys[k].mean().item() - mean) < 4 * math.sqrt(var / n)
        assert abs(ys[k].var().item() / var - 1) < 4 * math.sqrt(2 / n)


@pytest.mark.parametrize("method", ["euler", "milstein", "heun", "midpoint", "reversible_heun"])
def test_matches_torchsde_on_the_same_brownian_motion(method):
    torchsde = pytest.importorskip("torchsde")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito" if method in ("euler", "milstein") else "stratonovich"

        def __init__(self):
            super().__init__()
            self.drift = torch.nn.Linear(3, 3)
            # Diagonal noise: g_i depends on y_i only (Milstein's and torchsde's assumption).
            self.scale = torch.nn.Parameter(torch.randn(3))
            self.shift = torch.nn.Parameter(torch.randn(3))

        def f(self, t, y):
            return torch.tanh(self.drift(y)) * (1 + t)

        def g(self, t, y):
            return 0.3 * torch.sigmoid(self.scale * y + self.shift)

    sde = Net().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    bi = torchsde.BrownianInterval(0.0, 0.5, size=(4, 3), dtype=torch.float64, entropy=3)
    ours = sdeint(sde, y0, t, method=method, dt=2.0 ** -5, bm=bi)
    theirs = torchsde.sdeint(sde, y0, t, method=method, dt=2.0 ** -5, bm=bi)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
