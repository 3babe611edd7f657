"""Implicit (stiff) solvers: tableaus, convergence orders, stiff references from scipy's Radau, exact
gradients through matrix_exp for every gradient method, and the errors they raise."""

import functools
import math

import numpy as np
import pytest
import torch

import pyjode
from pyjode.implicit import IMPLICIT_METHODS, Implicit
from pyjode.implicit_tableau import IMPLICIT_TABLEAUS
from problems import cos_growth, rel_error, van_der_pol
from test_tableau import order_residuals, satisfied_order

F64 = torch.float64
ADAPTIVE = ["kvaerno3", "kvaerno4", "kvaerno5", "radauIIA5"]


# ------------------------------------------------------------------------------------------------------
# Tableaus


@pytest.mark.parametrize("name", IMPLICIT_METHODS)
def test_b_has_declared_order(name):
    """Butcher's order conditions b . Phi(tau) = 1/gamma(tau) hold (Phi with the full a) up to the order."""
    tab = IMPLICIT_TABLEAUS[name]
    tol = 1e-9 if name in ("kvaerno4", "kvaerno5") else 1e-12  # published decimal coefficients
    assert satisfied_order(tab.b, tab.a, tol) == tab.order


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno4", "kvaerno5"])
def test_embedded_method_has_error_order(name):
    tab = IMPLICIT_TABLEAUS[name]
    b_hat = tab.b - tab.b_error
    assert max(abs(r) for r in order_residuals(b_hat, tab.a, tab.error_order)) < 1e-9
    assert satisfied_order(b_hat, tab.a, 1e-9) == tab.error_order


def test_radau5_coefficients_and_error_estimate():
    """Radau IIA 5 (Hairer & Wanner II, Table 5.6) and the estimate of §IV.8 (8.20):
    e = gamma0/3 (-13 - 7√6, -13 + 7√6, -1), gamma0 the real eigenvalue of a."""
    tab = IMPLICIT_TABLEAUS["radauIIA5"]
    s6 = math.sqrt(6)
    expected_a = [[(88 - 7 * s6) / 360, (296 - 169 * s6) / 1800, (-2 + 3 * s6) / 225],
                  [(296 + 169 * s6) / 1800, (88 + 7 * s6) / 360, (-2 - 3 * s6) / 225],
                  [(16 - s6) / 36, (16 + s6) / 36, 1 / 9]]
    np.testing.assert_allclose(tab.a, expected_a, atol=1e-15)
    gamma0, e = tab.radau_error
    np.testing.assert_allclose(gamma0, (6 + 81 ** (1 / 3) - 9 ** (1 / 3)) / 30, rtol=1e-14)
    np.testing.assert_allclose(e, gamma0 / 3 * np.array([-13 - 7 * s6, -13 + 7 * s6, -1]), rtol=1e-12)


def test_collocation_dense_output_reproduces_a():
    """For a collocation method b_j(c_i) = a_ij: the interpolant is the collocation polynomial."""
    for name in ("radauIIA3", "radauIIA5", "gl4", "gl6", "trapezoid", "implicit_midpoint"):
        tab = IMPLICIT_TABLEAUS[name]
        powers = tab.c[:, None] ** np.arange(1, tab.interp.shape[1] + 1)[None, :]
        np.testing.assert_allclose(powers @ tab.interp.T, tab.a, atol=1e-14)


def test_bad_tableau_raises():
    from pyjode.implicit_tableau import ImplicitTableau

    with pytest.raises(ValueError, match="row sums"):
        ImplicitTableau("bad", c=[0.5], a=[[0.4]], b=[1.0], order=1, source="-", interp=[[1.0]])
    with pytest.raises(ValueError, match="Hermite"):
        ImplicitTableau("bad", c=[1.0], a=[[1.0]], b=[1.0], order=1, source="-")


# ------------------------------------------------------------------------------------------------------
# Convergence orders


def _fixed_error(name, n_steps, dtype=F64):
    y0 = torch.tensor([1.0, 0.5], dtype=dtype)
    t = torch.tensor([0.0, 2.0], dtype=dtype)
    ys = pyjode.odeint(cos_growth, y0, t, method=Implicit(name, adaptive=False), step_size=2.0 / n_steps,
                       rtol=1e-13, atol=1e-13)
    exact = y0 * torch.exp(torch.sin(t[-1]))
    return (ys[-1] - exact).abs().max().item()


@pytest.mark.parametrize("name", IMPLICIT_METHODS)
def test_observed_order(name):
    """Halving a fixed step divides the global error on y' = y cos t by 2^p."""
    p = IMPLICIT_TABLEAUS[name].order
    n = 6 if p >= 5 else 16
    e1, e2 = _fixed_error(name, n), _fixed_error(name, 2 * n)
    assert abs(math.log2(e1 / e2) - p) < 0.35, (e1, e2)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_error_estimate_order(name):
    """One step's error estimate scales as h^(error_order + 1)."""
    method = Implicit(name)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    stepper = method.stepper(y0)
    stepper.rtol, stepper.atol = 1e-14, 1e-14
    est = []
    for h in (0.1, 0.05):
        state = stepper.init(cos_growth, 0.3, y0)
        _, err, _ = stepper.step(cos_growth, 0.3, 0.3 + h, state)
        est.append(err.abs().max().item())
    assert abs(math.log2(est[0] / est[1]) - (method.error_order + 1)) < 0.4, est


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_tolerance_proportionality(name):
    """Adaptive solves reach the closed form, and tightening rtol by 100 shrinks the error."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)
    exact = y0 * torch.exp(torch.sin(t))[:, None]
    errs = [rel_error(pyjode.odeint(cos_growth, y0, t, method=name, rtol=r, atol=r), exact) for r in (1e-5, 1e-7)]
    assert errs[0] < 3e-4 and errs[1] < 5e-6 and errs[1] < errs[0] / 10, errs


def test_dense_output_between_steps():
    """Outputs inside steps come from the dense output; they match the closed form at the tolerance."""
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.linspace(0, 4, 41, dtype=F64)
    exact = y0 * torch.exp(torch.sin(t))[:, None]
    # the collocation polynomial of Radau IIA 5 is of order 3 in theta, but as accurate as the steps here; the
    # ESDIRK's cubic Hermite has error h^4 |y''''| / 384 on steps of ~0.12
    for name, tol in (("kvaerno5", 1e-5), ("radauIIA5", 1e-8)):
        stats = pyjode.Stats()
        ys = pyjode.odeint(cos_growth, y0, t, method=name, rtol=1e-8, atol=1e-10, stats=stats)
        assert stats.steps_forward < 400
        assert rel_error(ys, exact) < tol
        ends = pyjode.odeint(cos_growth, y0, t[[0, -1]], method=name, rtol=1e-8, atol=1e-10)
        assert rel_error(ends[-1], ys[-1]) < 1e-12  # the same steps: outputs do not change the step sequence


# ------------------------------------------------------------------------------------------------------
# Stiff problems against scipy's Radau


def robertson(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2], -1)


def _scipy(f, y0, ts, rtol=1e-11, atol=1e-14):
    from scipy.integrate import solve_ivp

    r = solve_ivp(f, (ts[0], ts[-1]), y0, method="Radau", t_eval=ts, rtol=rtol, atol=atol)
    assert r.success
    return torch.tensor(r.y.T)


@pytest.mark.parametrize("name", ["kvaerno5", "radauIIA5"])
def test_robertson_against_scipy_radau(name):
    ts = [0.0, 1e-3, 0.1, 10.0, 400.0]
    ref = _scipy(lambda t, y: [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                               3e7 * y[1] ** 2], [1.0, 0.0, 0.0], ts)
    method = Implicit(name)
    ys = pyjode.odeint(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor(ts, dtype=F64),
                       method=method, rtol=1e-7, atol=1e-12)
    # each component relative to its own scale (y2 is ~1e-5)
    scale = ref.abs().amax(0)
    assert ((ys - ref).abs() / scale).max() < 5e-5
    assert abs(ys[-1].sum().item() - 1) < 1e-10  # mass conservation, which every RK method keeps
    assert method.stats.jacobians < 200


@functools.lru_cache(maxsize=None)
def _vdp_reference():
    mu = 1000.0
    return _scipy(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], [2.0, 0.0], [0.0, 400.0, 800.0, 820.0, 1000.0],
                  rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["kvaerno5", "radauIIA5"])
def test_van_der_pol_mu_1000_against_scipy_radau(name):
    """Through the first relaxation jump (near t = 807) and on, where explicit methods stall."""
    mu, ts = 1000.0, [0.0, 400.0, 800.0, 820.0, 1000.0]
    ref = _vdp_reference()
    ys = pyjode.odeint(van_der_pol(mu), torch.tensor([2.0, 0.0], dtype=F64), torch.tensor(ts, dtype=F64),
                       method=name, rtol=1e-6, atol=1e-6)
    assert (ys[:, 0] - ref[:, 0]).abs().max() < 1e-4  # x, of size 2
    assert ((ys[:, 1] - ref[:, 1]).abs() / ref[:, 1].abs().clamp_min(1e-3)).max() < 1e-3


def test_batch_jacobian_matches_full():
    """jacobian='batch' (per-sample d x d blocks) gives the full Jacobian's answer on independent samples."""
    mus = torch.tensor([1.0, 10.0, 100.0], dtype=F64)

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mus * (1 - x ** 2) * v - x], -1)

    y0 = torch.tensor([[2.0, 0.0]] * 3, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    for name in ("kvaerno5", "radauIIA5"):
        full, batch = Implicit(name), Implicit(name, jacobian="batch")
        a = pyjode.odeint(f, y0, t, method=full, rtol=1e-7, atol=1e-7)
        b = pyjode.odeint(f, y0, t, method=batch, rtol=1e-7, atol=1e-7)
        assert rel_error(b, a) < 1e-9


# ------------------------------------------------------------------------------------------------------
# Gradients: y' = A y with stiff A, exact through matrix_exp


def stiff_linear(smooth: bool, dtype=F64):
    """A with eigenvalues -1000, -1, -0.3 (stiffness ratio ~3000). ``smooth``: y0 in the slow eigenspace, so
    y has no fast transient."""
    g = torch.Generator().manual_seed(1)
    V = torch.eye(3, dtype=F64) + 0.3 * torch.randn(3, 3, generator=g, dtype=F64)
    lam = torch.tensor([-1000.0, -1.0, -0.3], dtype=F64)
    A = (V @ torch.diag(lam) @ torch.linalg.inv(V)).to(dtype).requires_grad_()
    coef = torch.randn(2, 3, generator=g, dtype=F64)
    if smooth:
        coef[:, 0] = 0
    y0 = (coef @ V.T).to(dtype).requires_grad_()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=dtype)
    w = torch.randn(3, 2, 3, generator=g, dtype=F64).to(dtype)
    return A, y0, t, w


def _exact_grads(A, y0, t, w):
    ys = torch.stack([y0 @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    return torch.autograd.grad((ys * w).sum(), (A, y0))


GRADIENT_CASES = [
    ("direct", False, "kvaerno5"),
    ("direct", False, "radauIIA5"),
    ("backsolve-stored-rms", False, "radauIIA5"),
    ("backsolve-stored-rms", False, "kvaerno5"),
    ("backsolve-stored", True, "radauIIA5"),
    ("quadrature-stored", True, "radauIIA5"),
    ("quadrature-stored", True, "kvaerno5"),
]
ADJ = {"direct": lambda: "direct",
       "backsolve-stored-rms": lambda: pyjode.Backsolve(state="stored", norm="rms"),
       "backsolve-stored": lambda: pyjode.Backsolve(state="stored"),
       "quadrature-stored": lambda: pyjode.Quadrature(state="stored")}


@pytest.mark.parametrize("adjoint,smooth,method", GRADIENT_CASES)
def test_stiff_linear_exact_gradient(adjoint, smooth, method):
    A, y0, t, w = stiff_linear(smooth)
    gA, gy0 = _exact_grads(A, y0, t, w)
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method=method, rtol=1e-7, atol=1e-9,
                       adjoint=ADJ[adjoint](), adjoint_params=[A], stats=stats)
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    tol = 1e-5 if method == "kvaerno5" else 1e-6
    assert rel_error(hA, gA) < tol and rel_error(hy0, gy0) < tol
    if adjoint != "direct":
        assert stats.steps_backward > 0


@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature"])
def test_resolving_adjoints_with_implicit_backward_method(adjoint):
    """Backsolve/Quadrature re-solving y backwards with an implicit method named by `method=` (non-stiff y',
    where that is well posed)."""
    g = torch.Generator().manual_seed(2)
    A = (0.6 * torch.randn(3, 3, generator=g, dtype=F64)).requires_grad_()
    y0 = torch.randn(2, 3, generator=g, dtype=F64).requires_grad_()
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    w = torch.randn(3, 2, 3, generator=g, dtype=F64)
    gA, gy0 = _exact_grads(A, y0, t, w)
    adj = (pyjode.Backsolve if adjoint == "backsolve" else pyjode.Quadrature)(method="radauIIA5")
    stats = pyjode.Stats()
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="radauIIA5", rtol=1e-10, atol=1e-12, adjoint=adj,
                       adjoint_params=[A], stats=stats)
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    assert rel_error(hA, gA) < 1e-8 and rel_error(hy0, gy0) < 1e-8


def test_direct_gradient_is_exact_for_the_discrete_solution():
    """With fixed steps the implicit-function-theorem gradient equals the derivative of the discrete map,
    here by central differences of the solve itself, on a nonlinear field with parameters."""
    theta = torch.tensor([1.5, -0.7], dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.stack([theta[0] * y[1] - y[0] ** 3, theta[1] * y[0] - 20 * y[1]], -1)

    y0 = torch.tensor([0.8, -0.3], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for name in ("kvaerno5", "radauIIA5", "sdirk2", "gl4"):
        def run(y0_, th_=None):
            return pyjode.odeint(f, y0_, t, method=Implicit(name, adaptive=False), step_size=0.125,
                                 rtol=1e-13, atol=1e-13)[-1]

        out = run(y0)
        g_y0, g_th = torch.autograd.grad(out.sum(), (y0, theta))
        eps = 1e-6
        fd = []
        with torch.no_grad():
            for i in range(2):
                d = torch.zeros(2, dtype=F64)
                d[i] = eps
                fd.append(((run(y0 + d) - run(y0 - d)).sum() / (2 * eps)).item())
            fd_th = []
            for i in range(2):
                theta[i] += eps
                up = run(y0).sum()
                theta[i] -= 2 * eps
                down = run(y0).sum()
                theta[i] += eps
                fd_th.append(((up - down) / (2 * eps)).item())
        assert rel_error(g_y0, torch.tensor(fd, dtype=F64)) < 1e-8, name
        assert rel_error(g_th, torch.tensor(fd_th, dtype=F64)) < 1e-8, name


def test_float32_forward_and_backward():
    A, y0, t, w = stiff_linear(False, dtype=torch.float32)
    gA, gy0 = _exact_grads(A.double(), y0.double(), t.double(), w.double())
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="radauIIA5", rtol=1e-5, atol=1e-6)
    assert ys.dtype == torch.float32
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    assert rel_error(hA.double(), gA) < 1e-3 and rel_error(hy0.double(), gy0) < 1e-3


def test_no_grad_and_grad_solves_agree():
    A, y0, t, w = stiff_linear(False)
    with torch.no_grad():
        a = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="kvaerno5", rtol=1e-8, atol=1e-10)
    b = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="kvaerno5", rtol=1e-8, atol=1e-10)
    assert b.requires_grad and rel_error(b.detach(), a) < 1e-10


# ------------------------------------------------------------------------------------------------------
# Errors and the torchdiffeq drop-in


def test_newton_failure_raises_with_where():
    def f(t, y):
        return -y + (torch.nan if float(t) > 0.5 else 0.0)

    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(RuntimeError, match=r"Newton's iteration .* did not converge at t=0\.5.*smallest step"):
        pyjode.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno5")
    with pytest.raises(RuntimeError, match=r"did not converge at t=0\.5.*fixed step.*smaller step_size"):
        pyjode.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method="sdirk2", step_size=0.25)


def test_bad_arguments():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    # a fixed-step implicit method without step_size steps on the output times, as the explicit ones do
    on_outputs = pyjode.odeint(lambda t, y: -y, y0, t, method="gl4")
    torch.testing.assert_close(on_outputs, pyjode.odeint(lambda t, y: -y, y0, t, method="gl4", step_size=1.0),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="implicit .*kvaerno5"):
        pyjode.odeint(lambda t, y: -y, y0, t, method="kvaerno6")
    with pytest.raises(ValueError, match="jacobian must be one of"):
        Implicit("kvaerno5", jacobian="diag")
    with pytest.raises(ValueError, match="no error estimate"):
        Implicit("gl4", adaptive=True)
    with pytest.raises(ValueError, match="needs a Runge–Kutta method"):
        pyjode.odeint(lambda t, y: -y, y0, t, method=pyjode.Reversible("dopri5"), adjoint="quadrature")


@pytest.mark.parametrize("name", ["implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4",
                                  "radauIIA5", "gl6", "sdirk2", "trbdf2"])
def test_torchdiffeq_dropin_is_the_fixed_grid_method(name):
    """torchdiffeq's implicit solvers step on the grid t (or step_size): on y' = diag(lam) y each step
    multiplies by the stability function R(z) = 1 + z b^T (I - z a)^{-1} 1, z = h lam."""
    from pyjode.torchdiffeq import odeint

    tab = IMPLICIT_TABLEAUS[name]
    lam = np.array([-1.0, -10.0, -100.0])
    y0 = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    t = torch.tensor([0.0, 0.1, 0.3, 0.4], dtype=F64)

    def R(z):
        one = np.ones(tab.stages)
        return 1 + z * tab.b @ np.linalg.solve(np.eye(tab.stages) - z * tab.a, one)

    lam_t = torch.tensor(lam, dtype=F64)
    for options, steps in ((None, [1, 1, 1]), (dict(step_size=0.05), [2, 4, 2])):
        ys = odeint(lambda t, y: lam_t * y, y0, t, method=name, options=options, rtol=1e-12, atol=1e-12)
        expected, y = [y0.numpy()], y0.numpy()
        for k, n in enumerate(steps):
            h = (t[k + 1] - t[k]).item() / n
            y = y * np.array([R(h * l) for l in lam]) ** n
            expected.append(y)
        np.testing.assert_allclose(ys.numpy(), np.array(expected), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm", ["seminorm", "rms"])
def test_stored_backsolve_with_explicit_method(norm):
    """Backsolve(state='stored') reads y from the forward dense output for explicit methods too."""
    from problems import linear_exact_loss, linear_problem

    A, y0, t, w = linear_problem()
    gA, gy0 = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    ys = pyjode.odeint(lambda t, y: y @ A.T, y0, t, method="dopri5", rtol=1e-10, atol=1e-12,
                       adjoint=pyjode.Backsolve(state="stored", norm=norm), adjoint_params=[A])
    hA, hy0 = torch.autograd.grad((ys * w).sum(), (A, y0))
    assert rel_error(hA, gA) < 1e-7 and rel_error(hy0, gy0) < 1e-7
    with pytest.raises(ValueError, match="state must be 'resolve' or 'stored'"):
        pyjode.Backsolve(state="dense")
