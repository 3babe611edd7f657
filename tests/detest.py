"""The non-stiff DETEST problems, classes A-E, as torch vector fields with reference solutions.

Reference: T. E. Hull, W. H. Enright, B. M. Fellen and A. E. Sedgwick, "Comparing numerical methods for
ordinary differential equations", SIAM J. Numer. Anal. 9(4):603-637, 1972 (the problem set, with the
planetary data of C5 and the eccentricities of class D, as also restated by W. H. Enright and
J. D. Pryce, "Two FORTRAN packages for assessing initial value methods", ACM TOMS 13(1):1-27, 1987).

Every problem is integrated from t = 0 to t = 20, as in the paper. Class A is scalar, B small systems,
C moderate systems (10 to 51 equations), D the Kepler orbit at five eccentricities, E second-order
equations written as first-order systems (position, velocity). Class F (discontinuous fields) is left
out: it tests event handling, which no solver compared here does.

Each :class:`Problem` has

* ``field(t, y)``: dy/dt written with torch operations on the last dimension of ``y``, so it works in
  float64 and float32 alike (constants are Python floats or follow ``y``'s dtype and device) and on a
  batch of states;
* ``y0``: the initial state, a float64 vector (cast it for other dtypes);
* ``reference(n_out)``: the float64 solution at ``output_times(n_out)``, from a closed form where one
  exists and otherwise from scipy's DOP853 at rtol 1e-13 (atol 1e-13 times the state's scale), computed
  once per process and cached. The closed forms agree with that DOP853 solve to 7e-11 or better.

:func:`solve` runs one problem through pyjode or torchdiffeq and returns its error
(:func:`relative_error`) and evaluation count; ``tests/test_detest.py`` and
``benchmarks/bench_detest.py`` both use it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
import torch

__all__ = ["Problem", "PROBLEMS", "T_END", "output_times", "relative_error"]

T_END = 20.0
F64 = torch.float64


@dataclass(frozen=True)
class Problem:
    """One DETEST problem: y' = field(t, y), y(0) = y0 on [0, T_END]."""

    name: str
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: torch.Tensor
    #: closed-form solution at an array of times, shape (len(t), dim); None when there is none
    exact: Optional[Callable[[np.ndarray], np.ndarray]] = None

    @property
    def dim(self) -> int:
        return self.y0.shape[-1]

    def reference(self, n_out: int = 21) -> torch.Tensor:
        """The float64 solution at ``output_times(n_out)``, shape (n_out, dim)."""
        return torch.from_numpy(_reference(self.name, n_out)).clone()


def output_times(n_out: int = 21, dtype=F64) -> torch.Tensor:
    """Equally spaced output times from 0 to T_END (both included)."""
    return torch.linspace(0.0, T_END, n_out, dtype=dtype)


def relative_error(ys: torch.Tensor, ref: torch.Tensor) -> float:
    """max over output times t_k of  max_i |y_i(t_k) - ref_i(t_k)| / (1 + max_i |ref_i(t_k)|).

    A mixed absolute/relative measure, the norm-wise counterpart of ``rtol = atol``: relative where the
    solution is large (C5's planets sit at distances up to 35), absolute where it decays to zero (A1, C3).
    """
    ys = ys.detach().to(F64).reshape(ref.shape)
    num = (ys - ref).abs().amax(dim=-1)
    den = 1.0 + ref.abs().amax(dim=-1)
    return float((num / den).max())


def _stack(*cols: torch.Tensor) -> torch.Tensor:
    return torch.stack(cols, dim=-1)


def _vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _first(dim: int) -> torch.Tensor:
    """(1, 0, ..., 0): the initial state of class C's chains."""
    y0 = torch.zeros(dim, dtype=F64)
    y0[0] = 1.0
    return y0


# ----------------------------------------------------------------------------------------------- class A


def a1(t, y):
    """A1: y' = -y, y(0) = 1; y = exp(-t)."""
    return -y


def a2(t, y):
    """A2: y' = -y^3 / 2, y(0) = 1; y = 1 / sqrt(t + 1)."""
    return -0.5 * y**3


def a3(t, y):
    """A3: y' = y cos t, y(0) = 1; y = exp(sin t)."""
    return y * torch.cos(t)


def a4(t, y):
    """A4: y' = (y / 4)(1 - y / 20), y(0) = 1 (logistic growth); y = 20 / (1 + 19 exp(-t / 4))."""
    return 0.25 * y * (1.0 - y / 20.0)


def a5(t, y):
    """A5: y' = (y - t) / (y + t), y(0) = 4 (a spiral in polar form; no closed form used)."""
    return (y - t) / (y + t)


# ----------------------------------------------------------------------------------------------- class B


def b1(t, y):
    """B1 (Lotka-Volterra): y1' = 2 (y1 - y1 y2), y2' = -(y2 - y1 y2); y(0) = (1, 3)."""
    y1, y2 = y[..., 0], y[..., 1]
    return _stack(2.0 * (y1 - y1 * y2), -(y2 - y1 * y2))


def b2(t, y):
    """B2 (linear): y1' = -y1 + y2, y2' = y1 - 2 y2 + y3, y3' = y2 - y3; y(0) = (2, 0, 1)."""
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack(-y1 + y2, y1 - 2.0 * y2 + y3, y2 - y3)


def b3(t, y):
    """B3 (nonlinear chemical reaction): y1' = -y1, y2' = y1 - y2^2, y3' = y2^2; y(0) = (1, 0, 0)."""
    y1, y2 = y[..., 0], y[..., 1]
    return _stack(-y1, y1 - y2 * y2, y2 * y2)


def b4(t, y):
    """B4: with r = sqrt(y1^2 + y2^2): y1' = -y2 - y1 y3 / r, y2' = y1 - y2 y3 / r, y3' = y1 / r;
    y(0) = (3, 0, 0)."""
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r = torch.sqrt(y1 * y1 + y2 * y2)
    return _stack(-y2 - y1 * y3 / r, y1 - y2 * y3 / r, y1 / r)


def b5(t, y):
    """B5 (Euler's equations of a rigid body): y1' = y2 y3, y2' = -y1 y3, y3' = -0.51 y1 y2;
    y(0) = (0, 1, 1)."""
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack(y2 * y3, -y1 * y3, -0.51 * y1 * y2)


# ----------------------------------------------------------------------------------------------- class C


def c1(t, y):
    """C1 (radioactive decay chain, 10 equations): y1' = -y1, yi' = y(i-1) - yi for i = 2..9,
    y10' = y9; y(0) = (1, 0, ..., 0)."""
    gain = torch.cat([torch.zeros_like(y[..., :1]), y[..., :-1]], dim=-1)
    loss = torch.cat([y[..., :-1], torch.zeros_like(y[..., :1])], dim=-1)
    return gain - loss


def c2(t, y):
    """C2 (10 equations): y1' = -y1, yi' = (i-1) y(i-1) - i yi for i = 2..9, y10' = 9 y9;
    y(0) = (1, 0, ..., 0)."""
    rate = torch.arange(1, 11, dtype=y.dtype, device=y.device)
    rate[-1] = 0.0  # the last species only gains
    flow = rate * y  # flow out of species i, into species i + 1
    return torch.cat([torch.zeros_like(flow[..., :1]), flow[..., :-1]], dim=-1) - flow


def _tridiagonal(t, y):
    zero = torch.zeros_like(y[..., :1])
    left = torch.cat([zero, y[..., :-1]], dim=-1)
    right = torch.cat([y[..., 1:], zero], dim=-1)
    return left - 2.0 * y + right


def c3(t, y):
    """C3 (10 equations, the discrete heat equation): y1' = -2 y1 + y2,
    yi' = y(i-1) - 2 yi + y(i+1) for i = 2..9, y10' = y9 - 2 y10; y(0) = (1, 0, ..., 0)."""
    return _tridiagonal(t, y)


def c4(t, y):
    """C4: C3 with 51 equations; y(0) = (1, 0, ..., 0)."""
    return _tridiagonal(t, y)


# C5: the five outer planets (Jupiter, Saturn, Uranus, Neptune, Pluto) about the sun, in the paper's
# units: masses relative to the sun (m0 includes the inner planets), lengths in AU, time in units of
# 100 days (hence k2 = 10^4 x the Gaussian constant squared).
_C5_K2 = 2.95912208286
_C5_M0 = 1.00000597682
_C5_M = (0.954786104043e-3, 0.285583733151e-3, 0.437273164546e-4, 0.517759138449e-4, 0.277777777778e-5)
_C5_Q0 = (3.42947415189, 3.35386959711, 1.35494901715,
          6.64145542550, 5.97156957878, 2.18231499728,
          11.2630437207, 14.6952576794, 6.27960525067,
          -30.1552268759, 1.65699966404, 1.43785752721,
          -21.1238353380, 28.4465098142, 15.3882659679)
_C5_V0 = (-0.557160570446, 0.505696783289, 0.230578543901,
          -0.415570776342, 0.365682722812, 0.169143213293,
          -0.325325669158, 0.189706021964, 0.0877265322780,
          -0.0240476254170, -0.287659532608, -0.117219543175,
          -0.176860753121, -0.216393453025, -0.0148647893090)


@functools.lru_cache(maxsize=None)
def _c5_constants(dtype, device):
    """Masses and the identity as tensors, made once per dtype and device rather than every call."""
    return (torch.tensor(_C5_M, dtype=dtype, device=device),
            torch.eye(5, dtype=dtype, device=device))


def c5(t, y):
    """C5 (five-body problem, 30 equations): for planet i = 1..5 with position y_i in R^3,
        y_i'' = k2 ( -(m0 + m_i) y_i / r_i^3 + sum_{j != i} m_j ((y_j - y_i) / d_ij^3 - y_j / r_j^3) ),
    r_i = |y_i|, d_ij = |y_i - y_j|, k2 = 2.95912208286, m0 = 1.00000597682 and m_1..m_5 as in the
    paper; state (positions of the five planets, then their velocities), initial values from the paper.
    """
    m, eye = _c5_constants(y.dtype, y.device)
    batch = y.shape[:-1]
    q = y[..., :15].reshape(*batch, 5, 3)
    v = y[..., 15:]
    r3 = q.pow(2).sum(-1).pow(1.5)  # (..., 5)
    diff = q.unsqueeze(-3) - q.unsqueeze(-2)  # [..., i, j, :] = y_j - y_i
    # the diagonal (j = i) has diff = 0, so adding the identity to d^3 makes its term 0 without a mask
    d3 = diff.pow(2).sum(-1).pow(1.5) + eye
    direct = ((m / d3).unsqueeze(-1) * diff).sum(-2)  # sum_j m_j (y_j - y_i) / d_ij^3
    indirect = ((m / r3).unsqueeze(-1) * q).sum(-2, keepdim=True)  # sum over all j of m_j y_j / r_j^3
    # -(m0 + m_i) y_i / r_i^3 - sum_{j != i} m_j y_j / r_j^3 = -m0 y_i / r_i^3 - sum_j m_j y_j / r_j^3
    acc = _C5_K2 * (-_C5_M0 * q / r3.unsqueeze(-1) + direct - indirect)
    return torch.cat([v, acc.reshape(*batch, 15)], dim=-1)


# ----------------------------------------------------------------------------------------------- class D


def kepler(t, y):
    """Class D (the two-body orbit): y1'' = -y1 / r^3, y2'' = -y2 / r^3, r = sqrt(y1^2 + y2^2);
    y(0) = (1 - e, 0), y'(0) = (0, sqrt((1 + e) / (1 - e))), for eccentricity e = 0.1, 0.3, 0.5, 0.7, 0.9
    (D1..D5). State (y1, y2, y1', y2'). Closed form: y1 = cos u - e, y2 = sqrt(1 - e^2) sin u with
    u - e sin u = t (Kepler's equation)."""
    y1, y2 = y[..., 0], y[..., 1]
    r3 = (y1 * y1 + y2 * y2).pow(1.5)
    return _stack(y[..., 2], y[..., 3], -y1 / r3, -y2 / r3)


def _kepler_exact(e: float) -> Callable[[np.ndarray], np.ndarray]:
    def exact(t):
        # Newton on u - e sin u = t from u = t + e sin t (< 60 iterations even at e = 0.9); the residual
        # is then at rounding level, and the closed form follows
        u = t + e * np.sin(t)
        for _ in range(60):
            u = u - (u - e * np.sin(u) - t) / (1.0 - e * np.cos(u))
        assert np.max(np.abs(u - e * np.sin(u) - t)) < 1e-13
        s = math.sqrt(1.0 - e * e)
        den = 1.0 - e * np.cos(u)
        return np.stack([np.cos(u) - e, s * np.sin(u), -np.sin(u) / den, s * np.cos(u) / den], axis=-1)

    return exact


def _kepler_y0(e: float) -> torch.Tensor:
    return _vec(1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e)))


# ----------------------------------------------------------------------------------------------- class E


def e1(t, y):
    """E1 (Bessel's equation of order 1/2 in x = t + 1): y'' + y' / (t + 1) + (1 - 0.25 / (t + 1)^2) y = 0,
    y(0) = J_{1/2}(1) = 0.6713967071418030, y'(0) = 0.09540051444747446;
    y = sqrt(2 / (pi (t + 1))) sin(t + 1)."""
    x = t + 1.0
    pos, vel = y[..., 0], y[..., 1]
    return _stack(vel, -(vel / x + (1.0 - 0.25 / (x * x)) * pos))


def e2(t, y):
    """E2 (van der Pol): y'' = (1 - y^2) y' - y, y(0) = 2, y'(0) = 0."""
    pos, vel = y[..., 0], y[..., 1]
    return _stack(vel, (1.0 - pos * pos) * vel - pos)


def e3(t, y):
    """E3 (forced Duffing): y'' = y^3 / 6 - y + 2 sin(2.78535 t), y(0) = 0, y'(0) = 0."""
    pos, vel = y[..., 0], y[..., 1]
    return _stack(vel, pos**3 / 6.0 - pos + 2.0 * torch.sin(2.78535 * t))


def e4(t, y):
    """E4: y'' = 0.032 - 0.4 (y')^2, y(0) = 30, y'(0) = 0;
    y' = sqrt(0.08) tanh(sqrt(0.0128) t), y = 30 + ln cosh(sqrt(0.0128) t) / 0.4."""
    vel = y[..., 1]
    return _stack(vel, 0.032 - 0.4 * vel * vel)


def e5(t, y):
    """E5: y'' = sqrt(1 + (y')^2) / (25 - t), y(0) = 0, y'(0) = 0;
    y' = (25 / (25 - t) - (25 - t) / 25) / 2, y = (25 ln(25 / (25 - t)) + ((25 - t)^2 - 625) / 50) / 2."""
    vel = y[..., 1]
    return _stack(vel, torch.sqrt(1.0 + vel * vel) / (25.0 - t))


# --------------------------------------------------------------------------------------- closed forms


def _cols(*cols):
    return np.stack(cols, axis=-1)


def _c1_exact(t):
    # a Poisson process: yi = exp(-t) t^(i-1) / (i-1)! for i <= 9, and y10 holds the rest
    head = np.stack([np.exp(-t) * t**k / math.factorial(k) for k in range(9)], axis=-1)
    return np.concatenate([head, 1.0 - head.sum(-1, keepdims=True)], axis=-1)


def _c2_exact(t):
    # a pure-birth (Yule) process: yi = exp(-t) (1 - exp(-t))^(i-1) for i <= 9, y10 = (1 - exp(-t))^9
    p = 1.0 - np.exp(-t)
    head = np.stack([np.exp(-t) * p**k for k in range(9)], axis=-1)
    return np.concatenate([head, (p**9)[..., None]], axis=-1)


def _linear_exact(matrix: np.ndarray, y0: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """y(t) = expm(t A) y0 for a constant matrix A."""

    def exact(t):
        from scipy.linalg import expm

        return np.stack([expm(tk * matrix) @ y0 for tk in t])

    return exact


def _tridiagonal_matrix(n: int) -> np.ndarray:
    return -2.0 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)


_B2_MATRIX = np.array([[-1.0, 1.0, 0.0], [1.0, -2.0, 1.0], [0.0, 1.0, -1.0]])
_SQ_AB = math.sqrt(0.032 * 0.4)


def _e5_exact(t):
    s = 25.0 - t
    return _cols(0.5 * (25.0 * np.log(25.0 / s) + (s * s - 625.0) / 50.0), 0.5 * (25.0 / s - s / 25.0))


PROBLEMS: Dict[str, Problem] = {p.name: p for p in [
    Problem("A1", a1, _vec(1.0), lambda t: _cols(np.exp(-t))),
    Problem("A2", a2, _vec(1.0), lambda t: _cols(1.0 / np.sqrt(t + 1.0))),
    Problem("A3", a3, _vec(1.0), lambda t: _cols(np.exp(np.sin(t)))),
    Problem("A4", a4, _vec(1.0), lambda t: _cols(20.0 / (1.0 + 19.0 * np.exp(-t / 4.0)))),
    Problem("A5", a5, _vec(4.0)),
    Problem("B1", b1, _vec(1.0, 3.0)),
    Problem("B2", b2, _vec(2.0, 0.0, 1.0), _linear_exact(_B2_MATRIX, np.array([2.0, 0.0, 1.0]))),
    Problem("B3", b3, _vec(1.0, 0.0, 0.0)),
    Problem("B4", b4, _vec(3.0, 0.0, 0.0)),
    Problem("B5", b5, _vec(0.0, 1.0, 1.0)),
    Problem("C1", c1, _first(10), _c1_exact),
    Problem("C2", c2, _first(10), _c2_exact),
    Problem("C3", c3, _first(10), _linear_exact(_tridiagonal_matrix(10), _first(10).numpy())),
    Problem("C4", c4, _first(51), _linear_exact(_tridiagonal_matrix(51), _first(51).numpy())),
    Problem("C5", c5, _vec(*_C5_Q0, *_C5_V0)),
    *[Problem(f"D{k}", kepler, _kepler_y0(e), _kepler_exact(e))
      for k, e in enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1)],
    Problem("E1", e1, _vec(0.6713967071418030, 0.09540051444747446),
            lambda t: _cols(np.sqrt(2.0 / (math.pi * (t + 1.0))) * np.sin(t + 1.0),
                            np.sqrt(2.0 / math.pi) * ((t + 1.0) ** -0.5 * np.cos(t + 1.0)
                                                      - 0.5 * (t + 1.0) ** -1.5 * np.sin(t + 1.0)))),
    Problem("E2", e2, _vec(2.0, 0.0)),
    Problem("E3", e3, _vec(0.0, 0.0)),
    Problem("E4", e4, _vec(30.0, 0.0),
            lambda t: _cols(30.0 + np.log(np.cosh(_SQ_AB * t)) / 0.4, math.sqrt(0.08) * np.tanh(_SQ_AB * t))),
    Problem("E5", e5, _vec(0.0, 0.0), _e5_exact),
]}


def tight_solve(problem: Problem, times: np.ndarray, rtol: float = 1e-13) -> np.ndarray:
    """scipy's DOP853 at rtol (atol = rtol times the initial state's scale), evaluated through the torch
    field in float64 so that the reference integrates exactly the equations the solvers see."""
    from scipy.integrate import solve_ivp

    def rhs(t, y):
        with torch.no_grad():
            return problem.field(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()

    scale = 1.0 + float(problem.y0.abs().max())
    sol = solve_ivp(rhs, (float(times[0]), float(times[-1])), problem.y0.numpy(), method="DOP853",
                    t_eval=times, rtol=rtol, atol=rtol * scale)
    if not sol.success:
        raise RuntimeError(f"reference solve of {problem.name} failed: {sol.message}")
    return sol.y.T


@functools.lru_cache(maxsize=None)
def _reference(name: str, n_out: int) -> np.ndarray:
    problem = PROBLEMS[name]
    times = output_times(n_out).numpy()
    if problem.exact is not None:
        return np.ascontiguousarray(problem.exact(times), dtype=np.float64)
    return tight_solve(problem, times)


# ------------------------------------------------------------------------------------------- solving


@dataclass
class Run:
    """One solve of one problem: its error (:func:`relative_error`), evaluations and, for pyjode, stats."""

    error: float
    nfe: int
    stats: Optional[object] = None


class _Counted:
    """Counts vector-field calls; the same wrapper for every library, so the counts compare."""

    def __init__(self, func):
        self.func, self.calls = func, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.func(t, y)


def solve(problem: Problem, library: str, method: str, tol: float, grad: bool, n_out: int = 21,
          dtype=F64) -> Run:
    """Solve ``problem`` with ``library`` ("pyjode" or "torchdiffeq") at rtol = atol = tol.

    ``grad=True`` solves with autograd recording from a ``y0`` that requires grad (the training path);
    ``grad=False`` under ``torch.no_grad()`` (the inference path, and every inner solve of the
    continuous adjoints). A failed solve (an exception, or a non-finite answer) has error ``inf``.
    """
    field = _Counted(problem.field)
    # a copy: .to() returns the shared float64 tensor itself, which must not start requiring grad
    y0 = problem.y0.to(dtype=dtype, copy=True).requires_grad_(grad)
    t = output_times(n_out, dtype)
    stats = None
    with torch.set_grad_enabled(grad):
        try:
            if library == "pyjode":
                import pyjode

                stats = pyjode.Stats()
                ys = pyjode.odeint(field, y0, t, method=method, rtol=tol, atol=tol, stats=stats)
            elif library == "torchdiffeq":
                import torchdiffeq

                _register_torchdiffeq_tsit5()
                ys = torchdiffeq.odeint(field, y0, t, method=method, rtol=tol, atol=tol)
            else:
                raise ValueError(f"library must be 'pyjode' or 'torchdiffeq', got {library!r}")
        except (RuntimeError, AssertionError):  # step-size underflow (torchdiffeq asserts), too many steps
            return Run(math.inf, field.calls, stats)
    error = relative_error(ys, problem.reference(n_out))
    return Run(error if math.isfinite(error) else math.inf, field.calls, stats)


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _register_torchdiffeq_tsit5() -> None:
    """torchdiffeq (0.2.5) has no tsit5. To compare like with like, its own adaptive Runge-Kutta solver
    (the class behind its dopri5 and bosh3: same controller, same quartic interpolation through the
    midpoint) is given Tsitouras' tableau and registered as "tsit5", unless torchdiffeq has one itself.
    The coefficients come from pyjode's tableau, whose order conditions tests/test_tableau.py checks."""
    import importlib

    td_odeint = importlib.import_module("torchdiffeq._impl.odeint")  # the module, not the function
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau

    if "tsit5" in td_odeint.SOLVERS:
        return
    from pyjode.tableau import TSIT5

    def tensor(values):
        return torch.tensor(np.asarray(values, dtype=np.float64), dtype=F64)

    class Tsit5Solver(RKAdaptiveStepsizeODESolver):
        order = TSIT5.order
        tableau = _ButcherTableau(
            alpha=tensor(TSIT5.c[1:]),
            beta=[tensor(TSIT5.a[i, :i]) for i in range(1, TSIT5.stages)],
            c_sol=tensor(TSIT5.b),
            c_error=tensor(TSIT5.b_error),  # torchdiffeq's convention too: b - b_hat
        )
        mid = tensor(TSIT5.interp_weights(0.5))  # y(t + h/2) = y + h sum_i mid_i k_i

    td_odeint.SOLVERS["tsit5"] = Tsit5Solver
