"""A drop-in for ``torchsde``: change ``import torchsde`` to ``import pyjode.torchsde as torchsde``.

``sdeint`` and ``sdeint_adjoint`` have torchsde's signatures and defaults and its step grid: steps of ``dt`` from
``ts[0]`` (accumulated in ``ts``'s dtype) that do not restart at the output times, each output being the linear
interpolant of the two grid states around it (:mod:`pyjode.sde.dt_grid`). Methods: ``euler``, ``milstein``
(``options={"grad_free": True}`` for the derivative-free variant), ``srk``, ``midpoint``, ``heun``,
``euler_heun``, ``log_ode_midpoint`` (non-general noise, where its Lévy-area term vanishes), ``reversible_heun``;
torchsde's default per SDE and noise type. ``logqp=True`` returns ``(ys, log_ratio)`` with the KL increments of
every output interval (:mod:`pyjode.sde.logqp`). Brownian arguments follow torchsde's ``bm(ta, tb)`` protocol;
:class:`BrownianInterval`, :class:`BrownianPath` and :class:`BrownianTree` are provided with torchsde's
constructors. ``sdeint_adjoint`` solves the adjoint SDE backwards over the same path
(:mod:`pyjode.sde.adjoint_sde`), or, for ``reversible_heun``, runs its exact algebraic reverse sweep.

``adaptive=True`` doubles steps for an error estimate in the engine's adaptive loop (:mod:`pyjode.sde.adaptive_sde`).
``extra=True`` returns the solver state (reversible Heun's (f, g, z), () otherwise), which ``extra_solver_state``
takes back. What this module cannot honour raises a ``ValueError`` that names it: ``extra``/``extra_solver_state``
in ``sdeint_adjoint``, Lévy area A (``log_ode_midpoint`` with general noise), unknown options or keyword
arguments, and SDEs given only through ``g_prod``/``f_and_g_prod`` (no ``g``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .exact_adjoint import ExactReversibleAdjoint
from .integrate import Counter, adaptive_loop, fixed_loop
from .sde import reversible_heun
from .sde.adjoint_sde import AdjointSDESolve, SDEAdjoint, stratonovich_f_and_g
from .sde.brownian_interval import (BrownianInterval, BrownianPath, BrownianTree, ReverseBrownian,
                                    brownian_interval_like)
from .sde.adaptive_sde import StepDoublingSDE
from .sde.dt_grid import dt_grid, grid_from_times, interpolate_outputs
from .sde.logqp import LogqpSDE, split_logqp
from .sde.methods import (EULER, EULER_HEUN, HEUN, MIDPOINT, MILSTEIN, MILSTEIN_GRAD_FREE, MILSTEIN_STRATONOVICH,
                          MILSTEIN_STRATONOVICH_GRAD_FREE, SRK)
from .sde.methods.log_ode import LOG_ODE
from .sde.methods.method import SDEStepper
from .sde.noise_types import NOISE_TYPES, SDE_TYPES, diffusion_axpy, diffusion_cotangent, diffusion_product
from .sde.sdeint import _CountedSDE, _Problem
from .sde.step_noise import StepNoise
from .step_control import StepControl

__all__ = ["BaseSDE", "BrownianInterval", "BrownianPath", "BrownianTree", "ReverseBrownian", "SDEIto", "SDEStratonovich",
           "brownian_interval_like", "sdeint", "sdeint_adjoint"]

METHODS = ("euler", "milstein", "srk", "midpoint", "reversible_heun", "adjoint_reversible_heun", "heun",
           "log_ode", "log_ode_midpoint", "euler_heun")
_RENAMES = {"drift": "f", "diffusion": "g", "prior_drift": "h", "diffusion_prod": "g_prod",
            "drift_and_diffusion": "f_and_g", "drift_and_diffusion_prod": "f_and_g_prod"}


class BaseSDE(nn.Module):
    """torchsde's base class: an nn.Module with `noise_type` and `sde_type` checked on construction."""

    def __init__(self, noise_type: str, sde_type: str) -> None:
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"Expected noise type in {NOISE_TYPES}, but found {noise_type}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"Expected sde type in {SDE_TYPES}, but found {sde_type}")
        self.noise_type, self.sde_type = noise_type, sde_type


class SDEIto(BaseSDE):
    def __init__(self, noise_type: str) -> None:
        super().__init__(noise_type=noise_type, sde_type="ito")


class SDEStratonovich(BaseSDE):
    def __init__(self, noise_type: str) -> None:
        super().__init__(noise_type=noise_type, sde_type="stratonovich")


class _Renamed:
    """The user's SDE with its methods looked up under the names given by `names=`."""

    def __init__(self, sde, names: Dict[str, str]) -> None:
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        for key, attr in _RENAMES.items():
            target = getattr(sde, names.get(key, attr), None)
            if target is not None:
                setattr(self, attr, target)


def sdeint(sde, y0: torch.Tensor, ts, bm=None, method: Optional[str] = None, dt=1e-3, adaptive: bool = False,
           rtol=1e-5, atol=1e-4, dt_min=1e-5, options: Optional[Dict[str, Any]] = None,
           names: Optional[Dict[str, str]] = None, logqp: bool = False, extra: bool = False,
           extra_solver_state=None, **unused_kwargs):
    """torchsde.sdeint: solve the SDE on `ts` with fixed steps `dt`; returns ys of shape (len(ts), batch, d),
    or (ys, log_ratio) with logqp=True (log_ratio of shape (len(ts) − 1, batch))."""
    p = _prepare("sdeint", sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
                 extra_solver_state, unused_kwargs)
    states = p.solve(p.y0)
    out = p.finish(states)
    if not extra:
        return out
    return (*out, p.extra_out) if logqp else (out, p.extra_out)


def sdeint_adjoint(sde, y0: torch.Tensor, ts, bm=None, method: Optional[str] = None,
                   adjoint_method: Optional[str] = None, dt=1e-3, adaptive: bool = False,
                   adjoint_adaptive: bool = False, rtol=1e-5, adjoint_rtol=1e-5, atol=1e-4, adjoint_atol=1e-4,
                   dt_min=1e-5, options: Optional[Dict[str, Any]] = None,
                   adjoint_options: Optional[Dict[str, Any]] = None,
                   adjoint_params: Optional[Sequence[torch.Tensor]] = None,
                   names: Optional[Dict[str, str]] = None, logqp: bool = False, extra: bool = False,
                   extra_solver_state=None, **unused_kwargs):
    """torchsde.sdeint_adjoint: as `sdeint`, with gradients from the adjoint SDE solved backwards over the same
    Brownian path (`adjoint_method` "midpoint" (default) or "heun"); for method="reversible_heun" the default
    adjoint_method "adjoint_reversible_heun" gives the exact gradient of the forward discretisation."""
    if adjoint_params is None and not isinstance(sde, nn.Module):
        raise ValueError("sdeint_adjoint: sde must be an instance of nn.Module to specify the adjoint parameters; "
                         "alternatively pass them explicitly via the adjoint_params argument.")
    if adjoint_adaptive:
        raise ValueError("sdeint_adjoint: adjoint_adaptive=True is not supported; the adjoint SDE is solved with "
                         "the forward pass's fixed steps.")
    if adjoint_options:
        raise ValueError(f"sdeint_adjoint: adjoint_options {sorted(adjoint_options)} are not supported; pass "
                         "adjoint_options=None.")
    if extra or extra_solver_state is not None:
        raise ValueError("sdeint_adjoint: extra=True and extra_solver_state are supported by sdeint only.")
    p = _prepare("sdeint_adjoint", sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names,
                 logqp, extra, extra_solver_state, unused_kwargs)
    params = list(sde.parameters()) if adjoint_params is None else list(adjoint_params)
    params = [q for q in params if isinstance(q, torch.Tensor) and q.requires_grad]
    if p.method == "reversible_heun" and adjoint_method in (None, "adjoint_reversible_heun", "reversible_heun"):
        if adaptive:
            raise ValueError("sdeint_adjoint: adaptive=True with method='reversible_heun' and its exact adjoint is "
                             "not supported; use fixed steps, or adjoint_method='midpoint'.")
        states = ExactReversibleAdjoint.apply(p.reversible_solve(), p.y0, *params)
        return p.finish(states)
    if adjoint_method in ("adjoint_reversible_heun", "reversible_heun"):
        raise ValueError(f"sdeint_adjoint: adjoint_method={adjoint_method!r} needs method='reversible_heun'.")
    f_hat = stratonovich_f_and_g(p.counted, p.noise_type, p.sde_type)
    solve = AdjointSDESolve(p.solve, f_hat, p.noise_type, lambda: (p.grid.times, p.grid.nodes),
                            lambda: p.noise.reversed_controls(p.grid.times, p.y0.dtype, p.y0.device),
                            "midpoint" if adjoint_method is None else adjoint_method)
    states = SDEAdjoint.apply(solve, p.y0, *params)
    return p.finish(states)


class _Prepared:
    """A checked sdeint call: the SDE, its augmented initial state, the grid, the noise and the method."""

    def solve(self, y0: torch.Tensor) -> torch.Tensor:
        """The states at the grid nodes the outputs need, stacked."""
        counter = self.counted.counter = Counter()
        if self.method == "reversible_heun":
            stepper = reversible_heun.ReversibleHeunStepper(self.counted.f_and_g, self.axpy, y0)
            if self.extra_in:
                f0, g0, z0 = self.extra_in
                stepper.init = lambda field, t0, y: (y, z0, f0, g0)
        else:
            stepper = SDEStepper(self.scheme.make_step(self.counted, self.counted.f_and_g, self.step_noise_type), y0)
        if self.adaptive:
            return self._solve_adaptive(stepper, y0, counter)
        run = fixed_loop(stepper, None, y0, self.grid.times, self.is_output, self.control, counter,
                         controls=self.noise.controls(self.grid.times, y0.dtype, y0.device))
        # torchsde's extra solver state: reversible Heun's (f, g, z) at the final time, () for the other methods
        self.extra_out = (run.state[2], run.state[3], run.state[1]) if self.method == "reversible_heun" else ()
        return torch.stack(run.ys)

    def _solve_adaptive(self, stepper, y0: torch.Tensor, counter: Counter) -> torch.Tensor:
        noise, dtype, device = self.noise, y0.dtype, y0.device
        doubling = StepDoublingSDE(stepper, lambda a, b: noise.query(a, b, dtype, device), self.dt_min)
        control = StepControl(rtol=self.rtol, atol=self.atol, first_step=self.dt, min_step=self.dt_min)
        states = [y0]
        self.extra_out = ()
        run = adaptive_loop(doubling, None, y0, self.ts_list, control, counter,
                            on_step=lambda ta, tb, y, y1, dense, s: states.append(y1), keep_times=True)
        self.grid = grid_from_times(list(run.times), self.ts_list)
        return torch.stack([states[k] for k in self.grid.nodes])

    def reversible_solve(self):
        grid = torch.tensor(self.grid.times, dtype=torch.float64)
        problem = _Problem(self.counted, self.counted.f_and_g, self.axpy, grid, self.grid.nodes, None, self.dt, None)
        noise, times = self.noise, self.grid.times
        problem.controls = lambda like: noise.controls(times, like.dtype, like.device)
        problem.reversed_controls = lambda like: noise.reversed_controls(times, like.dtype, like.device)
        return reversible_heun.ReversibleHeunSolve(problem, diffusion_product(self.noise_type),
                                                   diffusion_cotangent(self.noise_type))

    def finish(self, states: torch.Tensor):
        ys = interpolate_outputs(self.grid, states)
        return split_logqp(ys) if self.logqp else ys


def _prepare(where, sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
             extra_solver_state, unused_kwargs) -> _Prepared:
    if unused_kwargs:
        raise ValueError(f"{where}: unexpected keyword arguments {sorted(unused_kwargs)}.")
    extra_in = None if extra_solver_state is None else tuple(extra_solver_state)
    if extra_in is not None and len(extra_in) > 0 and method != "reversible_heun":
        raise ValueError(f"{where}: extra_solver_state must be () for method={method!r}; only reversible_heun "
                         "carries a solver state (f, g, z).")
    if extra_in and (len(extra_in) != 3 or adaptive):
        raise ValueError(f"{where}: extra_solver_state for reversible_heun is (f, g, z) from a fixed-step "
                         "sdeint(..., extra=True).")
    if names:
        unknown = sorted(set(names) - set(_RENAMES))
        if unknown:
            raise ValueError(f"{where}: names has unknown keys {unknown}; expected some of {sorted(_RENAMES)}.")
        sde = _Renamed(sde, names)
    for attr, allowed in (("noise_type", NOISE_TYPES), ("sde_type", SDE_TYPES)):
        if not hasattr(sde, attr):
            raise ValueError(f"sde does not have the attribute {attr}.")
        if getattr(sde, attr) not in allowed:
            raise ValueError(f"Expected {attr.replace('_', ' ')} in {allowed}, but found {getattr(sde, attr)}.")
    if not torch.is_tensor(y0):
        raise ValueError("`y0` must be a torch.Tensor.")
    if y0.dim() != 2:
        raise ValueError("`y0` must be a 2-dimensional tensor of shape (batch, channels).")
    for name, value in (("ts", ts), ("dt", dt), ("rtol", rtol), ("atol", atol), ("dt_min", dt_min)):
        if torch.is_tensor(value) and value.requires_grad:
            raise ValueError(f"Argument {name} must not require gradient.")
    if not torch.is_tensor(ts):
        if not isinstance(ts, (tuple, list)) or not all(isinstance(t, (float, int)) for t in ts):
            raise ValueError("Evaluation times `ts` must be a 1-D Tensor or list/tuple of floats.")
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    if ts.dim() != 1 or len(ts) < 1 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError("Evaluation times `ts` must be strictly increasing.")
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number, got {dt}.")
    has = {n: callable(getattr(sde, n, None)) for n in ("f", "g", "f_and_g", "g_prod", "f_and_g_prod")}
    if not (has["f"] or has["f_and_g"] or has["f_and_g_prod"]):
        raise ValueError("sde must define at least one of `f`, `f_and_g`, or `f_and_g_prod`.")
    if not (has["g"] or has["f_and_g"] or has["g_prod"] or has["f_and_g_prod"]):
        raise ValueError("sde must define at least one of `g`, `f_and_g`, `g_prod` or `f_and_g_prod`.")
    by_product = not (has["g"] or has["f_and_g"])
    if by_product:
        # the diffusion only as a product g(t, y)·v: the methods that need nothing else run on it
        if bm is None:
            raise ValueError("Cannot infer noise size (i.e. number of Brownian motion channels). Either pass `bm` "
                             "explicitly, or specify one of the `g`, `f_and_g` functions.")
        resolved = _default_method(sde.sde_type, sde.noise_type) if method is None else method
        if logqp or resolved not in ("euler", "midpoint", "heun", "euler_heun", "reversible_heun") or \
                where == "sdeint_adjoint" or adaptive:
            raise ValueError(f"{where}: an SDE given through g_prod/f_and_g_prod (no g) runs with sdeint, fixed "
                             "steps and method euler, midpoint, heun, euler_heun or reversible_heun, without logqp; "
                             "define g for the others.")
        sde = _ByProduct(sde, torch.Size(bm.shape))
    else:
        sde = _Complete(sde)
    if logqp:
        sde = LogqpSDE(sde)
        y0 = torch.cat((y0, y0.new_zeros(y0.size(0), 1)), dim=1)
    noise_type, sde_type = sde.noise_type, sde.sde_type
    method = _default_method(sde_type, noise_type) if method is None else method
    if method not in METHODS:
        raise ValueError(f"Expected method in {METHODS}, but found {method}.")
    options = {} if options is None else dict(options)
    grad_free = bool(options.pop("grad_free", False))
    if options:
        raise ValueError(f"{where}: options {sorted(options)} are not supported; the only option is 'grad_free' "
                         "(method='milstein').")
    if grad_free and method != "milstein":
        raise ValueError(f"{where}: options={{'grad_free': True}} applies to method='milstein' only.")
    if adaptive and method == "euler" and noise_type != "additive":
        # (before the method's checks, as torchsde warns before it validates the method against the SDE)
        warnings.warn("Numerical solution is not guaranteed to converge to the correct solution when using "
                      "adaptive time-stepping with the Euler--Maruyama method with non-additive noise.")
    scheme = _scheme(where, method, noise_type, sde_type, grad_free)

    with torch.no_grad():
        f0, g0 = sde.f_and_g(ts[0].to(y0.dtype), y0)
    shape = sde.shape if by_product else _noise_shape(f0, g0, y0, noise_type)
    if bm is not None:
        if len(bm.shape) != 2:
            raise ValueError("`bm` must be of shape (batch, noise_channels).")
        if tuple(bm.shape) != tuple(shape):
            raise ValueError(f"bm has shape {tuple(bm.shape)} but the sde needs noise of shape {tuple(shape)} "
                             "(batch and noise sizes must be consistent).")
    levy = getattr(bm, "levy_area_approximation", None) if bm is not None else None
    if levy is not None:
        # torchsde's contract: a given Brownian motion must carry what the method reads
        if method == "srk" and levy not in ("space-time", "davie", "foster"):
            raise ValueError(f"{where}: method='srk' needs a Brownian motion with space-time Lévy area; got "
                             f"levy_area_approximation={levy!r}.")
        if method in ("log_ode", "log_ode_midpoint") and levy not in ("davie", "foster"):
            raise ValueError(f"{where}: method={method!r} needs a Brownian motion with levy_area_approximation "
                             f"'davie' or 'foster'; got {levy!r}.")
    p = _Prepared()
    p.method, p.scheme, p.noise_type, p.sde_type, p.logqp, p.extra, p.dt = (
        method, scheme, noise_type, sde_type, logqp, extra, dt)
    p.y0, p.counted = y0, _CountedSDE(sde)
    p.extra_in, p.extra_out = extra_in, ()
    p.axpy = diffusion_axpy("g_prod" if by_product else noise_type)
    p.step_noise_type = "g_prod" if by_product else noise_type
    p.grid = dt_grid(ts, dt)
    p.is_output = [False] * len(p.grid.times)
    for k in p.grid.nodes[1:]:
        p.is_output[k] = True
    p.control = StepControl(step_size=dt)
    with_u = scheme.levy_area == "space-time"
    with_a = scheme.levy_area == "levy"
    if with_a and bm is None:
        # Lévy area comes from a Brownian interval with Foster's approximation, as torchsde builds by default
        bm = BrownianInterval(t0=float(ts[0]), t1=_interval_end(ts), size=shape, dtype=y0.dtype, device=y0.device,
                              levy_area_approximation="foster", tol=_resolution(ts, dt))
    if with_a and (where == "sdeint_adjoint" or by_product):
        raise ValueError(f"{where}: method={method!r} with general noise reads the diffusion's Jacobian and is "
                         "available in sdeint with g; use 'midpoint' or 'heun' otherwise.")
    p.adaptive = bool(adaptive)
    if adaptive:
        rtol, atol, dt_min = float(rtol), float(atol), float(dt_min)
        if not (rtol >= 0 and atol >= 0 and rtol + atol > 0 and dt_min >= 0):
            raise ValueError(f"{where}: adaptive steps need rtol, atol >= 0 (not both 0) and dt_min >= 0; got "
                             f"rtol={rtol}, atol={atol}, dt_min={dt_min}.")
        if bm is None:
            # adaptive steps query the path at times not known in advance: a Brownian interval answers them all
            bm = BrownianInterval(t0=float(ts[0]), t1=_interval_end(ts), size=shape, dtype=y0.dtype, device=y0.device,
                                  tol=_resolution(ts, 0.5 * dt_min),
                                  levy_area_approximation="foster" if with_a else
                                  ("space-time" if with_u else "none"))
        p.rtol, p.atol, p.dt_min = rtol, atol, dt_min
        p.ts_list = [float(t) for t in ts.detach().cpu().double().tolist()]
    p.noise = StepNoise(bm, shape, with_u=with_u, with_a=with_a)
    return p


def _resolution(ts: torch.Tensor, smallest: float) -> float:
    """``tol`` for a default Brownian interval over ``ts`` whose queries are ``smallest`` long or longer: 0 (the
    default resolution, 2**-32 of the span) when that resolves them to 1e-4, else a finer one (at most 2**-50
    of the span; a step shorter still raises, naming tol)."""
    span = _interval_end(ts) - float(ts[0])
    if smallest <= 0 or smallest >= 1e4 * span / 2 ** 32:
        return 0.0
    return max(1e-4 * smallest, span * 2.0 ** -50)


def _interval_end(ts: torch.Tensor) -> float:
    """The end of a default Brownian interval over ``ts``: its last time, or, when ``ts`` holds one time
    (no step is taken, and the path is never queried), a time after it, as an interval needs t0 < t1."""
    t0, t1 = float(ts[0]), float(ts[-1])
    return t1 if t1 > t0 else t0 + 1.0


class _Complete:
    """The SDE with f, g and f_and_g all callable (each made from the others where the user gave fewer)."""

    def __init__(self, sde) -> None:
        self.noise_type, self.sde_type, self._sde = sde.noise_type, sde.sde_type, sde
        f, g, fg = (getattr(sde, n, None) for n in ("f", "g", "f_and_g"))
        self.f = f if callable(f) else (lambda t, y: fg(t, y)[0])
        self.g = g if callable(g) else (lambda t, y: fg(t, y)[1])
        self.f_and_g = fg if callable(fg) else (lambda t, y: (f(t, y), g(t, y)))
        h = getattr(sde, "h", None)
        if callable(h):
            self.h = h


class _ByProduct:
    """An SDE given through g_prod(t, y, v) or f_and_g_prod(t, y, v): g(t, y) is the operator v -> g(t, y)·v."""

    def __init__(self, sde, shape: torch.Size) -> None:
        self.noise_type, self.sde_type, self.shape = sde.noise_type, sde.sde_type, shape
        f, g_prod, fgp = (getattr(sde, n, None) for n in ("f", "g_prod", "f_and_g_prod"))
        if not callable(g_prod):
            g_prod = lambda t, y, v: fgp(t, y, v)[1]  # noqa: E731
        if not callable(f):
            f = lambda t, y: fgp(t, y, torch.zeros(shape, dtype=y.dtype, device=y.device))[0]  # noqa: E731
        self.f = f
        self.g = lambda t, y: _Product(g_prod, t, y)
        self.f_and_g = lambda t, y: (f(t, y), _Product(g_prod, t, y))


class _Product:
    """v -> Σ_i g_prod(t_i, y_i, v): a diffusion known only through its products (sums arise in Heun's methods)."""

    def __init__(self, g_prod, t, y, rest=()):
        self.terms = ((g_prod, t, y),) + tuple(rest)

    def __add__(self, other: "_Product") -> "_Product":
        out = _Product.__new__(_Product)
        out.terms = self.terms + other.terms
        return out

    def __call__(self, v):
        total = None
        for g_prod, t, y in self.terms:
            gv = g_prod(t, y, v)
            total = gv if total is None else total + gv
        return total


def _default_method(sde_type: str, noise_type: str) -> str:
    if sde_type == "ito":
        return "euler" if noise_type == "general" else "srk"
    return "midpoint"


def _scheme(where, method, noise_type, sde_type, grad_free):
    if method == "adjoint_reversible_heun":
        raise ValueError(f"{where}: method='adjoint_reversible_heun' is an adjoint method; use "
                         "method='reversible_heun' (and sdeint_adjoint for its exact adjoint).")
    if method == "reversible_heun":
        chosen = reversible_heun.REVERSIBLE_HEUN
    elif method == "milstein":
        chosen = {("ito", False): MILSTEIN, ("ito", True): MILSTEIN_GRAD_FREE,
                  ("stratonovich", False): MILSTEIN_STRATONOVICH,
                  ("stratonovich", True): MILSTEIN_STRATONOVICH_GRAD_FREE}[(sde_type, grad_free)]
    elif method in ("log_ode", "log_ode_midpoint"):  # torchsde's name is "log_ode"
        # Without general noise the log-ODE scheme's Lévy-area term vanishes: it is the midpoint scheme.
        chosen = LOG_ODE if noise_type == "general" else MIDPOINT
    else:
        chosen = {"euler": EULER, "srk": SRK, "midpoint": MIDPOINT, "heun": HEUN, "euler_heun": EULER_HEUN}[method]
    ok_type = chosen.sde_type == sde_type
    if not ok_type or noise_type not in chosen.noise_types:
        raise ValueError(f"{where}: method {method!r} solves {chosen.sde_type} SDEs with "
                         f"{'/'.join(chosen.noise_types)} noise; the sde is {sde_type} with {noise_type} noise.")
    return chosen


def _noise_shape(f0, g0, y0, noise_type) -> torch.Size:
    if f0.shape != y0.shape:
        raise ValueError(f"Drift must be of shape {tuple(y0.shape)}, but got {tuple(f0.shape)}.")
    if noise_type == "diagonal":
        if g0.shape != y0.shape:
            raise ValueError(f"Diffusion must be of shape (batch, state_channels) = {tuple(y0.shape)} for "
                             f"diagonal noise, but got {tuple(g0.shape)}.")
        return y0.shape
    if g0.dim() != 3 or g0.shape[:2] != y0.shape:
        raise ValueError(f"Diffusion must be of shape (batch, state_channels, noise_channels), but got "
                         f"{tuple(g0.shape)}.")
    if noise_type == "scalar" and g0.shape[-1] != 1:
        raise ValueError(f"Scalar noise must have only one channel; the diffusion has {g0.shape[-1]} noise "
                         "channels.")
    return torch.Size((y0.shape[0], g0.shape[-1]))
