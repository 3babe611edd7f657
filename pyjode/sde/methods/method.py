"""What a fixed-step SDE method declares about itself, and the step signature it provides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# step(t0, t1, h, y, dw) -> y1, with t0, t1 0-dim tensors and h = t1 - t0 a float.
Step = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor], torch.Tensor]
# make_step(sde, f_and_g, product, noise_type) -> Step
MakeStep = Callable[..., Step]


@dataclass(frozen=True)
class SDEMethod:
    name: str
    sde_type: str                 # the calculus the method converges to: "ito" or "stratonovich"
    noise_types: tuple[str, ...]  # noise types it supports
    evals_per_step: int           # evaluations of (f, g) per step, for Stats
    strong_order: str             # documented strong order, for error messages and docs
    make_step: MakeStep
