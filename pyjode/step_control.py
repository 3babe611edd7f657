"""How a solve chooses its steps: one object, validated once and passed down whole.

``odeint`` builds a :class:`StepControl` from its arguments; the loops in :mod:`pyjode.integrate` read it;
the continuous adjoints derive their backward solves' control from the forward one with
:meth:`StepControl.replace`, so an option given to the forward solve (a norm, ``max_steps``, the times
where the field has kinks) reaches the backward solves too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional, Sequence, Tuple

import torch

from .norms import rms_norm
from .step_size import PIController

DEFAULT_MAX_STEPS = 100_000


def _times(name: str, values) -> Tuple[float, ...]:
    if values is None:
        return ()
    try:
        out = tuple(float(v) for v in (values.detach().reshape(-1).tolist() if hasattr(values, "detach")
                                       else values))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence or 1-D tensor of times, got {type(values).__name__}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} contains NaN or inf")
    return out


def _plain_number(name: str, v):
    """A NumPy scalar or a one-element tensor as the Python number it holds (the checks below want ints and
    floats); booleans are refused, since True is an int to Python but never a meaningful tolerance."""
    if isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool):
        raise TypeError(f"{name} must be a number, got {v!r}")
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TypeError(f"{name} must be a number (or a one-element tensor), got a tensor of shape "
                            f"{tuple(v.shape)}")
        return v.item()
    if isinstance(v, numbers.Integral) and not isinstance(v, int):
        return int(v)
    if isinstance(v, numbers.Real) and not isinstance(v, (int, float)):
        return float(v)
    return v


@dataclass(frozen=True)
class StepControl:
    """The step-size settings of one solve.

    Attributes:
        rtol, atol: an adaptive step is accepted when ``norm(err / (atol + rtol * max(|y0|, |y1|))) <= 1``.
        norm: the error norm (see :mod:`pyjode.norms`).
        step_size: the step of a fixed-step method: each stretch between consecutive output, step and jump
            times is split into equal steps no longer than this.
        first_step: the first step of an adaptive method (default: Hairer's selection, one evaluation).
        max_steps: cap on attempted steps (accepted + rejected); ``None`` means 100 000 for adaptive
            methods and no cap for fixed-step ones.
        min_step, max_step: bounds on adaptive steps. A step that fails its error test at ``min_step``
            raises a ``RuntimeError`` rather than being accepted.
        step_ts: times every step sequence must land on (for example where a forcing term is sampled).
        jump_ts: times where the field is not smooth (a kink or a jump): steps land on them, a step
            ending at one is evaluated up to the last time before it and the next from the first time
            after it (adjacent floats of the state's dtype, as diffrax does), and the cached first
            stage (FSAL) is evaluated afresh there. So every stage sees the field from the side of its
            own step, in either direction of integration. Both are ignored outside the solve's span.
        controller: the PI controller of adaptive steps.
        perturb: evaluate every step just inside both of its ends (adjacent floats, as at a jump), so that
            a field with a discontinuity at a step boundary is sampled from the side of the step; the
            steps themselves are unchanged.
        accept_min_step: accept a step of at most ``min_step`` whatever its (finite) error, as torchdiffeq
            does, instead of raising.
        callbacks: a :class:`pyjode.step_callbacks.StepCallbacks` told of every attempted, accepted and
            rejected step (``None``: no calls).
        per_sample: each sample along ``y``'s first dimension (a batch of independent problems) takes its own
            adaptive steps, and the field receives ``t`` as a ``(B,)`` tensor (see :mod:`pyjode.per_sample`).
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    norm: Callable = rms_norm
    step_size: Optional[float] = None
    first_step: Optional[float] = None
    max_steps: Optional[int] = None
    min_step: float = 0.0
    max_step: float = math.inf
    step_ts: Tuple[float, ...] = ()
    jump_ts: Tuple[float, ...] = ()
    controller: PIController = PIController()
    perturb: bool = False
    accept_min_step: bool = False
    callbacks: Optional[object] = None
    per_sample: bool = False

    def __post_init__(self):
        for name in ("rtol", "atol", "step_size", "first_step", "max_steps", "min_step", "max_step"):
            object.__setattr__(self, name, _plain_number(name, getattr(self, name)))
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol and atol cannot both be 0")
        if not callable(self.norm):
            raise TypeError(f"norm must be callable as norm(tensor) -> 0-dim tensor, got {type(self.norm).__name__}")
        for name in ("step_size", "first_step"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer or None, got {self.max_steps!r}")
        for name in ("min_step", "max_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isnan(v):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not self.min_step <= self.max_step or self.max_step == 0:
            raise ValueError(f"need 0 <= min_step <= max_step and max_step > 0, got min_step={self.min_step}, "
                             f"max_step={self.max_step}")
        if not isinstance(self.perturb, bool):
            raise TypeError(f"perturb must be True or False, got {self.perturb!r}")
        if not isinstance(self.per_sample, bool):
            raise TypeError(f"per_sample must be True or False, got {self.per_sample!r}")
        object.__setattr__(self, "step_ts", _times("step_ts", self.step_ts))
        object.__setattr__(self, "jump_ts", _times("jump_ts", self.jump_ts))

    @cached_property
    def _jumps(self) -> frozenset:
        return frozenset(self.jump_ts)

    def evaluation_span(self, t0: float, t1: float, dtype: torch.dtype) -> Tuple[float, float]:
        """The times a step from ``t0`` to ``t1`` is evaluated between: an end on a jump moves to the
        adjacent float of ``dtype`` inside the step (both ends with ``perturb``)."""
        if self.perturb:
            return beside(t0, t1, dtype), beside(t1, t0, dtype)
        if not self._jumps:
            return t0, t1
        return (beside(t0, t1, dtype) if t0 in self._jumps else t0,
                beside(t1, t0, dtype) if t1 in self._jumps else t1)

    @property
    def moves_ends(self) -> bool:
        """Whether any step is evaluated inside its ends (jumps, perturb): the loops skip the bookkeeping
        otherwise."""
        return self.perturb or bool(self.jump_ts)

    def is_jump(self, t: float) -> bool:
        return t in self._jumps

    def replace(self, **changes) -> "StepControl":
        """A copy with some settings changed (``None`` for rtol/atol keeps the current value)."""
        changes = {k: v for k, v in changes.items() if not (k in ("rtol", "atol") and v is None)}
        return dataclasses.replace(self, **changes)

    @property
    def attempt_cap(self) -> int:
        return DEFAULT_MAX_STEPS if self.max_steps is None else self.max_steps

    def targets(self, t0: float, t_end: float, extra: Sequence[float] = ()) -> Tuple[list, set]:
        """The times strictly inside ``(t0, t_end]`` that steps must land on, in the direction of the
        solve and ending with ``t_end``, and the subset of them that are jumps."""
        direction = 1.0 if t_end >= t0 else -1.0
        span = (t_end - t0) * direction

        def inside(s):
            return 0 < (s - t0) * direction < span

        jumps = {s for s in self.jump_ts if inside(s)}
        stops = {s for s in (*self.step_ts, *extra) if inside(s)} | jumps | {t_end}
        return sorted(stops, key=lambda s: (s - t0) * direction), jumps


def beside(t: float, toward: float, dtype: torch.dtype) -> float:
    """The float of ``dtype`` next to ``t`` (as the field's time tensor rounds it) in the direction of
    ``toward``: the first time strictly on that side of ``t``."""
    a = torch.tensor(t, dtype=dtype)
    return float(torch.nextafter(a, torch.tensor(toward, dtype=dtype)))
