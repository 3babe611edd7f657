"""The real Julia backend against the PyTorch backend. Needs Julia: skipped where it is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import pyjode
from pyjode._julia import julia_available
from pyjode._julia.probe import find_julia_executable, unavailable_reason
from pyjode.reversible import Reversible

pytestmark = [
    pytest.mark.julia,
    pytest.mark.skipif(not julia_available(), reason=f"needs Julia: {unavailable_reason()}"),
]

ROOT = Path(__file__).resolve().parents[1]

M = [[-0.4, 1.0, 0.2], [-0.9, -0.3, 0.5], [0.1, -0.6, -0.2]]


def _grads(ys, inputs, w):
    return torch.autograd.grad((ys * w).sum(), inputs)


def _relerr(got, want):
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


ADJOINTS = (pyjode.Quadrature(state="stored"), pyjode.Quadrature(state="resolve"), pyjode.Backsolve())
CASES = [(m, a) for m in ("dopri5", "tsit5", "bosh3") for a in ADJOINTS]
CASES += [("dopri5", "quadrature"), ("dopri5", pyjode.Backsolve(norm="rms"))]
CASES += [(m, a) for m in ("euler", "midpoint", "heun", "rk4") for a in ADJOINTS]


@pytest.mark.parametrize("method,adjoint", CASES, ids=str)
def test_outputs_and_gradients_match_torch_backend(method, adjoint):
    A = torch.tensor(M, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    w = torch.tensor([[0.0, 0.0, 0.0], [0.7, -0.2, 0.4], [-0.3, 0.5, 0.1]], dtype=torch.float64)
    exact = torch.stack([torch.linalg.matrix_exp(A * ti) @ y0 for ti in t])
    g_exact = _grads(exact, [y0, A], w)
    fixed = method in ("euler", "midpoint", "heun", "rk4")
    kw = dict(method=method, adjoint=adjoint, adjoint_params=[A], rtol=1e-10, atol=1e-12,
              step_size=1e-3 if fixed else None)
    func = lambda t, y: A @ y  # noqa: E731
    ys_julia = pyjode.odeint(func, y0, t, backend="julia", **kw)
    ys_torch = pyjode.odeint(func, y0, t, backend="torch", **kw)
    # Discretisation error of the coarsest method (euler, h = 1e-3) bounds both backends.
    tol = 1e-2 if method == "euler" else 1e-5
    torch.testing.assert_close(ys_julia, ys_torch, rtol=tol, atol=tol)
    assert _relerr(_grads(ys_julia, [y0, A], w), g_exact) < tol
    assert _relerr(_grads(ys_torch, [y0, A], w), g_exact) < tol


@pytest.mark.parametrize("base", ["midpoint", "rk4"])
def test_reversible_matches_torch_backend_to_rounding(base):
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    params = list(net.parameters())
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    w = torch.randn(3, 2, 3, dtype=torch.float64)
    method = Reversible(base, coupling=0.99)
    func = lambda t, y: net(y)  # noqa: E731
    ys = pyjode.odeint(func, y0, t, method=method, step_size=0.1, adjoint="reversible", adjoint_params=params,
                       backend="julia")
    ref = pyjode.odeint(func, y0, t, method=method, step_size=0.1, adjoint="direct", adjoint_params=params)
    torch.testing.assert_close(ys, ref, rtol=1e-12, atol=1e-12)
    assert _relerr(_grads(ys, [y0, *params], w), _grads(ref, [y0, *params], w)) < 1e-10


@pytest.mark.parametrize("adjoint", [pyjode.Quadrature(state="stored"), pyjode.Quadrature(state="resolve"),
                                     pyjode.Backsolve()], ids=repr)
def test_time_gradients_match_torch_backend(adjoint):
    A = torch.tensor(M, dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[0.3, 0.0, 0.0], [0.7, -0.2, 0.4], [-0.3, 0.5, 0.1]], dtype=torch.float64)
    kw = dict(method="dopri5", adjoint=adjoint, adjoint_params=[], rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad((pyjode.odeint(lambda t, y: A @ y, y0, t, backend=b, **kw) * w).sum(), t)[0]
             for b in ("julia", "torch")]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


def test_float32_module():
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    y0 = torch.randn(5, 3)
    t = torch.linspace(0, 1, 4)
    ys = pyjode.odeint(lambda t, y: net(y), y0, t, adjoint="quadrature", adjoint_params=list(net.parameters()),
                       backend="julia", rtol=1e-5, atol=1e-6)
    ref = pyjode.odeint(lambda t, y: net(y), y0, t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ys, ref, rtol=1e-4, atol=1e-4)
    ys.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_julia_package_tests():
    """julia/PyJODE/test/runtests.jl, in PyJODE's own project."""
    julia = find_julia_executable() or shutil.which("julia")
    out = subprocess.run([julia, "--project=" + str(ROOT / "julia" / "PyJODE"), "-e",
                          "using Pkg; Pkg.instantiate(); Pkg.test()"], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
