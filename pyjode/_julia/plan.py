"""Which Julia calls one ``odeint`` becomes, or why it cannot run on the Julia backend.

The Julia backend runs the named methods on OrdinaryDiffEq and three gradient methods: the
Gauss–Legendre quadrature adjoint, the backsolve adjoint (seminorm or RMS step control) and the exact
backward pass of McCallum–Foster reversible solvers. Everything else raises
:class:`JuliaUnsupportedError`, whose message names the argument and the alternatives.

The plan is made from the same objects the PyTorch backend runs: ``adjoint`` is resolved with
:func:`pyjode.adjoints.resolve_adjoint` (so ``"quadrature"`` is ``Quadrature()``, with its default
``state="resolve"``, on both backends), every setting is read off that object, and an unset backward
tolerance means the forward one exactly as in ``ContinuousAdjoint.backward_kwargs`` (``None``, not any
falsy value: ``rtol=0.0`` stays 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..adjoints import resolve_adjoint
from ..adjoints.backsolve import Backsolve
from ..adjoints.direct import Direct
from ..adjoints.quadrature import Quadrature, default_nodes_per_step
from ..adjoints.reversible import ReversibleAdjoint
from ..reversible import Reversible
from ..tableau import TABLEAUS, ButcherTableau, get_tableau

__all__ = ["JuliaUnsupportedError", "JuliaPlan", "make_plan", "unsupported_reason", "JULIA_METHODS",
           "JULIA_ADJOINTS", "NODE_BATCH_ELEMENTS"]

JULIA_METHODS = ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")
JULIA_ADJOINTS = ("quadrature", "backsolve", "reversible")
_ALTERNATIVES = 'use adjoint="quadrature" or "backsolve" (or "reversible" with pyjode.Reversible), or backend="torch"'

# As the PyTorch backend's Quadrature(max_nodes_per_call=None): one batched parameter VJP takes as many
# quadrature nodes as fit in 2**14 state elements.
NODE_BATCH_ELEMENTS = 2 ** 14


class JuliaUnsupportedError(ValueError):
    """The requested method or gradient method has no Julia implementation; the message lists what does."""


@dataclass(frozen=True)
class JuliaPlan:
    """A validated Julia solve. ``gradient`` is ``"none"`` when no gradient will be asked for."""

    gradient: str                        # "quadrature", "backsolve", "reversible" or "none"
    method: Optional[str]                # OrdinaryDiffEq method name, None for reversible solves
    tableau: Optional[ButcherTableau]    # the reversible solver's base step
    coupling: float
    rtol: float
    atol: float
    step_size: float                     # 0.0 when not given (adaptive: the solver picks the first step)
    max_steps: Optional[int]             # None: the default cap of adaptive methods, none for fixed steps
    adjoint_method: Optional[str]
    adjoint_rtol: float
    adjoint_atol: float
    norm: str                            # backsolve: "seminorm" or "rms"
    state: str                           # quadrature: "stored" forward solution or "resolve"
    nodes: int                           # GL nodes per backward step (quadrature)
    nodes_per_call: Optional[int]        # quadrature: Quadrature(max_nodes_per_call=...)
    time_gradients: bool                 # whether dL/dt can be returned

    def max_nodes(self, n: int) -> int:
        """Points one parameter VJP stages, for states of ``n`` elements: every stage of a reversible
        step, or whole steps' worth of quadrature nodes up to the PyTorch backend's batch size."""
        stages = self.tableau.stages if self.tableau is not None else 0
        if self.gradient != "quadrature":
            return max(1, stages)
        batch = self.nodes_per_call or max(1, NODE_BATCH_ELEMENTS // max(n, 1))
        return max(self.nodes, self.nodes * (batch // self.nodes), stages)


def _julia_method_name(method: Any) -> str:
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


def _resolve_method(method: Any) -> Any:
    """A :class:`pyjode.Reversible` as given, anything else as a tableau (as ``pyjode.odeint`` does)."""
    return method if isinstance(method, Reversible) else get_tableau(method)


def make_plan(method: Any, adjoint: Any, *, rtol: float, atol: float, step_size: Optional[float],
              max_steps: Optional[int], needs_grad: bool, t_requires_grad: bool = False) -> JuliaPlan:
    """Validate one call for the Julia backend; raise ``ValueError``/``JuliaUnsupportedError`` if it cannot run."""
    grad = resolve_adjoint(adjoint)  # the PyTorch backend's own object and errors
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    resolved = _resolve_method(method)
    grad.check_method(resolved)  # e.g. ReversibleAdjoint without pyjode.Reversible, as on torch
    if isinstance(grad, Direct):
        gradient = "direct"
    elif isinstance(grad, (Quadrature, Backsolve, ReversibleAdjoint)):
        gradient = grad.name
    else:
        raise JuliaUnsupportedError(f"adjoint={grad!r} is not available on backend=\"julia\"; " + _ALTERNATIVES)
    if not needs_grad:
        gradient = "none"
    if gradient == "direct":
        raise JuliaUnsupportedError(
            'adjoint="direct" (backpropagation through the solver) is not available on backend="julia"; '
            + _ALTERNATIVES
        )

    base = resolved.tableau if isinstance(resolved, Reversible) else None
    name = adj_method = None
    adj_rtol, adj_atol, norm, state, nodes, nodes_per_call = rtol, atol, "seminorm", "resolve", 0, None
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
        if gradient == "reversible" and t_requires_grad:
            raise JuliaUnsupportedError(
                'adjoint="reversible" returns no gradient with respect to t; pass t.detach(), or use '
                'adjoint="quadrature" or "backsolve", which do'
            )
    else:
        name = adj_method = _julia_method_name(resolved)
        if not resolved.adaptive and step_size is None:
            raise ValueError(f"method={name!r} is a fixed-step method: pass step_size=...")
    if isinstance(grad, (Quadrature, Backsolve)) and gradient != "none":
        # ContinuousAdjoint.backward_kwargs / backward_tableau: None means "as the forward solve".
        adj_rtol = rtol if grad.rtol is None else grad.rtol
        adj_atol = atol if grad.atol is None else grad.atol
        if grad.method is not None:
            adj_method = _julia_method_name(grad.method)
        if isinstance(grad, Backsolve):
            norm = grad.norm
            if callable(norm):
                raise JuliaUnsupportedError("backend=\"julia\" takes Backsolve(norm='seminorm' or 'rms'), not a "
                                            "norm callable; use backend='torch'")
        else:
            state = grad.state
            nodes_per_call = grad.max_nodes_per_call
            nodes = (default_nodes_per_step(get_tableau(adj_method)) if grad.nodes_per_step is None
                     else grad.nodes_per_step)
        if not get_tableau(adj_method).adaptive and step_size is None:
            raise ValueError(f"the adjoint's method={adj_method!r} is a fixed-step method: pass step_size=...")
    coupling = resolved.coupling if base is not None else 1.0
    return JuliaPlan(
        gradient=gradient, method=name, tableau=base, coupling=float(coupling),
        rtol=float(rtol), atol=float(atol), step_size=float(step_size or 0.0), max_steps=max_steps,
        adjoint_method=adj_method, adjoint_rtol=float(adj_rtol), adjoint_atol=float(adj_atol),
        norm=norm, state=state, nodes=int(nodes), nodes_per_call=nodes_per_call,
        time_gradients=gradient in ("quadrature", "backsolve"),
    )


def unsupported_reason(method: Any, adjoint: Any, step_size: Optional[float] = None) -> Optional[str]:
    """Why ``(method, adjoint)`` with gradients cannot run on the Julia backend, or ``None`` if it can."""
    try:
        make_plan(method, adjoint, rtol=1e-7, atol=1e-9, step_size=step_size, max_steps=None, needs_grad=True)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
