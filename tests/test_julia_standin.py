"""The Python half of the Julia protocol, driven by a pure-Python stand-in for PyJODE.

The stand-in receives tensors as DLPack capsules and reaches the field only through its callbacks and
shared buffers, running the PyTorch backend's own building blocks where Julia runs OrdinaryDiffEq. So
these tests check buffers, layouts, sign conventions and the autograd wiring (its gradients must match
the PyTorch backend), not the Julia code.
"""

from __future__ import annotations

import threading

import pytest
import torch

import pyjode
from pyjode._julia.dlpack import to_julia
from pyjode._julia.field import TorchField
from pyjode._julia.odeint import odeint_with_module
from pyjode._julia.plan import JuliaUnsupportedError
from pyjode._julia.standin import StandInPyJODE, backsolve_norm
from pyjode.norms import PartsNorm
from pyjode.reversible import Reversible


def standin():
    return StandInPyJODE


class Field(torch.nn.Module):
    def __init__(self, dim=3, width=8, dtype=torch.float64):
        super().__init__()
        self.l1 = torch.nn.Linear(dim, width, dtype=dtype)
        self.l2 = torch.nn.Linear(width, dim, dtype=dtype)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y))) * (1 + 0.1 * t)


def _grads(ys, y0, params, weights):
    return torch.autograd.grad((ys * weights).sum(), [y0, *params])


def _relerr(got, want):
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


def test_dlpack_is_zero_copy_and_flat():
    base = torch.arange(12.0).view(3, 4)
    flat_base = base.reshape(-1)
    view = StandInPyJODE.wrap(flat_base.__dlpack__(), flat_base)
    assert view.data_ptr() == base.data_ptr() and view.shape == (12,)
    jl = to_julia(StandInPyJODE, base)
    jl[5] = -1.0  # a write from "Julia" lands in the Python tensor
    assert base[1, 1] == -1.0
    strided = base[:, ::2]
    keep = []
    flat = to_julia(StandInPyJODE, strided, keep)
    assert torch.equal(flat, strided.reshape(-1))  # copied into row-major order, never misread
    assert flat.data_ptr() != base.data_ptr()
    # The contiguous copy is the owner Julia is given, and the caller holds it too.
    assert len(keep) == 1 and keep[0].data_ptr() == flat.data_ptr()


def test_solve_keeps_every_tensor_it_hands_to_julia():
    func = Field()
    y0 = torch.randn(3, 2, dtype=torch.float64).t()  # not contiguous: crosses as a temporary copy
    solve_args = dict(method=Reversible("rk4"), step_size=0.1, adjoint="reversible")
    from pyjode._julia.bridge import JuliaSolve
    from pyjode._julia.plan import make_plan

    plan = make_plan(needs_grad=True, rtol=1e-7, atol=1e-9, max_steps=None, **solve_args)
    solve = JuliaSolve(StandInPyJODE, plan, func, y0, [0.0, 0.3], tuple(func.parameters()))
    solve.forward(y0)
    held = {t.data_ptr() for t in solve._owners}
    assert {b.data_ptr() for b in solve.field.buffers()} <= held
    assert len(solve._owners) >= len(solve.field.buffers()) + 3 + 4  # tableau a, b, c; y0, ts, ys, z


def test_node_buffers_are_julia_columns():
    field = TorchField(lambda t, y: y, (2, 3), (), torch.zeros(2, 3), max_nodes=4)
    F = StandInPyJODE.make_field(field, field.param_sizes, *(to_julia(StandInPyJODE, b) for b in field.buffers()))
    F.U[2].copy_(torch.arange(6.0))
    # Julia's reshape(Ubuf, n, K)[:, 3] is row 2 of the (K, n) PyTorch buffer.
    assert torch.equal(field.Ubuf[2], torch.arange(6.0))
    assert field.tbuf.dtype == field.Tbuf.dtype == torch.float64 and field.tbuf.device.type == "cpu"
    assert field.tbuf.data_ptr() != field.Tbuf.data_ptr()


def test_param_sizes_reach_julia_per_tensor():
    """The RMS backsolve norm measures each parameter tensor apart, on both backends."""
    func = Field()
    params = tuple(func.parameters())
    field = TorchField(func, (3,), params, torch.zeros(3, dtype=torch.float64), max_nodes=2)
    assert field.param_sizes == tuple(p.numel() for p in params) == (24, 8, 24, 3)
    F = StandInPyJODE.make_field(field, field.param_sizes, *(to_julia(StandInPyJODE, b) for b in field.buffers()))
    assert F.param_sizes == field.param_sizes
    torch_rms = PartsNorm([3, 3, *field.param_sizes])  # what pyjode.Backsolve(norm="rms") builds
    assert backsolve_norm(3, F.param_sizes, "rms").slices == torch_rms.slices
    assert backsolve_norm(3, F.param_sizes, "seminorm").slices == [(0, 3), (3, 6)]


@pytest.mark.parametrize("adjoint", [pyjode.Quadrature(state="stored"), pyjode.Quadrature(state="resolve"),
                                     "quadrature", pyjode.Backsolve(), pyjode.Backsolve(norm="rms")], ids=repr)
def test_fixed_step_gradients_match_torch_backend(adjoint):
    """Same discretisation on both sides: forward and gradients agree to rounding."""
    func = Field()
    params = list(func.parameters())
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.8], dtype=torch.float64)
    w = torch.randn(3, 2, 3, dtype=torch.float64)
    kw = dict(method="rk4", step_size=0.1, adjoint=adjoint)
    stats, ref_stats = pyjode.Stats(), pyjode.Stats()
    ys = odeint_with_module(standin, func, y0, t, stats=stats, **kw)
    ref = pyjode.odeint(func, y0, t, stats=ref_stats, **kw)
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)
    assert _relerr(_grads(ys, y0, params, w), _grads(ref, y0, params, w)) < 1e-12
    assert (stats.steps_forward, stats.steps_backward) == (ref_stats.steps_forward, ref_stats.steps_backward)
    assert stats.nfe_forward >= 4 * stats.steps_forward and stats.nfe_backward > 0


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("adjoint", [pyjode.Quadrature(state="stored"), pyjode.Quadrature(state="resolve"),
                                     pyjode.Backsolve(), pyjode.Backsolve(norm="rms")], ids=repr)
def test_adaptive_gradients_are_exact_on_a_linear_ode(method, adjoint):
    """y' = M y: dL/dy0 and dL/dM from torch.linalg.matrix_exp; both backends within tolerance of it."""
    M = torch.tensor([[-0.4, 1.0, 0.2], [-0.9, -0.3, 0.5], [0.1, -0.6, -0.2]], dtype=torch.float64,
                     requires_grad=True)
    y0 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    w = torch.tensor([[0.0, 0.0, 0.0], [0.7, -0.2, 0.4], [-0.3, 0.5, 0.1]], dtype=torch.float64)
    exact = torch.stack([torch.linalg.matrix_exp(M * ti) @ y0 for ti in t])
    g_exact = _grads(exact, y0, [M], w)
    func = lambda t, y: M @ y  # noqa: E731
    kw = dict(method=method, adjoint=adjoint, adjoint_params=[M], rtol=1e-10, atol=1e-12)
    ys = odeint_with_module(standin, func, y0, t, **kw)
    torch.testing.assert_close(ys, exact, rtol=1e-7, atol=1e-9)
    assert _relerr(_grads(ys, y0, [M], w), g_exact) < 1e-6
    ref = pyjode.odeint(func, y0, t, **kw)
    assert _relerr(_grads(ref, y0, [M], w), g_exact) < 1e-6


@pytest.mark.parametrize("base", ["midpoint", "rk4"])
def test_reversible_gradient_is_exact(base):
    """The reversible backward pass is the exact gradient of the discrete solve: backprop through it."""
    func = Field()
    params = list(func.parameters())
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    w = torch.randn(3, 2, 3, dtype=torch.float64)
    method = Reversible(base, coupling=0.99)
    ys = odeint_with_module(standin, func, y0, t, method=method, step_size=0.1, adjoint="reversible")
    ref = pyjode.odeint(func, y0, t, method=method, step_size=0.1, adjoint="direct")
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)
    assert _relerr(_grads(ys, y0, params, w), _grads(ref, y0, params, w)) < 1e-12


@pytest.mark.parametrize("adjoint", [pyjode.Quadrature(state="stored"), pyjode.Quadrature(state="resolve"),
                                     pyjode.Backsolve()], ids=repr)
def test_time_gradients_match_torch_backend(adjoint):
    """dL/dt comes back (never silently None), by the PyTorch backend's end-point formulas."""
    func = Field()
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.1, 0.4, 0.9], dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, dtype=torch.float64)
    kw = dict(method="rk4", step_size=0.05, adjoint=adjoint)
    (gt,) = torch.autograd.grad((odeint_with_module(standin, func, y0, t, **kw) * w).sum(), t)
    (gt_ref,) = torch.autograd.grad((pyjode.odeint(func, y0, t, **kw) * w).sum(), t)
    torch.testing.assert_close(gt, gt_ref, rtol=1e-10, atol=1e-12)
    # and against backpropagation through the same steps, up to the discretisation error
    (gt_direct,) = torch.autograd.grad((pyjode.odeint(func, y0, t, method="rk4", step_size=0.05) * w).sum(), t)
    torch.testing.assert_close(gt, gt_direct, rtol=1e-4, atol=1e-5)


def test_reversible_refuses_a_t_that_requires_grad():
    t = torch.tensor([0.0, 0.5], dtype=torch.float64, requires_grad=True)
    with pytest.raises(JuliaUnsupportedError, match="t.detach"):
        odeint_with_module(standin, Field(), torch.ones(3, dtype=torch.float64), t, method=Reversible("rk4"),
                           step_size=0.1, adjoint="reversible")


def test_quadrature_nodes_share_vjp_calls_across_steps():
    """Several steps' nodes go through one parameter-VJP crossing, and the result does not change."""
    func = Field()
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    calls = {}

    def run(per_call):
        count = [0]
        original = TorchField.vjp_params

        def counting(self, k):
            count[0] += 1
            return original(self, k)

        TorchField.vjp_params = counting
        try:
            adjoint = pyjode.Quadrature(state="resolve", max_nodes_per_call=per_call)
            ys = odeint_with_module(standin, func, y0, t, method="rk4", step_size=0.05, adjoint=adjoint)
            g = torch.autograd.grad(ys.square().sum(), [y0, *func.parameters()])
        finally:
            TorchField.vjp_params = original
        calls[per_call] = count[0]
        return g

    assert _relerr(run(2), run(None)) < 1e-12
    assert calls[2] == 20 and calls[None] == 1  # 20 steps x 2 nodes, in calls of one step or all at once


def test_float32_and_no_grad():
    func = Field(dtype=torch.float32)
    y0 = torch.randn(4, 3)
    t = torch.linspace(0, 1, 4)
    with torch.no_grad():
        ys = odeint_with_module(standin, func, y0, t, method="dopri5", adjoint="direct")
    ref = pyjode.odeint(func, y0, t, method="dopri5")
    assert ys.dtype == torch.float32 and not ys.requires_grad
    torch.testing.assert_close(ys, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(JuliaUnsupportedError, match="direct"):
        odeint_with_module(standin, func, y0, t, method="dopri5", adjoint="direct")


def test_vector_field_errors_pass_through():
    y0 = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        odeint_with_module(standin, lambda t, y: y[:1], y0, torch.tensor([0.0, 1.0]), method="dopri5")


def test_backward_off_the_main_thread_is_refused():
    func = Field()
    y0 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    ys = odeint_with_module(standin, func, y0, torch.tensor([0.0, 0.5]), method="rk4", step_size=0.25)
    errors = []

    def run():
        try:
            ys.sum().backward()
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "set_multithreading_enabled(False)" in errors[0]
