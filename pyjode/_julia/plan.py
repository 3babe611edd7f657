"""Which Julia calls one ``odeint`` becomes, or why it cannot run on the Julia backend.

The Julia backend runs the named methods on OrdinaryDiffEq and three gradient methods: the
Gauss–Legendre quadrature adjoint, the backsolve adjoint (seminorm or RMS step control) and the exact
backward pass of McCallum–Foster reversible solvers. Everything else raises
:class:`JuliaUnsupportedError`, whose message names the argument and the alternatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from ..tableau import TABLEAUS, ButcherTableau, get_tableau

__all__ = ["JuliaUnsupportedError", "JuliaPlan", "make_plan", "unsupported_reason", "JULIA_METHODS",
           "JULIA_ADJOINTS"]

JULIA_METHODS = ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")
JULIA_ADJOINTS = ("quadrature", "backsolve", "reversible")
_ALTERNATIVES = 'use adjoint="quadrature" or "backsolve" (or "reversible" with pyjode.Reversible), or backend="torch"'


class JuliaUnsupportedError(ValueError):
    """The requested method or gradient method has no Julia implementation; the message lists what does."""


@dataclass(frozen=True)
class JuliaPlan:
    """A validated Julia solve. ``gradient`` is ``"none"`` when no gradient will be asked for."""

    gradient: str
    method: Optional[str]                # OrdinaryDiffEq method name, None for reversible solves
    tableau: Optional[ButcherTableau]    # the reversible solver's base step
    coupling: float
    rtol: float
    atol: float
    step_size: float                     # 0.0 when adaptive
    max_steps: int
    adjoint_method: Optional[str]
    adjoint_rtol: float
    adjoint_atol: float
    norm: str
    state: str                           # quadrature: "stored" forward solution or "resolve"
    nodes: int                           # GL nodes per backward step (quadrature)
    max_nodes: int                       # points one parameter VJP stages


def adjoint_name(adjoint: Any) -> str:
    if isinstance(adjoint, str):
        return adjoint
    name = getattr(adjoint, "name", None)
    if isinstance(name, str):
        return name
    return type(adjoint).__name__.lower().replace("adjoint", "") or "reversible"


def _reversible_base(method: Any) -> Optional[ButcherTableau]:
    """The base tableau of a ``pyjode.Reversible`` method, ``None`` for anything else."""
    if isinstance(method, (str, ButcherTableau)) or not hasattr(method, "coupling"):
        return None
    base = getattr(method, "base", None)
    if base is None:
        base = getattr(method, "tableau", None)
    return get_tableau(base)


def _method_name(method: Any) -> str:
    if isinstance(method, ButcherTableau) and TABLEAUS.get(method.name) is not method:
        raise JuliaUnsupportedError(
            f"method={method!r}: custom tableaus run on backend=\"torch\" only; backend=\"julia\" offers "
            f"{list(JULIA_METHODS)} (or pyjode.Reversible(tableau))"
        )
    tableau = get_tableau(method)  # raises the usual ValueError/TypeError for unknown methods
    if tableau.name not in JULIA_METHODS:
        raise JuliaUnsupportedError(
            f"method={method!r} is not available on backend=\"julia\"; choose one of {list(JULIA_METHODS)}, "
            f"or use backend=\"torch\""
        )
    return tableau.name


def make_plan(method: Any, adjoint: Any, *, rtol: float, atol: float, step_size: Optional[float],
              max_steps: Optional[int], needs_grad: bool) -> JuliaPlan:
    """Validate one call for the Julia backend; raise ``ValueError``/``JuliaUnsupportedError`` if it cannot run."""
    kind = adjoint_name(adjoint)
    if kind not in ("direct",) + JULIA_ADJOINTS:
        raise ValueError(f"adjoint={adjoint!r} is not known; choose one of {['direct', *JULIA_ADJOINTS]}")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    base = _reversible_base(method)
    if kind == "reversible" and base is None:
        raise ValueError(
            f'adjoint="reversible" reconstructs states exactly and needs a reversible method: pass '
            f"method=pyjode.Reversible({method!r}), got method={method!r}"
        )
    gradient = kind if needs_grad else "none"
    if gradient == "direct":
        raise JuliaUnsupportedError(
            'adjoint="direct" (backpropagation through the solver) is not available on backend="julia"; '
            + _ALTERNATIVES
        )
    name, nodes = None, 0
    if base is not None:
        if gradient not in ("none", "reversible"):
            raise JuliaUnsupportedError(
                f'adjoint="{gradient}" with a pyjode.Reversible method is not available on backend="julia"; '
                'use adjoint="reversible" or backend="torch"'
            )
        if base.adaptive or step_size is None:
            raise JuliaUnsupportedError(
                f"backend=\"julia\" runs reversible solvers with a fixed-step base and step_size=...; "
                f"pyjode.Reversible({base.name!r}) steps adaptively, which is on backend=\"torch\" only "
                "(or choose a base among 'euler', 'midpoint', 'heun', 'rk4')"
            )
    else:
        name = _method_name(method)
        if not get_tableau(name).adaptive and step_size is None:
            raise ValueError(f"method={name!r} is a fixed-step method: pass step_size=...")
    adj_method, adj_rtol, adj_atol, norm, state = name, rtol, atol, "seminorm", "stored"
    if gradient in ("quadrature", "backsolve") and not isinstance(adjoint, str):
        adj_rtol = getattr(adjoint, "rtol", None) or rtol
        adj_atol = getattr(adjoint, "atol", None) or atol
        override = getattr(adjoint, "method", None)
        if override is not None:
            adj_method = _method_name(override)
        norm = getattr(adjoint, "norm", None) or "seminorm"
        if gradient == "backsolve" and norm not in ("seminorm", "rms"):
            raise JuliaUnsupportedError(
                f'Backsolve(norm={norm!r}) is not available on backend="julia"; choose "seminorm" or "rms", '
                'or use backend="torch"'
            )
        nodes = int(getattr(adjoint, "nodes_per_step", None) or 0)
        state = getattr(adjoint, "state", None) or "stored"
    if adj_method is not None and not get_tableau(adj_method).adaptive and step_size is None:
        raise ValueError(f"the adjoint's method={adj_method!r} is a fixed-step method: pass step_size=...")
    if gradient == "quadrature" and nodes <= 0:
        # As pyjode.Quadrature: ceil(q / 2) nodes per step, q the order of the step-size control.
        tab = get_tableau(adj_method)
        nodes = max(1, math.ceil((tab.error_order if tab.adaptive else tab.order) / 2))
    coupling = float(getattr(method, "coupling", 1.0)) if base is not None else 1.0
    if not 0.0 < coupling <= 1.0:
        raise ValueError(f"the reversible solver's coupling must lie in (0, 1], got {coupling}; 0.999 is usual")
    max_nodes = max(1, nodes, base.stages if base is not None else 0)
    return JuliaPlan(
        gradient=gradient, method=name, tableau=base,
        coupling=coupling,
        rtol=float(rtol), atol=float(atol), step_size=float(step_size or 0.0),
        max_steps=int(max_steps) if max_steps is not None else 100_000,
        adjoint_method=adj_method, adjoint_rtol=float(adj_rtol), adjoint_atol=float(adj_atol),
        norm=norm, state=state, nodes=nodes, max_nodes=max_nodes,
    )


def unsupported_reason(method: Any, adjoint: Any, step_size: Optional[float] = None) -> Optional[str]:
    """Why ``(method, adjoint)`` with gradients cannot run on the Julia backend, or ``None`` if it can."""
    try:
        make_plan(method, adjoint, rtol=1e-7, atol=1e-9, step_size=step_size, max_steps=None, needs_grad=True)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
