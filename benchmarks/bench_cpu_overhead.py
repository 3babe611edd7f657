"""Per-solve overhead of the forward solve in process CPU time, against torchdiffeq.

The small problems of ``bench_forward`` (dopri5, rtol 1e-5, atol 1e-6, t = linspace(0, 5, 10), float32,
no autograd) cost 2-3 ms a solve, so wall-clock ratios measure the scheduler when other processes share
the cores. Process CPU time does not see them. Each figure is the median of ``--repeats`` blocks of
``--solves`` solves; the libraries alternate block by block.

    python -m benchmarks.bench_cpu_overhead [--repeats R] [--solves S]

To compare two versions of pyjode, run it twice with each tree first on ``PYTHONPATH``: torchdiffeq's
column is the common yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyjode

from .bench_forward import MLP

RTOL, ATOL = 1e-5, 1e-6
ROWS = [("small 2-32-2", 2, 32, 1), ("small 2-32-2", 2, 32, 16), ("medium 16-256-16", 16, 256, 1),
        ("medium 16-256-16", 16, 256, 16)]


def cpu_ms(fn, solves: int) -> float:
    start = time.process_time()
    for _ in range(solves):
        fn()
    return (time.process_time() - start) / solves * 1e3


def main() -> None:
    import torchdiffeq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--solves", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = torch.linspace(0, 5, 10)
    print(f"pyjode from {pyjode.__file__}")
    print("| field | batch | NFE pyjode / torchdiffeq | pyjode ms (CPU) | torchdiffeq ms (CPU) | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for name, dim, hidden, batch in ROWS:
        func = MLP(dim, hidden)
        y0 = torch.randn(batch, dim)
        with torch.no_grad():
            def ours():
                return pyjode.odeint(func, y0, t, rtol=RTOL, atol=ATOL)

            def theirs():
                return torchdiffeq.odeint(func, y0, t, rtol=RTOL, atol=ATOL, method="dopri5")

            stats = pyjode.Stats()
            pyjode.odeint(func, y0, t, rtol=RTOL, atol=ATOL, stats=stats)
            calls = [0]

            def counted(tt, y):
                calls[0] += 1
                return func(tt, y)

            torchdiffeq.odeint(counted, y0, t, rtol=RTOL, atol=ATOL, method="dopri5")
            for fn in (ours, theirs):  # warm-up
                cpu_ms(fn, args.solves)
            a, b = [], []
            for _ in range(args.repeats):
                a.append(cpu_ms(ours, args.solves))
                b.append(cpu_ms(theirs, args.solves))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {name} | {batch} | {stats.nfe_forward} / {calls[0]} | {ma:.2f} | {mb:.2f} | {ma / mb:.2f} |")


if __name__ == "__main__":
    main()
