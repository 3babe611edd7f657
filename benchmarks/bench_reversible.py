"""Reversible solver with its exact adjoint: memory and time of one gradient against the alternatives.

Vector field: MLP 4 -> 64 -> 64 -> 4 (tanh), batch 64, float32, one thread; fixed-step rk4 on t in [0, 1]
with 3 output times; loss: sum of squares of the outputs. Candidates, all with the same number n of rk4
steps:

* ``direct``: backprop through plain rk4 (the cheapest gradient when memory allows);
* ``direct, Reversible(rk4)``: backprop through the reversible scheme (its reference gradient);
* ``reversible adjoint``: ``Reversible(rk4)`` with ``adjoint="reversible"``;
* ``checkpoint sqrt(2n)``: plain rk4 cut into about sqrt(2n) segments, each under
  ``torch.utils.checkpoint`` (the baseline of McCallum & Foster, whose diffrax version is binomial);
* ``torchdiffeq adjoint``: ``torchdiffeq.odeint_adjoint`` with rk4 on the same grid.

Memory: the peak resident set size of one gradient in a fresh process, minus the resident size after
building the model and evaluating it once (with the kernel's peak mark reset there), under
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed large blocks go back to the system. Time: median seconds
of one gradient, candidates interleaved in one process.

    python -m benchmarks.bench_reversible [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys

import torch
import torchdiffeq
from torch import nn
from torch.utils.checkpoint import checkpoint

import pyjode
from pyjode.adjoints.reversible import ReversibleAdjoint
from pyjode.reversible import Reversible

from ._timing import interleaved

DIM, WIDTH, BATCH = 4, 64, 64
T_OUT = (0.0, 0.5, 1.0)
CANDIDATES = ("direct", "direct, Reversible(rk4)", "reversible adjoint", "checkpoint sqrt(2n)", "torchdiffeq adjoint")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Tanh(),
                                 nn.Linear(WIDTH, DIM))

    def forward(self, t, y):
        return self.net(y)


def n_segments(n: int) -> int:
    """Checkpoints of diffrax's ``calculate_checkpoints``: floor(-1.5 + sqrt(2n + 0.25)) + 1, about sqrt(2n)."""
    return math.floor(-1.5 + math.sqrt(2 * n + 0.25)) + 1


def _checkpointed(func, y0, t, n):
    """rk4 with n steps over t, in about sqrt(2n) segments each recomputed on the backward pass."""
    h = (t[-1] - t[0]) / n
    segments = n_segments(n)
    # segment boundaries on the step grid, plus the output times
    bounds = sorted({round(i * n / segments) for i in range(segments + 1)} | {round((s - t[0]) / h) for s in t})
    params = list(func.parameters())
    ys, y = [y0], y0
    for a, b in zip(bounds[:-1], bounds[1:]):
        ta, tb = t[0] + a * h, t[0] + b * h
        y = checkpoint(lambda y, ta=ta, tb=tb: pyjode.odeint(func, y, [ta, tb], method="rk4", step_size=h,
                                                             adjoint_params=params)[-1], y, use_reentrant=False)
        if any(abs(tb - s) < 1e-9 for s in t[1:]):
            ys.append(y)
    return torch.stack(ys)


def gradient_fn(name: str, func: nn.Module, y0: torch.Tensor, n: int):
    """A zero-argument callable computing one gradient with candidate ``name`` and ``n`` rk4 steps."""
    t = list(T_OUT)
    h = (t[-1] - t[0]) / n
    if name == "direct":
        solve = lambda: pyjode.odeint(func, y0, t, method="rk4", step_size=h)  # noqa: E731
    elif name == "direct, Reversible(rk4)":
        solve = lambda: pyjode.odeint(func, y0, t, method=Reversible("rk4"), step_size=h)  # noqa: E731
    elif name == "reversible adjoint":
        solve = lambda: pyjode.odeint(func, y0, t, method=Reversible("rk4"), step_size=h,  # noqa: E731
                                      adjoint=ReversibleAdjoint())
    elif name == "checkpoint sqrt(2n)":
        solve = lambda: _checkpointed(func, y0, t, n)  # noqa: E731
    elif name == "torchdiffeq adjoint":
        tt = torch.tensor(t)
        solve = lambda: torchdiffeq.odeint_adjoint(func, y0, tt, method="rk4",  # noqa: E731
                                                   options=dict(step_size=h), adjoint_params=tuple(func.parameters()))
    else:
        raise ValueError(f"unknown candidate {name!r}")
    params = tuple(func.parameters())

    def one_gradient():
        ys = solve()
        return torch.autograd.grad(ys.square().sum(), (y0, *params))

    return one_gradient


def _setup():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    func = MLP()
    y0 = torch.randn(BATCH, DIM).requires_grad_(True)
    return func, y0


# ----------------------------------------------------------------------------------------------------------
# Memory: one gradient per fresh process.

def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def probe(name: str, n: int) -> dict:
    func, y0 = _setup()
    fn = gradient_fn(name, func, y0, n)
    with torch.no_grad():
        func(None, y0)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak mark: measure from here on
        f.write("5")
    baseline = _current_rss_mib()
    fn()
    return dict(peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline)


def run_probe(name: str, n: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_reversible", "--probe", name, str(n)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def memory_table(step_counts) -> str:
    state_kib = BATCH * DIM * 4 / 1024
    rows = ["| candidate | " + " | ".join(f"{n} steps (MiB)" for n in step_counts)
            + f" | growth {step_counts[0]}→{step_counts[-1]} (MiB) |",
            "|---|" + "---:|" * (len(step_counts) + 1)]
    for name in CANDIDATES:
        peaks = [run_probe(name, n) for n in step_counts]
        rows.append(f"| {name} | " + " | ".join(f"{p:.1f}" for p in peaks) + f" | {peaks[-1] - peaks[0]:+.2f} |")
    rows.append(f"\n(one state is {state_kib:.0f} KiB; the reversible adjoint also keeps 8 bytes per step time)")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------
# Time: interleaved medians in one process.

def time_table(step_counts, repeats: int) -> str:
    func, y0 = _setup()
    rows = ["| steps | " + " | ".join(CANDIDATES) + " |", "|---:|" + "---:|" * len(CANDIDATES)]
    ratios = []
    for n in step_counts:
        fns = {name: gradient_fn(name, func, y0, n) for name in CANDIDATES}
        med = interleaved(fns, repeats=repeats)
        rows.append(f"| {n} | " + " | ".join(f"{med[name] * 1e3:.0f} ms" for name in CANDIDATES) + " |")
        rev = med["reversible adjoint"]
        ratios.append((n, rev / med["direct"], rev / med["direct, Reversible(rk4)"], rev / med["checkpoint sqrt(2n)"],
                       rev / med["torchdiffeq adjoint"], n_segments(n)))
    rows += ["", "| steps | reversible / direct | reversible / direct(Reversible) | reversible / checkpoint "
             "sqrt(2n) (segments) | reversible / torchdiffeq adjoint |", "|---:|---:|---:|---:|---:|"]
    for n, d, dr, c, td, seg in ratios:
        rows.append(f"| {n} | {d:.2f} | {dr:.2f} | {c:.2f} ({seg}) | {td:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small step counts and fewer repeats")
    parser.add_argument("--probe", nargs=2, metavar=("CANDIDATE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]))))
        return
    print(f"MLP {DIM}-{WIDTH}-{WIDTH}-{DIM} tanh, batch {BATCH}, float32, rk4 on [0, 1] with {len(T_OUT)} output "
          f"times; torch {torch.__version__}, 1 thread\n")
    mem_steps = (50, 500) if args.quick else (500, 5000)
    print("Peak RSS growth of one gradient, fresh process, MALLOC_MMAP_THRESHOLD_=65536\n")
    print(memory_table(mem_steps))
    time_steps = (100,) if args.quick else (100, 500, 2000)
    print("\nMedian time of one gradient (forward + backward), interleaved repeats\n")
    print(time_table(time_steps, repeats=3 if args.quick else 7))


if __name__ == "__main__":
    main()
