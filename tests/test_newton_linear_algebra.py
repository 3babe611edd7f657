"""The linear algebra of the simplified Newton iteration: explicit inverses of small Newton matrices, LU
factors of large ones, the Kronecker-product matrix of a fully implicit method, Radau IIA 5's error
estimate solved through the stages' factors, and the step-holding rule."""

import math

import numpy as np
import pytest
import torch

import pyjode
from pyjode import newton
from pyjode.implicit import Implicit, eigen_pair
from pyjode.implicit_tableau import IMPLICIT_TABLEAUS
from pyjode.newton import NewtonFactor, NewtonStats, factor_dirk, factor_firk, solve_dirk, solve_firk

F64 = torch.float64


def _stiff_jacobian(B, d, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    # eigenvalues spread over six decades, as a stiff problem's
    Q = torch.linalg.qr(torch.randn(B, d, d, generator=g, dtype=F64))[0]
    lam = -torch.logspace(0, 6, d, dtype=F64)
    return (Q @ torch.diag_embed(lam.expand(B, d)) @ Q.transpose(1, 2)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("B", [1, 4])
def test_inverse_and_lu_solve_the_same_system(monkeypatch, dtype, B):
    d = 5
    M = torch.eye(d, dtype=dtype) - 0.01 * _stiff_jacobian(B, d, dtype=dtype)
    r = torch.randn(B * d, dtype=dtype, generator=torch.Generator().manual_seed(1))
    exact = torch.linalg.solve(M.double(), r.double().view(B, d, 1)).reshape(-1)
    small = NewtonFactor(M)
    assert small.inverse is not None
    monkeypatch.setattr(newton, "SMALL_INVERSE", 0)
    large = NewtonFactor(M)
    assert large.lu is not None
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    for F in (small, large):
        x = F.solve_flat(r)
        assert x.dtype == dtype and x.shape == r.shape
        torch.testing.assert_close(x.double(), exact, rtol=tol, atol=tol * exact.abs().max().item())


def test_singular_newton_matrix_gives_nonfinite_not_an_exception():
    """The iteration turns a non-finite increment into a rejected step (a smaller h), so a singular matrix
    must not raise where it is factorised."""
    M = torch.zeros(1, 2, 2, dtype=F64)
    x = NewtonFactor(M).solve_flat(torch.ones(2, dtype=F64))
    assert not torch.isfinite(x).all()


@pytest.mark.parametrize("B", [1, 3])
def test_kronecker_newton_matrix(B):
    """I - h A ⊗ J, built in one product, against the definition entry by entry."""
    A = torch.as_tensor(IMPLICIT_TABLEAUS["radauIIA5"].a, dtype=F64)
    J = _stiff_jacobian(B, 2)
    h = 0.37
    s, d = 3, 2
    M = newton.simplified_firk_matrix(A, h, J).reshape(B, s * d, s * d)
    for b in range(B):
        for i in range(s):
            for j in range(s):
                block = M[b, i * d:(i + 1) * d, j * d:(j + 1) * d]
                expected = (torch.eye(d, dtype=F64) if i == j else 0) - h * A[i, j] * J[b]
                torch.testing.assert_close(block, expected, rtol=1e-15, atol=1e-12)
    # the per-stage form with the same J at every stage is the same matrix
    same = newton.firk_matrix(A, h, J.unsqueeze(1).expand(-1, s, -1, -1))
    torch.testing.assert_close(M, same, rtol=1e-15, atol=1e-12)


def test_eigen_pair():
    a = IMPLICIT_TABLEAUS["radauIIA5"].a
    gamma0 = IMPLICIT_TABLEAUS["radauIIA5"].radau_error[0]
    u, t = eigen_pair(a, gamma0)
    np.testing.assert_allclose(a @ t, gamma0 * t, atol=1e-14)
    np.testing.assert_allclose(u @ a, gamma0 * u, atol=1e-14)
    assert abs(u @ t - 1) < 1e-14


@pytest.mark.parametrize("B", [1, 3])
def test_radau_error_through_the_stage_factors(B):
    """(u ⊗ I)(I - h A ⊗ J)^{-1}(t ⊗ v) = (I - h gamma0 J)^{-1} v, for stiff J (the filtered estimate)."""
    tab = IMPLICIT_TABLEAUS["radauIIA5"]
    gamma0 = tab.radau_error[0]
    u, t = (torch.as_tensor(x, dtype=F64) for x in eigen_pair(tab.a, gamma0))
    A = torch.as_tensor(tab.a, dtype=F64)
    d = 2
    blocks = [(0, B * d, _stiff_jacobian(B, d, seed=3))]
    v = torch.randn(B * d, dtype=F64, generator=torch.Generator().manual_seed(2))
    for h in (1e-4, 0.1, 10.0):
        stats = NewtonStats()
        X = solve_firk(factor_firk(blocks, A, h, stats), t[:, None] * v)
        projected = torch.mv(X.t(), u)
        direct = solve_dirk(factor_dirk(blocks, h * gamma0, stats), v)
        torch.testing.assert_close(projected, direct, rtol=1e-10, atol=1e-12 * direct.abs().max().item())


def test_radau_error_estimate_unchanged_in_a_step():
    """The stepper's estimate is the filtered one of Hairer & Wanner (8.20), computed the direct way here."""
    A_ = torch.tensor([[-2.0, 1.0], [1.0, -2000.0]], dtype=F64)

    def f(t, y):
        return A_ @ y

    method = Implicit("radauIIA5")
    stepper = method.stepper(torch.zeros(2, dtype=F64))
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    state = stepper.init(f, 0.0, y0)
    h = 0.05
    (y1, _), err, K = stepper.step(f, 0.0, h, state)
    gamma0, e = method.tableau.radau_error
    Z = h * torch.as_tensor(method.tableau.a, dtype=F64) @ K  # Z - y = h A k
    v = torch.as_tensor(e, dtype=F64) @ Z + gamma0 * h * f(0.0, y0)
    direct = torch.linalg.solve(torch.eye(2, dtype=F64) - h * gamma0 * A_, v)
    torch.testing.assert_close(err, direct, rtol=1e-10, atol=1e-16)


class _StiffForced:
    """y0' = -1000 (y0 - cos t), y1' = -y1, recording the accepted steps' ends."""

    def __init__(self):
        self.ends = []

    def __call__(self, t, y):
        return torch.stack([-1000.0 * (y[0] - torch.cos(t)), -y[1]])

    def callback_accept_step(self, t0, y, dt):
        self.ends.append(float(t0 + dt))


def test_keep_step_holds_small_growth():
    """With keep_step = 1.2 (Hairer's rule) accepted steps grow by factors in (1, 1.2] only where the
    Jacobian is renewed, so much less often than without it; the solution keeps its accuracy."""
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    small_growth = {}
    for keep in (1.0, 1.2):
        f = _StiffForced()
        ys = pyjode.odeint(f, y0, torch.tensor([0.0, 3.0], dtype=F64), method=Implicit("radauIIA5", keep_step=keep),
                           rtol=1e-6, atol=1e-8)
        hs = np.diff([0.0] + f.ends)[:-1]  # the last step is clipped to land on t = 3
        ratios = hs[1:] / hs[:-1]
        small_growth[keep] = int(np.sum((ratios > 1 + 1e-12) & (ratios <= 1.2)))
        assert abs(ys[-1, 1].item() - math.exp(-3.0)) < 1e-6
    assert small_growth[1.0] >= 5 and small_growth[1.2] < small_growth[1.0] / 2, small_growth


def test_keep_step_validated():
    for bad in (0.5, 2.5, True, "1.2"):
        with pytest.raises(ValueError, match="keep_step must be a number in"):
            Implicit("radauIIA5", keep_step=bad)


@pytest.mark.parametrize("mode", ["full", "batch"])
def test_small_jacobian_by_products_matches_jacrev(monkeypatch, mode):
    """Below SMALL_JACOBIAN outputs the Jacobian comes from one VJP per output, above from jacrev: both
    give the closed form of Van der Pol's Jacobian, per sample in batch mode."""
    mus = torch.tensor([1.0, 10.0, 1000.0], dtype=F64)

    def f(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mus * (1 - x ** 2) * v - x], -1)

    y = torch.tensor([[2.0, 0.5], [-1.0, 3.0], [0.3, -0.2]], dtype=F64)
    exact = torch.stack([torch.stack([torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)], -1),
                         torch.stack([-2 * mus * y[:, 0] * y[:, 1] - 1, mus * (1 - y[:, 0] ** 2)], -1)], 1)
    t = torch.tensor(0.0, dtype=F64)
    got = {}
    for small in (6, 0):
        monkeypatch.setattr(newton, "SMALL_JACOBIAN", small)
        got[small] = newton.field_jacobian(f, t, y, mode)
    if mode == "batch":
        torch.testing.assert_close(got[6], exact, rtol=1e-15, atol=0)
    else:  # the samples do not interact: the full Jacobian is block diagonal
        torch.testing.assert_close(got[6][0], torch.block_diag(*exact), rtol=1e-15, atol=0)
    torch.testing.assert_close(got[6], got[0], rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_small_inverse_host_and_torch_paths_agree(dtype):
    """CPU matrices are inverted through NumPy, others (here: one carrying a graph) by torch.linalg.inv_ex;
    both are the inverse, and a singular matrix gives NaN on both paths."""
    M = torch.eye(4, dtype=dtype) - 0.01 * _stiff_jacobian(3, 4, dtype=dtype)
    host = newton._small_inverse(M)
    via_torch = newton._small_inverse(M.clone().requires_grad_()).detach()
    assert host.dtype == dtype and via_torch.dtype == dtype
    exact = torch.linalg.inv(M.double())
    # forward error bound of a backward-stable inverse: a small multiple of cond(M) eps |M^{-1}|
    bound = 10 * torch.linalg.cond(M.double()).max().item() * torch.finfo(dtype).eps * exact.abs().max().item()
    for inverse in (host, via_torch):
        assert (inverse.double() - exact).abs().max().item() < bound
    singular = torch.zeros(2, 2, dtype=dtype)
    assert torch.isnan(newton._small_inverse(singular)).all()
    assert not torch.isfinite(newton._small_inverse(singular.clone().requires_grad_())).all()


@pytest.mark.parametrize("mode", ["full", "batch"])
def test_jacobian_of_a_field_independent_of_y_is_zero(mode):
    """f(t, y) = g(t) records no graph through y (torchdiffeq's suite has such a problem): J = 0, not an
    autograd error, and an implicit solve of it integrates g exactly up to its quadrature order."""
    from pyjode.newton import field_jacobian

    func = lambda t, y: torch.exp(-0.1 * t) * torch.ones_like(y)  # noqa: E731
    y = torch.ones(3, 2, dtype=torch.float64)
    J = field_jacobian(func, torch.tensor(1.0, dtype=torch.float64), y, mode)
    assert J.shape == ((3, 2, 2) if mode == "batch" else (1, 6, 6)) and not J.any()
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([8.0, 1.0], dtype=torch.float64)
    ys = pyjode.odeint(func, y0, t, method=pyjode.Implicit("radauIIA5", jacobian=mode), rtol=1e-10, atol=1e-12)
    exact = torch.tensor(1 - 10 * (math.exp(-0.1) - math.exp(-0.8)), dtype=F64)
    assert torch.allclose(ys[-1].detach(), exact.expand(3, 2), rtol=1e-8)
    (g,) = torch.autograd.grad(ys[-1].sum(), y0)
    assert torch.equal(g, torch.ones_like(g))


@pytest.mark.parametrize("B", [1, 3])
def test_batch_jacobian_keeps_the_batch_dimension(B):
    """jacobian="batch" hands the field y with its batch dimension, also for a batch of one (a field that
    indexes y[..., 0] and stacks along -1, as the stiff benchmarks' fields do)."""
    from pyjode.newton import field_jacobian

    mu = torch.linspace(1.0, 3.0, B, dtype=F64)

    def vdp(t, y):
        assert y.shape == (B, 2)
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x ** 2) * v - x], -1)

    y = torch.randn(B, 2, dtype=F64)
    J = field_jacobian(vdp, torch.tensor(0.0, dtype=F64), y, "batch")
    x, v = y[:, 0], y[:, 1]
    exact = torch.stack([torch.stack([torch.zeros(B, dtype=F64), torch.ones(B, dtype=F64)], -1),
                         torch.stack([-2 * mu * x * v - 1, mu * (1 - x ** 2)], -1)], 1)
    assert torch.allclose(J, exact, rtol=1e-14, atol=1e-14)
