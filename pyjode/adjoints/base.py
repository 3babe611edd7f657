"""What every gradient method receives, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import torch

from ..integrate import Counter, Run, integrate
from ..reversible import Reversible
from ..runge_kutta import RungeKutta
from ..stats import Stats
from ..step_control import StepControl
from ..tableau import ButcherTableau


@dataclass
class SolveSpec:
    """One validated ``odeint`` call.

    ``ts`` are the output times as Python floats; ``method`` is a :class:`ButcherTableau` or a
    :class:`pyjode.Reversible`; ``control`` holds every step-size setting.
    """

    func: Callable
    y0: torch.Tensor
    t: torch.Tensor
    ts: list
    method: Any
    control: StepControl
    params: Tuple[torch.Tensor, ...]
    stats: Optional[Stats]
    on_step: Optional[Callable] = None  # sees the forward solve's accepted steps (dense output)
    params_given: bool = True  # False when adjoint_params defaulted to the module's parameters


def make_stepper(method, like: torch.Tensor):
    """The stepper of an ``odeint`` method for states like ``like``."""
    if isinstance(method, ButcherTableau):
        return RungeKutta(method, like)
    return method.stepper(like)


def run_method(method, func, y0: torch.Tensor, ts: Sequence[float], control: StepControl, *,
               counter: Optional[Counter] = None, on_step: Optional[Callable] = None) -> Run:
    """Integrate with the method's stepper through the shared loops."""
    if hasattr(method, "run"):  # a solver with its own loop (pyjode.ScipySolver)
        return method.run(func, y0, ts, control, counter if counter is not None else Counter())
    run = integrate(make_stepper(method, y0), func, y0, ts, control, counter=counter, on_step=on_step)
    if isinstance(method, Reversible):
        method.check_drift(*run.state, ts[-1])
    return run


def record_forward(stats: Optional[Stats], counter: Counter) -> None:
    if stats is not None:
        stats.nfe_forward += counter.nfe
        stats.steps_forward += counter.steps
        stats.rejected_forward += counter.rejected


def record_backward(stats: Optional[Stats], counter: Counter) -> None:
    if stats is not None:
        stats.nfe_backward += counter.nfe
        stats.steps_backward += counter.steps
        stats.rejected_backward += counter.rejected


class GradientMethod:
    """Base class of the ``adjoint=`` choices of :func:`pyjode.odeint`.

    A gradient method turns a :class:`SolveSpec` into the tensor of outputs ``(len(t), *y0.shape)``,
    wired into autograd however it likes.
    """

    name: str = "?"

    def solve(self, spec: SolveSpec) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def check_method(self, method) -> None:
        """Raise if this gradient method cannot be used with ``method``."""

    def __repr__(self) -> str:
        return f"pyjode.{type(self).__name__}()"
