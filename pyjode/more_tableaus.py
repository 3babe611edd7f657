"""More explicit Runge–Kutta tableaus: low-order pairs, Heun's third-order method, and the 8(7) pair of
Prince & Dormand, each with its source.

* ``heun2``: Heun's second-order method (the explicit trapezoidal rule), Heun (1900), "Neue Methode zur
  approximativen Integration der Differentialgleichungen einer unabhängigen Veränderlichen",
  Z. Math. Phys. 45. Same tableau as ``heun``.
* ``rk4_38``: Kutta's 3/8 rule, Kutta (1901), "Beitrag zur näherungsweisen Integration totaler
  Differentialgleichungen", Z. Math. Phys. 46: c = (0, 1/3, 2/3, 1), b = (1, 3, 3, 1)/8 (torchdiffeq's "rk4").
* ``heun3``: Heun's third-order method, same paper: c = (0, 1/3, 2/3), b = (1/4, 0, 3/4).
* ``adaptive_heun``: the Heun–Euler 2(1) pair (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4): Heun's
  method with explicit Euler as the embedded solution. A third, first-same-as-last stage f(t + h, y_1)
  costs nothing (it is the next step's first stage) and gives cubic Hermite dense output.
* ``fehlberg2``: Fehlberg's RK1(2) pair, Fehlberg (1969), "Low-order classical Runge–Kutta formulas with
  stepsize control and their application to some heat transfer problems", NASA TR R-315, Table III:
  c = (0, 1/2, 1), a_31 = 1/256, a_32 = 255/256, b = (1/512, 255/256, 1/512), b_hat = (1/256, 255/256, 0).
* ``dopri8``: Prince & Dormand (1981), "High order embedded Runge–Kutta formulae", J. Comput. Appl. Math.
  7(1), the 13-stage pair RK8(7)13M, with its rational coefficients as published. A 14th, FSAL stage
  f(t + h, y_1) is appended (weight 0) so that the dense output has the end slope; the dense output is the
  quartic through y_0, y_1, f_0, f_1 and a sixth-order midpoint value y(t + h/2) = y_0 + h Σ m_i k_i (the
  midpoint weights of torchdiffeq's dopri8, checked against the quadrature conditions in the tests).
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np

from .tableau import ButcherTableau, _hermite_interp

__all__ = ["RK4_38", "HEUN2", "HEUN3", "ADAPTIVE_HEUN", "FEHLBERG2", "DOPRI8", "MORE_TABLEAUS"]

RK4_38 = ButcherTableau(
    name="rk4_38",
    c=[0, F(1, 3), F(2, 3), 1],
    a=[[], [F(1, 3)], [F(-1, 3), 1], [1, -1, 1]],
    b=[F(1, 8), F(3, 8), F(3, 8), F(1, 8)],
    order=4,
)

HEUN2 = ButcherTableau(name="heun2", c=[0, 1], a=[[], [1]], b=[F(1, 2), F(1, 2)], order=2)

HEUN3 = ButcherTableau(name="heun3", c=[0, F(1, 3), F(2, 3)], a=[[], [F(1, 3)], [0, F(2, 3)]],
                       b=[F(1, 4), 0, F(3, 4)], order=3)

_AH_B = [F(1, 2), F(1, 2), 0]
ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive_heun",
    c=[0, 1, 1],
    a=[[], [1], _AH_B[:2]],
    b=_AH_B,
    order=2,
    b_error=[F(1, 2) - 1, F(1, 2), 0],  # b - b_hat with b_hat = (1, 0, 0): explicit Euler
    error_order=1,
    fsal=True,
    interp=_hermite_interp(np.array([0.5, 0.5, 0.0]), first=0, last=2),
)

FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    c=[0, F(1, 2), 1],
    a=[[], [F(1, 2)], [F(1, 256), F(255, 256)]],
    b=[F(1, 512), F(255, 256), F(1, 512)],
    order=2,
    b_error=[F(1, 512) - F(1, 256), 0, F(1, 512)],
    error_order=1,
)

# --- Prince & Dormand RK8(7)13M -------------------------------------------------------------------------
_D8_C = [0, F(1, 18), F(1, 12), F(1, 8), F(5, 16), F(3, 8), F(59, 400), F(93, 200), F(5490023248, 9719169821),
         F(13, 20), F(1201146811, 1299019798), 1, 1]
_D8_A = [
    [],
    [F(1, 18)],
    [F(1, 48), F(1, 16)],
    [F(1, 32), 0, F(3, 32)],
    [F(5, 16), 0, F(-75, 64), F(75, 64)],
    [F(3, 80), 0, 0, F(3, 16), F(3, 20)],
    [F(29443841, 614563906), 0, 0, F(77736538, 692538347), F(-28693883, 1125000000), F(23124283, 1800000000)],
    [F(16016141, 946692911), 0, 0, F(61564180, 158732637), F(22789713, 633445777), F(545815736, 2771057229),
     F(-180193667, 1043307555)],
    [F(39632708, 573591083), 0, 0, F(-433636366, 683701615), F(-421739975, 2616292301),
     F(100302831, 723423059), F(790204164, 839813087), F(800635310, 3783071287)],
    [F(246121993, 1340847787), 0, 0, F(-37695042795, 15268766246), F(-309121744, 1061227803),
     F(-12992083, 490766935), F(6005943493, 2108947869), F(393006217, 1396673457), F(123872331, 1001029789)],
    [F(-1028468189, 846180014), 0, 0, F(8478235783, 508512852), F(1311729495, 1432422823),
     F(-10304129995, 1701304382), F(-48777925059, 3047939560), F(15336726248, 1032824649),
     F(-45442868181, 3398467696), F(3065993473, 597172653)],
    [F(185892177, 718116043), 0, 0, F(-3185094517, 667107341), F(-477755414, 1098053517),
     F(-703635378, 230739211), F(5731566787, 1027545527), F(5232866602, 850066563), F(-4093664535, 808688257),
     F(3962137247, 1805957418), F(65686358, 487910083)],
    [F(403863854, 491063109), 0, 0, F(-5068492393, 434740067), F(-411421997, 543043805),
     F(652783627, 914296604), F(11173962825, 925320556), F(-13158990841, 6184727034),
     F(3936647629, 1978049680), F(-160528059, 685178525), F(248638103, 1413531060), 0],
]
_D8_B = [F(14005451, 335480064), 0, 0, 0, 0, F(-59238493, 1068277825), F(181606767, 758867731),
         F(561292985, 797845732), F(-1041891430, 1371343529), F(760417239, 1151165299), F(118820643, 751138087),
         F(-528747749, 2220607170), F(1, 4)]
_D8_BHAT = [F(13451932, 455176623), 0, 0, 0, 0, F(-808719846, 976000145), F(1757004468, 5645159321),
            F(656045339, 265891186), F(-3867574721, 1518517206), F(465885868, 322736535),
            F(53011238, 667516719), F(2, 45), 0]
# Weights of the midpoint value y(t + h/2) = y0 + h sum m_i k_i (14 stages, the last the FSAL one).
_D8_MID = [0.04103130360739393, 0, 0, 0, 0, 0.05100562801991382, 0.2388930677412202, 0.3096870143996103,
           -0.2172325471755352, 0.07833405679331928, -0.0018614369715579948, 0.007072844202678841,
           0.00690847373200576, -0.013838404349047373]


def _quartic_interp(b, mid) -> np.ndarray:
    """Stage weights b_i(θ) = Σ_m P_im θ^m (m = 1..4) of the quartic p with p(0) = y0, p'(0) = h f0,
    p(1) = y1, p'(1) = h f1 (the last stage) and p(1/2) = the midpoint value."""
    s = len(b)
    conditions = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [1, 2, 3, 4], [1 / 2, 1 / 4, 1 / 8, 1 / 16]], dtype=float)
    values = np.stack([np.eye(s)[0], np.asarray(b, dtype=float), np.eye(s)[-1], np.asarray(mid, dtype=float)])
    return np.linalg.solve(conditions, values).T


_D8_B14 = _D8_B + [0]
DOPRI8 = ButcherTableau(
    name="dopri8",
    c=_D8_C + [1],
    a=_D8_A + [_D8_B],
    b=_D8_B14,
    order=8,
    b_error=[x - y for x, y in zip(_D8_B, _D8_BHAT)] + [0],
    error_order=7,
    fsal=True,
    interp=_quartic_interp([float(x) for x in _D8_B14], _D8_MID),
    _tol=1e-10,  # the published rational coefficients approximate the exact ones
)

MORE_TABLEAUS = (RK4_38, HEUN2, HEUN3, ADAPTIVE_HEUN, FEHLBERG2, DOPRI8)
