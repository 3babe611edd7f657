"""Error norms for step-size control.

The controller accepts a step when ``norm(err / (atol + rtol * max(|y0|, |y1|))) <= 1``. A norm is any
callable mapping that scaled-error tensor to a 0-dim tensor. :func:`rms_norm` is the default.
:class:`PartsNorm` measures chosen slices of a flat state only: the *seminorm* of Kidger, Chen & Lyons
(2021), which leaves integral-only channels (the parameter adjoint ``a_theta``) out of step control.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

Norm = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Norm", "rms_norm", "max_norm", "PartsNorm"]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square norm, ``sqrt(mean(x**2))``."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


def max_norm(x: torch.Tensor) -> torch.Tensor:
    """Infinity norm, ``max |x|``."""
    return x.abs().max()


class PartsNorm:
    """A norm over chosen parts of a flat state made by concatenating several tensors.

    ``norm(x) = max_{i in include} rms(x[part_i])``, the per-part RMS combined by a max as torchdiffeq
    does for tuple states. Parts not in ``include`` do not affect step control: with ``include`` a strict
    subset this is a seminorm (Kidger, Chen & Lyons, 2021, §3).

    Args:
        sizes: number of elements of each part, in order.
        include: indices of the parts that count; all of them when ``None``.
    """

    def __init__(self, sizes: Sequence[int], include: Sequence[int] | None = None):
        sizes = [int(s) for s in sizes]
        if any(s < 0 for s in sizes):
            raise ValueError(f"sizes must be non-negative, got {sizes}")
        include = range(len(sizes)) if include is None else include
        bounds, start = [], 0
        for s in sizes:
            bounds.append((start, start + s))
            start += s
        self.total = start
        self.slices = [bounds[i] for i in include if sizes[i] > 0]
        if not self.slices:
            raise ValueError("PartsNorm needs at least one non-empty part to measure")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1)
        if len(self.slices) == 1:
            a, b = self.slices[0]
            return rms_norm(x[a:b])
        return torch.stack([rms_norm(x[a:b]) for a, b in self.slices]).max()
