"""Test problems and helpers shared by several test files: each written once, with its closed form."""

from __future__ import annotations

import torch
from torch import nn

F64 = torch.float64


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()


def decay(t, y):
    """y' = -y."""
    return -y


def cos_growth(t, y):
    """y' = y cos t: y(t) = y0 exp(sin t - sin t0). Its oscillating growth makes a controller reject steps."""
    return y * torch.cos(t)


def linear_problem(seed: int = 0, n: int = 3, scale: float = 0.6, times=(0.0, 0.3, 1.1, 1.7, 2.5)):
    """y' = A y for a batch of two initial states, with loss weights ``w`` on every output: ``(A, y0, t, w)``
    with ``A`` and ``y0`` requiring grad. :func:`linear_exact_loss` is its loss in closed form."""
    g = torch.Generator().manual_seed(seed)
    A = (scale * torch.randn(n, n, generator=g, dtype=F64)).requires_grad_()
    y0 = torch.randn(2, n, generator=g, dtype=F64).requires_grad_()
    t = torch.tensor(times, dtype=F64)
    w = torch.randn(len(t), 2, n, generator=g, dtype=F64)
    return A, y0, t, w


def linear_exact_loss(A, y0, t, w) -> torch.Tensor:
    """sum_i w_i · y(t_i) with y(t) = expm(A (t - t_0)) y0: differentiable, so autograd gives the exact
    gradients."""
    ys = torch.stack([y0 @ torch.linalg.matrix_exp(A * (ti - t[0])).T for ti in t])
    return (ys * w).sum()


class MLP(nn.Module):
    """A small time-dependent neural field f(t, y) = net([y, t])."""

    def __init__(self, dim: int = 3, hidden: int = 16, dtype=F64, seed: int = 0, depth: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        layers = [nn.Linear(dim + 1, hidden), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.Softplus()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))
        self.to(dtype)

    def forward(self, t, y):
        tt = t.expand(*y.shape[:-1], 1)
        return self.net(torch.cat([y, tt], dim=-1))


class GBM(nn.Module):
    """Geometric Brownian motion dX = mu X dt + sigma X dW (Itô) or ∘dW (Stratonovich), diagonal noise.
    Stratonovich: X(t) = X0 exp(mu t + sigma W(t)); Itô: X0 exp((mu - sigma²/2) t + sigma W(t))."""

    noise_type = "diagonal"

    def __init__(self, sde_type: str = "stratonovich", mu: float = 0.5, sigma: float = 0.8):
        super().__init__()
        self.sde_type, self.mu, self.sigma = sde_type, mu, sigma

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y

    def exact(self, y0, t, w):
        drift = self.mu if self.sde_type == "stratonovich" else self.mu - 0.5 * self.sigma ** 2
        return y0 * torch.exp(drift * t + self.sigma * w)


def van_der_pol(mu):
    """x' = v, v' = mu (1 - x^2) v - x, for a scalar mu or a batch of them (mu of shape (B,), one per sample)."""
    def f(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x ** 2) * v - x], -1)
    return f
