"""A drop-in for ``torchdiffeq``: change ``from torchdiffeq import odeint, odeint_adjoint`` to
``from pyjode.torchdiffeq import odeint, odeint_adjoint``.

The signatures and defaults are torchdiffeq's. ``odeint_adjoint`` is pyjode's continuous adjoint
(:class:`pyjode.Backsolve`), with torchdiffeq's classic norm unless ``adjoint_options=dict(norm="seminorm")``.
Tuple states are supported as in torchdiffeq (they are concatenated into one flat state, measured by one
RMS norm). ``method="rk4"`` is torchdiffeq's 3/8-rule variant, so fixed-step results agree to rounding
whenever the output times lie on the step grid.
"""

from __future__ import annotations

from fractions import Fraction as F

import torch

from .adjoints.backsolve import Backsolve
from .implicit import Implicit
from .odeint import odeint as _odeint
from .tableau import ButcherTableau

__all__ = ["odeint", "odeint_adjoint"]

# Kutta's 3/8 rule, which torchdiffeq runs under the name "rk4".
RK4_38 = ButcherTableau(
    name="rk4_38",
    c=[0, F(1, 3), F(2, 3), 1],
    a=[[], [F(1, 3)], [F(-1, 3), 1], [1, -1, 1]],
    b=[F(1, 8), F(3, 8), F(3, 8), F(1, 8)],
    order=4,
)

_METHODS = {"dopri5": "dopri5", "bosh3": "bosh3", "tsit5": "tsit5", "euler": "euler", "midpoint": "midpoint",
            "rk4": RK4_38, "heun": "heun"}
# torchdiffeq's implicit family: fixed-grid there, so fixed-step here (on the grid t when step_size is not given).
_IMPLICIT = ("implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4", "radauIIA5", "gl6", "sdirk2",
             "trbdf2")
_OPTIONS = ("step_size", "first_step", "max_num_steps")


def _method(method):
    method = "dopri5" if method is None else method
    if method in _IMPLICIT:
        return Implicit(method, adaptive=False)
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not available in pyjode.torchdiffeq; choose one of "
                         f"{sorted(_METHODS) + list(_IMPLICIT)}")
    return _METHODS[method]


def _grid_step(method, options, t):
    """torchdiffeq's implicit solvers step on the output grid ``t`` itself when no step_size is given: one
    step per output interval, which a step_size of the longest interval gives."""
    if method not in _IMPLICIT or options.get("step_size") is not None:
        return options
    tt = torch.as_tensor(t).detach().double().reshape(-1)
    if tt.numel() < 2:
        return options
    return dict(options, step_size=float((tt[1:] - tt[:-1]).abs().max()))


def _options(options, name="options"):
    options = {} if options is None else dict(options)
    unknown = set(options) - set(_OPTIONS) - {"norm"}
    if unknown:
        raise ValueError(f"{name} keys {sorted(unknown)} are not supported by pyjode.torchdiffeq; supported: "
                         f"{list(_OPTIONS)} (and norm='seminorm' in adjoint_options)")
    step = options.get("step_size", options.get("first_step"))
    return dict(step_size=None if step is None else float(step), max_steps=options.get("max_num_steps"))


class _Flat:
    """Presents a tuple state to the solver as one flat tensor, as torchdiffeq's _TupleFunc does."""

    def __init__(self, func, y0):
        self.func, self.shapes = func, [y.shape for y in y0]
        self.sizes = [y.numel() for y in y0]

    def split(self, y, lead=()):
        return tuple(p.reshape(*lead, *s) for p, s in zip(torch.split(y, self.sizes, dim=-1), self.shapes))

    def __call__(self, t, y):
        return torch.cat([f.reshape(-1) for f in self.func(t, self.split(y))])


def _call(func, y0, t, adjoint, rtol, atol, method, options, adjoint_params=None):
    options = _grid_step(method, {} if options is None else dict(options), t)
    if isinstance(y0, tuple):
        flat = _Flat(func, y0)
        params = adjoint_params
        if params is None and isinstance(func, torch.nn.Module):
            params = tuple(func.parameters())
        ys = _odeint(flat, torch.cat([y.reshape(-1) for y in y0]), t, method=_method(method), rtol=rtol,
                     atol=atol, adjoint=adjoint, adjoint_params=params, **_options(options))
        return flat.split(ys, lead=(ys.shape[0],))
    return _odeint(func, y0, t, method=_method(method), rtol=rtol, atol=atol, adjoint=adjoint,
                   adjoint_params=adjoint_params, **_options(options))


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """torchdiffeq.odeint: backpropagation through the solver."""
    if event_fn is not None:
        raise ValueError("event_fn is not supported by pyjode.torchdiffeq; solve to a fixed time instead")
    return _call(func, y0, t, "direct", rtol, atol, method, options)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """torchdiffeq.odeint_adjoint: the continuous adjoint, with ``adjoint_options=dict(norm="seminorm")``
    selecting the seminorm."""
    if event_fn is not None:
        raise ValueError("event_fn is not supported by pyjode.torchdiffeq; solve to a fixed time instead")
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("func must be an instance of nn.Module to specify the adjoint parameters; alternatively "
                         "they can be specified explicitly via the `adjoint_params` argument")
    adjoint_options = {} if adjoint_options is None else dict(adjoint_options)
    norm = adjoint_options.get("norm", "rms")
    if norm not in ("seminorm", "rms"):
        raise ValueError("adjoint_options['norm'] must be 'seminorm' (or absent) in pyjode.torchdiffeq")
    adj_method = None if adjoint_method is None else _method(adjoint_method)
    if _options(adjoint_options, "adjoint_options")["step_size"] not in (None, _options(options)["step_size"]):
        raise ValueError("pyjode.torchdiffeq uses the forward step_size on the backward pass; drop "
                         "adjoint_options['step_size'] or make it equal to options['step_size']")
    adjoint = Backsolve(norm=norm, rtol=adjoint_rtol, atol=adjoint_atol, method=adj_method)
    return _call(func, y0, t, adjoint, rtol, atol, method, options, adjoint_params)
