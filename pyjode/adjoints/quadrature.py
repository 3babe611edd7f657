"""The Gauss–Legendre quadrature adjoint (Norcliffe & Deisenroth, TMLR 2023, §3).

The backward ODE carries only the state-sized adjoint a(t); the parameter gradient
    dL/dθ = ∫_{t_0}^{t_N} a(t)^T ∂f/∂θ(t, y(t)) dt
is computed by Gauss–Legendre quadrature, the node VJPs batched into a few calls.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from ..integrate import Counter
from ..newton import adjoint_jacobian
from ..norms import PartsNorm
from ..tableau import ButcherTableau
from ..trajectory import hermite_pseudo_interp
from .backward_checks import all_finite, nonfinite_gradient
from .base import SolveSpec, run_method
from .continuous import (ContinuousAdjoint, ForwardRecord, interval_pairs, state_vjp_field, stored_forward_solve,
                         vjp_or_none, weighted_param_vjp)


def default_nodes_per_step(tableau: ButcherTableau) -> int:
    """Gauss–Legendre nodes per backward step when ``nodes_per_step`` is not given: ``ceil(q / 2)``, ``q``
    the order of the step-size control (see :class:`Quadrature`). The Julia backend uses this too."""
    q = tableau.error_order if tableau.adaptive else tableau.order
    return max(1, math.ceil(q / 2))


#: activations of a batched VJP call below this many bytes (1 MiB) are never split: batching pays most there
ACTIVATION_FLOOR = 1 << 20


def nodes_per_call(func, params, t: torch.Tensor, y: torch.Tensor, limit: int) -> int:
    """How many nodes one batched parameter VJP takes: at most ``limit``, and no more than keep
    activations (the tensors autograd saves in one evaluation of ``func`` at ``(t, y)``, the parameters
    themselves not counted) of about ``max(parameter bytes / 4, ACTIVATION_FLOOR)``.

    A batched VJP holds its nodes' activations and one parameter-sized gradient at once, beside the
    caller's parameter-sized accumulator: with this cap the activations add at most about a quarter to
    those two buffers, which every method that forms a parameter VJP holds. On a wide field (1 M
    parameters, batch 32, 0.5 MiB of activations per node) it takes 2 nodes per call instead of all 26,
    the peak of the quadrature gradient falling from 21 to 9 MiB. On small fields it changes little: 3
    nodes per call instead of 4 on the latent-ODE benchmark, and nothing on the CNF, whose nodes
    ``vmap`` refuses and which takes one VJP per node anyway. One evaluation of ``func`` measures it.
    """
    if limit <= 1 or not params:
        return max(1, limit)
    own = {p.untyped_storage().data_ptr() for p in params}
    held = 0

    def pack(x):
        nonlocal held
        if x.untyped_storage().data_ptr() not in own:
            held += x.numel() * x.element_size()
        return x

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        func(t, y)
    budget = max(ACTIVATION_FLOOR, sum(p.numel() * p.element_size() for p in params) // 4)
    return max(1, min(limit, budget // max(held, 1)))


class Quadrature(ContinuousAdjoint):
    """Gauss–Legendre quadrature adjoint.

    Backward pass, interval by interval from t_N to t_0: solve a' = -a^T ∂f/∂y (adding dL/dy(t_i) to a
    at each output time) with the adaptive solver, and place ``m`` Gauss–Legendre nodes inside **every
    accepted backward step** [s, s + h]:
        τ_j = s + h (1 + ξ_j)/2,   w̃_j = |h|/2 · w_j,   (ξ_j, w_j) = leggauss(m),
    reading a(τ_j) from the solver's dense output and y(τ_j) as below. Then
        dL/dθ ≈ Σ_j w̃_j a(τ_j)^T ∂f/∂θ(τ_j, y(τ_j)),
    evaluated with respect to θ only as batched VJPs (``torch.func.vmap`` of f) over chunks of nodes, each
    taken as soon as its chunk is complete, so the nodes held never grow with the number of steps.

    **Number of nodes.** An m-node Gauss rule is exact for polynomials of degree 2m - 1, so on a step of
    length h its error is (h^(2m+1) (m!)^4 / ((2m+1) ((2m)!)^3)) g^(2m). The solver accepts a step when
    its embedded error estimate, of order q (q = 4 for dopri5/tsit5, 2 for bosh3; the method's order for
    fixed-step methods), is below tolerance, i.e. it resolves the solution to local error O(h^(q+1)).
    With m = ceil(q / 2) the quadrature's local error is of the same or higher order, with a small
    constant (1/4320 for m = 2), so it stays below the solver's own tolerance. Override with
    ``nodes_per_step``.

    Args:
        state: how y(t) is known on the backward pass.
            ``"resolve"`` (default): y is re-solved backwards together with a, as in the paper. Memory
            O(1) in steps, like every continuous adjoint; on the benchmarks it is also the faster mode.
            ``"stored"``: the accepted forward steps (states and stages, never activations) are kept and
            y is read from the forward solver's own dense output; the backward solve carries a alone.
            y is exact, so choose it for strongly dissipative dynamics, which are unstable to re-solve
            backwards. Memory O(steps x stages x state): fine for small states, costly for images.
        nodes_per_step: Gauss–Legendre nodes per backward step (default from the method's order, above).
        rtol, atol, method: backward-solve settings; default to the forward ones. The gradient's error
            is often set by the forward solve: on the wide-MLP benchmark a backward tolerance 10x
            looser than the forward's keeps the gradient as accurate as torchdiffeq's adjoint at equal
            tolerances, with 68 backward evaluations of the state VJP instead of 94. Check it on your
            problem before relying on it.
        max_nodes_per_call: cap on nodes per batched VJP call. The batched call holds the field's
            activations for all its nodes at once, so by default it takes as many nodes as fit in
            2**14 state elements (all of them for small states, where batching pays most) and no more
            than :func:`nodes_per_call` allows (activations of about a quarter of the parameters' size):
            memory stays independent of the number of steps. A given value replaces both bounds.
    """

    name = "quadrature"

    def __init__(self, state: str = "resolve", nodes_per_step: Optional[int] = None, rtol: Optional[float] = None,
                 atol: Optional[float] = None, method=None, max_nodes_per_call: Optional[int] = None):
        if state not in ("stored", "resolve"):
            raise ValueError(f"state must be 'stored' or 'resolve', got {state!r}")
        if nodes_per_step is not None and (not isinstance(nodes_per_step, int) or not 1 <= nodes_per_step <= 64):
            raise ValueError(f"nodes_per_step must be an integer in 1..64 or None, got {nodes_per_step!r}")
        if max_nodes_per_call is not None and (not isinstance(max_nodes_per_call, int) or max_nodes_per_call < 1):
            raise ValueError(f"max_nodes_per_call must be a positive integer, got {max_nodes_per_call!r}")
        super().__init__(rtol=rtol, atol=atol, method=method)
        self.state, self.nodes_per_step, self.max_nodes_per_call = state, nodes_per_step, max_nodes_per_call

    def __repr__(self) -> str:
        return (f"pyjode.Quadrature(state={self.state!r}, nodes_per_step={self.nodes_per_step}, rtol={self.rtol}, "
                f"atol={self.atol}, method={self.method!r})")

    def _nodes(self, tableau: ButcherTableau) -> int:
        if self.nodes_per_step is not None:
            return self.nodes_per_step
        return default_nodes_per_step(tableau)

    def forward_solve(self, spec: SolveSpec, counter: Counter):
        if self.state == "resolve":
            return super().forward_solve(spec, counter)
        return stored_forward_solve(spec, counter)

    def backward_solve(self, spec: SolveSpec, ys, grad_ys, record: ForwardRecord, counter: Counter):
        func, params, shape = spec.func, spec.params, spec.y0.shape
        n = spec.y0.numel()
        tableau = self.backward_tableau(spec)
        xi, wq = np.polynomial.legendre.leggauss(self._nodes(tableau))
        trajectory = record.trajectory
        chunk = self.max_nodes_per_call or max(1, 2 ** 14 // n)
        grads = [torch.zeros_like(p) for p in params]
        per_call = [self.max_nodes_per_call]  # nodes per VJP call; by default set at the first batch

        def integrate_nodes(T, S, W):
            if trajectory is not None:
                Y, A = trajectory(T), S.view(-1, *shape)
            else:
                Y, A = S[:, :n].reshape(-1, *shape), S[:, n:].reshape(-1, *shape)
            if per_call[0] is None:
                counter.nfe += 1
                per_call[0] = nodes_per_call(func, params, T[0], Y[0], chunk)
            # added into grads in place (no second parameter-sized buffer); a non-finite value stays
            # non-finite in the sum, so the check below still names the first batch that produced one
            weighted_param_vjp(func, params, T, Y, A, W, per_call[0], out=grads)
            if not all_finite(grads):  # one sync per batch of nodes: say where the parameter adjoint failed
                times = T.tolist()
                raise nonfinite_gradient("parameter adjoint", min(times), max(times), self.name)
            counter.nfe += T.numel() if params else 0

        nodes = _NodeCollector(tableau, (1 + xi) / 2, wq / 2, ys, record.first_step, integrate_nodes, chunk)

        if trajectory is not None:
            def field(t, a):
                with torch.enable_grad():
                    y = trajectory(t).requires_grad_(True)
                    f = func(t, y)
                    (vjp,) = vjp_or_none(f, (y,), -a.view(shape))
                return torch.zeros_like(a) if vjp is None else vjp.reshape(-1)

            field.newton_blocks = adjoint_jacobian(func, shape, 0, y_of_t=trajectory)
            norm = None
        else:
            field = state_vjp_field(func, shape)
            norm = PartsNorm([n, n])

        a = grad_ys[-1].reshape(-1)
        for i, t_hi, t_lo in interval_pairs(spec.ts):
            s = a if trajectory is not None else torch.cat([ys[i + 1].reshape(-1), a])
            control = self.backward_control(spec, norm, nodes.last_h if tableau.adaptive else None)
            s = run_method(tableau, field, s, [t_hi, t_lo], control, counter=counter, on_step=nodes).ys[-1]
            nodes.close_interval(field, counter)
            a = s if trajectory is not None else s[n:]
            if i > 0:
                a = a + grad_ys[i].reshape(-1)

        nodes.flush()
        return a.view(shape), grads


class _NodeCollector:
    """An ``on_step`` callback that records the backward state at the Gauss–Legendre nodes of each step.

    Methods with a continuous extension use it. Fixed-step tableaus have none, so each step's nodes come
    from cubic Hermite interpolation, whose end slope f(t1, s1) is the next step's first stage (one extra
    evaluation closes each interval).

    Whenever ``batch`` nodes are waiting they are handed to ``consume(T, S, W)`` (the batched parameter
    VJP) and dropped, so the nodes held at any time, like the VJP call's activations, are bounded
    whatever the number of steps.
    """

    def __init__(self, tableau: ButcherTableau, thetas: np.ndarray, weights: np.ndarray, like: torch.Tensor,
                 first_step: Optional[float], consume: Callable, batch: int):
        opts = dict(dtype=like.dtype, device=like.device)
        self.thetas, self.weights = thetas, weights
        if tableau.interp is not None:
            P = tableau.interp
        else:
            P = hermite_pseudo_interp()  # pseudo-stages (f0, f1, (s1 - s0)/h)
        powers = thetas[:, None] ** np.arange(1, P.shape[1] + 1)[None, :]
        self.Wd = torch.as_tensor(powers @ P.T, **opts)  # (m, stages)
        self.hermite = tableau.interp is None
        self._opts = opts
        self.T, self.S, self.W = [], [], []
        self.consume, self.batch, self._waiting = consume, batch, 0
        self.pending = None
        self.last_h, self._prev_h = first_step, 0.0  # first-step guess of the next interval (StepHint)

    def __call__(self, t0, t1, s0, s1, K, stepper):
        h = t1 - t0
        self.last_h, self._prev_h = max(abs(h), self._prev_h), abs(h)
        if self.hermite:
            if self.pending is not None:
                self._emit_hermite(*self.pending, f1=K[0])
            self.pending = (t0, t1, s0, s1, K[0].clone())
            return
        self._emit(t0, h, s0.reshape(-1) + h * (self.Wd @ K))

    def close_interval(self, field, counter):
        if self.pending is not None:
            t0, t1, s0, s1, f0 = self.pending
            counter.nfe += 1
            f1 = field(torch.full((), t1, **self._opts), s1).reshape(-1)
            self._emit_hermite(t0, t1, s0, s1, f0, f1=f1)
            self.pending = None

    def _emit_hermite(self, t0, t1, s0, s1, f0, f1):
        h = t1 - t0
        s0, s1 = s0.reshape(-1), s1.reshape(-1)
        K = torch.stack([f0, f1.reshape(-1), (s1 - s0) / h])
        self._emit(t0, h, s0 + h * (self.Wd @ K))

    def _emit(self, t0, h, values):
        self.T.append(t0 + h * self.thetas)
        # the forward-oriented integral: the backward step runs against the forward direction
        self.W.append(-h * self.weights)
        self.S.append(values)
        self._waiting += len(self.thetas)
        if self._waiting >= self.batch:
            self.flush()

    def flush(self):
        """Hand every waiting node to ``consume`` as (times, states, weights) and forget them."""
        if not self.T:
            return
        T = torch.as_tensor(np.concatenate(self.T), **self._opts)
        W = torch.as_tensor(np.concatenate(self.W), **self._opts)
        S = torch.cat(self.S)
        self.T, self.S, self.W, self._waiting = [], [], [], 0
        self.consume(T, S, W)
