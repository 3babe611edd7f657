"""Peak memory of one gradient as the number of solver steps grows 10x, for every gradient method.

Vector field: MLP 4 -> 512 -> 512 -> 4 (tanh), batch 256, so one evaluation's activations (a few MB)
dwarf the state (4 KB). Fixed-step rk4 on t in [0, 1] with 3 output times, with 10, 30 and 100 steps,
so the step count is exact. Loss: sum of squares of the outputs.

Each measurement runs in a fresh subprocess: the peak resident set size (``ru_maxrss``) after one
gradient minus the resident set size measured in the same process after building the model and
evaluating it once without autograd (which loads the kernels and the thread pool), with the kernel's
peak mark reset there (``/proc/self/clear_refs``) so the import's transient peak is excluded. The stored
trajectory of ``Quadrature(state="stored")`` is reported in bytes (``DenseTrajectory.nbytes``).

Two allocator settings: glibc's default, whose dynamic mmap threshold keeps freed blocks of up to 32 MiB
in the heap (so RSS also counts memory that was freed and not handed back), and a fixed threshold
(``MALLOC_MMAP_THRESHOLD_=65536``), under which large blocks are unmapped when freed and the peak RSS
tracks the peak of live memory. ``--quick`` runs 10 and 100 steps under the fixed threshold only.

    python -m benchmarks.bench_adjoint_memory [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch
from torch import nn

import pyjode

WIDTH, BATCH, DIM = 512, 256, 4
METHODS = {
    "direct": lambda: "direct",
    "Quadrature(stored)": lambda: pyjode.Quadrature(state="stored"),
    "Quadrature(resolve)": lambda: pyjode.Quadrature(state="resolve"),
    "Backsolve(seminorm)": lambda: pyjode.Backsolve(norm="seminorm"),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def probe(method: str, steps: int, width: int) -> dict:
    """One gradient in this (fresh) process; returns the peak RSS growth in MiB."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    func = nn.Sequential(nn.Linear(DIM, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, DIM))
    field = lambda t, y: func(y)  # noqa: E731
    y0 = torch.randn(BATCH, DIM)
    t = torch.linspace(0.0, 1.0, 3)
    with torch.no_grad():
        field(t[0], y0)
    _reset_peak()
    baseline = _current_rss_mb()

    adjoint = METHODS[method]()
    trajectory_bytes = None
    if method == "Quadrature(stored)":
        trajectory_bytes = _capture_trajectory_bytes(adjoint)
    stats = pyjode.Stats()
    ys = pyjode.odeint(field, y0, t, method="rk4", step_size=1.0 / steps, adjoint=adjoint,
                       adjoint_params=list(func.parameters()), stats=stats)
    ys.square().sum().backward()
    return dict(peak_mb=_rss_mb() - baseline,
                nfe_backward=stats.nfe_backward, trajectory_bytes=trajectory_bytes[0] if trajectory_bytes else None)


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark, so that ru_maxrss reports the peak from here on (not the import's)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _capture_trajectory_bytes(adjoint):
    """Wraps forward_solve to read the stored trajectory's size."""
    box = []
    inner = adjoint.forward_solve

    def forward_solve(spec, counter):
        ys, record = inner(spec, counter)
        box.append(record.trajectory.nbytes)
        return ys, record

    adjoint.forward_solve = forward_solve
    return box


def run_probe(method: str, steps: int, width: int, fixed_threshold: bool) -> dict:
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if fixed_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_adjoint_memory", "--probe", method, str(steps),
                          str(width)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 steps only")
    parser.add_argument("--probe", nargs=3, metavar=("METHOD", "STEPS", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        method, steps, width = args.probe
        print(json.dumps(probe(method, int(steps), int(width))))
        return
    step_counts = (10, 100) if args.quick else (10, 30, 100)
    settings = (True,) if args.quick else (True, False)
    print(f"MLP {DIM}-{WIDTH}-{WIDTH}-{DIM} tanh, batch {BATCH}, rk4 on [0, 1], 3 output times, float32; peak RSS "
          f"growth of one gradient in a fresh process (MiB); torch {torch.__version__}, 1 thread")
    for fixed in settings:
        results = {(m, n): run_probe(m, n, WIDTH, fixed) for m in METHODS for n in step_counts}
        label = "MALLOC_MMAP_THRESHOLD_=65536 (live memory)" if fixed else "glibc default allocator settings"
        print(f"\n{label}\n")
        head = " | ".join(f"{n} steps" for n in step_counts)
        print(f"| method | {head} | growth {step_counts[0]}→{step_counts[-1]} steps |")
        print("|---|" + "---:|" * (len(step_counts) + 1))
        for m in METHODS:
            cells = " | ".join(f"{results[m, n]['peak_mb']:.1f}" for n in step_counts)
            growth = results[m, step_counts[-1]]["peak_mb"] - results[m, step_counts[0]]["peak_mb"]
            print(f"| {m} | {cells} | {growth:+.1f} |")
        traj = " | ".join(f"{results['Quadrature(stored)', n]['trajectory_bytes'] / 2**20:.2f}" for n in step_counts)
        print(f"| (stored trajectory, MiB) | {traj} | |")

if __name__ == "__main__":
    main()
