"""Smooth (piecewise smooth) approximations of Brownian motion that drive a Wong–Zakai ODE.

Each model has `rate(t)` = dW/dt, `value(t)` = W(t) (with W(t0) = 0) and `resample()`.
- `CosineNoise`: the Karhunen–Loève series of Brownian motion on [t0, t0 + c], truncated after K
  terms (Norcliffe & Deisenroth 2023, Sec. on SDEs):
      dW_K/dt = sqrt(2/c) Σ_{k=1..K} ε_k cos((k − ½)π (t − t0)/c),   ε_k ~ N(0, I),
      W_K(t)  = Σ_{k=1..K} ε_k sqrt(2c) / ((k − ½)π) · sin((k − ½)π (t − t0)/c),
  so Var W_K(t) = Σ_k 2c/((k − ½)²π²) sin²((k − ½)π(t − t0)/c) → t − t0 as K → ∞.
- `PiecewiseLinearNoise`: the piecewise-linear interpolant of a `BrownianPath` on a grid; by the
  Wong–Zakai theorem the ODE it drives converges to the Stratonovich SDE driven by that path.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .brownian import BrownianPath
from .keyed_rng import keyed_normals, node_keys, stream_key

# Streams of the keyed RNG used by CosineNoise draws; far from BrownianPath's level streams.
_COSINE_STREAM = 1 << 20


class CosineNoise(nn.Module):
    """Truncated cosine (Karhunen–Loève) series of Brownian motion on [t0, t1] with `n_terms` terms:

        dW_K/dt = sqrt(2/c) Σ_{k=1..K} ε_k cos((k − ½)π (t − t0)/c),   c = t1 − t0,  ε_k ~ N(0, I)

    (module docstring; Norcliffe & Deisenroth 2023). `rate(t)` is dW_K/dt, `value(t)` is W_K(t) and
    `resample()` draws fresh ε_k.

    Args:
        t0, t1: the interval (t0 < t1).
        shape: the shape of W(t).
        n_terms: K, the number of terms (default 10).
        seed: the ε_k are a pure function of (seed, number of `resample()` calls) (default 0).
        dtype, device: of the path (default: torch's default dtype, the CPU).
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int], n_terms: int = 10,
                 seed: int = 0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"CosineNoise: need finite t0 < t1, got t0={t0}, t1={t1}.")
        if not isinstance(n_terms, int) or n_terms < 0:
            raise ValueError(f"CosineNoise: n_terms must be a non-negative int, got {n_terms!r}.")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"CosineNoise: seed must be a non-negative int, got {seed!r}.")
        self.t0, self.t1, self.shape = t0, t1, torch.Size(int(s) for s in shape)
        self.n_terms, self.seed, self.draw = n_terms, seed, 0
        dtype = torch.get_default_dtype() if dtype is None else dtype
        span = t1 - t0
        freq = (torch.arange(n_terms, dtype=torch.float64) + 0.5) * (math.pi / span)
        self.register_buffer("freq", freq.to(dtype=dtype, device=device), persistent=False)
        self.register_buffer("eps", torch.zeros(n_terms, math.prod(self.shape), dtype=dtype,
                                                device=device), persistent=False)
        self._draw_eps()

    @property
    def span(self) -> tuple:
        """The interval ``(t0, t1)`` the path is defined on."""
        return (self.t0, self.t1)

    def resample(self) -> "CosineNoise":
        """A fresh, independent path (deterministic in (seed, number of draws so far))."""
        self.draw += 1
        self._draw_eps()
        return self

    def _draw_eps(self) -> None:
        key = node_keys(stream_key(self.seed, _COSINE_STREAM + self.draw),
                        torch.arange(self.n_terms, dtype=torch.int64))
        eps = keyed_normals(key, self.eps.shape[1], torch.float64, self.eps.device)
        self.eps.copy_(eps.to(self.eps.dtype))

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        coeff = torch.cos(self.freq * (t - self.t0))
        scale = math.sqrt(2.0 / (self.t1 - self.t0))
        return (scale * coeff @ self.eps).reshape(self.shape)

    def value(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self.eps.dtype, device=self.eps.device)
        coeff = torch.sin(self.freq * (t - self.t0)) / self.freq
        scale = math.sqrt(2.0 / (self.t1 - self.t0))
        return (scale * coeff @ self.eps).reshape(self.shape)


class PiecewiseLinearNoise(nn.Module):
    """Piecewise-linear interpolation of `bm` on the increasing times `grid`.

    The rate is right-continuous: on [grid[j], grid[j+1]) it is the slope of interval j. The grid
    is offered as `jump_ts`, which `pyjode.odeint` reads from a `WongZakai` field: steps land on
    every grid time and restart there, so no step straddles a kink.

    Args:
        bm: the :class:`pyjode.BrownianPath` to interpolate.
        grid: at least two strictly increasing times inside the path's span.
        dtype: of the interpolant (default: the path's dtype).
    """

    def __init__(self, bm: BrownianPath, grid: torch.Tensor | Sequence[float],
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        grid = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().reshape(-1)
        if len(grid) < 2 or not bool((grid.diff() > 0).all()):
            raise ValueError("PiecewiseLinearNoise: grid must be 1-D, strictly increasing, "
                             "with at least 2 times.")
        dtype = bm.dtype if dtype is None else dtype
        self.shape = bm.shape
        w = bm.values(grid, dtype=torch.float64)
        slope = (w[1:] - w[:-1]) / grid.diff().reshape(-1, *([1] * len(bm.shape))).to(w.device)
        self.register_buffer("grid", grid.to(dtype=dtype, device=w.device), persistent=False)
        self.register_buffer("w", w.to(dtype), persistent=False)
        self.register_buffer("slope", slope.to(dtype), persistent=False)

    @property
    def jump_ts(self) -> tuple:
        """The grid: the rate jumps there, so solvers should step onto each grid time and restart."""
        return tuple(self.grid.double().cpu().tolist())

    @property
    def span(self) -> tuple:
        """The interval the grid covers."""
        return (float(self.grid[0]), float(self.grid[-1]))

    def resample(self) -> "PiecewiseLinearNoise":
        raise TypeError("PiecewiseLinearNoise follows a fixed BrownianPath; build a new one from "
                        "a BrownianPath with another seed instead of resampling.")

    def _interval(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self.grid.dtype, device=self.grid.device).reshape(1)
        j = torch.searchsorted(self.grid, t, right=True) - 1
        return j.clamp(0, len(self.grid) - 2)[0]

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.slope[self._interval(t)]

    def value(self, t: torch.Tensor) -> torch.Tensor:
        j = self._interval(t)
        return self.w[j] + self.slope[j] * (torch.as_tensor(t, dtype=self.grid.dtype) - self.grid[j])
