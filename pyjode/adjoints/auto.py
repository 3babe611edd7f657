"""``adjoint="auto"``: the gradient method predicted fastest among those whose memory fits a budget.

**The rule.** The candidates are

* ``direct``: backprop through every stage of every accepted step,
* ``checkpointed``: states at every step, one step's activations at a time (one extra forward pass
  without a graph),
* ``Checkpointed(checkpoints=c)``, ``c = ceil(2 sqrt(steps))``: O(sqrt(steps)) states (two extra
  forward passes),
* ``Quadrature(max_nodes_per_call=k)``: no per-step memory at all, but a backward solve that restarts at
  every output time (``Quadrature`` needs a Runge–Kutta method; for :class:`pyjode.Reversible` this
  candidate is ``adjoint="reversible"``),

ordered by their predicted time, and the first whose estimated peak gradient memory fits the budget is
used. Both predictions come from the previous solve of the same field with a state of the same shape (a
training loop solves the same problem every iteration): ``N`` accepted steps, ``E`` evaluations per step
attempt, ``F`` forward evaluations in all (rejected attempts included), ``A = N E`` those of accepted
steps, and ``T`` output times.

*Time*, in field evaluations, counting a vector-Jacobian product with respect to the state and the
parameters as two evaluations and one with respect to the state alone as one:

* direct:        ``F + 2 A``          (the forward pass with a graph, one VJP per evaluation),
* checkpointed:  ``F + 3 A``          (a graph-free forward pass, each step again with a graph, its VJPs),
* bounded:       ``F + 4 A``          (each segment is re-solved once more from its checkpoint),
* quadrature:    ``F + 2 B + m B / E`` (the backward solve: each of its ``B`` evaluations with a
  state-only VJP; then one batched evaluation with a parameter VJP, counted as one, at each of the ``m``
  Gauss–Legendre nodes of every backward step), with ``B = max(A, (T - 1)(E + 3))``: about as many
  evaluations as the forward pass, but at least one step and the initial-step guess (two evaluations and
  the first stage) per output interval, because the backward solve restarts at every output time,
* reversible:    ``F + 4 A``          (each step reconstructed backwards, then differentiated).

Ties keep the order of the list above. This reproduces the measured ranking on every training workload of
``benchmarks/RESULTS.md`` (section "Training workloads: checkpointed discrete adjoint ..."): direct was the
fastest everywhere (0.81–0.88x torchdiffeq's direct backprop); with two output times the quadrature adjoint
took 0.94–1.00x on the CNFs, 0.96x on the 1 M-parameter MLP and 1.28x at 9 M, against checkpointed's
1.18–1.23x, 1.00x and 1.78x; on the latent ODE's 100 output times the quadrature backward solve took 891
evaluations (= 99 x 9, the ``(T - 1)(E + 3)`` above for dopri5) against 56 forward, 5.0x, where
checkpointed took 1.04x.

*Memory*, in bytes, from ``a`` (bytes autograd saves for one evaluation of the field, measured once per
field and state shape by counting the tensors saved during ``f(t_0, y_0)``, parameters excluded) and
``x`` (bytes of one state):

* direct:        ``N E (a + 2x) + T x``   (each stage keeps its activations, its input and its slope),
* checkpointed:  ``2 N x + E (a + 2x) + T x``,
* bounded:       ``(c + 2 N / c) 2 x + E (a + 2x) + T x``,
* quadrature:    ``(k + 2) a + 4 T x``,  ``k`` nodes per parameter-VJP call, as many as fit (at least 1),
* reversible:    ``2 E (a + 2x) + T x``,

each plus ``2 P`` (``P`` the parameters' bytes): their gradient and the VJP being added into it, which
every method holds at its peak (see ``pyjode/adjoints/param_sink.py``). ``k`` is given to ``Quadrature`` only
when the budget binds; otherwise its default cap (a call's activations about a quarter of ``P``) applies.

The first solve of a field, with no record, uses ``checkpointed``: its forward pass is the graph-free solve
that counts the steps, and its memory is states only.

**Budget.** ``memory_budget`` in bytes, or by default ``budget_fraction`` (0.5) of the memory free now:
``torch.cuda.mem_get_info`` for a CUDA state, the kernel's ``MemAvailable`` otherwise.

**Report.** The choice is written to ``stats.adjoint`` (``pyjode.Stats``), to the instance's ``choice``,
``estimates`` (bytes) and ``costs`` (predicted evaluations) attributes, and to the ``pyjode`` logger at
DEBUG level with both behind it.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Dict, Optional, Tuple

import torch

from ..reversible import Reversible
from .base import GradientMethod, SolveSpec
from .checkpointed import Checkpointed
from .direct import Direct

__all__ = ["Auto", "activation_bytes"]

logger = logging.getLogger("pyjode")

# Per field (weakly): {(shape, dtype, device): activation bytes} and {(shape, dtype, device, method): record}
_ACTIVATIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_HISTORY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _per_field(table, func) -> Optional[dict]:
    key = getattr(func, "__self__", func)
    try:
        return table.setdefault(key, {})
    except TypeError:  # not weak-referenceable: measured afresh each time, and no history
        return None


def activation_bytes(func, t0: torch.Tensor, y0: torch.Tensor, params=()) -> int:
    """Bytes autograd keeps for the backward pass of one evaluation ``f(t0, y0)``: the tensors it saves,
    less the parameters and ``y0`` themselves (they exist anyway)."""
    shared = {p.data_ptr() for p in params} | {y0.data_ptr()}
    seen, total = set(), 0

    def pack(x):
        nonlocal total
        ptr = x.data_ptr()
        if ptr not in shared and (ptr, x.numel()) not in seen:
            seen.add((ptr, x.numel()))
            total += x.numel() * x.element_size()
        return x

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        y = y0.detach().requires_grad_(True)
        func(t0, y)
    return total


def free_memory(device: torch.device) -> int:
    """Bytes free now on ``device`` (the kernel's MemAvailable for CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2 ** 30  # unknown: assume a modest machine


class Auto(GradientMethod):
    """Chooses a gradient method per solve by the rule in the module docstring.

    Args:
        memory_budget: bytes the gradient may use; default ``budget_fraction`` of the free memory.
        budget_fraction: the share of free memory used when ``memory_budget`` is not given.
    """

    name = "auto"

    def __init__(self, memory_budget: Optional[int] = None, budget_fraction: float = 0.5):
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes (an int) or None, "
                             f"got {memory_budget!r}")
        if isinstance(budget_fraction, bool) or not isinstance(budget_fraction, (int, float)) \
                or not 0 < budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction!r}")
        self.memory_budget, self.budget_fraction = memory_budget, float(budget_fraction)
        self.choice: Optional[GradientMethod] = None
        self.estimates: Dict[str, int] = {}  # bytes per candidate, of the last choice
        self.costs: Dict[str, int] = {}  # predicted field evaluations per candidate, of the last choice

    def check_method(self, method) -> None:
        Checkpointed().check_method(method)

    def budget(self, like: torch.Tensor) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        return int(self.budget_fraction * free_memory(like.device))

    def choose(self, spec: SolveSpec) -> Tuple[GradientMethod, str]:
        """The method for this solve, and why."""
        if not torch.is_grad_enabled():
            return Direct(), "no gradient wanted"
        if spec.t.requires_grad:
            return Direct(), "time gradients (only direct differentiates the step times of t)"
        y0, key = spec.y0, _history_key(spec)
        history = _per_field(_HISTORY, spec.func)
        record = None if history is None else history.get(key)
        if record is None:
            return Checkpointed(), "first solve of this field: its graph-free forward pass counts the steps"
        steps, evals, nfe = record
        acts = _per_field(_ACTIVATIONS, spec.func)
        akey = key[:3]  # shape, dtype, device
        if acts is not None and akey in acts:
            a = acts[akey]
        else:
            t0 = torch.full((), spec.ts[0], dtype=y0.dtype, device=y0.device)
            a = activation_bytes(spec.func, t0, y0, spec.params)
            if acts is not None:
                acts[akey] = a
        x = y0.numel() * y0.element_size()
        n_out = len(spec.ts)
        per_eval = a + 2 * x
        one_step = evals * per_eval
        c = max(2, math.ceil(2 * math.sqrt(max(steps, 1))))
        budget = self.budget(y0)
        accepted = steps * evals  # A: evaluations of the accepted steps
        grads = 2 * sum(p.numel() * p.element_size() for p in spec.params)  # 2P: the gradient and one VJP
        from .quadrature import Quadrature
        from .reversible import ReversibleAdjoint

        # (label, method, memory in bytes, time in field evaluations), in the tie-breaking order
        candidates = [
            ("direct", Direct(), steps * one_step + n_out * x, nfe + 2 * accepted),
            ("checkpointed", Checkpointed(), 2 * steps * x + one_step + n_out * x, nfe + 3 * accepted),
            (f"checkpointed(checkpoints={c})", Checkpointed(checkpoints=c),
             int((c + 2 * steps / c) * 2 * x) + one_step + n_out * x, nfe + 4 * accepted),
        ]
        if isinstance(spec.method, Reversible):
            candidates.append(("reversible", ReversibleAdjoint(), 2 * evals * per_eval + n_out * x,
                               nfe + 4 * accepted))
        else:
            most = max(1, 2 ** 14 // max(y0.numel(), 1))  # Quadrature's own bound on nodes per call
            k = max(1, min(most, int((budget - 4 * n_out * x - grads) // max(a, 1)) - 2))
            backward = max(accepted, (n_out - 1) * (evals + 3))
            nodes = backward * _nodes_per_step(spec.method) / max(evals, 1)
            # when the budget does not bind, Quadrature's default also caps a call's activations by the
            # parameters' size
            quad = Quadrature(max_nodes_per_call=k if k < most else None)
            candidates.append((_label(quad), quad, (k + 2) * a + 4 * n_out * x, nfe + 2 * backward + nodes))
        candidates = [(label, method, int(need + grads), int(cost)) for label, method, need, cost in candidates]
        self.estimates = {label: need for label, _, need, _ in candidates}
        self.costs = {label: cost for label, _, _, cost in candidates}
        for label, method, need, cost in sorted(candidates, key=lambda c: c[3]):  # stable: ties keep the order
            if need <= budget:
                return method, (f"{label} is the fastest that fits (predicted {cost} evaluations): estimated "
                                f"{need} bytes of a {budget}-byte budget")
        label, method, need, _ = min(candidates, key=lambda c: c[2])
        return method, f"nothing fits the {budget}-byte budget; {label} needs least (estimated {need} bytes)"

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        method, why = self.choose(spec)
        method.check_method(spec.method)
        self.choice = method
        name = _label(method)
        logger.debug("adjoint='auto' chose %s: %s; memory estimates %s, predicted evaluations %s", name, why,
                     self.estimates, self.costs)
        stats = spec.stats
        before = (stats.nfe_forward, stats.steps_forward, stats.rejected_forward)
        ys = method.solve(spec)
        stats.adjoint = name
        steps = stats.steps_forward - before[1]
        history = _per_field(_HISTORY, spec.func)
        if history is not None and steps > 0:
            # evaluations of the accepted steps: the attempts' evaluations shared out over all attempts
            nfe = stats.nfe_forward - before[0]
            evals = nfe / (steps + stats.rejected_forward - before[2])
            history[_history_key(spec)] = (steps, evals, nfe)
        return ys

    def __repr__(self) -> str:
        return f"pyjode.Auto(memory_budget={self.memory_budget}, budget_fraction={self.budget_fraction})"


def _nodes_per_step(method) -> int:
    from ..tableau import ButcherTableau
    from .quadrature import default_nodes_per_step

    return default_nodes_per_step(method) if isinstance(method, ButcherTableau) else \
        max(1, math.ceil(getattr(method, "order", 4) / 2))


def _history_key(spec: SolveSpec) -> tuple:
    """What sets the number of steps, besides the field: state, method, span, output times, tolerances."""
    method = spec.method
    name = repr(method) if isinstance(method, Reversible) else getattr(method, "name", repr(method))
    c = spec.control
    return (tuple(spec.y0.shape), spec.y0.dtype, str(spec.y0.device), name, spec.ts[0], spec.ts[-1], len(spec.ts),
            c.rtol, c.atol, c.step_size)


def _label(method: GradientMethod) -> str:
    if isinstance(method, Checkpointed) and method.checkpoints is not None:
        return f"checkpointed(checkpoints={method.checkpoints})"
    if method.name == "quadrature" and method.max_nodes_per_call is not None:
        return f"quadrature(max_nodes_per_call={method.max_nodes_per_call})"
    return method.name
