"""A drop-in for ``torchdiffeq``: change ``from torchdiffeq import odeint, odeint_adjoint, odeint_event`` to
``from pyjode.torchdiffeq import odeint, odeint_adjoint, odeint_event``.

A thin translation onto :func:`pyjode.solve` and :func:`pyjode.odeint_event`: signatures and defaults are
torchdiffeq's. ``odeint_adjoint`` is pyjode's continuous adjoint (:class:`pyjode.Backsolve`) with
torchdiffeq's classic norm unless ``adjoint_options=dict(norm="seminorm")`` or a norm callable. Tuple
states are concatenated into one flat state. ``method="rk4"`` is torchdiffeq's 3/8-rule variant.

Methods: ``dopri5 bosh3 tsit5 dopri8 adaptive_heun fehlberg2`` (adaptive), ``euler midpoint rk4 heun2
heun3 explicit_adams implicit_adams fixed_adams`` (fixed; without ``step_size`` they step on the output
times), ``scipy_solver``. Options: ``step_size grid_constructor perturb interp`` (fixed, and ``max_order
max_iters`` for the Adams methods), ``first_step min_step max_step safety ifactor dfactor
max_num_steps step_t jump_t norm`` (adaptive), ``solver min_step max_step first_step`` (scipy_solver).
Anything else raises a ``ValueError`` naming it.
"""

from __future__ import annotations


import torch

from .adams import Adams
from .adjoints.backsolve import Backsolve
from .events import odeint_event as _odeint_event
from .scipy_solver import ScipySolver
from .solve import solve
from .step_size import PIController
from .norms import PartsNorm
from .implicit import Implicit

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]

_ADAPTIVE = ("dopri5", "bosh3", "tsit5", "dopri8", "adaptive_heun", "fehlberg2")
_FIXED = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4_38", "heun2": "heun2", "heun3": "heun3"}
_IMPLICIT = ("implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "radauIIA5", "gl4", "gl6", "sdirk2",
             "trbdf2")
_ADAMS = {"explicit_adams": False, "implicit_adams": True, "fixed_adams": True}
_ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t",
                     "jump_t", "norm", "perturb", "per_sample")
_FIXED_OPTIONS = ("step_size", "grid_constructor", "perturb", "interp", "norm")
_SCIPY_OPTIONS = ("solver", "min_step", "max_step", "first_step", "norm")
_ADAMS_OPTIONS = _FIXED_OPTIONS + ("max_order", "max_iters")
_ALL = _ADAPTIVE + tuple(_FIXED) + tuple(_ADAMS) + _IMPLICIT + ("scipy_solver",)


def _options_for(method):
    if method == "scipy_solver":
        return _SCIPY_OPTIONS
    if method in _ADAMS:
        return _ADAMS_OPTIONS
    return _FIXED_OPTIONS if method in _FIXED or method in _IMPLICIT else _ADAPTIVE_OPTIONS


def _method(method, options, rtol=1e-7, atol=1e-9):
    method = "dopri5" if method is None else method
    if method in _ADAMS:
        return Adams(implicit=_ADAMS[method], max_order=int(options.get("max_order", 12)),
                     max_iters=int(options.get("max_iters", 4)), rtol=rtol, atol=atol)
    if method in _ADAPTIVE:
        return method
    if method in _FIXED:
        return _FIXED[method]
    if method == "scipy_solver":
        return ScipySolver(options.get("solver", "LSODA"))
    if method in _IMPLICIT:  # fixed-grid in torchdiffeq, so fixed-step here (on t without step_size)
        return Implicit(method, adaptive=False)
    raise ValueError(f"method={method!r} is not known; choose one of {sorted(_ALL)}")


class _Flat:
    """Presents a tuple state to the solver as one flat tensor, as torchdiffeq's _TupleFunc does."""

    def __init__(self, func, y0):
        self.func, self.shapes = func, [y.shape for y in y0]
        self.sizes = [y.numel() for y in y0]

    def split(self, y, lead=()):
        return tuple(p.reshape(tuple(lead) + tuple(s)) for p, s in zip(torch.split(y, self.sizes, dim=-1),
                                                                       self.shapes))

    def flatten(self, ys):
        return torch.cat([y.reshape(-1) for y in ys])

    def __call__(self, t, y):
        return self.flatten(self.func(t, self.split(y)))

    def __getattr__(self, name):  # the step callbacks, seen on the flat state
        if name.startswith("callback_"):
            callback = getattr(self.func, name)
            return lambda t0, y0, dt: callback(t0, self.split(y0) if y0.numel() == sum(self.sizes) else y0, dt)
        raise AttributeError(name)


def _times(value):
    return None if value is None else torch.as_tensor(value).detach().double().reshape(-1).cpu().tolist()


def _translate(func, y0, t, method, options, flat, rtol, atol):
    """pyjode.solve keywords for torchdiffeq's method and options."""
    options = {} if options is None else dict(options)
    name = "dopri5" if method is None else method
    pymethod = _method(name, options, rtol, atol)
    unknown = set(options) - set(_options_for(name))
    if unknown:
        raise ValueError(f"options {sorted(unknown)} are not supported for method={name!r} by pyjode.torchdiffeq; "
                         f"supported: {list(_options_for(name))}")
    kw = dict(method=pymethod)
    if "norm" in options:
        norm = options["norm"]
        if not callable(norm):
            raise ValueError("options['norm'] must be a callable norm(tensor_or_tuple) -> 0-dim tensor")
        kw["norm"] = norm if flat is None else (lambda x: norm(flat.split(x)))
    for key in ("first_step", "min_step", "max_step"):
        if key in options:
            kw[key] = float(options[key])
    if options.get("min_step", 0) > 0 and name != "scipy_solver":
        kw["accept_min_step"] = True  # torchdiffeq accepts a step of min_step whatever its error
    if "max_num_steps" in options:
        kw["max_steps"] = int(options["max_num_steps"])
    if any(k in options for k in ("safety", "ifactor", "dfactor")):
        kw["controller"] = PIController(safety=float(options.get("safety", 0.9)),
                                        factor_max=float(options.get("ifactor", 10.0)),
                                        factor_min=float(options.get("dfactor", 0.2)))
    if "step_t" in options:
        kw["step_ts"] = _times(options["step_t"])
    if "jump_t" in options:
        kw["jump_ts"] = _times(options["jump_t"])
    if "perturb" in options:
        kw["perturb"] = bool(options["perturb"])
    if options.get("per_sample"):
        if flat is not None:
            raise ValueError("options['per_sample'] needs y0 as one tensor with the samples along its first "
                             "dimension, not a tuple of tensors")
        kw["per_sample"] = options["per_sample"]
    if options.get("interp", "linear") not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {options['interp']!r}")
    if options.get("step_size") is not None and options.get("grid_constructor") is not None:
        raise ValueError("options step_size and grid_constructor are mutually exclusive")
    if options.get("step_size") is not None:
        kw["step_size"] = float(options["step_size"])
    if options.get("grid_constructor") is not None:
        grid = options["grid_constructor"](func, y0, t)
        kw["step_ts"] = _times(grid)
    return kw


def _adjoint(adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, options, flat, y0, params, rtol, atol):
    adjoint_options = {} if adjoint_options is None else dict(adjoint_options)
    norm = adjoint_options.pop("norm", "rms")
    for key, value in adjoint_options.items():
        if key not in (options or {}) or (options or {})[key] is not value and (options or {})[key] != value:
            raise ValueError(f"adjoint_options[{key!r}] differs from options[{key!r}]: pyjode's backward solve "
                             f"keeps the forward step options; drop it from adjoint_options")
    if not callable(norm) and norm not in ("seminorm", "rms"):
        raise ValueError("adjoint_options['norm'] must be 'seminorm', a callable, or absent")
    method = None
    if adjoint_method is not None:
        method = _method(adjoint_method, options or {}, rtol if adjoint_rtol is None else adjoint_rtol,
                         atol if adjoint_atol is None else adjoint_atol)
        if isinstance(method, ScipySolver):
            raise ValueError("adjoint_method='scipy_solver' is only available as the forward method too")
    trainable = [p for p in params if p.requires_grad]
    adjoint_norm = _AdjointNorm(norm, flat, y0, trainable)
    adjoint = Backsolve(norm=adjoint_norm, rtol=adjoint_rtol, atol=adjoint_atol, method=method)
    adjoint.adjoint_options = adjoint_norm.options  # seen as grad_fn.adjoint_options, as in torchdiffeq
    return adjoint


class _AdjointNorm:
    """The backward solve's error norm in torchdiffeq's terms. pyjode's augmented state is [y, a, a_params]
    flat and has no time channel; torchdiffeq's norms take the tuple (t, y, adj_y, *adj_params), so the
    time error is passed as 0. The norm in use is read from ``options["norm"]`` at every step. Built-in
    "rms"/"seminorm" see y and adj_y whole (flat for a tuple state); a user's norm for a tuple state sees
    each component, (t, *y, *adj_y, *adj_params), as in torchdiffeq."""

    def __init__(self, norm, flat, y0, params):
        n = y0.numel()
        components = flat.sizes if flat is not None else [n]
        param_sizes = [p.numel() for p in params]
        seminorm = norm == "seminorm"
        # the built-in norms: the max over the RMS of each state component, adjoint component and (unless
        # seminorm) parameter, as torchdiffeq's
        self.fast = PartsNorm(components + components + param_sizes,
                              include=range(2 * len(components)) if seminorm else None)
        self.default = None if callable(norm) else self._builtin(components, seminorm)
        self.options = {"norm": norm if callable(norm) else self.default}
        if callable(norm) and flat is not None:
            state_shapes = list(flat.shapes)
        else:
            state_shapes = [y0.shape if flat is None else torch.Size([n])]
        self.shapes = state_shapes + state_shapes + [p.shape for p in params]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]

    @staticmethod
    def _builtin(components, seminorm):
        def rms(p):
            return p.reshape(-1).pow(2).mean().sqrt() if p.numel() else p.new_zeros(())

        def norm(parts):
            t, y, adj_y, *adj_params = parts
            values = [t.abs()]
            for v in (y, adj_y):
                values.extend(rms(c) for c in torch.split(v.reshape(-1), components))
            if not seminorm:
                values.extend(rms(p) for p in adj_params)
            return torch.stack(values).max()
        return norm

    def __call__(self, x):
        norm = self.options["norm"]
        if norm is self.default:
            return self.fast(x)
        parts = torch.split(x.reshape(-1), self.sizes)
        return norm((x.new_zeros(()),) + tuple(p.reshape(s) for p, s in zip(parts, self.shapes)))


def _call(func, y0, t, adjoint, rtol, atol, method, options, adjoint_params=None, event_fn=None,
          adjoint_args=None):
    flat = None
    if isinstance(y0, tuple):
        flat = _Flat(func, y0)
        y0_flat, field = flat.flatten(y0), flat
        if adjoint_params is None and isinstance(func, torch.nn.Module):
            adjoint_params = tuple(func.parameters())
    else:
        y0_flat, field = y0, func
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    kw = _translate(func, y0, t, method, options, flat, rtol, atol)
    if adjoint_args is not None:
        params = adjoint_params if adjoint_params is not None else tuple(func.parameters())
        adjoint = _adjoint(*adjoint_args, options, flat, y0_flat, tuple(params), rtol, atol)
    if event_fn is not None:
        if isinstance(kw["method"], ScipySolver):
            raise ValueError("event_fn is not supported with method='scipy_solver'")
        event = event_fn if flat is None else (lambda s, y: event_fn(s, flat.split(y)))
        reverse = t.numel() > 1 and float(t[1].detach()) < float(t[0].detach())
        event_t, ys = _odeint_event(field, y0_flat, t[0], event_fn=event, reverse_time=reverse, rtol=rtol,
                                    atol=atol, adjoint=adjoint, adjoint_params=adjoint_params, **kw)
        return event_t.to(t), (ys if flat is None else flat.split(ys, lead=(ys.shape[0],)))
    ys = solve(field, y0_flat, t, rtol=rtol, atol=atol, adjoint=adjoint, adjoint_params=adjoint_params, **kw).ys
    return ys if flat is None else flat.split(ys, lead=(ys.shape[0],))


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """torchdiffeq.odeint: backpropagation through the solver. With ``event_fn`` it returns
    ``(event_t, solution)``, solving from ``t[0]`` in the direction of ``t[1]`` until the event."""
    return _call(func, y0, t, "direct", rtol, atol, method, options, event_fn=event_fn)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """torchdiffeq.odeint_adjoint: the continuous adjoint (backsolve); ``adjoint_options=dict(norm="seminorm")``
    selects the seminorm, ``norm=callable`` a custom norm on torchdiffeq's (t, y, adj_y, adj_params) tuple."""
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("func must be an instance of nn.Module to specify the adjoint parameters; alternatively "
                         "they can be specified explicitly via the `adjoint_params` argument")
    return _call(func, y0, t, None, rtol, atol, method, options, adjoint_params, event_fn,
                 adjoint_args=(adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options))


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=odeint, **kwargs):
    """torchdiffeq.odeint_event: solve from ``t0`` until ``event_fn(t, y)`` crosses zero; returns
    ``(event_t, solution)`` with gradients to the event time and state (implicit function theorem)."""
    t0 = torch.as_tensor(t0)
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    return event_t.reshape(t0.shape), solution
