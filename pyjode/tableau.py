"""Butcher tableaus for explicit Runge–Kutta methods, as validated data.

A method with ``s`` stages advances ``y`` from ``t`` to ``t + h`` by

    k_i = f(t + c_i h, y + h * sum_{j<i} a_ij k_j),    y_1 = y + h * sum_i b_i k_i,

and, when it is adaptive, estimates its local error as ``h * sum_i e_i k_i`` with ``e = b - b_hat``
(``b_hat`` being the embedded lower-order weights). Dense output inside an accepted step is

    y(t + theta h) = y + h * sum_i b_i(theta) k_i,    b_i(theta) = sum_m P_im theta^(m+1),

so one small matrix ``P`` (``interp``) describes each method's own continuous extension.

Every tableau is checked when it is built (explicitness, row sums equal ``c``, ``sum(b) == 1``, FSAL
consistency, ``b(1) == b`` for the interpolant); the test-suite checks the order conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction as F
from typing import Optional, Sequence

import numpy as np

__all__ = ["ButcherTableau", "TABLEAUS", "get_tableau"]


def _as_array(rows) -> np.ndarray:
    return np.array([[float(x) for x in row] for row in rows], dtype=np.float64)


def check_stages(name: str, c: np.ndarray, a: np.ndarray, b: np.ndarray, tol: float) -> None:
    """What every Runge–Kutta tableau, explicit or implicit, must satisfy: one c, row of a and b per stage,
    row sums of a equal to c, and weights b summing to 1 (first-order consistency)."""
    s = len(b)
    if c.shape != (s,) or a.shape != (s, s):
        raise ValueError(f"tableau {name!r}: c, a and b must describe the same number of stages")
    if np.max(np.abs(a.sum(axis=1) - c)) > tol:
        raise ValueError(f"tableau {name!r}: row sums of a must equal c")
    if abs(b.sum() - 1.0) > tol:
        raise ValueError(f"tableau {name!r}: the weights b must sum to 1")


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """An explicit Runge–Kutta method: with ``k_i = f(t + c_i h, y + h Σ_{j<i} a_ij k_j)``, a step is
    ``y_1 = y + h Σ_i b_i k_i`` and, for adaptive methods, its error estimate ``h Σ_i (b_i - b̂_i) k_i``
    (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1, §II.4).

    Args:
        name: the method's name.
        c: nodes, length ``s``.
        a: strictly lower-triangular ``s x s`` coupling matrix (ragged rows are padded with zeros).
        b: solution weights, length ``s``.
        order: classical order of ``b``.
        b_error: ``b - b_hat`` for adaptive methods, ``None`` for fixed-step ones.
        error_order: order of the embedded ``b_hat`` (sets the step-size controller's exponent).
        fsal: the last stage equals ``f(t + h, y_1)``, so it is the next step's first stage.
        interp: dense-output coefficients ``P`` (``s x m``), or ``None`` for cubic Hermite
            interpolation from the end-point values and slopes.
    """

    name: str
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    order: int
    b_error: Optional[np.ndarray] = None
    error_order: Optional[int] = None
    fsal: bool = False
    interp: Optional[np.ndarray] = None
    _tol: float = field(default=1e-12, repr=False)

    def __post_init__(self):
        s = len(self.b)
        c = np.asarray(self.c, dtype=np.float64)
        b = np.asarray(self.b, dtype=np.float64)
        a = np.zeros((s, s))
        for i, row in enumerate(self.a):
            row = np.asarray(row, dtype=np.float64)
            a[i, : len(row)] = row
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "a", a)
        if self.b_error is not None:
            object.__setattr__(self, "b_error", np.asarray(self.b_error, dtype=np.float64))
        if self.interp is not None:
            object.__setattr__(self, "interp", np.asarray(self.interp, dtype=np.float64))
        self._validate()

    def _validate(self) -> None:
        s, tol, name = len(self.b), self._tol, self.name
        check_stages(name, self.c, self.a, self.b, tol)
        if np.any(np.triu(self.a) != 0):
            raise ValueError(f"tableau {name!r}: a must be strictly lower triangular (explicit method)")
        if self.order < 1:
            raise ValueError(f"tableau {name!r}: order must be >= 1")
        if self.b_error is not None:
            if self.b_error.shape != (s,):
                raise ValueError(f"tableau {name!r}: b_error must have one entry per stage")
            if abs(self.b_error.sum()) > tol:
                raise ValueError(f"tableau {name!r}: b - b_hat must sum to 0 (both weight sets sum to 1)")
            if self.error_order is None:
                raise ValueError(f"tableau {name!r}: an adaptive tableau needs error_order")
        if self.fsal and (abs(self.c[-1] - 1.0) > tol or np.max(np.abs(self.a[-1] - self.b)) > tol):
            raise ValueError(f"tableau {name!r}: FSAL needs c[-1] == 1 and a[-1] == b")
        if self.interp is not None:
            if self.interp.shape[0] != s:
                raise ValueError(f"tableau {name!r}: interp needs one row per stage")
            if np.max(np.abs(self.interp.sum(axis=1) - self.b)) > 1e-10:
                raise ValueError(f"tableau {name!r}: the interpolant must reproduce b at theta = 1")

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def interp_weights(self, theta: float) -> np.ndarray:
        """The dense-output weights ``b_i(theta)`` (requires ``interp``)."""
        powers = theta ** np.arange(1, self.interp.shape[1] + 1)
        return self.interp @ powers

    def __repr__(self) -> str:
        kind = f"adaptive {self.order}({self.error_order})" if self.adaptive else f"fixed order {self.order}"
        return f"ButcherTableau({self.name!r}, {self.stages} stages, {kind})"


def _poly_product(*factors: Sequence[float]) -> np.ndarray:
    """Coefficients (ascending powers) of a product of polynomials in ascending-power form."""
    out = np.array([1.0])
    for f in factors:
        out = np.convolve(out, np.asarray(f, dtype=np.float64))
    return out


def _stage_polys_to_interp(polys: Sequence[np.ndarray], degree: int) -> np.ndarray:
    """Stack ascending-power polynomials b_i(theta) with zero constant term into P (s x degree)."""
    P = np.zeros((len(polys), degree))
    for i, p in enumerate(polys):
        p = np.asarray(p, dtype=np.float64)
        if abs(p[0]) > 1e-14:
            raise ValueError("dense-output polynomials must vanish at theta = 0")
        P[i, : len(p) - 1] = p[1:]
    return P


def _hermite_interp(b: np.ndarray, first: int, last: int) -> np.ndarray:
    """Cubic Hermite dense output written in stage form (needs k_first = f(t, y), k_last = f(t+h, y1)).

    y(theta) = y0 + h01(theta) (y1 - y0) + h [h10(theta) f0 + h11(theta) f1], with
    h01 = 3θ² - 2θ³, h10 = θ - 2θ² + θ³, h11 = θ³ - θ².
    """
    s = len(b)
    P = np.zeros((s, 3))
    P += np.outer(b, [0.0, 3.0, -2.0])
    P[first] += [1.0, -2.0, 1.0]
    P[last] += [0.0, -1.0, 1.0]
    return P


# ---------------------------------------------------------------------------------------------------
# Fixed-step methods.

EULER = ButcherTableau(name="euler", c=[0], a=[[]], b=[1], order=1)

MIDPOINT = ButcherTableau(name="midpoint", c=[0, F(1, 2)], a=[[], [F(1, 2)]], b=[0, 1], order=2)

# Heun's second-order method (explicit trapezoidal rule).
HEUN = ButcherTableau(name="heun", c=[0, 1], a=[[], [1]], b=[F(1, 2), F(1, 2)], order=2)

# The classical fourth-order method of Kutta (1901).
RK4 = ButcherTableau(
    name="rk4",
    c=[0, F(1, 2), F(1, 2), 1],
    a=[[], [F(1, 2)], [0, F(1, 2)], [0, 0, 1]],
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    order=4,
)

# ---------------------------------------------------------------------------------------------------
# Bogacki & Shampine (1989), "A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 2(4).
_BOSH3_B = [F(2, 9), F(1, 3), F(4, 9), 0]
_BOSH3_BHAT = [F(7, 24), F(1, 4), F(1, 3), F(1, 8)]
BOSH3 = ButcherTableau(
    name="bosh3",
    c=[0, F(1, 2), F(3, 4), 1],
    a=[[], [F(1, 2)], [0, F(3, 4)], _BOSH3_B[:3]],
    b=_BOSH3_B,
    order=3,
    b_error=[x - y for x, y in zip(_BOSH3_B, _BOSH3_BHAT)],
    error_order=2,
    fsal=True,
    interp=_hermite_interp(np.array([float(x) for x in _BOSH3_B]), first=0, last=3),
)

# ---------------------------------------------------------------------------------------------------
# Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae", J. Comp. Appl. Math. 6(1).
_DP_B = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_DP_BHAT = [F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)]
# Shampine's continuous extension as used in Hairer, Nørsett & Wanner's DOPRI5 (dense output "d").
_DP_D = np.array([
    -12715105075 / 11282082432, 0.0, 87487479700 / 32700410799, -10690763975 / 1880347072,
    701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423,
])


def _dopri5_interp() -> np.ndarray:
    # y(θ) = y0 + θ·Δ + θ(1-θ)·(h f0 - Δ) + θ²(1-θ)·(2Δ - h f0 - h f1) + θ²(1-θ)²·h Σ d_i k_i,
    # with Δ = y1 - y0 = h Σ b_i k_i, rewritten per stage.
    b = np.array([float(x) for x in _DP_B])
    e1, e7 = np.eye(7)[0], np.eye(7)[6]
    terms = [
        (b, _poly_product([0, 1])),
        (e1 - b, _poly_product([0, 1], [1, -1])),
        (2 * b - e1 - e7, _poly_product([0, 0, 1], [1, -1])),
        (_DP_D, _poly_product([0, 0, 1], [1, -1], [1, -1])),
    ]
    polys = [sum(np.pad(p, (0, 5 - len(p))) * vec[i] for vec, p in terms) for i in range(7)]
    return _stage_polys_to_interp(polys, degree=4)


DOPRI5 = ButcherTableau(
    name="dopri5",
    c=[0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    a=[
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _DP_B[:6],
    ],
    b=_DP_B,
    order=5,
    b_error=[x - y for x, y in zip(_DP_B, _DP_BHAT)],
    error_order=4,
    fsal=True,
    interp=_dopri5_interp(),
)

# ---------------------------------------------------------------------------------------------------
# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column simplifying
# assumption", Comput. Math. Appl. 62(2). Coefficients to double precision, as published.
_TS_B = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
         2.324710524099774, 0.0]
_TS_BERR = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
            0.5823571654525552, -0.45808210592918697, 1.0 / 66.0]


def _tsit5_interp() -> np.ndarray:
    # Tsitouras' own quartic continuous extension b_i(θ), in factored form.
    polys = [
        -1.0530884977290216 * _poly_product([0, 1], [-1.3299890189751412, 1],
                                            [0.7139816917074209, -1.4364028541716351, 1]),
        0.1017 * _poly_product([0, 0, 1], [1.2949852507374631, -2.1966568338249754, 1]),
        2.490627285651252793 * _poly_product([0, 0, 1], [1.57803468208092486, -2.38535645472061657, 1]),
        -16.54810288924490272 * _poly_product([0, 0, 1], [-1.21712927295533244, 1], [-0.61620406037800089, 1]),
        47.37952196281928122 * _poly_product([0, 0, 1], [-1.203071208372362603, 1], [-0.658047292653547382, 1]),
        -34.87065786149660974 * _poly_product([0, 0, 1], [-1.2, 1], [-0.666666666666666667, 1]),
        2.5 * _poly_product([0, 0, 1], [-1, 1], [-0.6, 1]),
    ]
    return _stage_polys_to_interp(polys, degree=4)


TSIT5 = ButcherTableau(
    name="tsit5",
    c=[0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1],
    a=[
        [],
        [0.161],
        [-0.008480655492356989, 0.335480655492357],
        [2.897153057105493, -6.359448489975075, 4.3622954328695815],
        [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
        [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383],
        _TS_B[:6],
    ],
    b=_TS_B,
    order=5,
    b_error=_TS_BERR,
    error_order=4,
    fsal=True,
    interp=_tsit5_interp(),
    _tol=1e-10,  # the published coefficients are rounded to double precision
)

from .more_tableaus import MORE_TABLEAUS  # noqa: E402 - they are built with ButcherTableau above

TABLEAUS = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5, *MORE_TABLEAUS)}
FIXED_STEP = tuple(n for n, t in TABLEAUS.items() if not t.adaptive)
ADAPTIVE = tuple(n for n, t in TABLEAUS.items() if t.adaptive)


def get_tableau(method) -> ButcherTableau:
    """Resolve a method name or a :class:`ButcherTableau` to a tableau."""
    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str):
        try:
            return TABLEAUS[method]
        except KeyError:
            raise ValueError(
                f"method={method!r} is not known; choose one of fixed-step {list(FIXED_STEP)}, adaptive {list(ADAPTIVE)}, a pyjode.ButcherTableau, "
                f"or pyjode.Reversible(base)"
            ) from None
    raise TypeError(
        f"method must be a method name, a pyjode.ButcherTableau or pyjode.Reversible(...), got {type(method).__name__}"
    )
