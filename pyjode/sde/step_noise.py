"""The Brownian controls of a fixed SDE step grid: the increment ΔW of each step, with U = ∫ (W_s − W_t0) ds
for methods of strong order 1.5.

With no Brownian motion given, the controls of a grid are drawn directly: ΔW = √h ξ and the space-time Lévy
area H = U/h − ΔW/2 = √(h/12) ζ with ξ, ζ ~ N(0, I) independent (the exact joint law of (ΔW, U) on one step).
The normals of each chunk of steps come from a generator keyed by (seed, chunk), so a backward pass asking for
the same chunks in reverse sees exactly the forward noise. A given Brownian object is queried as torchsde's
``bm(ta, tb)`` (``return_U=True`` when U is needed), once per step and again, identically, on the way back.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .keyed_rng import keyed_normals, node_keys, stream_key

CHUNK = 256


class StepNoise:
    def __init__(self, bm, shape: torch.Size, with_u: bool, seed: int | None = None, with_a: bool = False) -> None:
        self.bm, self.shape, self.with_u, self.with_a = bm, torch.Size(shape), with_u, with_a
        if bm is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item()) if seed is None else seed
            self._key = stream_key(seed, 7)

    def _chunk(self, grid: Sequence[float], k0: int, k1: int, dtype, device):
        times = grid[k0:k1 + 1]
        if self.bm is not None:
            out = []
            for a, b in zip(times[:-1], times[1:]):
                if self.with_a:
                    w, area = self.bm(a, b, return_A=True)
                    out.append((w.to(device=device, dtype=dtype), area.to(device=device, dtype=dtype)))
                elif self.with_u:
                    w, u = self.bm(a, b, return_U=True)
                    out.append((w.to(device=device, dtype=dtype), u.to(device=device, dtype=dtype)))
                else:
                    out.append(self.bm(a, b).to(device=device, dtype=dtype))
            return out
        n, numel = k1 - k0, self.shape.numel()
        key = node_keys(self._key, torch.tensor([k0], dtype=torch.int64))
        width = 2 if self.with_u else 1
        xi = keyed_normals(key, n * width * numel, dtype, device).view(n, width, *self.shape)
        h = torch.tensor(times, dtype=torch.float64).diff()
        view = (-1,) + (1,) * len(self.shape)
        dw = xi[:, 0] * h.sqrt().to(device=device, dtype=dtype).view(view)
        if not self.with_u:
            return dw.unbind(0)
        hh = xi[:, 1] * (h / 12).sqrt().to(device=device, dtype=dtype).view(view)
        u = (0.5 * dw + hh) * h.to(device=device, dtype=dtype).view(view)
        return list(zip(dw.unbind(0), u.unbind(0)))

    def query(self, a: float, b: float, dtype, device):
        """The control of one step [a, b] from the given Brownian motion (adaptive steps)."""
        return self._chunk([a, b], 0, 1, dtype, device)[0]

    def controls(self, grid: Sequence[float], dtype, device):
        """The controls of the steps of `grid`, in order."""
        n = len(grid) - 1
        for k0 in range(0, n, CHUNK):
            yield from self._chunk(grid, k0, min(k0 + CHUNK, n), dtype, device)

    def reversed_controls(self, grid: Sequence[float], dtype, device):
        """``(k, control of step k)`` from the last step to the first: the same noise, replayed."""
        n = len(grid) - 1
        for k0 in reversed(range(0, n, CHUNK)):
            chunk = self._chunk(grid, k0, min(k0 + CHUNK, n), dtype, device)
            for j in range(len(chunk) - 1, -1, -1):
                yield k0 + j, chunk[j]


def noise_seed_free_check(bm, shape: torch.Size) -> None:
    """A given Brownian motion must have the noise's shape."""
    bm_shape = getattr(bm, "shape", None)
    if bm_shape is not None and torch.Size(bm_shape) != shape:
        raise ValueError(f"bm has shape {tuple(bm_shape)} but this sde's noise needs {tuple(shape)}; "
                         "build it with size=(batch, noise channels).")
