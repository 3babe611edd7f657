"""Per-sample step sizes (``per_sample=True``): every sample of a batch of independent problems takes the steps it
would take alone, solutions match closed forms and scipy, gradients match matrix_exp, and misuse is refused."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyjode
from pyjode.implicit import Implicit
from pyjode.integrate import integrate
from pyjode.runge_kutta import RungeKutta
from pyjode.step_control import StepControl
from pyjode.tableau import get_tableau

from problems import van_der_pol

F64 = torch.float64
RATES = [0.3, 1.0, 4.0, 20.0]
TS = [0.0, 0.7, 2.0, 5.0]


class Forced:
    """y' = -k y + sin(t), per sample k (t of shape (B,)) or for one k (t 0-dim)."""

    def __init__(self, k):
        self.k = k

    def __call__(self, t, y):
        if t.dim() == 0:
            return -self.k * y + torch.sin(t)
        return -self.k[:, None] * y + torch.sin(t)[:, None]


def forced_solution(k, y0, t):
    """y = (y0 + 1/(k^2+1)) e^{-k t} + (k sin t - cos t)/(k^2+1)."""
    return (y0 + 1 / (k * k + 1)) * math.exp(-k * t) + (k * math.sin(t) - math.cos(t)) / (k * k + 1)


# ------------------------------------------------------------------------------------------------------
# The key property: each sample steps as it would alone


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_each_sample_takes_the_steps_it_takes_alone(method, dtype):
    """Per-sample steps of a batch of y' = -k_b y + sin t equal, sample by sample, the ordinary loop's steps on
    that sample alone (with step_ts=t, since per-sample steps land on every output time): the same number of
    accepted steps, the same values at the outputs to rounding, and in float64 the same step times to rounding.

    "To rounding" for step times: the arithmetic differs in the last bit (a per-sample h scales the stage sums
    instead of addmv's alpha), and the error estimate h sum e_i k_i cancels down to about ratio * rtol |y| from
    stages of size |y|, so a one-ulp difference in the stages moves the error ratio by about
    eps / (ratio * rtol), and the next step by a fifth of that: up to ~1e-8 relative in float64 at rtol 1e-6
    with ratios ~1e-3. In float32 at rtol 1e-4 the same bound exceeds 10%, so there only the counts and the
    outputs (to the solve's tolerance) are compared."""
    rtol, atol = (1e-6, 1e-9) if dtype == F64 else (1e-4, 1e-6)
    k = torch.tensor(RATES, dtype=dtype)
    y0 = torch.linspace(0.5, 2.0, 2 * len(RATES), dtype=dtype).reshape(len(RATES), 2)
    tab = get_tableau(method)
    run = integrate(RungeKutta(tab, y0), Forced(k), y0, TS, StepControl(rtol=rtol, atol=atol, per_sample=True),
                    keep_times=True)
    ys = torch.stack(run.ys)
    for b, kb in enumerate(RATES):
        alone = y0[b:b + 1]
        ref = integrate(RungeKutta(tab, alone), Forced(float(kb)), alone, TS,
                        StepControl(rtol=rtol, atol=atol, step_ts=TS), keep_times=True)
        assert int(run.steps[b]) == len(ref.times) - 1
        times_alone, times_batch = np.array(ref.times), np.array(run.sample_times[b])
        assert times_batch.shape == times_alone.shape
        assert set(TS) <= set(times_batch)
        if dtype == F64:
            np.testing.assert_allclose(times_batch, times_alone, rtol=1e-7, atol=0)
            torch.testing.assert_close(ys[:, b], torch.stack(ref.ys)[:, 0], rtol=1e-14, atol=1e-14)
        else:  # steps that differ by rounding noise give outputs that differ within the tolerance
            torch.testing.assert_close(ys[:, b], torch.stack(ref.ys)[:, 0], rtol=rtol, atol=atol)
    # the batch took as many attempts as its slowest sample needed, not the union of all samples' steps
    assert run.iterations == int((run.steps + run.rejected).max())


def test_a_norm_of_ones_own_is_taken_per_sample():
    """A user's norm (here the RMS written out, which torch.vmap maps over the samples) steps as rms_norm does."""
    k = torch.tensor(RATES, dtype=F64)
    y0 = torch.ones(len(RATES), 3, dtype=F64)
    t = torch.tensor(TS, dtype=F64)
    own, built_in = pyjode.Stats(), pyjode.Stats()
    a = pyjode.odeint(Forced(k), y0, t, per_sample=True, norm=lambda x: x.pow(2).mean().sqrt(), stats=own)
    b = pyjode.odeint(Forced(k), y0, t, per_sample=True, stats=built_in)
    assert own.steps_forward == built_in.steps_forward and own.rejected_forward == built_in.rejected_forward
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_stats_count_every_sample():
    k = torch.tensor(RATES, dtype=F64)
    y0 = torch.ones(len(RATES), 1, dtype=F64)
    stats = pyjode.Stats()
    pyjode.odeint(Forced(k), y0, torch.tensor(TS, dtype=F64), per_sample=True, rtol=1e-6, stats=stats)
    alone = [pyjode.Stats() for _ in RATES]
    for kb, st in zip(RATES, alone):
        pyjode.odeint(Forced(kb), y0[:1], torch.tensor(TS, dtype=F64), rtol=1e-6, step_ts=TS, stats=st)
    assert stats.steps_forward == sum(st.steps_forward for st in alone)
    assert stats.rejected_forward == sum(st.rejected_forward for st in alone)


# ------------------------------------------------------------------------------------------------------
# Closed forms


@pytest.mark.parametrize("dtype,rtol,tol", [(torch.float64, 1e-9, 1e-7), (torch.float32, 1e-5, 2e-4)])
@pytest.mark.parametrize("direction", [1, -1])
def test_closed_form_with_time_dependence(dtype, rtol, tol, direction):
    """Each sample's own time reaches the field: y' = -k_b y + sin t against its closed form at every output,
    forwards and backwards in time."""
    k = torch.tensor(RATES, dtype=dtype)
    y0 = torch.tensor([[1.0], [-0.5], [2.0], [0.25]], dtype=dtype)
    ts = [direction * t for t in TS]
    if direction < 0:  # y' = -k y is unstable backwards: the closed form holds, but keep its growth small
        k = k.clamp(max=1.0)
    ys = pyjode.odeint(Forced(k), y0, torch.tensor(ts, dtype=dtype), per_sample=True, rtol=rtol, atol=rtol * 1e-3)
    assert ys.dtype == dtype and ys.shape == (len(ts), len(RATES), 1)
    for b in range(len(RATES)):
        exact = torch.tensor([forced_solution(float(k[b]), float(y0[b, 0]), t) for t in ts], dtype=F64)
        err = ((ys[:, b, 0].double() - exact).abs() / exact.abs().clamp(min=1e-2)).max()
        assert err < tol, (b, float(err))


def test_outputs_are_landed_on_not_interpolated():
    """Every sample lands on every output time: its step boundaries contain them all."""
    k = torch.tensor(RATES, dtype=F64)
    y0 = torch.ones(len(RATES), 1, dtype=F64)
    ts = [0.0, 0.1, 0.11, 3.0]
    run = integrate(RungeKutta(get_tableau("dopri5"), y0), Forced(k), y0, ts,
                    StepControl(rtol=1e-6, atol=1e-9, per_sample=True, step_ts=(1.5,)), keep_times=True)
    for times in run.sample_times:
        assert set(ts) | {1.5} <= set(times)


# ------------------------------------------------------------------------------------------------------
# Gradients


def linear_batch(dtype):
    g = torch.Generator().manual_seed(3)
    B = 4
    A = (-torch.eye(2) * torch.tensor([0.5, 2.0, 8.0, 30.0])[:, None, None]
         + 0.3 * torch.randn(B, 2, 2, generator=g)).to(dtype)
    y0 = torch.randn(B, 2, generator=g).to(dtype)
    w = torch.randn(B, 2, generator=g).to(dtype)
    return A, y0, w


def exact_linear_gradients(A, y0, w, T):
    A, y0 = A.detach().double().requires_grad_(True), y0.detach().double().requires_grad_(True)
    yT = (torch.linalg.matrix_exp(A * T) @ y0[..., None])[..., 0]
    loss = (w.double() * yT).sum()
    return yT.detach(), torch.autograd.grad(loss, (A, y0))


@pytest.mark.parametrize("method,dtype,rtol,tol", [
    ("dopri5", torch.float64, 1e-10, 1e-7),
    ("dopri5", torch.float32, 1e-6, 2e-3),
    (Implicit("radauIIA5", jacobian="batch"), torch.float64, 1e-9, 1e-5),
    (Implicit("kvaerno5", jacobian="batch"), torch.float64, 1e-9, 1e-5),
])
def test_direct_gradients_of_independent_linear_systems(method, dtype, rtol, tol):
    """d/dA and d/dy0 of sum_b w_b . y_b(T) for y_b' = A_b y_b (rates 0.5 to 30), through the per-sample
    steps, against exp(A_b T) y0_b differentiated exactly."""
    A, y0, w = linear_batch(dtype)
    T = 1.5
    exact_y, exact_grads = exact_linear_gradients(A, y0, w, T)
    A_, y0_ = A.clone().requires_grad_(True), y0.clone().requires_grad_(True)

    def field(t, y):
        return (A_ @ y[..., None])[..., 0]

    ys = pyjode.odeint(field, y0_, torch.tensor([0.0, T], dtype=dtype), method=method, rtol=rtol,
                       atol=rtol * 1e-2, per_sample=True)
    grads = torch.autograd.grad((w * ys[-1]).sum(), (A_, y0_))
    torch.testing.assert_close(ys[-1].double(), exact_y, rtol=tol, atol=tol)
    for g, ge in zip(grads, exact_grads):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), ge, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["dopri5", Implicit("radauIIA5", jacobian="batch"),
                                    Implicit("kvaerno4", jacobian="batch")])
def test_autograd_takes_the_same_steps_as_no_grad(method):
    """Step control is not differentiated: a solve with a graph takes exactly the steps, and gives exactly the
    values, of the same solve without one."""
    mu = torch.tensor([3.0, 10.0, 30.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]] * 3, dtype=F64)
    stepper_of = (lambda like: RungeKutta(get_tableau(method), like)) if isinstance(method, str) else method.stepper
    control = StepControl(rtol=1e-6, atol=1e-6, per_sample=True)
    with torch.no_grad():
        plain = integrate(stepper_of(y0), van_der_pol(mu), y0, [0.0, 2.0, 4.0], control, keep_times=True)
    mu_g = mu.clone().requires_grad_(True)
    graphed = integrate(stepper_of(y0), van_der_pol(mu_g), y0, [0.0, 2.0, 4.0], control, keep_times=True)
    assert graphed.ys[-1].requires_grad
    assert [list(a) for a in graphed.sample_times] == [list(a) for a in plain.sample_times]
    for a, b in zip(graphed.ys, plain.ys):
        assert torch.equal(a.detach(), b)
    (g,) = torch.autograd.grad(graphed.ys[-1][:, 0].sum(), mu_g)
    assert torch.isfinite(g).all() and (g != 0).all()


def test_gradient_with_respect_to_output_times():
    """d/dt_i of sum_b y_b(t_2) for y_b' = -k_b y_b: f at the end, minus f at the start, 0 in between."""
    k = torch.tensor([0.5, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64, requires_grad=True)
    ys = pyjode.odeint(lambda t, y: -k[:, None] * y, torch.ones(2, 1, dtype=F64), t, per_sample=True, rtol=1e-10,
                       atol=1e-12)
    (g,) = torch.autograd.grad(ys[-1].sum(), t)
    end = -sum(kk * math.exp(-2 * kk) for kk in k.tolist())
    torch.testing.assert_close(g, torch.tensor([-end, 0.0, end], dtype=F64), rtol=1e-8, atol=1e-9)


def test_gradient_of_one_sample_does_not_reach_the_others():
    """Samples are independent: the gradient of sample 0's output with respect to sample 1's parameters is 0."""
    k = torch.tensor(RATES, dtype=F64, requires_grad=True)
    ys = pyjode.odeint(Forced(k), torch.ones(len(RATES), 1, dtype=F64), torch.tensor(TS, dtype=F64),
                       per_sample=True, rtol=1e-8)
    (g,) = torch.autograd.grad(ys[-1, 0, 0], k)
    assert g[0] != 0 and (g[1:] == 0).all()


# ------------------------------------------------------------------------------------------------------
# Implicit methods on a stiff batch


@pytest.mark.parametrize("name", ["radauIIA5", "kvaerno5"])
def test_stiff_batch_against_scipy_radau(name):
    """Van der Pol with mu from 5 to 300 (stiff), every sample against scipy's Radau on it alone."""
    mus = [5.0, 40.0, 300.0]
    T, rtol = 2.0, 1e-7
    y0 = torch.tensor([[2.0, 0.0]] * len(mus), dtype=F64)
    ts = torch.tensor([0.0, 0.5, T], dtype=F64)
    ys = pyjode.odeint(van_der_pol(torch.tensor(mus, dtype=F64)), y0, ts, method=Implicit(name, jacobian="batch"),
                       rtol=rtol, atol=rtol, per_sample=True)
    for b, mu in enumerate(mus):
        ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, T), [2.0, 0.0],
                        method="Radau", rtol=1e-12, atol=1e-12, t_eval=ts.tolist()).y.T
        err = np.max(np.abs(ys[:, b].numpy() - ref) / np.maximum(np.abs(ref), 1e-3))
        assert err < 200 * rtol, (mu, err)


@pytest.mark.parametrize("name", ["radauIIA5", "kvaerno5"])
def test_one_stiff_sample_steps_as_the_scalar_implicit_solver(name):
    """A batch of one stiff problem with per-sample steps takes exactly the ordinary loop's steps (the per-sample
    Newton iteration, predictor, Jacobian reuse and error estimate mirror the scalar ones), to rounding: the
    error estimate's cancellation makes that ~eps / (ratio * rtol) per step, as for the explicit methods."""
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    control = StepControl(rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        alone = integrate(Implicit(name).stepper(y0), van_der_pol(100.0), y0, [0.0, 30.0], control, keep_times=True)
        batch = integrate(Implicit(name, jacobian="batch").stepper(y0), van_der_pol(torch.tensor([100.0], dtype=F64)), y0,
                          [0.0, 30.0], control.replace(per_sample=True), keep_times=True)
    assert len(batch.sample_times[0]) == len(alone.times)
    np.testing.assert_allclose(np.array(batch.sample_times[0]), np.array(alone.times), rtol=1e-7)
    torch.testing.assert_close(batch.ys[-1], alone.ys[-1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["radauIIA5", "kvaerno5"])
def test_a_mild_sample_beside_a_stiff_one_steps_as_alone(name):
    """Van der Pol mu = 5 beside mu = 500 takes the steps it takes alone: the stiff sample's rejected steps
    and Newton failures (max_iters=3 makes some) are its own, and the shared Jacobian refreshes change the
    mild sample's stages within the Newton tolerance only."""
    y0 = torch.tensor([[2.0, 0.0]] * 2, dtype=F64)
    control = StepControl(rtol=1e-6, atol=1e-6, per_sample=True)
    with torch.no_grad():
        method = Implicit(name, jacobian="batch", max_iters=3)
        pair = integrate(method.stepper(y0), van_der_pol(torch.tensor([5.0, 500.0], dtype=F64)), y0, [0.0, 5.0], control,
                         keep_times=True)
        alone = integrate(Implicit(name, jacobian="batch", max_iters=3).stepper(y0[:1]),
                          van_der_pol(torch.tensor([5.0], dtype=F64)), y0[:1], [0.0, 5.0], control, keep_times=True)
    assert method.stats.newton_failures > 0 and int(pair.rejected[1]) > 0
    assert int(pair.steps[0]) == int(alone.steps[0]) and int(pair.rejected[0]) == int(alone.rejected[0])
    np.testing.assert_allclose(np.array(pair.sample_times[0]), np.array(alone.sample_times[0]), rtol=1e-7)
    torch.testing.assert_close(pair.ys[-1][0], alone.ys[-1][0], rtol=1e-7, atol=1e-9)


def test_stiff_batch_with_different_time_scales_takes_far_fewer_attempts_than_shared_steps():
    """The point of per-sample steps: with mu spread over [20, 60], each problem's sharp transitions come at
    different times; the shared step size takes the union of all their small steps."""
    mus = torch.linspace(20.0, 60.0, 4, dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=F64)
    shared, own = pyjode.Stats(), pyjode.Stats()
    run_kw = dict(rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        a = pyjode.odeint(van_der_pol(mus), y0, torch.tensor([0.0, 40.0], dtype=F64),
                          method=Implicit("radauIIA5", jacobian="batch"), stats=shared, **run_kw)
        m = Implicit("radauIIA5", jacobian="batch")
        b = pyjode.odeint(van_der_pol(mus), y0, torch.tensor([0.0, 40.0], dtype=F64), method=m, stats=own,
                          per_sample=True, **run_kw)
    assert own.steps_forward / 4 < 0.5 * shared.steps_forward
    # both within ~10 rtol of the truth (and |y| <= 2), so they agree to 2 * 10 * rtol * 2
    torch.testing.assert_close(a[-1], b[-1], rtol=0, atol=4e-4)


# ------------------------------------------------------------------------------------------------------
# Options and misuse


def test_torchdiffeq_options_reach_per_sample():
    from pyjode import torchdiffeq as tdq

    k = torch.tensor(RATES, dtype=F64)
    y0 = torch.ones(len(RATES), 1, dtype=F64)
    t = torch.tensor(TS, dtype=F64)
    ys = tdq.odeint(Forced(k), y0, t, rtol=1e-8, atol=1e-10, options=dict(per_sample=True))
    torch.testing.assert_close(ys, pyjode.odeint(Forced(k), y0, t, rtol=1e-8, atol=1e-10, per_sample=True))
    with pytest.raises(ValueError, match="per_sample"):
        tdq.odeint(lambda t, y: (-y[0], -y[1]), (y0, y0), t, options=dict(per_sample=True))


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="rk4", step_size=0.1), "per_sample=True cannot be used with method"),
    (dict(method=Implicit("radauIIA5")), "per_sample=True cannot be used with method"),
    (dict(method=pyjode.ScipySolver("RK45")), "per_sample=True cannot be used with method"),
    (dict(adjoint="backsolve"), "adjoint='direct' only"),
    (dict(adjoint="checkpointed"), "adjoint='direct' only"),
    (dict(jump_ts=[1.0]), "does not support jump_ts"),
    (dict(method=Implicit("radauIIA5", jacobian="batch", keep_step=1.2)), "keep_step=1.2 has nothing to keep"),
    (dict(perturb=True), "does not support perturb"),
])
def test_refused_combinations(kwargs, match):
    k = torch.tensor(RATES, dtype=F64)
    with pytest.raises(ValueError, match=match):
        pyjode.odeint(Forced(k), torch.ones(len(RATES), 1, dtype=F64), torch.tensor(TS, dtype=F64),
                      per_sample=True, **kwargs)


def test_refused_inputs():
    t = torch.tensor(TS, dtype=F64)
    with pytest.raises(ValueError, match="0-dim y0"):
        pyjode.odeint(lambda t, y: -y, torch.tensor(1.0, dtype=F64), t, per_sample=True)
    with pytest.raises(ValueError, match="dense solution"):
        pyjode.solve(lambda t, y: -y, torch.ones(2, 1, dtype=F64), t, per_sample=True, dense=True)
    with pytest.raises(TypeError, match="per_sample must be True or False"):
        pyjode.odeint(lambda t, y: -y, torch.ones(2, 1, dtype=F64), t, per_sample="yes")
    with pytest.raises(ValueError, match="per_sample=True: the method"):  # a stepper that cannot, at the loop
        y0 = torch.ones(2, 1, dtype=F64)
        integrate(RungeKutta(get_tableau("rk4"), y0), lambda t, y: -y, y0, TS,
                  StepControl(step_size=0.1, per_sample=True))


def test_nonfinite_field_names_the_sample_and_time():
    """Sample 2's field turns NaN after t = 1: the error names sample 2 near t = 1, not max_steps."""
    def field(t, y):
        bad = (t > 1.0) & (torch.arange(y.shape[0]) == 2)
        return torch.where(bad[:, None], torch.full_like(y, math.nan), -y)

    with pytest.raises(pyjode.SolveError, match=r"sample 2: step size underflowed .* at t=1(\.0+\d*)?[ :]") as info:
        pyjode.odeint(field, torch.ones(4, 1, dtype=F64), torch.tensor([0.0, 3.0], dtype=F64), per_sample=True)
    assert info.value.cause == "nonfinite_field" and abs(info.value.t - 1.0) < 1e-6


def test_max_steps_and_min_step_name_the_sample():
    k = torch.tensor([0.1, 0.1, 500.0], dtype=F64)
    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    with pytest.raises(pyjode.SolveError, match="sample 2: max_steps=50 reached") as info:
        pyjode.odeint(Forced(k), y0, t, per_sample=True, max_steps=50)
    assert info.value.cause == "max_steps"
    with pytest.raises(pyjode.SolveError, match="sample 2: a step of min_step=0.1 failed its error test") as info:
        pyjode.odeint(Forced(k), y0, t, per_sample=True, min_step=0.1)
    assert info.value.cause == "min_step"
    # accept_min_step accepts them instead, as in the ordinary loop
    ys = pyjode.odeint(Forced(k[:2]), y0[:2], t, per_sample=True, min_step=0.1, accept_min_step=True)
    assert torch.isfinite(ys).all()


def test_nonfinite_start_is_diagnosed():
    y0 = torch.tensor([[1.0], [math.nan]], dtype=F64)
    with pytest.raises(pyjode.BadStartError, match="y0 contains NaN at index"):
        pyjode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), per_sample=True)
