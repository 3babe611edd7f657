"""Gradient methods: the ``adjoint=`` argument of :func:`pyjode.odeint`."""

from __future__ import annotations

from .base import GradientMethod
from .auto import Auto
from .backsolve import Backsolve
from .checkpointed import Checkpointed
from .direct import Direct
from .quadrature import Quadrature
from .reversible import ReversibleAdjoint

# Strings select each method with its defaults.
_BY_NAME = {
    "direct": Direct,
    "auto": Auto,
    "backsolve": Backsolve,
    "checkpointed": Checkpointed,
    "quadrature": Quadrature,
    "reversible": ReversibleAdjoint,
}


def resolve_adjoint(adjoint) -> GradientMethod:
    if isinstance(adjoint, GradientMethod):
        return adjoint
    if isinstance(adjoint, str):
        if adjoint in _BY_NAME:
            return _BY_NAME[adjoint]()
        raise ValueError(f"adjoint={adjoint!r} is not known; choose one of {sorted(_BY_NAME)} or pass an instance "
                         f"such as pyjode.Quadrature(...)")
    if isinstance(adjoint, type) and issubclass(adjoint, GradientMethod):
        raise TypeError(f"adjoint must be an instance: write adjoint=pyjode.{adjoint.__name__}()")
    raise TypeError(f"adjoint must be a string or a pyjode gradient method, got {type(adjoint).__name__}")
