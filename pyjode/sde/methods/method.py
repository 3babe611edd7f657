"""What a fixed-step SDE method declares about itself, and the step signature it provides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ...stepper import Stepper, time_maker

# step(t0, t1, h, y, dw) -> y1, with t0, t1 0-dim tensors and h = t1 - t0 a float.
Step = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor], torch.Tensor]
# make_step(sde, f_and_g, noise_type) -> Step
MakeStep = Callable[..., Step]


@dataclass(frozen=True)
class SDEMethod:
    name: str
    sde_type: str                 # the calculus the method converges to: "ito" or "stratonovich"
    noise_types: tuple[str, ...]  # noise types it supports
    make_step: MakeStep
    # what the step's control holds: "none" the increment dW, "space-time" the pair (dW, U) with
    # U = ∫ (W_s − W_t0) ds over the step (what Rößler's order 1.5 schemes need)
    levy_area: str = "none"


class SDEStepper(Stepper):
    """A fixed-step SDE method as a stepper: the state is y, the control the Brownian increment."""

    def __init__(self, step: Step, like: torch.Tensor):
        self.step_fn, self.time = step, time_maker(like)

    def init(self, field, t0: float, y0: torch.Tensor) -> torch.Tensor:
        return y0

    def step(self, field, t0: float, t1: float, y: torch.Tensor, dw: torch.Tensor):
        return self.step_fn(self.time(t0), self.time(t1), t1 - t0, y, dw), None, None

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y
