"""Neural SDEs: sdeint, replayable Brownian motion, reversible Heun, Wong–Zakai training."""
from .brownian import BrownianPath
from .sdeint import sdeint
from .smooth_noise import CosineNoise, PiecewiseLinearNoise
from .wong_zakai import WongZakai

__all__ = ["BrownianPath", "CosineNoise", "PiecewiseLinearNoise", "WongZakai", "sdeint"]
