"""The Julia backend: the Julia package PyJODE (OrdinaryDiffEq) reached through juliacall.

Importing this package never imports juliacall; :func:`odeint_julia` loads it on first use.
"""

from .backend import ENV_VAR, resolve_backend
from .odeint import odeint_julia
from .plan import JULIA_ADJOINTS, JULIA_METHODS, JuliaUnsupportedError
from .probe import JuliaUnavailableError, julia_available

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
