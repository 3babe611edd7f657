"""``adjoint="auto"``: the fastest gradient method whose memory fits a budget, predicted, then measured.

**The rule.** The candidates are

* ``direct``: backprop through every stage of every accepted step,
* ``checkpointed``: states at every step, one step's activations at a time (one extra forward pass
  without a graph),
* ``Checkpointed(checkpoints=c)``, ``c = ceil(2 sqrt(steps))``: O(sqrt(steps)) states (two extra
  forward passes),
* ``Quadrature(max_nodes_per_call=k)``: no per-step memory at all, but a backward solve that restarts at
  every output time (``Quadrature`` needs a Runge–Kutta method; for :class:`pyjode.Reversible` this
  candidate is ``adjoint="reversible"``),
* ``Backsolve()``: the seminorm continuous adjoint, the augmented state ``[y, a, a_θ]`` solved backwards
  (Runge–Kutta methods only),

ordered by their predicted time; those whose estimated peak gradient memory fits the budget are the
choices. When several of them are predicted within ``close`` (2x) of the fastest, the closest three are
timed on the user's own gradients, ``trials`` (3) each, interleaved, and the fastest measured is kept for
that problem (``pyjode/adjoints/auto_trials.py``); otherwise, or with ``trials=0``, the fastest predicted
is used. Both predictions come from the previous solve of the same field with a state of the same shape (a
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
* reversible:    ``F + 4 A``          (each step reconstructed backwards, then differentiated),
* backsolve:     ``F + 3 B``          (each backward evaluation with a state and parameter VJP).

Ties keep the order of the list above. This reproduces the measured ranking on every training workload of
``benchmarks/RESULTS.md`` (section "Training workloads: checkpointed discrete adjoint ..."): direct was the
fastest everywhere (0.81–0.88x torchdiffeq's direct backprop); with two output times the quadrature adjoint
took 0.94–1.00x on the CNFs, 0.96x on the 1 M-parameter MLP and 1.28x at 9 M, against checkpointed's
1.18–1.23x, 1.00x and 1.78x; on the latent ODE's 100 output times the quadrature backward solve took 891
evaluations (= 99 x 9, the ``(T - 1)(E + 3)`` above for dopri5) against 56 forward, 5.0x, where
checkpointed took 1.04x. It does not rank the close ones reliably: on the trained CNF Backsolve, predicted
slowest of the three, took 0.89–0.96x where the quadrature adjoint took 1.00–1.08x and checkpointed 1.18x,
because on a 9 k-parameter field every call costs about the same whatever it computes and Backsolve makes
the fewest; at 9 M parameters Backsolve's parameter-sized augmented state makes it 2.7x. Hence the
measurements.

*Memory*, in bytes, from ``a`` (bytes autograd saves for one evaluation of the field, measured once per
field and state shape by counting the tensors saved during ``f(t_0, y_0)``, parameters excluded) and
``x`` (bytes of one state):

* direct:        ``N E (a + 2x) + T x``   (each stage keeps its activations, its input and its slope),
* checkpointed:  ``2 N x + E (a + 2x) + T x``,
* bounded:       ``(c + 2 N / c) 2 x + E (a + 2x) + T x``,
* quadrature:    ``(k + 2) a + 4 T x``,  ``k`` nodes per parameter-VJP call, as many as fit (at least 1),
* reversible:    ``2 E (a + 2x) + T x``,
* backsolve:     ``(s + 11) z + a + 2x + T x``, ``z = 2x + P`` the augmented state, ``s`` the tableau's
  stages (the stepper's stage buffer and temporaries: measured 15 z for bosh3, 18 z for dopri5, 25 z for
  dopri8),

each plus ``2 P`` (``P`` the parameters' bytes): their gradient and the VJP being added into it, which
every method holds at its peak (see ``pyjode/adjoints/param_sink.py``). ``k`` is given to ``Quadrature`` only
when the budget binds; otherwise its default cap (a call's activations about a quarter of ``P``) applies.

**Discrete only.** The continuous adjoints (quadrature, backsolve, reversible) differentiate ``y`` and the
parameters alone, and give first-order gradients only. So when ``adjoint_params`` is not given and one traced
evaluation finds the field using other tensors that require grad (a closure's), and once a backward pass
through a solve of the field has asked for a graph (``create_graph=True``: a gradient penalty), only direct
and the checkpointed variants are candidates; they differentiate the captured tensors, and to any order. A
gradient penalty that comes after auto chose the quadrature, backsolve or reversible adjoint for a field gets,
in that backward pass, backprop's differentiable gradient of the same discrete solve (recomputed under autograd).

The first solve of a field, with no record, uses ``checkpointed``: its forward pass is the graph-free solve
that counts the steps, and its memory is states only.

**Budget.** ``memory_budget`` in bytes, or by default ``budget_fraction`` (0.5) of the memory free now:
``torch.cuda.mem_get_info`` for a CUDA state, the kernel's ``MemAvailable`` otherwise.

**Report.** The choice is written to ``stats.adjoint`` (``pyjode.Stats``), to the instance's ``choice``,
``estimates`` (bytes), ``costs`` (predicted evaluations), ``measured`` (seconds per forward evaluation,
once measured) and ``measuring`` (whether this solve was a timed try) attributes, and to the ``pyjode``
logger at DEBUG level with the reasons behind it.
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..reversible import Reversible
from .auto_trials import Trials, timed
from .backward_checks import captured_tensors
from .base import GradientMethod, SolveSpec
from .checkpointed import Checkpointed
from .direct import Direct

__all__ = ["Auto", "activation_bytes"]

logger = logging.getLogger("pyjode")

# Per field (weakly): {(shape, dtype, device): activation bytes} and {(shape, dtype, device, method): record}
_ACTIVATIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_HISTORY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_TRIALS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # {history key: Trials}
# Per field: {"captures": bool} (whether it uses tensors besides y and its parameters), {"graph": True} once a
# backward pass through one of its solves asked for a differentiable gradient (create_graph=True)
_TRAITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: the candidates that differentiate what backprop would, to any order: the discrete gradients
_DISCRETE = ("direct", "checkpointed", "bounded")


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
        trials: how many gradients of each close contender (predicted within 2x of the fastest, at most
            three) are timed before the fastest is kept (default 3); 0 goes by the predicted times alone. A
            timed choice depends on the machine and its load, so two runs may choose differently (their
            gradients then differ within the methods' tolerances, as any two methods' do); ``trials=0``
            makes the choice a function of the problem alone.
    """

    name = "auto"
    close = 2.0  # contenders: predicted within this factor of the fastest that fits ...
    most_measured = 3  # ... at most this many of them

    def __init__(self, memory_budget: Optional[int] = None, budget_fraction: float = 0.5, trials: int = 3):
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes (an int) or None, "
                             f"got {memory_budget!r}")
        if isinstance(budget_fraction, bool) or not isinstance(budget_fraction, (int, float)) \
                or not 0 < budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction!r}")
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
            raise ValueError(f"trials must be a non-negative int (0: choose by predicted time alone), got {trials!r}")
        self.memory_budget, self.budget_fraction, self.trials = memory_budget, float(budget_fraction), trials
        self.choice: Optional[GradientMethod] = None
        self.measuring = False  # whether the last solve was one of the timed tries
        self.estimates: Dict[str, int] = {}  # bytes per candidate, of the last choice
        self.costs: Dict[str, int] = {}  # predicted field evaluations per candidate, of the last choice
        self.measured: Dict[str, float] = {}  # seconds per forward evaluation, when the last choice was measured

    def check_method(self, method) -> None:
        """Every method has a candidate: direct backprop steps through anything that steps under autograd;
        the others are candidates where they accept the method (checkpointed, for one, needs a Runge–Kutta
        method or pyjode.Reversible; the implicit, Adams and scipy methods are left to the rest)."""

    def budget(self, like: torch.Tensor) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        return int(self.budget_fraction * free_memory(like.device))

    def choose(self, spec: SolveSpec, discrete: str = "") -> Tuple[GradientMethod, str,
                                                                     Optional[Callable[[float], None]]]:
        """The method for this solve, why, and where to report its measured time (None: not measured).
        ``discrete``, when not empty, says why only the discrete gradients (direct, checkpointed) may be used."""
        self.measured = {}
        if not torch.is_grad_enabled():
            return Direct(), "no gradient wanted", None
        if spec.t.requires_grad:
            return Direct(), "time gradients (only direct differentiates the step times of t)", None
        y0, key = spec.y0, _history_key(spec)
        history = _per_field(_HISTORY, spec.func)
        record = None if history is None else history.get(key)
        if record is None:
            if not _accepts(Checkpointed(), spec.method):
                if not getattr(spec.method, "records_graph", True):
                    from .backsolve import Backsolve

                    return Backsolve(), "first solve of this field, whose method records no graph: the continuous " \
                                        "adjoint", None
                return Direct(), "first solve of this field, whose method checkpointed cannot step: direct counts " \
                                 "the steps", None
            return Checkpointed(), "first solve of this field: its graph-free forward pass counts the steps", None
        budget = self.budget(y0)
        candidates = [c for c in self._candidates(spec, key, record, budget) if _accepts(c.method, spec.method)
                      and (c.kind != "direct" or getattr(spec.method, "records_graph", True))]
        if discrete:  # (a method no discrete gradient can take keeps the rest, which say what they cannot do)
            candidates = [c for c in candidates if c.kind in _DISCRETE] or candidates
        self.estimates = {c.label: c.need for c in candidates}
        self.costs = {c.label: c.cost for c in candidates}
        fitting = [c for c in sorted(candidates, key=lambda c: c.cost) if c.need <= budget]  # stable sort
        if not fitting:
            c = min(candidates, key=lambda c: c.need)
            return c.method, f"nothing fits the {budget}-byte budget; {c.label} needs least (estimated {c.need} " \
                             f"bytes)", None
        contenders = [c for c in fitting if c.cost <= self.close * fitting[0].cost][:self.most_measured]
        trials = self._trials(spec, key, record[0]) if self.trials and len(contenders) > 1 else None
        if trials is not None:
            kinds = [c.kind for c in contenders]
            by_kind = {c.kind: c for c in contenders}
            kind = trials.next(kinds, self.trials)
            if kind is not None:
                c = by_kind[kind]
                return c.method, (f"measuring {c.label} (its try {trials.attempts.get(kind, 0) + 1} of "
                                  f"{self.trials}; contenders {kinds}, predicted within {self.close}x of the "
                                  f"fastest that fits)"), trials.start(kind)
            kind = trials.best(kinds)
            if kind is not None:
                self.measured = {k: trials.score(k) for k in kinds if trials.scores.get(k)}
                c = by_kind[kind]
                return c.method, (f"{c.label} measured fastest of {kinds} (seconds per forward evaluation "
                                  f"{self.measured}); estimated {c.need} bytes of a {budget}-byte budget"), None
        c = fitting[0]
        return c.method, (f"{c.label} is the fastest that fits (predicted {c.cost} evaluations): estimated "
                          f"{c.need} bytes of a {budget}-byte budget" + (f"; {discrete}" if discrete else "")), None

    def _candidates(self, spec: SolveSpec, key: tuple, record: tuple, budget: int) -> List["_Candidate"]:
        """Every candidate with its estimated memory (bytes) and predicted time (field evaluations), in the
        tie-breaking order of the module docstring."""
        y0 = spec.y0
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
        accepted = steps * evals  # A: evaluations of the accepted steps
        p_bytes = sum(p.numel() * p.element_size() for p in spec.params)
        from .backsolve import Backsolve
        from .quadrature import Quadrature
        from .reversible import ReversibleAdjoint

        candidates = [
            _Candidate("direct", Direct(), steps * one_step + n_out * x, nfe + 2 * accepted),
            _Candidate("checkpointed", Checkpointed(), 2 * steps * x + one_step + n_out * x, nfe + 3 * accepted),
            _Candidate("bounded", Checkpointed(checkpoints=c), int((c + 2 * steps / c) * 2 * x) + one_step + n_out * x,
                       nfe + 4 * accepted),
        ]
        if isinstance(spec.method, Reversible):
            candidates.append(_Candidate("reversible", ReversibleAdjoint(), 2 * evals * per_eval + n_out * x,
                                         nfe + 4 * accepted))
        elif _accepts(Backsolve(), spec.method):
            backward = max(accepted, (n_out - 1) * (evals + 3))
            if _accepts(Quadrature(), spec.method):
                most = max(1, 2 ** 14 // max(y0.numel(), 1))  # Quadrature's own bound on nodes per call
                k = max(1, min(most, int((budget - 4 * n_out * x - 2 * p_bytes) // max(a, 1)) - 2))
                nodes = backward * _nodes_per_step(spec.method) / max(evals, 1)
                # when the budget does not bind, Quadrature's default also caps a call's activations by the
                # parameters' size
                quad = Quadrature(max_nodes_per_call=k if k < most else None)
                candidates.append(_Candidate("quadrature", quad, (k + 2) * a + 4 * n_out * x,
                                             nfe + 2 * backward + nodes))
            # the augmented state [y, a, a_θ] of z bytes; the stepper's stage buffer and temporaries hold
            # about s + 11 of them (s stages; measured 15 z for bosh3, 18 z for dopri5, 25 z for dopri8)
            z = 2 * x + p_bytes
            stages = len(getattr(spec.method, "c", ())) or 4
            candidates.append(_Candidate("backsolve", Backsolve(), (stages + 11) * z + per_eval + n_out * x,
                                         nfe + 3 * backward))
        # every method holds the parameters' gradient and the VJP being added into it at its peak
        for cand in candidates:
            cand.need, cand.cost = int(cand.need + 2 * p_bytes), int(cand.cost)
        return candidates

    def _trials(self, spec: SolveSpec, key: tuple, steps: int) -> Optional[Trials]:
        table = _per_field(_TRIALS, spec.func)
        if table is None:
            return None
        trials = table.get(key)
        if trials is None or trials.stale(steps):
            trials = table[key] = Trials(steps)
        return trials

    def _discrete_only(self, spec: SolveSpec) -> Tuple[SolveSpec, str]:
        """Whether this solve must use a discrete gradient, and why (empty: it need not); and the spec to
        solve with. The continuous adjoints differentiate ``y`` and the parameters only and give
        first-order gradients only, so they are left out for a field that uses other tensors requiring grad
        (captured by a closure: the discrete gradients find and differentiate them) and for a field whose
        gradients were asked for with ``create_graph=True`` before (a gradient penalty, a Hessian)."""
        if not torch.is_grad_enabled():
            return spec, ""
        traits = _per_field(_TRAITS, spec.func)
        reasons = []
        if traits is not None and traits.get("graph"):
            reasons.append("an earlier backward pass asked for higher-order gradients (create_graph=True)")
        if not spec.params_given:
            if traits is not None and traits.get("captures") is False:
                spec = replace(spec, params_given=True)  # traced before: the parameters are all it uses
            else:
                captured = tuple(captured_tensors(spec.func, (spec.ts[0], spec.ts[-1]), spec.y0, spec.params))
                if traits is not None:
                    traits["captures"] = bool(captured)
                # the discrete gradients differentiate the captured tensors as inputs of their own
                spec = replace(spec, params=tuple(spec.params) + captured, params_given=True)
                if captured:
                    reasons.append(f"the field uses {len(captured)} tensor(s) requiring grad besides its parameters "
                                   f"(captured by a closure), which only the discrete gradients differentiate")
        return spec, "; ".join(reasons)

    def solve(self, spec: SolveSpec) -> torch.Tensor:
        given = spec
        spec, discrete = self._discrete_only(spec)
        method, why, report = self.choose(spec, discrete)
        if method.name in ("quadrature", "backsolve", "reversible"):
            # a backward pass with a graph (a gradient penalty auto has not seen yet) gets backprop's
            # differentiable gradient from the continuous adjoint's function instead of a refusal
            method.graph_fallback = True
        if isinstance(method, Checkpointed) and len(spec.params) > len(given.params):
            # checkpointed finds the captured tensors itself, and knows to keep the graphs that lead to them
            spec = given
        method.check_method(spec.method)
        self.choice = method
        self.measuring = report is not None
        name = _label(method)
        logger.debug("adjoint='auto' chose %s: %s; memory estimates %s, predicted evaluations %s", name, why,
                     self.estimates, self.costs)
        stats = spec.stats
        before = (stats.nfe_forward, stats.steps_forward, stats.rejected_forward)
        if report is None:
            ys = method.solve(spec)
        else:
            ys = timed(lambda: method.solve(spec), spec.y0.device, lambda: stats.nfe_forward - before[0], report)
        stats.adjoint = name
        traits = _per_field(_TRAITS, spec.func)
        if traits is not None and not traits.get("graph") and ys.requires_grad:
            ys = _GraphWatch.apply(ys, traits)
        steps = stats.steps_forward - before[1]
        history = _per_field(_HISTORY, spec.func)
        if history is not None and steps > 0:
            # evaluations of the accepted steps: the attempts' evaluations shared out over all attempts
            nfe = stats.nfe_forward - before[0]
            evals = nfe / (steps + stats.rejected_forward - before[2])
            history[_history_key(spec)] = (steps, evals, nfe)
        return ys

    def __repr__(self) -> str:
        return (f"pyjode.Auto(memory_budget={self.memory_budget}, budget_fraction={self.budget_fraction}, "
                f"trials={self.trials})")


class _GraphWatch(torch.autograd.Function):
    """The identity on the solve's outputs; its backward pass notes in the field's traits whether it runs
    with a graph (``create_graph=True``), so that later solves of the field use a method that can give one."""

    @staticmethod
    def forward(ctx, ys, traits):
        ctx.traits = traits
        return ys.clone()  # not a view: the caller may write into the outputs

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            ctx.traits["graph"] = True
        return grad, None


@dataclass
class _Candidate:
    kind: str  # what the measurements are kept under (the label's k or c may change with the budget)
    method: GradientMethod
    need: int  # estimated peak memory, bytes
    cost: float  # predicted time, field evaluations

    @property
    def label(self) -> str:
        return _label(self.method)


def _accepts(adjoint: GradientMethod, method) -> bool:
    try:
        adjoint.check_method(method)
    except ValueError:
        return False
    return True


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
