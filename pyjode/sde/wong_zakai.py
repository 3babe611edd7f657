"""Wong–Zakai training of an SDE through an ODE (Wong & Zakai 1965; Norcliffe & Deisenroth 2023).

    F(t, y) = f̃(t, y) + g(t, y)·dW̃/dt,

where W̃ is a smooth approximation of Brownian motion (`smooth_noise`). As W̃ → W the ODE's
solution converges to the Stratonovich SDE dy = f̃ dt + g∘dW. For an Itô SDE, f̃ is the
Stratonovich drift f − ½ (∂g/∂y)·g (diagonal or scalar noise; additive noise needs no
correction). F is an nn.Module whose parameters are the SDE's own, so training F with
pyjode.odeint (any adjoint, e.g. "quadrature") trains the SDE, and sdeint(sde, ...) samples it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..function_transforms import is_functorch_wrapped
from .noise_types import check_sde, diffusion_and_jvp, diffusion_product
from .smooth_noise import CosineNoise


class WongZakai(nn.Module):
    """The Wong–Zakai vector field of `sde` driven by `noise`:

        F(t, y) = f̃(t, y) + g(t, y)·dW̃/dt,

    with f̃ the Stratonovich drift (f − ½ (∂g/∂y)·g for an Itô SDE with diagonal or scalar noise; see the
    module docstring; Wong & Zakai 1965, Norcliffe & Deisenroth 2023). As the noise W̃ approaches W, the
    solution of y' = F(t, y) converges to that of the Stratonovich SDE dy = f̃ dt + g∘dW.

    `noise` is a `CosineNoise` or `PiecewiseLinearNoise`; if omitted, a `CosineNoise(t0, t1,
    shape, n_terms, seed)` is built, with `shape` the Brownian motion's shape (y's shape for
    diagonal noise, (*batch, m) otherwise), `n_terms` (default 10) and `seed` (default 0). Call
    `resample()` before each training step for a fresh path; within one solve the path is fixed.
    """

    def __init__(self, sde, noise: nn.Module | None = None, *, t0: float | None = None,
                 t1: float | None = None, shape: Sequence[int] | None = None, n_terms: int = 10,
                 seed: int = 0) -> None:
        super().__init__()
        self.noise_type, self.sde_type = check_sde(sde, "WongZakai")
        if self.sde_type == "ito" and self.noise_type == "general":
            raise ValueError("WongZakai: an Itô SDE with general noise has no built-in "
                             "Itô–Stratonovich drift correction; write the SDE in Stratonovich "
                             "form (sde_type='stratonovich') with the corrected drift.")
        if noise is None:
            if t0 is None or t1 is None or shape is None:
                raise ValueError("WongZakai: pass noise=..., or t0, t1 and shape for the default "
                                 "CosineNoise.")
            # The noise lives where the SDE computes: its parameters' (or buffers') device and dtype.
            like = next(iter(_tensors(sde)), None)
            noise = CosineNoise(t0, t1, shape, n_terms=n_terms, seed=seed,
                                dtype=None if like is None else like.dtype,
                                device=None if like is None else like.device)
        if not all(callable(getattr(noise, name, None)) for name in ("rate", "resample")):
            raise TypeError("WongZakai: noise must provide rate(t) and resample() "
                            "(CosineNoise or PiecewiseLinearNoise).")
        self.sde = sde
        self.noise = noise
        self._product = diffusion_product(self.noise_type)
        self._correct = self.sde_type == "ito" and self.noise_type in ("diagonal", "scalar")

    @property
    def jump_ts(self) -> tuple:
        """Where the field is not smooth: the noise's kinks (a piecewise-linear grid), none for smooth noise.
        `pyjode.odeint` lands steps on these times and restarts there."""
        return tuple(getattr(self.noise, "jump_ts", ()))

    def resample(self) -> "WongZakai":
        self.noise.resample()
        return self

    def _check_call(self, t: torch.Tensor, y: torch.Tensor) -> None:
        """The noise must have the Brownian motion's shape for ``y`` and cover ``t``: outside its span a
        cosine series keeps oscillating and a piecewise-linear one extrapolates, both silently wrong."""
        shape = tuple(getattr(self.noise, "shape", ()))
        want = tuple(y.shape) if self.noise_type == "diagonal" else (*y.shape[:-1], "m")
        if (self.noise_type == "diagonal" and shape != tuple(y.shape)) or (
                self.noise_type != "diagonal" and tuple(shape[:-1]) != tuple(y.shape[:-1])):
            raise ValueError(
                f"WongZakai: the noise has shape {shape} but a state of shape {tuple(y.shape)} with "
                f"noise_type={self.noise_type!r} needs {want}; build the noise (or BrownianPath) with that shape")
        span = getattr(self.noise, "span", None)
        if span is None or t.device.type != "cpu" or is_functorch_wrapped(t):
            return  # no host synchronisation on an accelerator, none inside a torch.func transform
        tf, (a, b) = float(t), span
        slack = 1e-9 * max(1.0, abs(a), abs(b))
        if not a - slack <= tf <= b + slack:
            raise ValueError(
                f"WongZakai: the field was evaluated at t={tf:.6g}, outside the noise's interval [{a:.6g}, {b:.6g}]; "
                f"solve within it, or build the noise over the solve's span (t0=..., t1=...)")

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_call(t, y)
        f = self.sde.f(t, y)
        rate = self.noise.rate(t)
        if rate.device != y.device:
            raise ValueError(f"WongZakai: the noise is on {rate.device} but y is on {y.device}; move the field "
                             f"with .to({str(y.device)!r}) (the noise is a submodule and moves with it).")
        rate = rate.to(y.dtype)
        if not self._correct:
            return f + self._product(self.sde.g(t, y), rate)
        g, g_dg = diffusion_and_jvp(self.sde, t, y, self.noise_type)
        drift = f - 0.5 * (g_dg[..., 0] if self.noise_type == "scalar" else g_dg)
        return drift + self._product(g, rate)


def _tensors(sde):
    """The SDE's parameters and buffers, when it is an nn.Module."""
    if isinstance(sde, nn.Module):
        yield from sde.parameters()
        yield from sde.buffers()
