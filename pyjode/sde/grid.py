"""The fixed step grid of an SDE solve and the Brownian increments over it.

The solution is computed exactly at the output times (no interpolation). With a `BrownianPath`
the steps between outputs lie on the path's dyadic grid of spacing δ <= dt (δ = dt when sdeint
builds the path itself), where the Brownian tree is cheapest to query: the grid is the output
times plus every multiple of δ strictly inside each output interval. With any other Brownian
object each output interval is cut into ceil(length / dt) equal steps. Increments are queried in
chunks so that a solve holds O(chunk) noise, which keeps the reversible adjoint O(1) in steps.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

CHUNK = 256


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
        yield k0, _increments(bm, grid[k0:k1 + 1], dtype, device)


def _increments(bm, times: torch.Tensor, dtype: torch.dtype, device: torch.device):
    if hasattr(bm, "increments"):
        return bm.increments(times, dtype=dtype).to(device).unbind(0)
    # Any other Brownian object with torchsde's bm(ta, tb) protocol, one query per step.
    ts = times.tolist()
    return tuple(bm(a, b).to(device=device, dtype=dtype) for a, b in zip(ts[:-1], ts[1:]))
