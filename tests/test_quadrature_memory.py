"""The quadrature adjoint on fields that vmap refuses (a CNF's Hutchinson trace calls torch.autograd.grad):
vmap is tried once per field, and at most one node's graph is alive in the parameter VJPs."""

from __future__ import annotations

import torch
from torch import nn

import pyjode
from memory_meter import LiveSaved
from problems import F64, rel_error


class HutchinsonCNF(nn.Module):
    """[y, log p]' = [f(y), -e^T (∂f/∂y) e] with a fixed probe e: the trace estimate differentiates f inside
    the field, which torch.func.vmap cannot trace."""

    def __init__(self, batch: int, dim: int = 2, hidden: int = 64):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim)).double()
        self.register_buffer("e", torch.randn(batch, dim, dtype=F64))
        self.dim, self.vmapped_calls = dim, 0

    def forward(self, t, s):
        if torch._C._functorch.is_batchedtensor(s):
            self.vmapped_calls += 1
        y = s[..., :self.dim]
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.requires_grad_(True)
            f = self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], -1))
            (vjp,) = torch.autograd.grad(f, y, self.e, create_graph=True)
        return torch.cat([f, -(vjp * self.e).sum(-1, keepdim=True)], -1)


def _gradient(func, s0, t, adjoint):
    meter = LiveSaved()
    with meter.hooks():
        ys = pyjode.odeint(func, s0, t, method="dopri5", rtol=1e-8, atol=1e-10, adjoint=adjoint)
        loss = ys[-1, :, -1].sum() + (ys[-1, :, :2] ** 2).sum()
        grads = torch.autograd.grad(loss, tuple(func.parameters()))
    return grads, meter.peak


def test_vmap_tried_once_and_one_node_graph_at_a_time():
    batch = 64
    func = HutchinsonCNF(batch)
    s0 = torch.cat([torch.randn(batch, 2, dtype=F64), torch.zeros(batch, 1, dtype=F64)], 1)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    g_direct, peak_direct = _gradient(func, s0, t, "direct")
    g_quad, peak_quad = _gradient(func, s0, t, "quadrature")
    assert func.vmapped_calls == 1  # the failed trace, once
    _, peak_again = _gradient(func, s0, t, "quadrature")
    assert func.vmapped_calls == 1  # not retried on the next solve
    _, peak_one = _gradient(func, s0, t, pyjode.Quadrature(max_nodes_per_call=1))
    _, peak_backsolve = _gradient(func, s0, t, "backsolve")
    for a, b in zip(g_quad, g_direct):
        assert rel_error(a, b) < 1e-5
    # the default chunk (2**14 // 192 = 85 nodes) holds no more than a single-node call
    assert peak_quad == peak_again and peak_quad <= 1.05 * peak_one
    # and not more than Backsolve, whose VJP graph has the same size (the stored outputs are common to both)
    assert peak_quad <= 1.1 * peak_backsolve
    assert peak_quad < peak_direct / 3
