"""The fixed step grid of an SDE solve and the Brownian increments over it.

The solution is computed exactly at the output times (no interpolation). With a `BrownianPath`
the steps between outputs lie on the path's dyadic grid of spacing δ <= dt, where the Brownian
tree is cheapest to query: the grid is the output times plus every multiple of δ strictly inside
each output interval. When sdeint is given no Brownian motion it uses the multiples of dt and a
`GridNoise`, which draws the increments of that one grid directly. With any other Brownian
object each output interval is cut into ceil(length / dt) equal steps. Increments are queried in
chunks so that a solve holds O(chunk) noise, which keeps the reversible adjoint O(1) in steps.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from .keyed_rng import keyed_normals, node_keys, stream_key

CHUNK = 256


class GridNoise:
    """Brownian increments on one fixed step grid, for a solve that was given no Brownian motion.

    The increment of step k is sqrt(t_{k+1} − t_k) ξ_k with ξ_k ~ N(0, I) independent: exactly the
    law of Brownian motion on the grid, at one normal per element and step (a Brownian tree, which
    answers any query, draws about twice as many and walks its levels). The normals of each chunk
    of steps come from a generator keyed by (seed, first step of the chunk), so the reversible adjoint,
    which asks for the same chunks backwards, sees exactly the forward noise.
    """

    def __init__(self, shape: torch.Size, seed: int):
        self.shape, self._key = torch.Size(shape), stream_key(seed, 0)

    def chunk(self, k0: int, times: torch.Tensor, dtype: torch.dtype, device: torch.device):
        """The increments over the steps of `times` (float64 CPU), which start at step `k0`."""
        key = node_keys(self._key, torch.tensor([k0], dtype=torch.int64))
        n = len(times) - 1
        xi = keyed_normals(key, n * self.shape.numel(), dtype, device).view(n, *self.shape)
        scale = times.diff().sqrt().to(device=device, dtype=dtype)
        return (xi * scale.view(-1, *([1] * len(self.shape)))).unbind(0)


def step_grid(t: torch.Tensor, dt: float) -> tuple[torch.Tensor, list[int]]:
    """float64 CPU grid of step times and the grid index of every output time."""
    pieces, out_index, count = [t[:1]], [0], 0
    for a, b in zip(t[:-1].tolist(), t[1:].tolist()):
        n = max(1, math.ceil((b - a) / dt - 1e-9))
        pieces.append(torch.linspace(a, b, n + 1, dtype=torch.float64)[1:])
        count += n
        out_index.append(count)
    return torch.cat(pieces), out_index


def dyadic_step_grid(t: torch.Tensor, origin: float, spacing: float
                     ) -> tuple[torch.Tensor, list[int]]:
    """float64 CPU grid: the outputs `t` plus the multiples origin + k*spacing between them."""
    pieces, out_index, count = [t[:1]], [0], 0
    # Multiples closer than this to an output time are dropped rather than making a sliver step.
    gap = 1e-6
    for a, b in zip(t[:-1].tolist(), t[1:].tolist()):
        first = math.floor((a - origin) / spacing + gap) + 1
        last = math.ceil((b - origin) / spacing - gap) - 1
        inner = origin + torch.arange(first, last + 1, dtype=torch.float64) * spacing
        pieces.append(torch.cat([inner, torch.tensor([b], dtype=torch.float64)]))
        count += len(inner) + 1
        out_index.append(count)
    return torch.cat(pieces), out_index


def increment_chunks(bm, grid: torch.Tensor, dtype: torch.dtype, device: torch.device,
                     reverse: bool = False, chunk: int = CHUNK
                     ) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
    """Yield (first step index, increments of the steps in the chunk), forwards or backwards."""
    n_steps = len(grid) - 1
    starts = range(0, n_steps, chunk)
    for k0 in (reversed(starts) if reverse else starts):
        k1 = min(k0 + chunk, n_steps)
        if isinstance(bm, GridNoise):
            yield k0, bm.chunk(k0, grid[k0:k1 + 1], dtype, device)
        else:
            yield k0, _increments(bm, grid[k0:k1 + 1], dtype, device)


def _increments(bm, times: torch.Tensor, dtype: torch.dtype, device: torch.device):
    if hasattr(bm, "increments"):
        return bm.increments(times, dtype=dtype).to(device).unbind(0)
    # Any other Brownian object with torchsde's bm(ta, tb) protocol, one query per step.
    ts = times.tolist()
    return tuple(bm(a, b).to(device=device, dtype=dtype) for a, b in zip(ts[:-1], ts[1:]))
