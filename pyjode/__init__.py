"""pyjode: fast, memory-cheap training of neural ODEs and SDEs from PyTorch."""

from ._julia import JuliaUnavailableError, JuliaUnsupportedError, julia_available
from .adams import Adams
from .adjoints.auto import Auto
from .adjoints.backsolve import Backsolve
from .adjoints.checkpointed import Checkpointed
from .adjoints.direct import Direct
from .adjoints.quadrature import Quadrature
from .adjoints.reversible import ReversibleAdjoint
from .errors import BadStartError, DoubleBackwardError, SolveError
from .events import odeint_event
from .implicit import Implicit
from .neural_ode import NeuralODE
from .norms import PartsNorm, max_norm, rms_norm
from .odeint import odeint
from .solution import Solution
from .solve import solve
from .step_control import StepControl
from .reversible import Reversible, ReversibleStabilityWarning
from .scipy_solver import ScipySolver
from .step_callbacks import StepCallbacks
from .step_size import PIController
from .sde import BrownianPath, CosineNoise, PiecewiseLinearNoise, WongZakai, sdeint
from .stats import Stats
from .tableau import ButcherTableau
from .taylor_lagrange import MidpointNet, TaylorLagrange, fit_midpoint, taylor_lagrange_step, train_alternating
from .taylor_mode import taylor_coefficients

__version__ = "0.1.0"

__all__ = [
    "Adams",
    "Auto",
    "Backsolve",
    "BadStartError",
    "BrownianPath",
    "ButcherTableau",
    "Checkpointed",
    "CosineNoise",
    "Direct",
    "DoubleBackwardError",
    "fit_midpoint",
    "Implicit",
    "julia_available",
    "JuliaUnavailableError",
    "JuliaUnsupportedError",
    "max_norm",
    "MidpointNet",
    "NeuralODE",
    "odeint",
    "odeint_event",
    "PIController",
    "PartsNorm",
    "PiecewiseLinearNoise",
    "Quadrature",
    "Reversible",
    "ReversibleAdjoint",
    "ReversibleStabilityWarning",
    "rms_norm",
    "ScipySolver",
    "sdeint",
    "Solution",
    "solve",
    "SolveError",
    "Stats",
    "StepCallbacks",
    "StepControl",
    "taylor_coefficients",
    "taylor_lagrange_step",
    "TaylorLagrange",
    "train_alternating",
    "WongZakai",
]
