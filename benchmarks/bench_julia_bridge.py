"""Python <-> Julia crossing cost, and the Julia backend against the PyTorch backend.

    python -m benchmarks.bench_julia_bridge [--quick]

1. Time per crossing: a Python->Julia call (``PyJODE.nparams``), and a Julia->Python callback (one
   fixed-step Euler solve in Julia of an identity field, per step, minus the same callback called from
   Python).
2. Wide-MLP quadrature benchmark: forward + backward with ``adjoint="quadrature"`` on both backends,
   interleaved repeats, medians, ratio julia / torch.

Where Julia is absent it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pyjode._julia.probe import julia_available, unavailable_reason


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def crossing_table(quick: bool) -> str:
    from pyjode._julia.bridge import JuliaSolve
    from pyjode._julia.loader import load_pyjode
    from pyjode._julia.plan import make_plan

    jl = load_pyjode()
    y0 = torch.zeros(8, dtype=torch.float64)
    steps = 200 if quick else 2000
    plan = make_plan("euler", "direct", rtol=1e-7, atol=1e-9, step_size=1.0 / steps, max_steps=None, needs_grad=False)
    solve = JuliaSolve(jl, plan, lambda t, y: y, y0, [0.0, 1.0], ())
    calls = 2000 if quick else 20000
    py_to_jl = _median_time(lambda: [jl.nparams(solve.handle) for _ in range(calls)], 5) / calls
    field_only = _median_time(lambda: [solve.field.rhs() for _ in range(steps)], 5) / steps
    solve.forward(y0)  # compile
    jl_to_py = _median_time(lambda: solve.forward(y0), 5) / steps - field_only
    return "\n".join([
        "| crossing | median µs per call |",
        "|---|---|",
        f"| Python -> Julia (`PyJODE.nparams`) | {py_to_jl * 1e6:.2f} |",
        f"| Julia -> Python (`rhs` callback in an Euler solve, minus the callback's own cost) | {jl_to_py * 1e6:.2f} |",
        f"| the callback itself (identity field, called from Python) | {field_only * 1e6:.2f} |",
    ])


def quadrature_table(quick: bool) -> str:
    import pyjode

    torch.manual_seed(0)
    width = 256 if quick else 1024
    net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))
    y0 = torch.randn(16, 2)
    t = torch.linspace(0, 1, 5)

    def run(backend):
        ys = pyjode.odeint(lambda t, y: net(y), y0, t, method="dopri5", rtol=1e-5, atol=1e-6, adjoint="quadrature",
                           adjoint_params=list(net.parameters()), backend=backend)
        ys.square().sum().backward()

    run("julia")  # compile
    repeats = 3 if quick else 9
    times = {"torch": [], "julia": []}
    for _ in range(repeats):
        for backend in times:
            start = time.perf_counter()
            run(backend)
            times[backend].append(time.perf_counter() - start)
    tt, tj = statistics.median(times["torch"]), statistics.median(times["julia"])
    return "\n".join([
        f"| wide MLP (width {width}), dopri5, quadrature adjoint | median s |",
        "|---|---|",
        f"| backend=\"torch\" | {tt:.4f} |",
        f"| backend=\"julia\" | {tj:.4f} |",
        f"| ratio julia / torch | {tj / tt:.2f} |",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args(argv)
    if not julia_available():
        print(f"Julia not available: {unavailable_reason()}. Nothing to measure; see the Julia backend section "
              "of the README for how to install it.")
        return 0
    print(crossing_table(args.quick))
    print()
    print(quadrature_table(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
