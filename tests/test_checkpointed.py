"""The checkpointed discrete adjoint: the gradient of the discrete solution (equal to backprop through the
same steps, to rounding), with memory for states only."""

from __future__ import annotations

import pytest
import torch

import pyjode
from pyjode.tableau import TABLEAUS

from memory_meter import LiveSaved
from problems import F64, MLP, cos_growth, linear_exact_loss, linear_problem, rel_error


def _grads(func, y0, t, w, params, **kw):
    stats = pyjode.Stats()
    ys = pyjode.odeint(func, y0, t, stats=stats, **kw)
    return ys.detach(), torch.autograd.grad((ys * w).sum(), [y0, *params]), stats


def _max_rel(ga, gb) -> float:
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ga, gb))


def _setup(dtype, n_out=9, seed=0):
    func = MLP(dim=3, hidden=16, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(4, 3, generator=g, dtype=F64).to(dtype).requires_grad_()
    t = torch.linspace(0.0, 2.0, n_out, dtype=dtype)
    w = torch.randn(n_out, 4, 3, generator=g, dtype=F64).to(dtype)
    return func, y0, t, w


@pytest.mark.parametrize("name", sorted(TABLEAUS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("checkpoints", [None, 3])
def test_equals_direct_every_tableau(name, dtype, checkpoints):
    """Many output times, most of them inside steps (dense output) for the adaptive methods."""
    func, y0, t, w = _setup(dtype)
    kw = dict(method=name, rtol=1e-5, atol=1e-7, step_size=0.1)
    params = list(func.parameters())
    ys_d, g_d, st_d = _grads(func, y0, t, w, params, adjoint="direct", **kw)
    ys_c, g_c, st_c = _grads(func, y0, t, w, params, adjoint=pyjode.Checkpointed(checkpoints), **kw)
    assert torch.equal(ys_d, ys_c)
    eps = torch.finfo(dtype).eps
    assert _max_rel(g_c, g_d) < 50 * eps
    assert st_c.nfe_forward == st_d.nfe_forward and st_c.steps_forward == st_d.steps_forward
    # every accepted step is recomputed once (rejected attempts and the initial-step guess are not), and
    # with bounded checkpoints re-run once more at most
    tab = TABLEAUS[name]
    fsal = 1 if tab.fsal else 0
    recompute = fsal + st_d.steps_forward * (tab.stages - fsal)
    assert st_c.steps_backward == st_d.steps_forward
    if checkpoints is None:
        assert st_c.nfe_backward == recompute
    else:
        assert recompute < st_c.nfe_backward <= 2 * recompute


def test_decreasing_time_and_params_only():
    func, y0, t, w = _setup(F64)
    t = t.flip(0)
    params = list(func.parameters())
    y0 = y0.detach()  # only the parameters want a gradient
    kw = dict(method="tsit5", rtol=1e-6, atol=1e-8)
    ys_d = pyjode.odeint(func, y0, t, adjoint="direct", **kw)
    g_d = torch.autograd.grad((ys_d * w).sum(), params)
    ys_c = pyjode.odeint(func, y0, t, adjoint="checkpointed", **kw)
    g_c = torch.autograd.grad((ys_c * w).sum(), params)
    assert torch.equal(ys_d, ys_c)
    assert _max_rel(g_c, g_d) < 50 * torch.finfo(F64).eps


def test_linear_ode_exact_gradient():
    """Against the closed form through matrix_exp: the discrete gradient converges to it."""
    A, y0, t, w = linear_problem()
    exact = torch.autograd.grad(linear_exact_loss(A, y0, t, w), (A, y0))
    ys = pyjode.odeint(lambda s, y: y @ A.T, y0, t, method="dopri5", rtol=1e-10, atol=1e-12,
                       adjoint="checkpointed", adjoint_params=(A,))
    got = torch.autograd.grad((ys * w).sum(), (A, y0))
    for g, e in zip(got, exact):
        assert rel_error(g, e) < 1e-8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rejected_steps_and_jumps(dtype):
    """Rejected attempts are not recomputed; a restart after a jump is part of its step's graph."""
    g = torch.Generator().manual_seed(1)
    k = torch.randn(5, generator=g, dtype=F64).to(dtype).requires_grad_()
    y0 = torch.rand(5, generator=g, dtype=F64).add(0.5).to(dtype).requires_grad_()
    t = torch.linspace(0.0, 12.0, 30, dtype=dtype)
    w = torch.randn(30, 5, generator=g, dtype=F64).to(dtype)

    def field(s, y):
        return k * cos_growth(s, y) + torch.where(s > 5.0, 0.3, -0.2) * y

    kw = dict(method="dopri5", rtol=1e-6, atol=1e-8, jump_ts=[5.0], adjoint_params=(k,))
    ys_d, g_d, st_d = _grads(field, y0, t, w, [k], adjoint="direct", **kw)
    ys_c, g_c, st_c = _grads(field, y0, t, w, [k], adjoint="checkpointed", **kw)
    assert st_d.rejected_forward > 0
    assert torch.equal(ys_d, ys_c)
    assert _max_rel(g_c, g_d) < 50 * torch.finfo(dtype).eps
    assert st_c.steps_backward == st_d.steps_forward


@pytest.mark.parametrize("base", ["rk4", "tsit5"])
def test_reversible_method(base):
    func, y0, t, w = _setup(F64, n_out=5)
    kw = dict(method=pyjode.Reversible(base, coupling=0.9), rtol=1e-6, atol=1e-8, step_size=0.1)
    params = list(func.parameters())
    _, g_d, _ = _grads(func, y0, t, w, params, adjoint="direct", **kw)
    _, g_c, _ = _grads(func, y0, t, w, params, adjoint="checkpointed", **kw)
    _, g_r, _ = _grads(func, y0, t, w, params, adjoint="reversible", **kw)
    assert _max_rel(g_c, g_d) < 100 * torch.finfo(F64).eps
    assert _max_rel(g_r, g_d) < 1e-9  # the reversible adjoint rebuilds the states, so it is looser


def test_second_backward_and_freed_states():
    func, y0, t, w = _setup(F64)
    ys = pyjode.odeint(func, y0, t, method="dopri5", adjoint="checkpointed")
    loss = (ys * w).sum()
    first = torch.autograd.grad(loss, [y0, *func.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [y0, *func.parameters()], retain_graph=False)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(loss, [y0])


def test_accumulates_into_grad_and_without_autograd():
    func, y0, t, w = _setup(F64)
    ys = pyjode.odeint(func, y0, t, method="tsit5", adjoint="checkpointed")
    (ys * w).sum().backward()
    ys_d = pyjode.odeint(func, y0, t, method="tsit5", adjoint="direct")
    g = torch.autograd.grad((ys_d * w).sum(), y0)[0]
    assert rel_error(y0.grad, g) < 1e-14
    with torch.no_grad():
        ys_n = pyjode.odeint(func, y0, t, method="tsit5", adjoint="checkpointed")
    assert not ys_n.requires_grad and torch.equal(ys_n, ys.detach())


def test_memory_is_states_and_one_step():
    """Peak bytes held for backward, over the forward and backward passes, against one step's activations."""
    torch.manual_seed(0)
    func = torch.nn.Sequential(torch.nn.Linear(8, 256), torch.nn.Tanh(), torch.nn.Linear(256, 8)).double()
    field = lambda s, y: func(y)  # noqa: E731
    y0 = torch.randn(64, 8, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 12, 4, dtype=F64)
    params = tuple(func.parameters())
    state_bytes = y0.numel() * 8

    def peak(adjoint, **kw):
        meter, stats = LiveSaved(), pyjode.Stats()
        with meter.hooks():
            ys = pyjode.odeint(field, y0, t, adjoint=adjoint, adjoint_params=params, stats=stats, **kw)
            torch.autograd.grad(ys.sum(), (y0, *params))
        return meter.peak, stats


    kw = dict(method="dopri5", rtol=1e-8, atol=1e-10)
    direct, st = peak("direct", **kw)
    ckpt, _ = peak("checkpointed", **kw)
    n = st.steps_forward
    assert n >= 20
    per_step = direct / n  # activations of one step (stages, their hidden layers)
    stored = (2 * n + 1) * state_bytes  # (y, f) at every step start, and y0
    assert ckpt <= stored + 1.5 * per_step
    assert ckpt < direct / 5
    c = 6
    bounded, _ = peak(pyjode.Checkpointed(checkpoints=c), **kw)
    # at most c checkpoints plus one re-run stretch of fewer than 2 n / c states, and y0
    assert bounded <= (c + 2 * n / c + 1) * 2 * state_bytes + 1.5 * per_step
    assert bounded < ckpt - stored / 2


def test_bad_arguments():
    func, y0, t, w = _setup(F64)
    for bad in (1, 0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="checkpoints"):
            pyjode.Checkpointed(bad)
    with pytest.raises(ValueError, match="output times"):
        pyjode.odeint(func, y0, t.clone().requires_grad_(), adjoint="checkpointed")



# ----------------------------------------------------------------------------------------------------
# What backprop differentiates, checkpointed differentiates: tensors the field captures, and to any order.


def _capturing_fields(dtype):
    """Fields that use tensors requiring grad that are not among ``adjoint_params``' default: a closure over
    a leaf, a closure over a tensor computed from a leaf (reached through a graph built outside the solve),
    a method bound to a module, and a module whose forward uses an outside tensor."""
    g = torch.Generator().manual_seed(3)
    W = (0.5 * torch.randn(3, 3, generator=g, dtype=F64)).to(dtype).requires_grad_()
    V = (0.5 * torch.randn(3, 3, generator=g, dtype=F64)).to(dtype).requires_grad_()
    VW = V @ W  # its graph is built once, outside the solve
    mlp = MLP(dim=3, hidden=8, dtype=dtype, seed=1)

    class Bound(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def field(self, t, y):
            return self.mlp(t, y)

    class Outside(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, t, y):
            return self.mlp(t, y) + torch.tanh(y @ W)

    return {
        "closure": ((lambda t, y: torch.tanh(y @ W)), [W]),
        "closure_nonleaf": ((lambda t, y: torch.tanh(y @ VW)), [W, V]),
        "bound_method": (Bound().field, list(mlp.parameters())),
        "module_outside_tensor": (Outside(), [W, *mlp.parameters()]),
    }


@pytest.mark.parametrize("case", ["closure", "closure_nonleaf", "bound_method", "module_outside_tensor"])
@pytest.mark.parametrize("checkpoints", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_captured_tensors_get_backprops_gradient(case, checkpoints, dtype):
    """Without adjoint_params, the captured tensors' gradient is backprop's (it used to come back None,
    silently, or to be missing from the module behind a bound method)."""
    _, y0, t, w = _setup(dtype)
    kw = dict(method="dopri5", rtol=1e-5, atol=1e-7)
    grads = []
    for adjoint in ("direct", pyjode.Checkpointed(checkpoints)):
        func, wanted = _capturing_fields(dtype)[case]  # afresh: backprop frees the graph of VW built outside
        grads.append(_grads(func, y0, t, w, wanted, adjoint=adjoint, **kw)[1])
    g_d, g_c = grads
    assert all(g is not None for g in g_c)
    assert _max_rel(g_c, g_d) < 50 * torch.finfo(dtype).eps


@pytest.mark.parametrize("checkpoints", [None, 3])
def test_create_graph_gives_backprops_second_derivative(checkpoints):
    """create_graph=True: the gradient is differentiable and its derivative (a gradient penalty's, with
    respect to y0 and the parameters) equals backprop's; it used to raise."""
    func, y0, t, w = _setup(F64)
    params = list(func.parameters())
    results = []
    for adjoint in ("direct", pyjode.Checkpointed(checkpoints)):
        ys = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=adjoint)
        g = torch.autograd.grad((ys * w).sum(), [y0, *params], create_graph=True)
        penalty = sum((x ** 2).sum() for x in g)
        results.append((g, torch.autograd.grad(penalty, [y0, *params])))
    (g_d, h_d), (g_c, h_c) = results
    assert _max_rel(g_c, g_d) < 1e-12
    assert _max_rel(h_c, h_d) < 1e-12


@pytest.mark.parametrize("adjoint", ["checkpointed", "auto"])
def test_captured_tensor_switched_on_inside_the_span(adjoint):
    """A closure that uses its tensor only after t = 0.5 is not seen by a trace at t0 alone; the trace at the
    span's end finds it, and its gradient equals backprop's (it used to come back None, silently)."""
    g = torch.Generator().manual_seed(5)
    W = (0.5 * torch.randn(2, 2, generator=g, dtype=F64)).requires_grad_()

    def field(t, y):
        return y @ W if t > 0.5 else -y

    y0 = torch.tensor([[1.0, -0.5]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads = []
    for method in ("direct", adjoint):
        ys = pyjode.odeint(field, y0, t, method="dopri5", rtol=1e-8, atol=1e-10, adjoint=method)
        grads.append(torch.autograd.grad(ys.sum(), [y0, W], allow_unused=True))
    assert grads[1][1] is not None
    assert _max_rel(grads[1], grads[0]) < 1e-12
