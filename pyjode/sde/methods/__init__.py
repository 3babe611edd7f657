"""Fixed-step SDE methods by name."""
from .euler import EULER
from .heun import HEUN
from .method import SDEMethod
from .midpoint import MIDPOINT
from .milstein import MILSTEIN

__all__ = ["EULER", "HEUN", "MIDPOINT", "MILSTEIN", "SDEMethod"]
