"""The path-space KL term of latent SDEs (Li, Wong, Chen & Duvenaud 2020, "Scalable gradients for stochastic
differential equations", Sec. 5; torchsde's ``logqp=True``).

For a posterior dy = f dt + g dW and a prior dy = h dt + g dW with the same diffusion, Girsanov's theorem gives

    KL(q ‖ p) over [s, t] = E ∫_s^t ½ |u(r, y_r)|² dr,   g u = f − h,

with u = (f − h)/g elementwise for diagonal noise (divisions by |g| < 1e-7 are taken at ±1e-7, as torchsde
does) and u = g⁺(f − h) (the pseudo-inverse) for scalar, additive and general noise. `LogqpSDE` appends the
integrand's running integral to the state as one extra channel with zero diffusion, so every method and every
gradient mode integrates it alongside y.
"""
from __future__ import annotations

import torch

_EPS = 1e-7


def _stable_division(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    b = torch.where(b.abs().detach() > _EPS, b, torch.full_like(b, _EPS) * b.sign())
    return a / b


class LogqpSDE:
    """`sde` with the state (y, ∫½|u|²): drift (f, ½|u|²), diffusion (g, 0). Needs sde.f, sde.g and sde.h."""

    def __init__(self, sde) -> None:
        missing = [name for name in ("f", "g", "h") if not callable(getattr(sde, name, None))]
        if missing:
            raise ValueError(f"logqp=True needs the sde's drift f, diffusion g and prior drift h; missing "
                             f"{missing} (rename methods with names={{'prior_drift': ...}}).")
        self.base = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self._diagonal = sde.noise_type == "diagonal"

    def _kl_rate(self, f, g, h) -> torch.Tensor:
        if self._diagonal:
            u = _stable_division(f - h, g)
        else:
            u = (torch.linalg.pinv(g) @ (f - h).unsqueeze(-1)).squeeze(-1)
        return 0.5 * (u * u).sum(dim=-1, keepdim=True)

    def _zero_g(self, g: torch.Tensor) -> torch.Tensor:
        if self._diagonal:
            return torch.cat([g, g.new_zeros(*g.shape[:-1], 1)], dim=-1)
        return torch.cat([g, g.new_zeros(*g.shape[:-2], 1, g.shape[-1])], dim=-2)

    def f_and_g(self, t, y):
        x = y[..., :-1]
        f, g, h = self.base.f(t, x), self.base.g(t, x), self.base.h(t, x)
        return torch.cat([f, self._kl_rate(f, g, h)], dim=-1), self._zero_g(g)

    def f(self, t, y):
        return self.f_and_g(t, y)[0]

    def g(self, t, y):
        return self._zero_g(self.base.g(t, y[..., :-1]))


def split_logqp(ys: torch.Tensor):
    """(ys, log-ratio increments) from the augmented solution: shapes (T, *batch, d) and (T − 1, *batch)."""
    y, kl = ys[..., :-1], ys[..., -1]
    return y, kl[1:] - kl[:-1]
