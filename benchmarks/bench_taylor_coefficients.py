"""Cost of ``pyjode.taylor_coefficients`` against the order, next to nested ``jvp`` (the exponential way).

The field is the digits demo's (64-dim state, hidden 64, batch 128, float64); times are medians of
interleaved calls, also given in units of one plain field evaluation. Nested jvp computes y^(k+1) as the
time derivative of y^(k) along the flow, so its cost roughly doubles with each order.

    python -m benchmarks.bench_taylor_coefficients [--quick] [--max-order K] [--threads N]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.func import jvp

from pyjode.demo.taylor import DigitsField
from pyjode.taylor_mode import taylor_coefficients

from ._timing import interleaved


def nested_jvp_coefficients(func, t, y, order):
    derivs = [func]
    for _ in range(order - 1):
        prev = derivs[-1]
        derivs.append(lambda t, y, prev=prev: jvp(prev, (t, y), (torch.ones_like(t), func(t, y)))[1])
    return [y] + [derivs[k](t, y) / math.factorial(k + 1) for k in range(order)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-order", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    max_order = args.max_order or (4 if args.quick else 6)
    repeats = 5 if args.quick else 11
    torch.manual_seed(0)
    f = DigitsField().double()
    y = torch.randn(128, 64, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    with torch.no_grad():
        base = interleaved({"f": lambda: f(t, y)}, repeats=repeats * 4)["f"]
        print(f"one field evaluation: {base * 1e3:.3f} ms\n")
        print("| order | taylor_coefficients ms | (field evals) | nested jvp ms | (field evals) | nested/ours |")
        print("|---|---|---|---|---|---|")
        for order in range(1, max_order + 1):
            ours = taylor_coefficients(f, t, y, order)
            ref = nested_jvp_coefficients(f, t, y, order)
            err = max((a - b).abs().max().item() for a, b in zip(ours, ref))
            assert err < 1e-8 * max(1.0, max(r.abs().max().item() for r in ref)), err
            times = interleaved({"ours": lambda: taylor_coefficients(f, t, y, order),
                                 "nested": lambda: nested_jvp_coefficients(f, t, y, order)}, repeats=repeats)
            print(f"| {order} | {times['ours'] * 1e3:.3f} | {times['ours'] / base:.1f} | "
                  f"{times['nested'] * 1e3:.3f} | {times['nested'] / base:.1f} | {times['nested'] / times['ours']:.2f} |")


if __name__ == "__main__":
    main()
