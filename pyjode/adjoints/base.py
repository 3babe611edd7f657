"""What every gradient method receives, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from ..integrate import Counter, integrate
from ..norms import rms_norm
from ..stats import Stats
from ..tableau import ButcherTableau


@dataclass
class SolveSpec:
    """One validated ``odeint`` call.

    ``ts`` are the output times as Python floats; ``method`` is a :class:`ButcherTableau` or a method
    object with an ``integrate`` method (such as :class:`pyjode.Reversible`).
    """

    func: Callable
    y0: torch.Tensor
    t: torch.Tensor
    ts: List[float]
    method: Any
    rtol: float
    atol: float
    step_size: Optional[float]
    max_steps: Optional[int]
    params: Tuple[torch.Tensor, ...]
    stats: Optional[Stats]

    def solve_kwargs(self) -> dict:
        return dict(rtol=self.rtol, atol=self.atol, step_size=self.step_size, max_steps=self.max_steps)


def run_method(method, func, y0: torch.Tensor, ts: Sequence[float], *, norm=rms_norm,
               counter: Optional[Counter] = None, **kwargs) -> List[torch.Tensor]:
    """Integrate with a tableau through the shared loop, or with a method object's own ``integrate``."""
    if isinstance(method, ButcherTableau):
        return integrate(func, y0, ts, method, norm=norm, counter=counter, **kwargs)
    return method.integrate(func, y0, ts, norm=norm, counter=counter, **kwargs)


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
