"""Gradient time of the continuous adjoints on a wide MLP (the regime of Norcliffe & Deisenroth, TMLR 2023).

Vector field f(t, y) = Linear(3000 -> 4)(softplus(Linear(1024 -> 3000)(softplus(Linear(4 -> 1024)(y))))):
autonomous (t is not an input, as in the paper's g1d ANODE model), about 3.09 M parameters, state
batch 32 x 4. From PyTorch's default initialisation the flow is nearly a constant drift that dopri5
crosses in 3 steps; the first layer's weights are scaled by 4 and the last layer's by 6 so the flow
bends and dopri5 needs 9 steps on t in [0, 2.5] at rtol 1e-4, atol 1e-5 (5 output times).

Besides the methods, two rows bound and trade: the "floor" (forward solve plus the backward solve of
the state adjoint alone, no parameter gradient: what every continuous adjoint pays at these
tolerances before its parameter integral), and both libraries' adjoints with 10x looser backward
tolerances, to compare at equal gradient accuracy.

One gradient = forward solve + MSE loss against a fixed target over the 5 outputs + backward. Every
method uses the same module (same weights), the same y0, t and target. The gradient error is the relative
L2 error of the full parameter-gradient vector against a float64 reference: torchdiffeq direct backprop
through dopri5 at rtol = atol = 1e-9 (checked against pyjode direct at the same tolerance).

Timing runs on one thread by default: on a shared, oversubscribed CPU two OpenMP threads spin at every
barrier, which slows the many small operations of torchdiffeq's adjoint by an order of magnitude and
makes the comparison meaningless. Both the median wall-clock time and the median process CPU time of
the interleaved repeats are reported; ratios use the wall-clock time.

    python -m benchmarks.bench_adjoint_wide_mlp [--quick] [--repeats R] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torchdiffeq
from torch import nn

import pyjode

from ._timing import interleaved

RTOL, ATOL = 1e-4, 1e-5
T_END, N_OUT = 2.5, 5
GAIN_IN, GAIN_OUT = 4.0, 6.0
FLOOR = "floor: forward + state-adjoint solve only"


class WideMLP(nn.Module):
    """The paper's two-hidden-layer softplus MLP; counts its calls (``nfe``) as torchdiffeq users do."""

    def __init__(self, dim: int = 4, width1: int = 1024, width2: int = 3000):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width1), nn.Softplus(), nn.Linear(width1, width2), nn.Softplus(),
                                 nn.Linear(width2, dim))
        with torch.no_grad():
            self.net[0].weight.mul_(GAIN_IN)
            self.net[4].weight.mul_(GAIN_OUT)
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y)


def make_problem(width1: int, width2: int, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    func = WideMLP(4, width1, width2).to(dtype)
    y0 = torch.randn(32, 4, dtype=dtype)
    t = torch.linspace(0.0, T_END, N_OUT, dtype=dtype)
    target = 5 * torch.randn(N_OUT, 32, 4, dtype=dtype)
    return func, y0, t, target


def candidates(func, y0, t):
    """name -> (solve(y0) -> ys, library) for every gradient method compared."""
    params = tuple(func.parameters())
    tol = dict(rtol=RTOL, atol=ATOL)

    def td(fn, **kw):
        return lambda: fn(func, y0, t, method="dopri5", **tol, **kw)

    def pj(adjoint):
        return lambda stats: pyjode.odeint(func, y0, t, method="dopri5", **tol, adjoint=adjoint, stats=stats)

    return {
        "torchdiffeq odeint (direct)": (td(torchdiffeq.odeint), "td"),
        "torchdiffeq odeint_adjoint": (td(torchdiffeq.odeint_adjoint, adjoint_params=params), "td"),
        "torchdiffeq odeint_adjoint seminorm": (
            td(torchdiffeq.odeint_adjoint, adjoint_params=params, adjoint_options=dict(norm="seminorm")), "td"),
        "pyjode direct": (pj("direct"), "pj"),
        "pyjode Quadrature(stored)": (pj(pyjode.Quadrature(state="stored")), "pj"),
        "pyjode Quadrature(resolve)": (pj(pyjode.Quadrature(state="resolve")), "pj"),
        "pyjode Backsolve(seminorm)": (pj(pyjode.Backsolve(norm="seminorm")), "pj"),
        # The floor of every continuous adjoint here: the forward solve and the backward solve of the
        # state adjoint alone (no parameter gradient at all), at the same tolerances.
        FLOOR: (lambda stats: pyjode.odeint(func, y0.detach().requires_grad_(True), t, method="dopri5", **tol,
                                            adjoint=pyjode.Quadrature(), adjoint_params=(), stats=stats), "floor"),
        # Trading accuracy for time: both libraries' adjoints with 10x looser backward tolerances.
        "torchdiffeq odeint_adjoint, adjoint tol ×10": (
            td(torchdiffeq.odeint_adjoint, adjoint_params=params, adjoint_rtol=10 * RTOL, adjoint_atol=10 * ATOL),
            "td"),
        "pyjode Quadrature(resolve), adjoint tol ×10": (
            pj(pyjode.Quadrature(rtol=10 * RTOL, atol=10 * ATOL)), "pj"),
    }


def gradient_fn(func, target, solve, library):
    """A zero-argument callable computing one gradient; returns (flat grad, nfe forward, nfe backward)."""
    params = list(func.parameters())

    def run():
        for p in params:
            p.grad = None
        if library == "floor":  # y0 carries the only gradient: the backward solves for a(t) alone
            stats = pyjode.Stats()
            ys = solve(stats)
            torch.mean((ys - target) ** 2).backward()
            return None, stats.nfe_forward, stats.nfe_backward
        if library == "td":
            func.nfe = 0
            ys = solve()
            nfe_f = func.nfe
            torch.mean((ys - target) ** 2).backward()
            nfe_b = func.nfe - nfe_f
        else:
            stats = pyjode.Stats()
            ys = solve(stats)
            torch.mean((ys - target) ** 2).backward()
            nfe_f, nfe_b = stats.nfe_forward, stats.nfe_backward
        return torch.cat([p.grad.reshape(-1) for p in params]), nfe_f, nfe_b

    return run


def reference_gradient(func, y0, t, target, tol: float):
    """Float64 direct backprop at a tight tolerance, by torchdiffeq and by pyjode (they must agree)."""
    f64 = copy.deepcopy(func).double()
    y, tt, tg = y0.double(), t.double(), target.double()
    out = []
    for solve in (lambda: torchdiffeq.odeint(f64, y, tt, method="dopri5", rtol=tol, atol=tol),
                  lambda: pyjode.odeint(f64, y, tt, method="dopri5", rtol=tol, atol=tol)):
        f64.zero_grad(set_to_none=True)
        torch.mean((solve() - tg) ** 2).backward()
        out.append(torch.cat([p.grad.reshape(-1) for p in f64.parameters()]))
    agree = float((out[0] - out[1]).norm() / out[0].norm())
    return out[0], agree


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths 256/750, 1 repeat, looser reference")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    width1, width2 = (256, 750) if args.quick else (1024, 3000)
    repeats = args.repeats or (1 if args.quick else 3)
    ref_tol = 1e-7 if args.quick else 1e-9

    func, y0, t, target = make_problem(width1, width2)
    n_params = sum(p.numel() for p in func.parameters())
    ref, agree = reference_gradient(func, y0, t, target, ref_tol)

    runs = {name: gradient_fn(func, target, solve, lib) for name, (solve, lib) in candidates(func, y0, t).items()}
    info = {}
    for name, run in runs.items():  # untimed warm-up, which also gives NFE and gradient error
        g, nf, nb = run()
        info[name] = (nf, nb, None if g is None else float((g.double() - ref).norm() / ref.norm()))
    cpu = {name: [] for name in runs}
    times = interleaved({name: _cpu_timed(run, cpu[name]) for name, run in runs.items()}, repeats=repeats, warmup=0)

    td_adj, td_dir = times["torchdiffeq odeint_adjoint"], times["torchdiffeq odeint (direct)"]
    print(f"wide MLP 4-{width1}-{width2}-4 softplus ({n_params / 1e6:.2f} M parameters), batch 32, dopri5 "
          f"rtol {RTOL:g} atol {ATOL:g}, t in [0, {T_END:g}] with {N_OUT} outputs, float32; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"median of {repeats} interleaved repeats")
    print(f"reference: float64 direct backprop at rtol=atol={ref_tol:g} (torchdiffeq vs pyjode reference "
          f"gradients differ by {agree:.1e} relative)\n")
    print("| method | NFE fwd | NFE bwd | wall s / gradient | CPU s / gradient | × td odeint_adjoint "
          "| × td direct | grad rel. err |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (nf, nb, err) in info.items():
        s = times[name]
        print(f"| {name} | {nf} | {nb} | {s:.3f} | {statistics.median(cpu[name]):.3f} | {s / td_adj:.3f} "
              f"| {s / td_dir:.2f} | {'-' if err is None else f'{err:.1e}'} |")


def _cpu_timed(fn, samples):
    def run():
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)

    return run


if __name__ == "__main__":
    main()
