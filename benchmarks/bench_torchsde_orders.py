"""Observed strong orders of pyjode.torchsde's methods against closed forms.

Geometric Brownian motion dy = μy dt + σy dW (μ = 0.3, σ = 0.6, y0 = 1; Itô: y_T = y0 exp((μ − σ²/2)T + σW_T),
Stratonovich: y0 exp(μT + σW_T)), diagonal noise, and its scalar-noise version on two uncoupled components with
one W. 2000 paths on one BrownianInterval (foster: U and A available), T = 1, dt = 2^-3 .. 2^-7; the error is
E|y_T − exact|, the order the least-squares slope of log error against log dt.

    python -m benchmarks.bench_torchsde_orders
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import pyjode.torchsde as pts

CASES = [("diagonal", "ito", "euler", None), ("diagonal", "ito", "milstein", None),
         ("diagonal", "ito", "milstein", {"grad_free": True}), ("diagonal", "ito", "srk", None),
         ("scalar", "ito", "srk", None), ("diagonal", "stratonovich", "midpoint", None),
         ("diagonal", "stratonovich", "heun", None), ("diagonal", "stratonovich", "euler_heun", None),
         ("diagonal", "stratonovich", "log_ode", None), ("diagonal", "stratonovich", "milstein", None),
         ("diagonal", "stratonovich", "milstein", {"grad_free": True}),
         ("diagonal", "stratonovich", "reversible_heun", None)]


class GBM(nn.Module):
    def __init__(self, noise_type, sde_type, mu=0.3, sigma=0.6):
        super().__init__()
        self.noise_type, self.sde_type, self.mu, self.sigma = noise_type, sde_type, mu, sigma

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y if self.noise_type == "diagonal" else (self.sigma * y).unsqueeze(-1)


def main() -> None:
    torch.set_num_threads(1)
    paths = 2000
    dts = [2.0 ** -k for k in range(3, 8)]
    print(f"{'noise':9s} {'calculus':13s} {'method':22s} {'order':>6s}   errors at dt = 2^-3 .. 2^-7")
    for noise_type, sde_type, method, options in CASES:
        sde = GBM(noise_type, sde_type)
        y0 = torch.ones(paths, 2 if noise_type == "scalar" else 1, dtype=torch.float64)
        bm = pts.BrownianInterval(0.0, 1.0, size=(paths, 1), dtype=torch.float64, entropy=11,
                                  levy_area_approximation="foster")
        drift = sde.mu - (0.5 * sde.sigma ** 2 if sde_type == "ito" else 0.0)
        exact = y0 * torch.exp(drift + sde.sigma * bm(0.0, 1.0))
        errors = []
        with torch.no_grad():
            for dt in dts:
                ys = pts.sdeint(sde, y0, [0.0, 1.0], bm=bm, method=method, dt=dt, options=options)
                errors.append((ys[-1] - exact).abs().mean().item())
        order = float(np.polyfit(np.log2(dts), np.log2(errors), 1)[0])
        name = method + (" (grad_free)" if options else "")
        print(f"{noise_type:9s} {sde_type:13s} {name:22s} {order:6.2f}   " + " ".join(f"{e:.1e}" for e in errors))


if __name__ == "__main__":
    main()
