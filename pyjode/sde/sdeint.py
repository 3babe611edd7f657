"""pyjode.sdeint: fixed-step SDE solves with direct or exact reversible gradients, through the one
fixed-step loop of :mod:`pyjode.integrate` with each method as a stepper driven by Brownian increments."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..adjoints.base import record_backward, record_forward
from ..exact_adjoint import ExactReversibleAdjoint
from ..integrate import Counter, fixed_loop
from ..reversible import ReversibleStepper
from ..step_control import StepControl
from .brownian import BrownianPath
from .grid import GridNoise, dyadic_step_grid, increment_chunks, step_grid
from .methods import EULER, HEUN, MIDPOINT, MILSTEIN, SDEMethod
from .methods.method import SDEStepper
from .noise_types import check_sde, diffusion_axpy, diffusion_cotangent, diffusion_product, noise_shape
from . import reversible_heun
from .reversible_base import ReversibleSDESolve, SDEBaseStep

METHODS: dict[str, SDEMethod] = {m.name: m for m in
                                 (EULER, MILSTEIN, HEUN, MIDPOINT, reversible_heun.REVERSIBLE_HEUN)}
ADJOINTS = ("direct", "reversible")


def sdeint(sde, y0: torch.Tensor, t: torch.Tensor | Sequence[float], *, method="heun",
           dt: float, bm=None, adjoint: str = "direct",
           adjoint_params: Sequence[torch.Tensor] | None = None, stats=None) -> torch.Tensor:
    """Solve dy = f(t, y) dt + g(t, y) dW on the times `t` with a fixed step `dt`.

    `sde` follows torchsde: methods f(t, y), g(t, y) (optionally f_and_g), and attributes
    `noise_type` ("diagonal" "scalar" "additive" "general") and `sde_type` ("ito"
    "stratonovich"). Methods: "euler" and "milstein" (Itô), "heun" (the default), "midpoint" and
    "reversible_heun" (Stratonovich); additive noise fits all of them; and
    `pyjode.Reversible("heun")` or `pyjode.Reversible("midpoint")`, McCallum & Foster's
    algebraically reversible wrapper over a Stratonovich base (two base steps per step). `bm` is a
    `BrownianPath` (or any object with torchsde's bm(ta, tb)) covering [t[0], t[-1]]; by default
    fresh noise is drawn. Steps end exactly on every output time; between outputs they lie on the
    path's dyadic grid of spacing <= dt, on the multiples of dt when bm is None (the noise is then
    drawn for that grid alone, seeded from torch's global generator), or are equal steps <= dt for
    other Brownian objects. adjoint="direct" (the default) backpropagates through the steps;
    adjoint="reversible" (with method="reversible_heun" or a `pyjode.Reversible`) gives the same
    exact gradients of the discrete solution in O(1) memory in the number of steps, for `y0` and
    `adjoint_params` (default: the parameters of `sde` when it is an nn.Module). `stats` (e.g.
    pyjode.Stats()) accumulates, as in `odeint`: nfe_forward, steps_forward and, after backward, nfe_backward, steps_backward; one nfe is one evaluation of
    the drift (`f` or `f_and_g`), counted as it happens, including the first one that checks shapes.

    Returns a tensor of shape (len(t), *y0.shape).
    """
    where = "sdeint"
    noise_type, sde_type = check_sde(sde, where)
    scheme, coupling = _check_method(method, adjoint, noise_type, sde_type)
    y0 = _check_y0(y0)
    t_host = _check_times(t)
    dt = _check_dt(dt)
    counted = _CountedSDE(sde)
    f_and_g = counted.f_and_g
    with torch.no_grad():
        f0, g0 = f_and_g(t_host[0].to(device=y0.device, dtype=y0.dtype), y0)
    _check_outputs(f0, g0, y0)
    shape = noise_shape(noise_type, y0, g0, where)
    bm, grid, out_index = _path_and_grid(bm, shape, t_host, dt, y0)
    problem = _Problem(counted, f_and_g, diffusion_axpy(noise_type), grid, out_index, bm, dt, stats)

    if scheme is reversible_heun.REVERSIBLE_HEUN:
        stepper = reversible_heun.ReversibleHeunStepper(f_and_g, problem.axpy, y0)
    else:
        stepper = SDEStepper(scheme.make_step(counted, f_and_g, noise_type), y0)
        if coupling is not None:
            stepper = ReversibleStepper(SDEBaseStep(stepper.step_fn, y0), coupling)
    if adjoint == "reversible":
        if coupling is not None:
            solve = ReversibleSDESolve(problem, stepper)
        else:
            solve = reversible_heun.ReversibleHeunSolve(problem, diffusion_product(noise_type),
                                                        diffusion_cotangent(noise_type))
        return ExactReversibleAdjoint.apply(solve, y0, *_adjoint_params(sde, adjoint_params))
    counter = problem.counting()
    run = fixed_loop(stepper, None, y0, problem.grid_list, problem.is_output, problem.control, counter,
                     controls=problem.controls(y0))
    problem.record_forward(counter)
    return torch.stack(run.ys)


class _CountedSDE:
    """The user's SDE with its drift evaluations counted into whichever counter is current: one way of
    counting for every method and pass (diffusion-only calls, as Milstein's derivative, are not counted)."""

    def __init__(self, sde):
        self._sde, self.counter = sde, Counter()
        # looked up once: a missing attribute of an nn.Module costs a raised AttributeError on every call
        self._f_and_g = sde.f_and_g if callable(getattr(sde, "f_and_g", None)) else None

    def f(self, t, y):
        self.counter.nfe += 1
        return self._sde.f(t, y)

    def f_and_g(self, t, y):
        self.counter.nfe += 1
        if self._f_and_g is not None:
            return self._f_and_g(t, y)
        return self._sde.f(t, y), self._sde.g(t, y)

    def __getattr__(self, name):
        return getattr(self._sde, name)


class _Problem:
    """The step grid, its Brownian increments and the counting of one sdeint call."""

    def __init__(self, counted: _CountedSDE, f_and_g, axpy, grid: torch.Tensor, out_index, bm, dt: float, stats):
        self.counted, self.f_and_g, self.axpy = counted, f_and_g, axpy
        self.grid, self.grid_list, self.bm, self.stats = grid, grid.tolist(), bm, stats
        self.is_output = [False] * len(grid)
        for i in out_index:
            self.is_output[i] = True
        self.control = StepControl(step_size=dt)
        self._first = True

    def controls(self, like: torch.Tensor):
        """The Brownian increments of the steps, in order, fetched a chunk at a time."""
        for _, dws in increment_chunks(self.bm, self.grid, like.dtype, like.device):
            yield from dws

    def reversed_controls(self, like: torch.Tensor):
        """``(k, increment of step k)`` from the last step to the first: the same noise, replayed."""
        for k0, dws in increment_chunks(self.bm, self.grid, like.dtype, like.device, reverse=True):
            for j in range(len(dws) - 1, -1, -1):
                yield k0 + j, dws[j]

    def solve_keeping_z(self, stepper, y0: torch.Tensor, z_of):
        """The forward pass of a reversible solver: ``(ys, zs, output steps)``, with z at every output
        taken from each step's dense information by ``z_of``."""
        zs, k = {0: y0}, [0]

        def keep_z(t0, t1, y, y1, dense, stepper):
            k[0] += 1
            if self.is_output[k[0]]:
                zs[k[0]] = z_of(dense)

        counter = self.counting()
        run = fixed_loop(stepper, None, y0, self.grid_list, self.is_output, self.control, counter, on_step=keep_z,
                         controls=self.controls(y0))
        self.record_forward(counter)
        return torch.stack(run.ys), torch.stack([zs[i] for i in run.output_steps]), run.output_steps

    def counting(self) -> Counter:
        """The counter that the SDE's evaluations go to from now on: for the forward pass the one that
        already holds the evaluation checking shapes, afterwards a fresh one per pass."""
        if not self._first:
            self.counted.counter = Counter()
        self._first = False
        return self.counted.counter

    def record_forward(self, counter: Counter) -> None:
        record_forward(self.stats, counter)

    def record_backward(self, counter: Counter) -> None:
        record_backward(self.stats, counter)


def _fits(m: SDEMethod, noise_type: str, sde_type: str) -> bool:
    # With additive noise the Itô and Stratonovich integrals agree, so every method fits.
    calculus_ok = m.sde_type == sde_type or noise_type == "additive"
    return calculus_ok and noise_type in m.noise_types


def _check_method(method, adjoint, noise_type, sde_type) -> tuple[SDEMethod, float | None]:
    """The SDE method and, for a `pyjode.Reversible` wrapper, its coupling (else None)."""
    from ..reversible import Reversible

    coupling = None
    if isinstance(method, Reversible):
        bases = [m for m, s in METHODS.items()
                 if s.sde_type == "stratonovich" and s is not reversible_heun.REVERSIBLE_HEUN]
        name = method.tableau.name
        if name not in bases:
            raise ValueError(f"sdeint: pyjode.Reversible over SDEs needs a Stratonovich base method, one of "
                             f"{bases}; got {method!r}. For an Itô SDE convert it to Stratonovich first.")
        method, coupling = name, method.coupling
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"sdeint: unknown method {method!r}; choose one of {list(METHODS)} or "
                         "pyjode.Reversible('heun').")
    scheme = METHODS[method]
    if not _fits(scheme, noise_type, sde_type):
        fitting = [m for m, s in METHODS.items() if _fits(s, noise_type, sde_type)]
        raise ValueError(
            f"sdeint: method {method!r} solves {scheme.sde_type} SDEs with "
            f"{'/'.join(scheme.noise_types)} noise, but the sde is {sde_type} with {noise_type} "
            f"noise; methods that fit: {fitting}.")
    if adjoint not in ADJOINTS:
        raise ValueError(f"sdeint: unknown adjoint {adjoint!r}; choose one of {list(ADJOINTS)}.")
    if adjoint == "reversible" and coupling is None and scheme is not reversible_heun.REVERSIBLE_HEUN:
        raise ValueError(f"sdeint: adjoint='reversible' needs an algebraically reversible method, "
                         f"method='reversible_heun' or pyjode.Reversible('heun'); got method={method!r}. "
                         "Use adjoint='direct' with this method.")
    return scheme, coupling


def _check_y0(y0) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"sdeint: y0 must be a torch.Tensor, got {type(y0).__name__}.")
    if not y0.is_floating_point():
        raise TypeError(f"sdeint: y0 must have a floating dtype, got {y0.dtype}.")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sdeint: y0 has dtype {y0.dtype}; sdeint solves in float32 or float64: pass y0.float() "
                        f"(and run the SDE's networks under torch.autocast for half-precision arithmetic)")
    return y0


def _check_times(t) -> torch.Tensor:
    t_host = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if t_host.dim() != 1 or len(t_host) < 2:
        raise ValueError(f"sdeint: t must be 1-D with at least 2 times, got shape {tuple(t_host.shape)}.")
    if not bool(torch.isfinite(t_host).all()) or not bool((t_host.diff() > 0).all()):
        raise ValueError("sdeint: t must be finite and strictly increasing.")
    return t_host


def _check_dt(dt) -> float:
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise TypeError(f"sdeint: dt must be a positive number, got {dt!r}.") from None
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"sdeint: dt must be a positive number, got {dt}.")
    return dt


def _check_outputs(f0, g0, y0) -> None:
    for name, out in (("f", f0), ("g", g0)):
        if not isinstance(out, torch.Tensor) or out.dtype != y0.dtype or out.device != y0.device:
            raise TypeError(f"sdeint: sde.{name}(t, y) must return a tensor with y's dtype "
                            f"{y0.dtype} and device {y0.device}.")
    if f0.shape != y0.shape:
        raise ValueError(f"sdeint: sde.f(t, y) returned shape {tuple(f0.shape)}; it must match "
                         f"y0's shape {tuple(y0.shape)}.")


def _path_and_grid(bm, shape, t_host, dt, y0):
    """The Brownian motion and the step grid that suits it (see `grid`)."""
    t0, t1 = t_host[0].item(), t_host[-1].item()
    if bm is None:
        # Nothing else will query this noise, so it is drawn for the solver's own grid of multiples of dt.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        grid, out_index = dyadic_step_grid(t_host, t0, dt)
        return GridNoise(shape, seed), grid, out_index
    _check_bm(bm, shape, t0, t1)
    if isinstance(bm, BrownianPath):
        grid, out_index = dyadic_step_grid(t_host, bm.t0, bm.dyadic_spacing(dt))
    else:
        grid, out_index = step_grid(t_host, dt)
    return bm, grid, out_index


def _check_bm(bm, shape, t0, t1) -> None:
    if not callable(bm):
        raise TypeError("sdeint: bm must be a BrownianPath or a callable bm(ta, tb).")
    bm_shape = getattr(bm, "shape", None)
    if bm_shape is not None and torch.Size(bm_shape) != shape:
        raise ValueError(f"sdeint: bm has shape {tuple(bm_shape)} but this sde's noise needs "
                         f"{tuple(shape)}.")
    lo, hi = getattr(bm, "t0", None), getattr(bm, "t1", None)
    if lo is not None and hi is not None:
        slack = 1e-12 * (float(hi) - float(lo))
        if t0 < float(lo) - slack or t1 > float(hi) + slack:
            raise ValueError(f"sdeint: bm covers [{float(lo)}, {float(hi)}] but the solve needs "
                             f"[{t0}, {t1}]; build the path over the whole time span.")


def _adjoint_params(sde, adjoint_params) -> list[torch.Tensor]:
    if adjoint_params is None:
        params = sde.parameters() if isinstance(sde, torch.nn.Module) else ()
    else:
        params = adjoint_params
    return [p for p in params if isinstance(p, torch.Tensor) and p.requires_grad]
