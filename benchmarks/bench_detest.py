"""Work-precision of pyjode against torchdiffeq on the non-stiff DETEST set (classes A-E, 25 problems).

Hull, Enright, Fellen & Sedgwick (1972), SIAM J. Numer. Anal. 9:603-637; the problems, their equations
and reference solutions are in ``tests/detest.py``. Every problem is solved from t = 0 to 20 at
rtol = atol = tol by both libraries with the same method, in float64, with autograd recording (from a
y0 that requires grad) and under ``torch.no_grad()``. torchdiffeq 0.2.5 has no tsit5: its own adaptive
Runge-Kutta solver runs with Tsitouras' tableau (see ``tests/detest.py``).

A solve's error is the largest over the 21 output times of max_i |y_i - ref_i| / (1 + max_i |ref_i|).
Each row gives:

* the geometric mean over the set of pyjode's error divided by torchdiffeq's (< 1: pyjode more accurate);
* pyjode's evaluations over torchdiffeq's: geometric mean of the per-problem ratios, and total over total;
* each library's worst error in units of tol, with the problem;
* failed solves (an exception or a non-finite answer) per library;
* whether pyjode's step counts are identical in both grad modes (checked once per method and tol).

    python -m benchmarks.bench_detest [--quick] [--methods dopri5,tsit5,bosh3] [--tols 1e-3,1e-6,1e-9]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from tests.detest import PROBLEMS, geometric_mean, solve

LIBRARIES = ("pyjode", "torchdiffeq")


def _worst(runs, tol):
    name = max(runs, key=lambda n: runs[n].error)
    return f"{runs[name].error / tol:.0f} ({name})"


def row(method, tol, grad):
    runs = {lib: {name: solve(p, lib, method, tol, grad) for name, p in PROBLEMS.items()} for lib in LIBRARIES}
    ours, theirs = runs["pyjode"], runs["torchdiffeq"]
    ok = [n for n in PROBLEMS if math.isfinite(ours[n].error) and math.isfinite(theirs[n].error)]
    err_ratio = geometric_mean(ours[n].error for n in ok) / geometric_mean(theirs[n].error for n in ok)
    nfe_gm = geometric_mean(ours[n].nfe / theirs[n].nfe for n in ok)
    nfe_total = sum(ours[n].nfe for n in ok) / sum(theirs[n].nfe for n in ok)
    failures = " / ".join(str(sum(not math.isfinite(r.error) for r in runs[lib].values())) for lib in LIBRARIES)
    cells = [method, f"{tol:g}", "grad" if grad else "no_grad", f"{err_ratio:.3f}", f"{nfe_gm:.3f}",
             f"{nfe_total:.3f}", _worst(ours, tol), _worst(theirs, tol), failures]
    return cells, runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tolerances 1e-3 and 1e-6 only")
    parser.add_argument("--methods", default="dopri5,tsit5,bosh3", help="comma-separated methods")
    parser.add_argument("--tols", default=None, help="comma-separated tolerances (default 1e-3,1e-6,1e-9)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    tols = [float(x) for x in (args.tols or ("1e-3,1e-6" if args.quick else "1e-3,1e-6,1e-9")).split(",")]

    import torchdiffeq

    print(f"DETEST non-stiff classes A-E ({len(PROBLEMS)} problems), t in [0, 20], 21 outputs, float64, "
          f"rtol = atol = tol; torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}\n")
    print("| method | tol | mode | error ratio (geo. mean) | NFE ratio (geo. mean) | NFE ratio (total) "
          "| worst error ÷ tol, pyjode | worst error ÷ tol, torchdiffeq | failures pyjode / torchdiffeq |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes = []
    for method in methods:
        for tol in tols:
            start = time.perf_counter()
            by_mode = {}
            for grad in (True, False):
                cells, by_mode[grad] = row(method, tol, grad)
                print("| " + " | ".join(cells) + " |", flush=True)
            same = {lib: all(by_mode[True][lib][n].nfe == by_mode[False][lib][n].nfe for n in PROBLEMS)
                    for lib in LIBRARIES}
            same_stats = all(by_mode[True]["pyjode"][n].stats == by_mode[False]["pyjode"][n].stats
                             for n in PROBLEMS)
            notes.append(f"{method} {tol:g}: grad and no_grad take the same steps: pyjode "
                         f"{'yes' if same['pyjode'] and same_stats else 'NO'}, torchdiffeq "
                         f"{'yes' if same['torchdiffeq'] else 'NO'} ({time.perf_counter() - start:.0f} s)")
    print()
    for note in notes:
        print("- " + note)


if __name__ == "__main__":
    main()
