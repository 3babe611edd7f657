"""``NeuralODE``: a vector field and its solver settings as one ``nn.Module``."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .odeint import odeint


class NeuralODE(nn.Module):
    """Wraps a vector field ``func(t, y)`` so that ``NeuralODE(func, t)(y0)`` solves it.

    Args:
        func: the vector field, usually an ``nn.Module`` (its parameters become this module's).
        t: default output times; may be overridden per call.
        **odeint_kwargs: any keyword of :func:`pyjode.odeint` (method, rtol, atol, adjoint, ...).

    ``forward(y0, t=None)`` returns ``odeint(func, y0, t, **odeint_kwargs)``, of shape
    ``(len(t), *y0.shape)``.
    """

    def __init__(self, func: nn.Module, t: Optional[Union[torch.Tensor, Sequence[float]]] = None, **odeint_kwargs):
        super().__init__()
        self.func = func
        if t is not None:
            # float64 whatever the default dtype: the output times keep their precision for a float64 model
            # (the solve carries time in float64 and casts t to the state's dtype only where a field sees it)
            t = t.detach() if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
            self.register_buffer("t", t if t.is_floating_point() else t.double(), persistent=False)
        else:
            self.t = None
        self.odeint_kwargs = odeint_kwargs

    def forward(self, y0: torch.Tensor, t: Optional[Union[torch.Tensor, Sequence[float]]] = None) -> torch.Tensor:
        t = self.t if t is None else t
        if t is None:
            raise ValueError("NeuralODE needs output times: pass t= to the constructor or to forward")
        return odeint(self.func, y0, t, **self.odeint_kwargs)
