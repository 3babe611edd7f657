"""``pyjode.odeint``: torchdiffeq's calling convention over :func:`pyjode.solve`."""

from __future__ import annotations

import inspect

import torch

from .solve import solve

__all__ = ["odeint"]


def odeint(func, y0: torch.Tensor, t, **kwargs) -> torch.Tensor:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time in ``t``: a tensor of shape
    ``(len(t), *y0.shape)``. Takes every keyword of :func:`pyjode.solve` except ``dense``; pass
    ``stats=pyjode.Stats()`` to see the work done."""
    if "dense" in kwargs:
        raise TypeError("odeint returns tensors: use pyjode.solve(..., dense=True) for a dense solution")
    return solve(func, y0, t, **kwargs).ys


# help(pyjode.odeint) shows solve's keywords, all of which it takes but dense.
odeint.__signature__ = inspect.signature(solve).replace(
    parameters=[p for p in inspect.signature(solve).parameters.values() if p.name != "dense"],
    return_annotation=torch.Tensor)
