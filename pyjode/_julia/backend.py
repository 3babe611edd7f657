"""Choosing between the PyTorch and Julia backends."""

from __future__ import annotations

import os
from typing import Any, Optional

from .plan import unsupported_reason
from .probe import INSTALL_HINT, JuliaUnavailableError, julia_available, unavailable_reason

__all__ = ["BACKENDS", "ENV_VAR", "resolve_backend"]

BACKENDS = ("torch", "julia", "auto")
ENV_VAR = "PYJODE_BACKEND"


def resolve_backend(backend: str, method: Any = None, adjoint: Any = None,
                    step_size: Optional[float] = None) -> str:
    """``"torch"`` or ``"julia"`` for ``odeint(..., backend=backend)``.

    * ``"torch"`` and ``"julia"`` are taken as given; ``"julia"`` raises :class:`JuliaUnavailableError`
      at once (no download, no network) when Julia cannot be used here.
    * ``"auto"`` defers to the environment variable ``PYJODE_BACKEND`` (``torch``, ``julia`` or ``auto``)
      when it is set, and otherwise picks ``"julia"`` only when :func:`julia_available` is true and,
      if ``method``/``adjoint`` are given, the Julia backend implements them; else ``"torch"``.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not known; choose one of {list(BACKENDS)}")
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env not in BACKENDS:
            raise ValueError(f"the environment variable {ENV_VAR}={env!r} is not one of {list(BACKENDS)}")
        backend = env or "auto"
    if backend == "torch":
        return "torch"
    if backend == "julia":
        reason = unavailable_reason()
        if reason is not None:
            raise JuliaUnavailableError(f'backend="julia" is not available: {reason}. {INSTALL_HINT}')
        return "julia"
    if not julia_available():
        return "torch"
    if method is not None and adjoint is not None and unsupported_reason(method, adjoint, step_size) is not None:
        return "torch"
    return "julia"
