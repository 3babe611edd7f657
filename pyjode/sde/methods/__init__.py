"""Fixed-step SDE methods by name."""
from .euler import EULER
from .euler_heun import EULER_HEUN
from .heun import HEUN
from .method import SDEMethod
from .midpoint import MIDPOINT
from .milstein import MILSTEIN, MILSTEIN_GRAD_FREE, MILSTEIN_STRATONOVICH, MILSTEIN_STRATONOVICH_GRAD_FREE
from .srk import SRK

__all__ = ["EULER", "EULER_HEUN", "HEUN", "MIDPOINT", "MILSTEIN", "MILSTEIN_GRAD_FREE", "MILSTEIN_STRATONOVICH",
           "MILSTEIN_STRATONOVICH_GRAD_FREE", "SDEMethod", "SRK"]
