"""Butcher tableaus: validation on construction, order conditions, and dense-output order.

The order conditions are generated, not listed: for every rooted tree ``tau`` with ``|tau| <= p`` a
method of order ``p`` satisfies ``b . Phi(tau) = 1 / gamma(tau)`` (Butcher; Hairer, Nørsett & Wanner,
*Solving ODEs I*, §II.2, Theorem 2.13), where ``Phi(leaf) = 1`` and
``Phi([t_1, ..., t_m]) = prod_k A Phi(t_k)`` (componentwise product), ``gamma(tau) = |tau| prod_k
gamma(t_k)``. A continuous extension ``b(theta)`` has continuous order ``q`` when
``b(theta) . Phi(tau) = theta^|tau| / gamma(tau)`` for all ``|tau| <= q`` and all ``theta`` (ibid. §II.6).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
import torch

from pyjode.runge_kutta import RungeKutta
from pyjode.tableau import TABLEAUS, ButcherTableau, get_tableau

# ----------------------------------------------------------------------------------------------------
# Rooted trees, as canonical nested tuples: a tree is the sorted tuple of its children's trees.


@lru_cache(maxsize=None)
def trees(order: int) -> tuple:
    """All rooted trees with ``order`` vertices (1, 1, 2, 4, 9, 20, 48 for orders 1..7)."""
    if order == 1:
        return ((),)
    out = set()
    for smaller in trees(order - 1):
        out.update(_add_leaf_everywhere(smaller))
    return tuple(sorted(out))


def _add_leaf_everywhere(tree: tuple) -> set:
    grown = {tuple(sorted(tree + ((),)))}
    for i, child in enumerate(tree):
        for new_child in _add_leaf_everywhere(child):
            grown.add(tuple(sorted(tree[:i] + (new_child,) + tree[i + 1:])))
    return grown


def size(tree: tuple) -> int:
    return 1 + sum(size(c) for c in tree)


def density(tree: tuple) -> int:
    """gamma(tau)."""
    return size(tree) * math.prod(density(c) for c in tree)


def stage_weights(tree: tuple, a: np.ndarray) -> np.ndarray:
    """Phi(tau) as a vector over stages (the elementary weight is ``b . Phi``)."""
    out = np.ones(a.shape[0])
    for child in tree:
        out = out * (a @ stage_weights(child, a))
    return out


def order_residuals(b: np.ndarray, a: np.ndarray, order: int) -> list[float]:
    """``|b . Phi(tau) - 1/gamma(tau)|`` for every tree of exactly ``order`` vertices."""
    return [abs(b @ stage_weights(t, a) - 1.0 / density(t)) for t in trees(order)]


def satisfied_order(b: np.ndarray, a: np.ndarray, tol: float, up_to: int = 7) -> int:
    """The largest p with all order conditions 1..p satisfied to ``tol``."""
    p = 0
    while p < up_to and max(order_residuals(b, a, p + 1)) <= tol:
        p += 1
    return p


def test_tree_counts():
    # the numbers of rooted trees (OEIS A000081): the generator is the foundation of every check.
    assert [len(trees(n)) for n in range(1, 8)] == [1, 1, 2, 4, 9, 20, 48]


# Coefficients published as exact rationals satisfy the conditions to rounding; Tsitouras' are published
# to double precision, so their residuals are at the 1e-12 level.
def _tol(name: str) -> float:
    return 1e-11 if name == "tsit5" else 1e-13


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_b_has_declared_order_and_no_more(name):
    tab = TABLEAUS[name]
    for p in range(1, tab.order + 1):
        assert max(order_residuals(tab.b, tab.a, p)) <= _tol(name), f"order-{p} condition fails"
    # teeth: the next order's conditions are not all satisfied
    assert max(order_residuals(tab.b, tab.a, tab.order + 1)) > 1e-6


@pytest.mark.parametrize("name", [n for n, t in sorted(TABLEAUS.items()) if t.adaptive])
def test_embedded_weights_have_error_order(name):
    tab = TABLEAUS[name]
    b_hat = tab.b - tab.b_error
    assert satisfied_order(b_hat, tab.a, _tol(name)) == tab.error_order


@pytest.mark.parametrize("name", ["rk4", "bosh3", "dopri5", "tsit5"])
def test_perturbed_coefficient_breaks_the_order(name):
    """Moving one node (keeping the row sum consistent) must be caught by the generated conditions."""
    tab = TABLEAUS[name]
    a, c = tab.a.copy(), tab.c.copy()
    a[2, 1] += 1e-3
    c[2] += 1e-3
    broken = ButcherTableau(name="broken", c=c, a=a, b=tab.b, order=tab.order)  # still passes validation
    assert satisfied_order(broken.b, broken.a, 1e-9) < tab.order


# ----------------------------------------------------------------------------------------------------
# Continuous (dense-output) order.

CONTINUOUS_ORDER = {"bosh3": 3, "dopri5": 4, "tsit5": 4, "dopri8": 4}  # dopri8: quartic through a midpoint
THETAS = np.linspace(0.05, 0.95, 7)


def continuous_residual(tab: ButcherTableau, order: int) -> float:
    return max(
        abs(tab.interp_weights(th) @ stage_weights(t, tab.a) - th ** size(t) / density(t))
        for th in THETAS
        for t in trees(order)
    )


@pytest.mark.parametrize("name", sorted(CONTINUOUS_ORDER))
def test_dense_output_continuous_order_conditions(name):
    tab, q = TABLEAUS[name], CONTINUOUS_ORDER[name]
    for p in range(1, q + 1):
        assert continuous_residual(tab, p) <= 1e-10, f"continuous order-{p} condition fails"
    assert continuous_residual(tab, q + 1) > 1e-6


@pytest.mark.parametrize("name", sorted(CONTINUOUS_ORDER))
def test_dense_output_local_error_rate(name):
    """One step from the exact solution of the logistic equation y' = y (1 - y): the interpolation
    error inside the step is O(h^(q+1)) for continuous order q."""
    tab, q = TABLEAUS[name], CONTINUOUS_ORDER[name]
    exact = lambda t: 1.0 / (1.0 + (1.0 / 1.3 - 1.0) * math.exp(-t))  # noqa: E731  y(0) = 1.3
    field = lambda t, y: y * (1 - y)  # noqa: E731
    time = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    stepper = RungeKutta(tab, torch.zeros(1, dtype=torch.float64))
    t0 = 0.3
    y_start = torch.tensor([exact(t0)], dtype=torch.float64)
    # dopri8's quartic interpolates a sixth-order midpoint value, so theta = 1/2 converges faster
    for theta in (0.37, 0.8) if name == "dopri8" else (0.37, 0.5, 0.8):
        errors = []
        for h in [0.4 / 2 ** k for k in range(5)]:
            _, K = stepper.advance(field, t0, h, y_start, None, time)
            errors.append(float((stepper.dense(y_start, K, h, theta) - exact(t0 + theta * h)).abs()))
        rate = math.log2(errors[-2] / errors[-1])
        assert abs(rate - (q + 1)) < 0.2, (theta, errors)
    many = stepper.dense_many(y_start, K, h, [0.37, 0.8])
    torch.testing.assert_close(many[1], stepper.dense(y_start, K, h, 0.8), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(CONTINUOUS_ORDER))
def test_dense_output_ends(name):
    tab = TABLEAUS[name]
    np.testing.assert_allclose(tab.interp_weights(0.0), 0.0, atol=1e-15)
    np.testing.assert_allclose(tab.interp_weights(1.0), tab.b, atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# Validation on construction.

GOOD = dict(name="t", c=[0, 0.5], a=[[], [0.5]], b=[0, 1], order=2)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(c=[0, 0.4]), "row sums"),
        (dict(b=[0.1, 1.0]), "sum to 1"),
        (dict(a=[[0.1], [0.5]], c=[0.1, 0.5]), "strictly lower triangular"),
        (dict(c=[0, 0.5, 1.0]), "same number of stages"),
        (dict(order=0), "order"),
        (dict(b_error=[0.1, -0.2], error_order=1), "sum to 0"),
        (dict(b_error=[0.1, -0.1]), "error_order"),
        (dict(b_error=[0.1, -0.1, 0.0], error_order=1), "one entry per stage"),
        (dict(fsal=True), "FSAL"),
        (dict(interp=[[0.5, 0.0], [0.0, 0.4]]), "reproduce b"),
        (dict(interp=[[0.0, 1.0]]), "one row per stage"),
    ],
)
def test_bad_tableau_raises(change, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**{**GOOD, **change})


def test_good_tableau_builds_and_resolves():
    tab = ButcherTableau(**GOOD)
    assert get_tableau(tab) is tab
    assert tab.stages == 2 and not tab.adaptive and tab.b_error is None


def test_get_tableau_errors():
    with pytest.raises(ValueError) as err:
        get_tableau("rk45")
    for name in TABLEAUS:
        assert repr(name) in str(err.value)
    with pytest.raises(TypeError, match="method must be"):
        get_tableau(3)


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "dopri8"])
def test_graph_free_solve_keeps_one_stage_buffer(name):
    """Without autograd the stepper reuses one (s, n) stage buffer and keeps the FSAL stage in one of two
    state-sized rows. A solve with rejected steps peaks at s + 9 states: the stage buffer, the two rows, and
    the step's new state, error estimate, the field's and the error norm's temporaries (two stage buffers
    used in turn peaked at 2 s + 7: 15, 21 and 35 states for bosh3, dopri5 and dopri8). It gives the same
    result as the same solve recording a graph (where each step has its own buffer), so a retry after a
    rejection starts from an intact state."""
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from memory_meter import allocations

    import pyjode

    n = 1 << 13
    y0 = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    lam = torch.linspace(0.5, 3.0, n, dtype=torch.float64)

    def field(t, y):
        return -lam * y * torch.cos(3 * t)

    t = torch.tensor([0.0, 4.0], dtype=torch.float64)
    tab = get_tableau(name)
    stats = pyjode.Stats()

    def solve():
        with torch.no_grad():
            return pyjode.odeint(field, y0, t, method=name, rtol=1e-8, atol=1e-10, stats=stats,
                                 first_step=1.0)  # too long: the first attempts are rejected

    ys = solve()
    assert stats.rejected_forward > 0
    peak = allocations(solve).peak
    state = n * 8
    assert peak <= (tab.stages + 9.5) * state, (peak / state, tab.stages)
    ys_graph = pyjode.odeint(field, y0.clone().requires_grad_(), t, method=name, rtol=1e-8, atol=1e-10,
                             first_step=1.0)
    assert torch.equal(ys, ys_graph.detach())
    exact = y0 * torch.exp(-lam * torch.sin(3 * t[-1]) / 3)
    assert float((ys[-1] - exact).abs().max()) < 1e-6
