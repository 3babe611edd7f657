"""The Julia backend: the Julia package PyJODE (OrdinaryDiffEq) reached through juliacall.

Importing this package imports juliacall only when the environment selects the Julia backend
(``PYJODE_BACKEND=julia``) and Julia is installed; it then does so first, before torch (see
:mod:`pyjode._julia.loader`). Otherwise :func:`odeint_julia` loads it on first use.
"""

# Before anything that imports torch: juliacall must be imported first when it is imported at all.
from .loader import start_early as _start_early

_start_early()

from .backend import ENV_VAR, resolve_backend  # noqa: E402
from .odeint import odeint_julia  # noqa: E402
from .plan import JULIA_ADJOINTS, JULIA_METHODS, JuliaUnsupportedError  # noqa: E402
from .probe import JuliaUnavailableError, julia_available  # noqa: E402

__all__ = [
    "ENV_VAR",
    "JULIA_ADJOINTS",
    "JULIA_METHODS",
    "JuliaUnavailableError",
    "JuliaUnsupportedError",
    "julia_available",
    "odeint_julia",
    "resolve_backend",
]
