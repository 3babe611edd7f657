"""Butcher tableaus of implicit Runge–Kutta methods, as validated data.

An ``s``-stage implicit method advances ``y`` from ``t`` to ``t + h`` through the stage equations

    z_i = y + h * sum_j a_ij f(t + c_j h, z_j),    y_1 = y + h * sum_i b_i k_i,   k_i = f(t + c_i h, z_i),

with ``a`` lower triangular (a DIRK: one stage equation at a time; an ESDIRK when the first stage is
explicit, ``a_11 = 0``) or full (a fully implicit method: all stages at once).

Every tableau is checked when it is built (row sums equal ``c``, ``sum(b) == 1``, the dense output
reproduces ``b`` at ``theta = 1``, a collocation interpolant matches ``a`` at the nodes); the test-suite
checks the order conditions and the observed convergence orders. Dense output is written as in
:mod:`pyjode.tableau`, ``y(t + theta h) = y + h sum_i b_i(theta) k_i`` with ``b_i(theta) = sum_m P_im
theta^(m+1)``: collocation methods (Radau IIA, Gauss–Legendre, implicit Euler and midpoint, the
trapezoidal rule) use their collocation polynomial, ``b_i(theta) = int_0^theta l_i``; the ESDIRKs use cubic
Hermite interpolation from ``k_1 = f(t, y)`` and ``k_s = f(t + h, y_1)`` (``interp = None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .tableau import check_stages

__all__ = ["ImplicitTableau", "IMPLICIT_TABLEAUS", "collocation_interp"]


@dataclass(frozen=True, eq=False)
class ImplicitTableau:
    """An implicit Runge–Kutta method.

    Args:
        name: the method's name.
        c, a, b: nodes, the full ``s x s`` coupling matrix and the weights.
        order: classical order of ``b``.
        source: where the coefficients come from.
        b_error: ``b - b_hat`` of an embedded method (its local error estimate is ``h sum_i e_i k_i``).
        error_order: order of the embedded method.
        radau_error: ``(gamma0, e)`` of Hairer & Wanner's filtered estimate of Radau IIA
            (*Solving ODEs II*, §IV.8, eq. (8.20)): ``err = (I - h gamma0 J)^{-1} (gamma0 h f(t, y) +
            sum_i e_i (z_i - y))``.
        interp: dense-output coefficients ``P`` or ``None`` (cubic Hermite; needs an explicit first stage
            and a stiffly accurate last stage).
    """

    name: str
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    order: int
    source: str
    b_error: Optional[np.ndarray] = None
    error_order: Optional[int] = None
    radau_error: Optional[Tuple[float, np.ndarray]] = None
    interp: Optional[np.ndarray] = None
    _tol: float = field(default=1e-12, repr=False)

    def __post_init__(self):
        for name in ("c", "a", "b"):
            object.__setattr__(self, name, np.array(getattr(self, name), dtype=np.float64))
        if self.b_error is not None:
            object.__setattr__(self, "b_error", np.array(self.b_error, dtype=np.float64))
        if self.interp is not None:
            object.__setattr__(self, "interp", np.array(self.interp, dtype=np.float64))
        self._validate()

    def _validate(self) -> None:
        s, tol, name = len(self.b), self._tol, self.name
        check_stages(name, self.c, self.a, self.b, tol)
        if self.b_error is not None:
            if self.b_error.shape != (s,) or abs(self.b_error.sum()) > tol or self.error_order is None:
                raise ValueError(f"tableau {name!r}: b_error needs one entry per stage summing to 0, and error_order")
        if self.radau_error is not None and self.error_order is None:
            raise ValueError(f"tableau {name!r}: radau_error needs error_order")
        if self.diagonally_implicit:
            if np.any(np.diag(self.a)[1:] == 0):
                raise ValueError(f"tableau {name!r}: only the first stage of a DIRK may be explicit")
        elif abs(np.linalg.det(self.a)) < 1e-12:
            raise ValueError(f"tableau {name!r}: a fully implicit method needs an invertible a")
        if self.interp is None:
            if not (self.explicit_first_stage and self.stiffly_accurate):
                raise ValueError(f"tableau {name!r}: Hermite dense output needs an explicit first stage and a "
                                 f"stiffly accurate last stage; give interp")
        else:
            if self.interp.shape[0] != s or np.max(np.abs(self.interp.sum(axis=1) - self.b)) > 1e-10:
                raise ValueError(f"tableau {name!r}: interp needs one row per stage and must reproduce b at 1")

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        """Whether the method has a local error estimate."""
        return self.b_error is not None or self.radau_error is not None

    @property
    def diagonally_implicit(self) -> bool:
        return not np.any(np.triu(self.a, 1) != 0)

    @property
    def explicit_first_stage(self) -> bool:
        return self.c[0] == 0 and not np.any(self.a[0] != 0)

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` is the last row of ``a`` and ``c_s = 1``: ``y_1`` is the last stage, ``k_s = f(t + h, y_1)``."""
        return abs(self.c[-1] - 1.0) <= self._tol and np.max(np.abs(self.a[-1] - self.b)) <= self._tol

    def __repr__(self) -> str:
        kind = f"adaptive {self.order}({self.error_order})" if self.adaptive else f"order {self.order}"
        shape = "diagonally" if self.diagonally_implicit else "fully"
        return f"ImplicitTableau({self.name!r}, {self.stages} stages, {shape} implicit, {kind})"


def collocation_interp(c: np.ndarray) -> np.ndarray:
    """``P`` of the collocation polynomial on the nodes ``c``: ``b_i(theta) = int_0^theta l_i(tau) dtau``
    with ``l_i`` the Lagrange basis polynomials (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.7)."""
    c = np.asarray(c, dtype=np.float64)
    s = len(c)
    V = c[:, None] ** np.arange(s)[None, :]  # V[j, m] = c_j^m
    L = np.linalg.inv(V).T  # l_i(tau) = sum_m L[i, m] tau^m
    return L / np.arange(1, s + 1)[None, :]


def _collocation(name, c, order, source, **kw) -> ImplicitTableau:
    """A collocation method: ``a_ij = b_j(c_i)``, ``b_j = b_j(1)`` from its interpolant."""
    c = np.asarray(c, dtype=np.float64)
    P = collocation_interp(c)
    powers = c[:, None] ** np.arange(1, len(c) + 1)[None, :]
    a = powers @ P.T
    return ImplicitTableau(name=name, c=c, a=a, b=P.sum(axis=1), order=order, source=source, interp=P, **kw)


def _esdirk(name, gamma, rows, order, source) -> ImplicitTableau:
    """A stiffly accurate ESDIRK given its strictly lower rows (the diagonal is ``gamma`` after the explicit
    first stage); the embedded method is the stage before last (``c = 1`` too), as in Kværnø (2004)."""
    s = len(rows) + 1
    a = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        a[i, :len(row)] = row
        a[i, i] = gamma
    b = a[-1].copy()
    return ImplicitTableau(name=name, c=a.sum(axis=1), a=a, b=b, order=order, source=source,
                           b_error=b - a[-2], error_order=order - 1)


# ---------------------------------------------------------------------------------------------------
# Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit first stage", BIT 44 (2004),
# 489–502: A- and L-stable, stiffly accurate ESDIRKs of order 3, 4, 5 with embedded orders 2, 3, 4.
_KV = "Kværnø, BIT 44 (2004) 489–502"

# Order 3(2): gamma is the root in (0, 1) of 6 g^3 - 18 g^2 + 9 g - 1 (L-stability), ~0.4358665215.
_g3 = float(min(r.real for r in np.roots([6, -18, 9, -1]) if abs(r.imag) < 1e-12 and 0.4 < r.real < 0.5))
KVAERNO3 = _esdirk("kvaerno3", _g3, [
    [_g3],
    [(-4 * _g3 ** 2 + 6 * _g3 - 1) / (4 * _g3), (-2 * _g3 + 1) / (4 * _g3)],
    [(6 * _g3 - 1) / (12 * _g3), -1 / ((24 * _g3 - 12) * _g3), (-6 * _g3 ** 2 + 6 * _g3 - 1) / (6 * _g3 - 3)],
], 3, _KV)


def _kv4_rows(g: float):
    def p(*coeffs):
        return float(np.polyval(coeffs, g))

    q = p(12, -6, 1)
    return [
        [g],
        [p(144, -180, 81, -15, 1) * g / q ** 2, p(-36, 39, -15, 2) * g / q ** 2],
        [p(-144, 396, -330, 117, -18, 1) / (12 * g ** 2 * p(12, -9, 2)),
         p(72, -126, 69, -15, 1) / (12 * g ** 2 * p(3, -1)),
         p(-6, 6, -1) * q ** 2 / (12 * g ** 2 * p(12, -9, 2) * p(3, -1))],
        [p(288, -312, 120, -18, 1) / (48 * g ** 2 * p(12, -9, 2)),
         p(24, -12, 1) / (48 * g ** 2 * p(3, -1)),
         -q ** 3 / (48 * g ** 2 * p(3, -1) * p(12, -9, 2) * p(6, -6, 1)),
         p(-24, 36, -12, 1) / p(24, -24, 4)],
    ]


# Order 4(3): gamma = 0.5728160625 as published; the coefficients are the paper's rational functions of it.
KVAERNO4 = _esdirk("kvaerno4", 0.5728160625, _kv4_rows(0.5728160625), 4, _KV)

# Order 5(4): the published 17-digit coefficients, gamma = 0.26.
KVAERNO5 = _esdirk("kvaerno5", 0.26, [
    [0.26],
    [0.13, 0.84033320996790809],
    [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
    [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
    [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
    [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
     0.06962479448202728],
], 5, _KV)

# ---------------------------------------------------------------------------------------------------
# Collocation methods (Hairer & Wanner, *Solving ODEs II*, §IV.5, Tables 5.2, 5.5, 5.6).
_HW = "Hairer & Wanner, Solving ODEs II, §IV.5"
_s6, _s15 = math.sqrt(6.0), math.sqrt(15.0)

IMPLICIT_EULER = _collocation("implicit_euler", [1.0], 1, _HW + " (Radau IIA, s = 1)")
IMPLICIT_MIDPOINT = _collocation("implicit_midpoint", [0.5], 2, _HW + " (Gauss, s = 1)")
TRAPEZOID = _collocation("trapezoid", [0.0, 1.0], 2, _HW + " (Lobatto IIIA, s = 2)")
RADAU_IIA3 = _collocation("radauIIA3", [1 / 3, 1.0], 3, _HW + ", Table 5.5")
GL4 = _collocation("gl4", [0.5 - math.sqrt(3) / 6, 0.5 + math.sqrt(3) / 6], 4, _HW + ", Table 5.2")
GL6 = _collocation("gl6", [0.5 - _s15 / 10, 0.5, 0.5 + _s15 / 10], 6, _HW + ", Table 5.2")


def _radau5_error(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> Tuple[float, np.ndarray]:
    """Hairer & Wanner's embedded estimate of Radau IIA 5 (§IV.8): the order-3 method with weights
    ``(gamma0, b_hat)`` on ``(f(t, y), k_1, k_2, k_3)``, ``gamma0`` the real eigenvalue of ``a``, gives
    ``y_hat - y_1 = gamma0 h f(t, y) + e^T (Z - y)`` with ``e = (b_hat - b)^T a^{-1}``."""
    gamma0 = float(min(abs(v.real) for v in np.linalg.eigvals(a) if abs(v.imag) < 1e-12))
    # sum_i b_hat_i c_i^(q-1) + gamma0 [q = 1] = 1/q, q = 1, 2, 3
    V = np.stack([c ** q for q in range(3)])
    rhs = np.array([1.0 - gamma0, 1 / 2, 1 / 3])
    b_hat = np.linalg.solve(V, rhs)
    return gamma0, (b_hat - b) @ np.linalg.inv(a)


_R5 = _collocation("radauIIA5", [(4 - _s6) / 10, (4 + _s6) / 10, 1.0], 5, _HW + ", Table 5.6; error "
                   "estimate §IV.8 (8.20)")
RADAU_IIA5 = ImplicitTableau(name="radauIIA5", c=_R5.c, a=_R5.a, b=_R5.b, order=5, source=_R5.source,
                             radau_error=_radau5_error(_R5.c, _R5.a, _R5.b), error_order=3, interp=_R5.interp)

# ---------------------------------------------------------------------------------------------------
# The two DIRKs of torchdiffeq's implicit family.
_g2 = 1 - math.sqrt(2) / 2
# Alexander, "Diagonally implicit Runge–Kutta methods for stiff ODEs", SIAM J. Numer. Anal. 14 (1977): the
# L-stable 2-stage SDIRK of order 2. Its first stage is implicit, so its dense output is linear.
SDIRK2 = ImplicitTableau(name="sdirk2", c=[_g2, 1.0], a=[[_g2, 0.0], [1 - _g2, _g2]], b=[1 - _g2, _g2], order=2,
                         source="Alexander, SIAM J. Numer. Anal. 14 (1977) 1006–1021",
                         interp=[[1 - _g2], [_g2]])
# TR-BDF2 of Bank et al. (1985) in Hosea & Shampine's one-step ESDIRK form, Appl. Numer. Math. 20 (1996).
_d = math.sqrt(2) / 4
TRBDF2 = ImplicitTableau(name="trbdf2", c=[0.0, 2 * _g2, 1.0],
                         a=[[0.0, 0.0, 0.0], [_g2, _g2, 0.0], [_d, _d, _g2]], b=[_d, _d, _g2], order=2,
                         source="Hosea & Shampine, Appl. Numer. Math. 20 (1996) 21–37")

IMPLICIT_TABLEAUS = {t.name: t for t in (KVAERNO3, KVAERNO4, KVAERNO5, RADAU_IIA5, IMPLICIT_EULER, IMPLICIT_MIDPOINT,
                                         TRAPEZOID, RADAU_IIA3, GL4, GL6, SDIRK2, TRBDF2)}
