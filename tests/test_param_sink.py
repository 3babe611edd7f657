"""Parameter-sized gradient buffers of the memory-saving adjoints: the checkpointed adjoint adds each field
evaluation's parameter VJP into one buffer per parameter (pyjode/adjoints/param_sink.py), and the
quadrature adjoint caps a batched VJP's activations at about the parameters' size. Exactness against the
plain paths, and the memory claims counted in bytes allocated (profiler memory events)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyjode
import pyjode.adjoints.param_sink as param_sink
import pyjode.adjoints.quadrature as quadrature
from pyjode.adjoints.param_sink import sink_field
from pyjode.tableau import TABLEAUS

from memory_meter import allocations
from problems import F64, MLP


def _max_rel(ga, gb) -> float:
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ga, gb))


class Wide(nn.Module):
    """dy/dt = W3 softplus(W2 softplus(W1 y)): parameters (0.15 M) dominate a small batch's activations."""

    def __init__(self, dim=4, width=384, dtype=torch.float32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Softplus(), nn.Linear(width, width), nn.Softplus(),
                                 nn.Linear(width, dim)).to(dtype)
        with torch.no_grad():
            self.net[2].weight.mul_(2.0)

    def forward(self, t, y):
        return self.net(y)


def _grads(func, y0, t, w, adjoint, **kw):
    params = list(func.parameters())
    ys = pyjode.odeint(func, y0, t, adjoint=adjoint, **kw)
    return ys.detach(), torch.autograd.grad((ys * w).sum(), [y0, *params])


@pytest.mark.parametrize("name", sorted(TABLEAUS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("checkpoints", [None, 3])
def test_checkpointed_with_sinks_equals_direct(monkeypatch, name, dtype, checkpoints):
    """Every explicit tableau, dense outputs inside steps, bounded checkpoints (whose re-runs evaluate the
    sunk field without a graph): the gradient through the sinks is backprop's to rounding."""
    monkeypatch.setattr(param_sink, "MIN_SINK_ELEMENTS", 0)  # the small test field takes the sink path
    used = []
    real = param_sink._Sink.backward
    monkeypatch.setattr(param_sink._Sink, "backward", staticmethod(lambda ctx, g: used.append(1) or real(ctx, g)))
    func = MLP(dim=3, hidden=16, dtype=dtype, depth=2)
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(4, 3, generator=g, dtype=F64).to(dtype).requires_grad_()
    t = torch.linspace(0.0, 2.0, 9, dtype=dtype)
    w = torch.randn(9, 4, 3, generator=g, dtype=F64).to(dtype)
    kw = dict(method=name, rtol=1e-5, atol=1e-7, step_size=0.1)
    ys_d, g_d = _grads(func, y0, t, w, "direct", **kw)
    ys_c, g_c = _grads(func, y0, t, w, pyjode.Checkpointed(checkpoints), **kw)
    assert used, "the sink path was not taken"
    assert torch.equal(ys_d, ys_c)
    assert _max_rel(g_c, g_d) < 50 * torch.finfo(dtype).eps


def test_sink_only_where_it_reaches_every_use():
    """Closures, parameters outside the module, tied weights and small fields keep autograd's own sum."""
    big = Wide()
    params = list(big.parameters())
    grads = [torch.zeros_like(p) for p in params]
    assert sink_field(big, params, grads) is not None
    assert sink_field(lambda t, y: big(t, y), params, grads) is None  # not a module: cannot swap
    extra = torch.zeros(3, requires_grad=True)
    assert sink_field(big, params + [extra], grads + [torch.zeros(3)]) is None
    small = MLP()
    assert sink_field(small, list(small.parameters()), [torch.zeros_like(p) for p in small.parameters()]) is None
    tied = Wide()
    tied.net[4].weight = tied.net[0].weight  # (4, 384) both ways round is not needed: a shared Parameter
    tied_params = list(tied.parameters())
    assert sink_field(tied, tied_params, [torch.zeros_like(p) for p in tied_params]) is None


def _wide_setup(dtype=torch.float32, batch=8, n_out=3, t_end=2.0):
    func = Wide(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    y0 = torch.randn(batch, 4, generator=g, dtype=F64).to(dtype)
    t = torch.linspace(0.0, t_end, n_out, dtype=dtype)
    w = torch.randn(n_out, batch, 4, generator=g, dtype=F64).to(dtype)
    return func, y0, t, w


def _param_bytes(func) -> int:
    return sum(p.numel() * p.element_size() for p in func.parameters())


def _eval_activation_bytes(func, y0) -> int:
    """Bytes one evaluation of the field leaves allocated while its graph is alive (its activations)."""
    keep = []
    stats = allocations(lambda: keep.append(func(torch.tensor(0.0), y0)))
    return stats.net


def test_checkpointed_gradient_holds_two_parameter_buffers(monkeypatch):
    """Peak bytes allocated during the gradient: the accumulator (which becomes .grad), one evaluation's
    parameter VJP, and one step's activations. Autograd summing the stages' VJPs itself holds three or
    more parameter-sized buffers besides the accumulator."""
    func, y0, t, w = _wide_setup(batch=4)
    P = _param_bytes(func)
    step = 7 * _eval_activation_bytes(func, y0)  # dopri5: seven evaluations per recomputed step
    assert step < P / 2

    def gradient():
        func.zero_grad(set_to_none=True)
        ys = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-5, atol=1e-6, adjoint="checkpointed")
        (ys * w).sum().backward()

    gradient()  # one-time allocations (kernels, modules) out of the count
    sunk = allocations(gradient).peak
    g_sunk = [p.grad.clone() for p in func.parameters()]
    monkeypatch.setattr(param_sink, "MIN_SINK_ELEMENTS", 1 << 62)
    summed = allocations(gradient).peak
    g_summed = [p.grad.clone() for p in func.parameters()]
    assert sunk <= 2 * P + 1.5 * step
    assert summed >= 3 * P
    assert _max_rel(g_sunk, g_summed) < 50 * torch.finfo(torch.float32).eps


def test_quadrature_batched_vjp_capped_at_a_quarter_parameter_size(monkeypatch):
    """With the activation floor lifted, a batched VJP takes no more nodes than keep about a quarter of
    the parameters' size of activations: the peak drops below the all-nodes-in-one-call peak and stays within the
    accumulator, one VJP's gradient and that budget; the gradient is unchanged (float64, to rounding)."""
    monkeypatch.setattr(quadrature, "ACTIVATION_FLOOR", 0)
    func, y0, t, w = _wide_setup(dtype=F64, batch=16, n_out=2, t_end=8.0)
    P = _param_bytes(func)
    per_node = _eval_activation_bytes(func, y0)
    cap = quadrature.nodes_per_call(func, tuple(func.parameters()), torch.tensor(0.0, dtype=F64), y0, 10 ** 6)
    assert abs(cap - P / 4 / per_node) < 2  # the measurement agrees with the count
    kw = dict(method="dopri5", rtol=1e-8, atol=1e-9)

    def gradient(adjoint):
        func.zero_grad(set_to_none=True)
        stats = pyjode.Stats()
        ys = pyjode.odeint(func, y0, t, adjoint=adjoint, stats=stats, **kw)
        (ys * w).sum().backward()
        return stats

    one_call = pyjode.Quadrature(max_nodes_per_call=10 ** 6)
    stats = gradient(one_call)
    nodes = 2 * stats.steps_backward
    assert nodes > 2 * cap, "the test needs more nodes than the cap"
    whole = allocations(lambda: gradient(one_call)).peak
    g_whole = [p.grad.clone() for p in func.parameters()]
    capped = allocations(lambda: gradient(pyjode.Quadrature())).peak
    g_capped = [p.grad.clone() for p in func.parameters()]
    assert capped <= 2 * P + 1.5 * cap * per_node + 1.5 * per_node
    assert capped < whole - 0.5 * nodes * per_node
    assert _max_rel(g_capped, g_whole) < 1e-12


def test_quadrature_accumulates_in_place(monkeypatch):
    """The batched VJPs are added into the one accumulator: no second parameter-sized buffer per call."""
    func, y0, t, w = _wide_setup()
    P = _param_bytes(func)
    zeros_like = torch.zeros_like
    made = []

    def spy(x, *a, **k):
        if x.numel() * x.element_size() >= P // 2:
            made.append(x.shape)
        return zeros_like(x, *a, **k)

    monkeypatch.setattr(torch, "zeros_like", spy)
    ys = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-5, atol=1e-6, adjoint="quadrature")
    (ys * w).sum().backward()
    monkeypatch.setattr(torch, "zeros_like", zeros_like)
    # one accumulator for the big weight; before the change every batch of nodes made its own as well
    assert made.count(func.net[2].weight.shape) == 1


def test_all_finite_without_elementwise_temporaries():
    """The finiteness check of the adjoints' gradients: a sum decides when it is finite; NaN, infinities
    and a sum that overflows on finite elements are all told apart correctly, in both dtypes."""
    from pyjode.adjoints.backward_checks import all_finite

    for dtype in (torch.float32, torch.float64):
        big = torch.finfo(dtype).max
        ok = torch.ones(1000, dtype=dtype)
        assert all_finite([ok, None, torch.zeros(0, dtype=dtype)])
        assert all_finite([torch.full((4,), big, dtype=dtype)])  # the sum overflows, the elements do not
        for bad in (float("nan"), float("inf"), -float("inf")):
            x = ok.clone()
            x[17] = bad
            assert not all_finite([ok, x])
        x = torch.full((4,), big, dtype=dtype)
        x[0] = float("inf")
        assert not all_finite([x])
    P = 1 << 20
    g = torch.ones(P)
    assert allocations(lambda: all_finite([g])).peak < P // 8  # no parameter-sized temporary


def test_first_quadrature_gradient_of_a_field_peaks_as_the_next():
    """Whether vmap can batch a field is decided on its first quadrature gradient, on one node without a
    graph: that first gradient peaks no higher than the next (deciding on a node whose graph joined the
    batch's made autograd sum two parameter-sized VJPs)."""
    func, y0, t, w = _wide_setup(dtype=F64, batch=16, n_out=2, t_end=8.0)
    P = _param_bytes(func)

    def gradient():
        ys = pyjode.odeint(func, y0, t, method="dopri5", rtol=1e-8, atol=1e-9, adjoint="quadrature")
        (ys * w).sum().backward()

    first = allocations(gradient).peak
    g_first = [p.grad.clone() for p in func.parameters()]
    func.zero_grad(set_to_none=True)  # outside the count: freeing .grad inside it would lower the peak by P
    second = allocations(gradient).peak
    assert first <= second + 0.1 * P, (first / P, second / P)
    assert all(torch.equal(a, p.grad) for a, p in zip(g_first, func.parameters()))
