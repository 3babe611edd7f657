"""Reversible Heun: the exact O(1)-memory adjoint against backprop through the same steps."""
import pytest
import torch

import pyjode
from pyjode.sde import BrownianPath, sdeint

class NeuralSDE(torch.nn.Module):
    sde_type = "stratonovich"

    def __init__(self, noise_type, d=3, m=2, width=16):
        super().__init__()
        self.noise_type, self.d, self.m = noise_type, d, m
        out = {"diagonal": d, "scalar": d, "general": d * m, "additive": d * m}[noise_type]
        self.drift = torch.nn.Sequential(torch.nn.Linear(d + 1, width), torch.nn.Tanh(),
                                         torch.nn.Linear(width, d))
        self.diffusion = torch.nn.Sequential(torch.nn.Linear(d + 1, width), torch.nn.Tanh(),
                                             torch.nn.Linear(width, out))

    def _with_time(self, t, y):
        return torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1)

    def f(self, t, y):
        return self.drift(self._with_time(t, y))

    def g(self, t, y):
        state = torch.zeros_like(y) if self.noise_type == "additive" else y
        out = 0.3 * torch.tanh(self.diffusion(self._with_time(t, state)))
        if self.noise_type == "scalar":
            return out.unsqueeze(-1)
        if self.noise_type in ("general", "additive"):
            return out.reshape(*y.shape, self.m)
        return out


NOISE_SHAPES = {"diagonal": (5, 3), "scalar": (5, 1), "general": (5, 2), "additive": (5, 2)}


def _flat_grads(sde, y0, adjoint, bm, t, weight, stats=None):
    ys = sdeint(sde, y0, t, method="reversible_heun", dt=0.01, bm=bm, adjoint=adjoint,
                stats=stats)
    loss = (ys * weight).sum() + ys[-1].pow(2).sum()
    grads = torch.autograd.grad(loss, [y0, *sde.parameters()])
    return ys.detach(), torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "general", "additive"])
def test_reversible_adjoint_matches_direct_backprop(noise_type):
    sde = NeuralSDE(noise_type).double()
    y0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, NOISE_SHAPES[noise_type], seed=1, dtype=torch.float64)
    weight = torch.randn(3, 5, 3, dtype=torch.float64)
    ys_direct, direct = _flat_grads(sde, y0, "direct", bm, t, weight)
    stats = pyjode.Stats()
    ys_rev, reversible = _flat_grads(sde, y0, "reversible", bm, t, weight, stats)
    assert torch.equal(ys_direct, ys_rev)
    assert ((direct - reversible).norm() / direct.norm()).item() < 1e-9
    # dt=0.01 on the path's dyadic grid is 1/128; the output 0.3 splits one more step.
    # One (f, g) evaluation per step each way (+ the validation call and the initial state).
    assert stats.steps_forward == stats.steps_backward == 129
    assert stats.nfe_forward == 131 and stats.nfe_backward == 130


def test_reconstruction_is_exact_over_many_steps():
    """The backward sweep rebuilds y_0 from y_N; a wrong inverse would show in dL/dy0."""
    sde = NeuralSDE("diagonal").double()
    y0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 4.0], dtype=torch.float64)
    bm = BrownianPath(0.0, 4.0, (5, 3), seed=2, dtype=torch.float64)
    grads = []
    for adjoint in ("direct", "reversible"):
        ys = sdeint(sde, y0, t, method="reversible_heun", dt=0.01, bm=bm, adjoint=adjoint)
        grads.append(torch.autograd.grad(ys[-1].sum(), y0)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)


def test_reversible_adjoint_float32_and_no_parameters():
    class Fixed:
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.2 * torch.cos(y)

    y0 = torch.randn(4, 2, requires_grad=True)
    bm = BrownianPath(0.0, 1.0, (4, 2), seed=3)
    grads = []
    for adjoint in ("direct", "reversible"):
        ys = sdeint(Fixed(), y0, [0.0, 1.0], method="reversible_heun", dt=0.05, bm=bm,
                    adjoint=adjoint)
        grads.append(torch.autograd.grad(ys.sum(), y0)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_reversible_adjoint_needs_reversible_heun():
    sde = NeuralSDE("diagonal")
    with pytest.raises(ValueError, match="reversible_heun"):
        sdeint(sde, torch.zeros(5, 3), [0.0, 1.0], method="heun", dt=0.1, adjoint="reversible")


@pytest.mark.parametrize("base,noise_type", [("heun", "diagonal"), ("midpoint", "general")])
def test_reversible_wrapper_adjoint_matches_direct_backprop(base, noise_type):
    """pyjode.Reversible over a Stratonovich SDE step: exact O(1)-memory gradients of the same scheme."""
    sde = NeuralSDE(noise_type).double()
    y0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, NOISE_SHAPES[noise_type], seed=4, dtype=torch.float64)
    weight = torch.randn(3, 5, 3, dtype=torch.float64)
    method = pyjode.Reversible(base, coupling=0.9)
    out = {}
    for adjoint in ("direct", "reversible"):
        stats = pyjode.Stats()
        ys = sdeint(sde, y0, t, method=method, dt=0.05, bm=bm, adjoint=adjoint, stats=stats)
        loss = (ys * weight).sum() + ys[-1].pow(2).sum()
        grads = torch.autograd.grad(loss, [y0, *sde.parameters()])
        out[adjoint] = (ys.detach(), torch.cat([g.reshape(-1) for g in grads]), stats)
    (ys_d, g_d, _), (ys_r, g_r, stats) = out["direct"], out["reversible"]
    assert torch.equal(ys_d, ys_r)
    assert ((g_d - g_r).norm() / g_d.norm()).item() < 1e-9
    # Two base steps of two (f, g) evaluations each way; dt = 0.05 on the dyadic grid is 1/32,
    # and the output 0.3 splits one more step.
    assert stats.steps_forward == stats.steps_backward == 33
    assert stats.nfe_forward == 1 + 4 * 33 and stats.nfe_backward == 4 * 33


def test_reversible_wrapper_rejects_bases_that_do_not_fit():
    sde = NeuralSDE("diagonal").double()
    y0 = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for base in ("euler", "rk4"):
        with pytest.raises(ValueError, match="Stratonovich base"):
            sdeint(sde, y0, t, method=pyjode.Reversible(base), dt=0.1)
    with pytest.raises(ValueError, match="algebraically reversible"):
        sdeint(sde, y0, t, method="heun", dt=0.1, adjoint="reversible")


def test_reversible_adjoint_replays_the_noise_drawn_without_a_path():
    """bm=None: the adjoint asks for the solver's own noise again, backwards, and gets it exactly."""
    sde = NeuralSDE("diagonal").double()
    y0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    grads = {}
    for adjoint in ("direct", "reversible"):
        torch.manual_seed(11)
        ys = sdeint(sde, y0, t, method="reversible_heun", dt=0.001, adjoint=adjoint)
        grads[adjoint] = torch.cat([g.reshape(-1) for g in
                                    torch.autograd.grad(ys.pow(2).sum(), [y0, *sde.parameters()])])
    assert ((grads["direct"] - grads["reversible"]).norm() / grads["direct"].norm()).item() < 1e-9
