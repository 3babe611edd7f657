"""Forward-solve speed of pyjode against torchdiffeq and torchode (dopri5, MLP vector fields).

Every library solves the same problem at the same tolerances. The table gives:

* the vector-field evaluations (NFE) each one needed (torchode steps every batch element on its own;
  its count is of calls, each evaluating the whole batch);
* each solution's largest error against a tight float64 solve, in units of ``atol + rtol |y|``: how
  well each library honours the tolerance, which explains NFE differences;
* pyjode's median time as a ratio of each peer's, and the same ratio per evaluation, which compares the
  solvers' own overhead when their step-size controllers take different numbers of steps;
* the per-evaluation ratio of pyjode's integrate loop called directly (no argument checks, no
  gradient-method dispatch).

    python -m benchmarks.bench_forward [--quick] [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import copy
import platform

import torch
from torch import nn

import pyjode
from pyjode.integrate import integrate
from pyjode.runge_kutta import RungeKutta
from pyjode.tableau import get_tableau

from ._timing import interleaved

RTOL, ATOL = 1e-5, 1e-6  # a typical neural-ODE setting, well above float32 rounding
T_END, N_OUT = 5.0, 10


class MLP(nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2, autonomous."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(y)


class Counted:
    """Counts vector-field calls (the same wrapper is used for every library)."""

    def __init__(self, func):
        self.func, self.calls = func, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.func(t, y)


def _solvers(func, y0, t):
    import torchdiffeq
    import torchode

    counted = {name: Counted(func) for name in ("pyjode", "torchdiffeq", "torchode", "engine")}
    term = torchode.ODETerm(counted["torchode"])
    to_solver = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term),
                                         torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term))
    to_problem = torchode.InitialValueProblem(y0=y0, t_eval=t.expand(y0.shape[0], -1))
    tableau, control = get_tableau("dopri5"), pyjode.StepControl(rtol=RTOL, atol=ATOL)
    fns = {
        "pyjode": lambda: pyjode.odeint(counted["pyjode"], y0, t, method="dopri5", rtol=RTOL, atol=ATOL),
        "torchdiffeq": lambda: torchdiffeq.odeint(counted["torchdiffeq"], y0, t, method="dopri5", rtol=RTOL,
                                                  atol=ATOL),
        "torchode": lambda: to_solver.solve(to_problem).ys.transpose(0, 1),
        # the integrate loop alone, without odeint's validation and gradient-method dispatch (the stepper
        # is built per call, as odeint does)
        "engine": lambda: torch.stack(integrate(RungeKutta(tableau, y0), counted["engine"], y0, t.tolist(), control,
                                                check_field=False).ys),
    }
    return fns, counted


def _nfe(fns, counted):
    out = {}
    for name, fn in fns.items():
        counted[name].calls = 0
        fn()
        out[name] = counted[name].calls
    return out


def _problem(dim, hidden, batch):
    """A fresh field, y0 and t, and every library's solve of it (with its call counter)."""
    func = MLP(dim, hidden)
    y0 = torch.randn(batch, dim)
    t = torch.linspace(0, T_END, N_OUT)
    return (func, y0, t, *_solvers(func, y0, t))


def forward_row(dim, hidden, batch, repeats):
    func, y0, t, fns, counted = _problem(dim, hidden, batch)
    with torch.no_grad():
        ys = {name: fn() for name, fn in fns.items()}
        nfe = _nfe(fns, counted)
        times = interleaved(fns, repeats=repeats, warmup=1)
    return nfe, times, _errors(func, y0, t, ys)


def _errors(func, y0, t, ys):
    """Each library's largest error against a tight float64 solve, in units of atol + rtol |y|."""
    with torch.no_grad():
        ref = pyjode.odeint(copy.deepcopy(func).double(), y0.double(), t.double(), rtol=1e-10, atol=1e-12)
        scale = ATOL + RTOL * ref.abs()
        errors = {name: float(((y.double() - ref).abs() / scale).max()) for name, y in ys.items()}
    # a benchmark of wrong answers would be meaningless
    assert all(e < 1e3 for e in errors.values()), errors
    return errors


def backward_row(dim, hidden, batch, repeats):
    """Forward + backward through the solver (direct backprop; torchode's AutoDiffAdjoint)."""
    _, _, _, fns, counted = _problem(dim, hidden, batch)
    train = {name: (lambda fn=fn: fn().pow(2).mean().backward()) for name, fn in fns.items()}
    nfe = _nfe(fns, counted)
    times = interleaved(train, repeats=repeats, warmup=1)
    return nfe, times, None


def _fmt_row(label, batch, nfe, times, errors):
    p = times["pyjode"]
    peers = ("pyjode", "torchdiffeq", "torchode")
    cells = [label, str(batch), " / ".join(str(nfe[n]) for n in peers),
             " / ".join(f"{errors[n]:.2g}" for n in peers) if errors else "-", f"{p * 1e3:.2f}"]
    for peer in ("torchdiffeq", "torchode"):
        ratio = p / times[peer]
        per_nfe = ratio * nfe[peer] / nfe["pyjode"]
        cells += [f"{ratio:.2f}", f"{per_nfe:.2f}"]
    cells.append(f"{times['engine'] / times['torchdiffeq'] * nfe['torchdiffeq'] / nfe['engine']:.2f}")
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (5 if args.quick else 15)
    sizes = [("small 2-32-2", 2, 32), ("medium 16-256-16", 16, 256)]
    batches = [1, 256] if args.quick else [1, 16, 256, 1024]

    print(f"dopri5, rtol={RTOL}, atol={ATOL}, t in [0, {T_END}] with {N_OUT} outputs, float32, "
          f"{args.threads} thread(s), median of {repeats} interleaved repeats; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| field | batch | NFE pyjode / torchdiffeq / torchode | error ÷ tol, same order | pyjode ms | ÷ torchdiffeq | ÷ torchdiffeq per NFE "
          "| ÷ torchode | ÷ torchode per NFE | engine ÷ torchdiffeq per NFE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, dim, hidden in sizes:
        for batch in batches:
            print(_fmt_row(label + " no_grad", batch, *forward_row(dim, hidden, batch, repeats)), flush=True)
    print(_fmt_row("small 2-32-2 forward+backward", 16, *backward_row(2, 32, 16, max(3, repeats // 2))),
          flush=True)


if __name__ == "__main__":
    main()
