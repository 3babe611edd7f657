"""sdeint's input checks, shapes and failure reports."""
import pytest
import torch

import pyjode
from pyjode.sde import BrownianPath, sdeint

class Simple(torch.nn.Module):
    def __init__(self, noise_type="diagonal", sde_type="ito", g_shape=None):
        super().__init__()
        self.noise_type, self.sde_type, self.g_shape = noise_type, sde_type, g_shape

    def f(self, t, y):
        return -y

    def g(self, t, y):
        shape = y.shape if self.g_shape is None else self.g_shape
        return torch.ones(shape, dtype=y.dtype)


def test_output_shape_and_outputs_hit_exactly():
    y0 = torch.ones(6, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.35, 1.0], dtype=torch.float64)
    ys = sdeint(Simple(), y0, t, method="euler", dt=0.1)
    assert ys.shape == (4, 6, 2)
    assert torch.equal(ys[0], y0)


def test_default_brownian_motion_follows_torch_seed():
    y0 = torch.zeros(3, 2)
    torch.manual_seed(1)
    a = sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.1)
    torch.manual_seed(1)
    b = sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.1)
    c = sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_method_mismatch_names_the_methods_that_fit():
    with pytest.raises(ValueError, match=r"heun.*midpoint.*reversible_heun"):
        sdeint(Simple(sde_type="stratonovich"), torch.zeros(2, 2), [0.0, 1.0], method="euler",
               dt=0.1)
    with pytest.raises(ValueError, match=r"euler"):
        sdeint(Simple(noise_type="general", g_shape=(2, 2, 3)), torch.zeros(2, 2), [0.0, 1.0],
               method="milstein", dt=0.1)
    with pytest.raises(ValueError, match="unknown method"):
        sdeint(Simple(), torch.zeros(2, 2), [0.0, 1.0], method="rk4", dt=0.1)


def test_additive_noise_fits_every_method():
    sde = Simple(noise_type="additive", sde_type="stratonovich", g_shape=(2, 2, 3))
    for method in ("euler", "milstein", "heun", "midpoint", "reversible_heun"):
        assert sdeint(sde, torch.zeros(2, 2), [0.0, 1.0], method=method, dt=0.1).shape == (2, 2, 2)


def test_bad_inputs():
    y0 = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="noise_type"):
        sdeint(Simple(noise_type="weird"), y0, [0.0, 1.0], dt=0.1)
    with pytest.raises(TypeError, match="f"):
        sdeint(object(), y0, [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="strictly increasing"):
        sdeint(Simple(), y0, [0.0, 1.0, 0.5], method="euler", dt=0.1)
    with pytest.raises(ValueError, match="dt"):
        sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.0)
    with pytest.raises(ValueError, match="g\\(t, y\\) returned shape"):
        sdeint(Simple(g_shape=(2, 3)), y0, [0.0, 1.0], method="euler", dt=0.1)
    with pytest.raises(ValueError, match="bm has shape"):
        sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.1,
               bm=BrownianPath(0.0, 1.0, (3,)))
    with pytest.raises(ValueError, match="covers"):
        sdeint(Simple(), y0, [0.0, 2.0], method="euler", dt=0.1,
               bm=BrownianPath(0.0, 1.0, (2, 2)))
    with pytest.raises(ValueError, match="adjoint"):
        sdeint(Simple(), y0, [0.0, 1.0], method="euler", dt=0.1, adjoint="backsolve")
    with pytest.raises(TypeError, match="y0"):
        sdeint(Simple(), [0.0], [0.0, 1.0], method="euler", dt=0.1)


def test_blow_up_is_reported_with_its_time():
    class Explosive(Simple):
        def f(self, t, y):
            return y ** 3

    with pytest.raises(RuntimeError, match="NaN or inf between t="):
        sdeint(Explosive(), torch.full((2, 2), 10.0), [0.0, 0.5, 5.0], method="euler", dt=0.1)


class DriftSpy(Simple):
    """Counts drift evaluations, as pyjode.Stats should."""

    def __init__(self, noise_type="diagonal", sde_type="ito", g_shape=None):
        super().__init__(noise_type, sde_type, g_shape)
        self.calls = 0

    def f(self, t, y):
        self.calls += 1
        return super().f(t, y)


@pytest.mark.parametrize("noise_type, sde_type, method, adjoint", [
    ("diagonal", "ito", "euler", "direct"), ("diagonal", "ito", "milstein", "direct"),
    ("additive", "ito", "milstein", "direct"), ("diagonal", "stratonovich", "heun", "direct"),
    ("diagonal", "stratonovich", "midpoint", "direct"),
    ("diagonal", "stratonovich", "reversible_heun", "direct"),
    ("diagonal", "stratonovich", "reversible_heun", "reversible"),
    ("diagonal", "stratonovich", pyjode.Reversible("heun"), "direct"),
    ("diagonal", "stratonovich", pyjode.Reversible("heun"), "reversible"),
])
def test_stats_count_the_drift_evaluations_made_and_accumulate(noise_type, sde_type, method, adjoint):
    g_shape = (4, 2, 3) if noise_type == "additive" else None
    sde = DriftSpy(noise_type, sde_type, g_shape)
    y0 = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    bm = BrownianPath(0.0, 1.0, (4, 3) if noise_type == "additive" else (4, 2), seed=1, dtype=torch.float64)
    stats = pyjode.Stats()
    ys = sdeint(sde, y0, [0.0, 0.5, 1.0], method=method, dt=0.125, bm=bm, adjoint=adjoint, stats=stats)
    forward_calls = sde.calls
    ys.sum().backward()
    assert stats.nfe_forward == forward_calls
    assert stats.steps_forward == 8
    if adjoint == "reversible":
        assert stats.nfe_backward == sde.calls - forward_calls and stats.steps_backward == 8
    sdeint(sde, y0, [0.0, 0.5, 1.0], method=method, dt=0.125, bm=bm, stats=stats)
    assert stats.steps_forward == 16 and stats.nfe_forward == 2 * forward_calls  # accumulates, as in odeint
