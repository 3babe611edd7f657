"""Taylor–Lagrange neural ODEs (Djeumou, Neary, Goubault, Putot & Topcu, "Taylor-Lagrange Neural Ordinary
Differential Equations", IJCAI 2022, arXiv 2201.05715).

A fixed number of equal steps, each a Taylor expansion of order p plus its Lagrange remainder evaluated
at a midpoint that a small network learns::

    y_{n+1} = sum_{i=0}^{p} dt^i y_i(t_n, y_n)  +  R_n,        R_n = dt^{p+1} y_{p+1}(xi_t, xi_y)
    xi_y = y_n + Gamma_phi(y_n, dt) * f(t_n, y_n),             xi_t in [t_n, t_n + dt]

where y_i are the normalised Taylor coefficients of the solution (``pyjode.taylor_coefficients``). By the
mean-value form of Taylor's theorem some xi makes the step exact; Gamma_phi learns it.

Training alternates (paper, training procedure; ``train_alternating``):
1. every iteration, the dynamics minimise task loss + lambda * mean|R| by backprop through the short
   fixed graph, with phi frozen;
2. every N iterations, phi is fitted to an accurate adaptive solve with the dynamics frozen
   (``fit_midpoint``: L1 distance to ``pyjode.odeint(..., method="dopri5")`` at a tight tolerance).

pyjode fields take one time for the whole batch, so the time component of xi is shared by the batch: the
batch mean of the midpoint's time output, clamped to the step.

Cost: per step of order 1, one call of f at y_n, the midpoint network, and f with its time derivative
along the flow at xi (two rounds of Taylor propagation). Without autograd the whole solve runs as one
traced fixed graph (``TaylorLagrange.forward``); under autograd it runs step by step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Union

import torch
from torch import nn
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from .trace_key import python_state_key
from .taylor_mode import taylor_series

__all__ = ["TaylorLagrange", "MidpointNet", "taylor_lagrange_step", "fit_midpoint", "train_alternating"]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Midpoint = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
Time = Union[float, torch.Tensor]


def taylor_lagrange_step(
    func: Field, t: torch.Tensor, y: torch.Tensor, dt: torch.Tensor, order: int,
    midpoint: Optional[Midpoint] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One Taylor–Lagrange step of size ``dt`` from ``(t, y)``; returns ``(y_next, remainder)``.

    ``midpoint(y, dt) -> (gamma_y, gamma_t)`` places xi (see the module docstring): ``xi_y = y + gamma_y *
    f(t, y)`` and ``xi_t = t + clamp(mean(gamma_t), 0, dt)``. Without a midpoint the step is the truncated
    Taylor series of order ``order`` and the remainder is ``None``.
    """
    return _step(func, t, y, _StepSize.of(dt, order), order, midpoint)


class _StepSize(NamedTuple):
    """dt and what every step of that size reuses: the bounds of xi_t - t_n and dt^(p+1)."""

    dt: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    power: torch.Tensor

    @staticmethod
    def of(dt: torch.Tensor, order: int) -> "_StepSize":
        zero = torch.zeros_like(dt)
        return _StepSize(dt, torch.minimum(zero, dt), torch.maximum(zero, dt), dt ** (order + 1))


def _step(func: Field, t: torch.Tensor, y: torch.Tensor, h: _StepSize, order: int,
          midpoint: Optional[Midpoint]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    coeffs = taylor_series(func, t, y, order)
    y_next = coeffs[order]
    for i in range(order - 1, -1, -1):  # Horner in dt
        y_next = coeffs[i] + h.dt * y_next
    if midpoint is None:
        return y_next, None
    gamma_y, gamma_t = midpoint(y, h.dt)
    xi_y = y + gamma_y * coeffs[1]
    xi_t = t + torch.clamp(gamma_t.mean(), min=h.lo, max=h.hi)
    remainder = h.power * taylor_series(func, xi_t, xi_y, order + 1)[order + 1]
    return y_next + remainder, remainder


class MidpointNet(nn.Module):
    """Default Gamma_phi: an MLP of (y, dt) giving a per-component gain and a time offset, both in units
    of dt. Output weights start uniform in +-1e-4 and biases at zero, so xi starts at y (as in the paper's
    code).

    Args:
        dim: the size of the state's last axis.
        hidden: the width of the hidden layer (default 32).
    """

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int (the size of the state's last axis), got {dim!r}")
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, dim + 1))
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.uniform_(layer.weight, -1e-4, 1e-4)
                nn.init.zeros_(layer.bias)

    def forward(self, y: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.shape[-1] != self.dim:
            raise ValueError(f"MidpointNet was built for dim={self.dim}, got a state with last axis {y.shape[-1]}")
        dt_col = dt.to(y.dtype).expand(*y.shape[:-1], 1)
        out = self.net(torch.cat([y, dt_col], dim=-1)) * dt
        return out[..., : self.dim], out[..., self.dim]


class TaylorLagrange(nn.Module):
    """Integrate ``dy/dt = func(t, y)`` over ``[t0, t1]`` in ``steps`` equal Taylor–Lagrange steps of order
    ``order`` (Djeumou et al. 2022; module docstring):

        y_{n+1} = sum_{i=0}^{p} dt^i y_i(t_n, y_n) + dt^{p+1} y_{p+1}(xi_t, xi_y),

    with ``y_i`` the normalised Taylor coefficients and the midpoint ``xi`` placed by ``midpoint``.
    ``tl(y0, t0=0.0, t1=1.0)`` returns y(t1).

    Args:
        func: the vector field ``func(t, y)``, traceable by ``pyjode.taylor_coefficients``.
        order: Taylor order p of each step (default 1); the remainder adds order p + 1 at the learned
            midpoint.
        steps: number of equal steps (default 2).
        midpoint: ``midpoint(y, dt) -> (gamma_y, gamma_t)``; by default a :class:`MidpointNet` of width
            ``dim``, the size of the state's last axis.
        dim, hidden: size of the default midpoint network (``hidden`` default 32). Without ``dim`` the
            network is built on the first call, from that state's last axis, dtype and device (as
            ``torch.nn.LazyLinear`` does): make that call (or pass ``dim``) before handing ``parameters()``
            to an optimiser.
        remainder: ``True`` (default) adds the learned remainder; ``False`` drops the remainder (the
            truncated Taylor integrator) and the midpoint.

    After each call, ``self.remainders`` holds the remainder of each step (for the penalty,
    :meth:`remainder_penalty`), and ``self.last_y0``, ``self.last_span`` the detached input and interval.

    Without autograd (``torch.no_grad``/``inference_mode``) a call runs a fixed graph traced on the first
    call with that input shape, so ``func`` and ``midpoint`` must be traceable (no Python branching on
    tensor values; a ``TypeError`` says so); :meth:`solve_eager` is the step-by-step reference.
    """

    def __init__(self, func: Field, order: int = 1, steps: int = 2, midpoint: Optional[Midpoint] = None, *,
                 dim: Optional[int] = None, hidden: int = 32, remainder: bool = True):
        super().__init__()
        if not callable(func):
            raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if remainder and midpoint is None:
            midpoint = None if dim is None else MidpointNet(dim, hidden)
        if midpoint is not None and not callable(midpoint):
            raise TypeError(f"midpoint must be callable as midpoint(y, dt), got {type(midpoint).__name__}")
        self.func = func
        self.order = order
        self.steps = steps
        self.midpoint = midpoint if remainder else None
        self._lazy_hidden = hidden if (remainder and midpoint is None) else None
        self.remainders: tuple[torch.Tensor, ...] = ()
        self.last_y0: Optional[torch.Tensor] = None
        self.last_span: tuple[Time, Time] = (0.0, 1.0)

    @property
    def passes_per_solve(self) -> int:
        """Passes through ``func``'s graph per solve (the analogue of NFE): per step, ``order`` rounds of
        Taylor propagation at y_n (one plain call when order is 1) and ``order + 1`` rounds at xi."""
        has_midpoint = self.midpoint is not None or self._lazy_hidden is not None
        per_step = self.order + (self.order + 1 if has_midpoint else 0)
        return self.steps * per_step

    def forward(self, y0: torch.Tensor, t0: Time = 0.0, t1: Time = 1.0) -> torch.Tensor:
        if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
            raise TypeError("y0 must be a floating-point torch.Tensor")
        self._build_midpoint(y0)
        t = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device)
        end = torch.as_tensor(t1, dtype=y0.dtype, device=y0.device)
        if torch.is_grad_enabled():
            y, remainders = self._solve(t, end, y0)
        else:
            names, values = self._graph_inputs()
            y, remainders = self._fixed_graph(names, values, t, end, y0)(values, t, end, y0)
        if not torch.isfinite(y).all():
            raise RuntimeError(f"TaylorLagrange produced NaN/inf by t={float(end):.6g}; use more steps, a lower "
                               "learning rate, or a larger remainder penalty")
        self.remainders = tuple(remainders)
        self.last_y0, self.last_span = y0.detach(), (t0, t1)
        return y

    def _build_midpoint(self, y0: torch.Tensor) -> None:
        """Build the default midpoint network from the first state when ``dim`` was not given."""
        if self._lazy_hidden is None:
            return
        if y0.dim() == 0:
            raise ValueError("TaylorLagrange's default midpoint network needs a state with a last axis; pass y0 "
                             "of shape (..., dim)")
        self.midpoint = MidpointNet(y0.shape[-1], self._lazy_hidden).to(dtype=y0.dtype, device=y0.device)
        self._lazy_hidden = None

    def solve_eager(self, y0: torch.Tensor, t0: Time = 0.0, t1: Time = 1.0) -> tuple[torch.Tensor, tuple]:
        """The solve step by step in Python, returning ``(y1, remainders)``: what :meth:`forward` traces
        into its fixed graph, and a reference for it."""
        self._build_midpoint(y0)
        t = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device)
        end = torch.as_tensor(t1, dtype=y0.dtype, device=y0.device)
        return self._solve(t, end, y0)

    def _solve(self, t: torch.Tensor, end: torch.Tensor, y0: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        h = _StepSize.of((end - t) / self.steps, self.order)
        y, remainders = y0, []
        for n in range(self.steps):
            y, r = _step(self.func, t + n * h.dt if n else t, y, h, self.order, self.midpoint)
            if r is not None:
                remainders.append(r)
        return y, tuple(remainders)

    # Without autograd (evaluation), a solve runs as a fixed aten graph, traced once per input shape
    # (torch.fx, via make_fx) with this module's parameters and buffers, t0, t1 and y0 as its inputs: it
    # costs the ops alone, none of the Python of the steps, the midpoint network or the Taylor-mode
    # interpreter, which ran once, at trace time. Under autograd the solve runs step by step: there the
    # backward pass dominates, which the graph would not shorten, and a trace (about 0.1-0.2 s on CPU)
    # costs more than it saves over a few hundred training steps, each new batch shape paying its own.

    _MAX_GRAPHS = 8  # traced shapes kept per module; a new shape beyond that evicts the oldest

    def _graph_inputs(self) -> tuple[tuple[str, ...], list[torch.Tensor]]:
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return tuple(tensors), list(tensors.values())

    def _fixed_graph(self, names, values, t, end, y0) -> Callable:
        key = (tuple(y0.shape), y0.dtype, y0.device, t.dtype, end.dtype, self.order, self.steps, id(self.func),
               id(self.midpoint), tuple((n, tuple(v.shape), v.dtype, v.device) for n, v in zip(names, values)),
               python_state_key(self.func), python_state_key(self.midpoint))
        graphs = self.__dict__.setdefault("_graphs", {})
        if key not in graphs:
            if len(graphs) >= self._MAX_GRAPHS:
                graphs.pop(next(iter(graphs)))
            graphs[key] = self._trace(names, values, t, end, y0)
        return graphs[key]

    def _trace(self, names, values, t, end, y0) -> Callable:
        adapter = _Solve(self)
        prefixed = [f"integrator.{n}" for n in names]

        def call(values_, t_, end_, y0_):
            return functional_call(adapter, dict(zip(prefixed, values_)), (t_, end_, y0_))

        try:
            with torch.inference_mode(False):
                gm = make_fx(call, tracing_mode="fake", _allow_non_fake_inputs=True)(values, t, end, y0)
        except GuardOnDataDependentSymNode as e:
            raise TypeError(
                "TaylorLagrange traces its solve once per input shape, so func and midpoint must not branch on "
                "tensor values (if/while on t or y, .item()); express the branch with torch.where"
            ) from e
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_graphs", None)  # traced graphs are a cache: rebuilt on the first call
        return state

    def remainder_penalty(self) -> torch.Tensor:
        """mean |R| over the steps of the last call: the paper's regulariser on the learned remainder."""
        if not self.remainders:
            raise RuntimeError("no remainder recorded: call the module first (and keep remainder=True)")
        return torch.stack([r.abs().mean() for r in self.remainders]).mean()


class _Solve(nn.Module):
    """Runs an integrator's step-by-step solve as a module call, so that ``functional_call`` can feed it
    the tensors that become the fixed graph's inputs."""

    def __init__(self, integrator: TaylorLagrange):
        super().__init__()
        self.integrator = integrator

    def forward(self, t: torch.Tensor, end: torch.Tensor, y0: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        return self.integrator._solve(t, end, y0)


def _midpoint_parameters(integrator: TaylorLagrange) -> list[torch.Tensor]:
    params = list(integrator.midpoint.parameters()) if isinstance(integrator.midpoint, nn.Module) else []
    if not params:
        raise ValueError("fitting the midpoint needs integrator.midpoint to be an nn.Module with parameters")
    return params


@contextmanager
def _frozen(module: object, keep: list[torch.Tensor]) -> Iterator[None]:
    """Switch off ``requires_grad`` of ``module``'s parameters, except ``keep``, for the block (nothing for
    a plain function).

    With the dynamics frozen, autograd records only what depends on the midpoint: the first step's
    coefficients at y_0 become plain tensors, and no graph is kept for the dynamics' weights."""
    kept = {id(p) for p in keep}
    params = [p for p in module.parameters() if p.requires_grad and id(p) not in kept] \
        if isinstance(module, nn.Module) else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def fit_midpoint(
    integrator: TaylorLagrange, y0: torch.Tensor, t0: Time = 0.0, t1: Time = 1.0, *, iters: int = 20,
    lr: float = 1e-2, optimizer: Optional[torch.optim.Optimizer] = None, rtol: float = 1.4e-8,
    atol: float = 1.4e-8,
) -> list[float]:
    """Fit the midpoint network phi to an accurate adaptive solve with the dynamics frozen: ``iters``
    optimiser steps on ``mean |TL(y0) - odeint(func, y0, [t0, t1], method="dopri5")|`` (the paper's L1
    objective; its default tolerance 1.4e-8 is the paper's). The accurate solve runs once per call, since
    the dynamics do not change during the fit. Returns the loss before each step.

    Args:
        integrator: the :class:`TaylorLagrange` whose midpoint is fitted.
        y0, t0, t1: the initial states and the interval (defaults 0 and 1).
        iters: optimiser steps (default 20).
        lr: learning rate of the default optimiser, Adam over the midpoint's parameters (default 1e-2).
        optimizer: an optimiser over the midpoint's parameters, used instead (keeps its state across calls).
        rtol, atol: tolerances of the dopri5 reference solve (default 1.4e-8 each).
    """
    from .odeint import odeint  # deferred: odeint's package imports this module

    params = _midpoint_parameters(integrator)
    opt = optimizer if optimizer is not None else torch.optim.Adam(params, lr=lr)
    y0 = y0.detach()
    with torch.no_grad():
        span = torch.stack([torch.as_tensor(t0, dtype=y0.dtype), torch.as_tensor(t1, dtype=y0.dtype)])
        target = odeint(integrator.func, y0, span, method="dopri5", rtol=rtol, atol=atol)[-1]
    losses = []
    with _frozen(integrator.func, keep=params):
        for _ in range(iters):
            loss = (integrator(y0, t0, t1) - target).abs().mean()
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            losses.append(loss.item())
    return losses


def train_alternating(
    model: Callable[[torch.Tensor], torch.Tensor], integrator: TaylorLagrange,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, *,
    remainder_weight: float = 1.0, midpoint_every: int = 50, midpoint_iters: int = 20,
    midpoint_optimizer: Optional[torch.optim.Optimizer] = None, midpoint_lr: float = 1e-2,
    rtol: float = 1.4e-8, atol: float = 1.4e-8,
) -> list[float]:
    """The paper's alternating scheme. ``model(x)`` must call ``integrator`` once; ``optimizer`` holds the
    dynamics (and any pre/post network) parameters, never the midpoint's. Each batch ``(x, target)`` takes
    one step on ``loss_fn(model(x), target) + remainder_weight * integrator.remainder_penalty()``; every
    ``midpoint_every`` batches, starting with the first, :func:`fit_midpoint` runs ``midpoint_iters`` steps
    on that batch's integrator input. Returns the task loss of each batch.

    Defaults: ``remainder_weight=1.0``, ``midpoint_every=50``, ``midpoint_iters=20`` (0: never fit the
    midpoint), ``midpoint_optimizer`` Adam over the midpoint's parameters at ``midpoint_lr=1e-2``, and the
    reference solve's ``rtol = atol = 1.4e-8``.
    """
    if midpoint_every < 1 or midpoint_iters < 0:
        raise ValueError("midpoint_every must be >= 1 and midpoint_iters >= 0")
    mid_params = _midpoint_parameters(integrator)
    mid_ids = {id(p) for p in mid_params}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(id(p) in mid_ids for p in params):
        raise ValueError("optimizer must not hold the midpoint's parameters: build it over the model's other "
                         "parameters (the midpoint is fitted separately by fit_midpoint)")
    mid_opt = midpoint_optimizer if midpoint_optimizer is not None else torch.optim.Adam(mid_params, lr=midpoint_lr)
    history = []
    for i, (x, target) in enumerate(batches):
        with _frozen(integrator.midpoint, keep=[]):  # phi is fixed in this step: record no graph for it
            task = loss_fn(model(x), target)
            loss = task + remainder_weight * integrator.remainder_penalty()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        history.append(task.item())
        if midpoint_iters and i % midpoint_every == 0:
            fit_midpoint(integrator, integrator.last_y0, *integrator.last_span, iters=midpoint_iters,
                         optimizer=mid_opt, rtol=rtol, atol=atol)
    return history
