"""Stiff problems: pyjode's implicit solvers against scipy's Radau and BDF.

* Robertson's chemical kinetics on [0, 1e5] (y0 = (1, 0, 0)), rtol = 1e-6, atol = 1e-10;
* Van der Pol with mu = 1000 on [0, 3000] (y0 = (2, 0)), rtol = 1e-6, atol = 1e-6;
* a batch of 256 Van der Pol problems with mu spread over [900, 1000] (``--mu-range``), one pyjode solve of
  the (256, 2) state with per-sample Jacobians (``jacobian="batch"``) against scipy solving the 256 problems
  one by one. With one step size for the batch it steps as finely as the problem that is jumping at any time
  needs (with mu spread over [100, 1000] the jumps of some problem cover most of [0, 3000]); with
  ``per_sample=True`` each problem takes its own steps (rows "per-sample"; ``--no-shared`` leaves out the
  shared-step rows, which take minutes). For per-sample rows, steps are summed over the 256 problems like
  scipy's, and a Jacobian evaluation covers the whole batch.

Each solve is float64 under ``torch.no_grad()``, one intra-op thread, timed as the median of interleaved
repeats. Reported beside the time: accepted steps, Jacobian evaluations, vector-field evaluations (scipy:
``nfev``, which for Radau/BDF includes the finite-difference Jacobian unless one is given; here scipy gets the
analytic Jacobian, as pyjode gets an exact one from autodiff) and the error at the final time, as
max_i |y_i - ref_i| / max(|ref_i|, floor), against scipy's Radau at rtol = 1e-11 (floor 1e-8 for Robertson,
1e-3 for Van der Pol). The installed torchdiffeq (0.2.x) has no implicit solvers, so it is not compared.

    python -m benchmarks.bench_stiff [--quick] [--repeats 3] [--keep-step 1.2]
    python -m benchmarks.bench_stiff --batch-only [--mu-range 900 1000] [--span 3000] [--no-shared] [--n 256]
        [--ref-rtol 1e-11]
    python -m benchmarks.bench_stiff --breakdown [--repeats 3]

``--breakdown`` splits each pyjode single-problem solve's time into the vector field's evaluations
(outside the Jacobians), the Jacobians (their own field evaluations included) and the rest (the Newton
iteration's linear algebra and bookkeeping, the factorisations, the error estimate, the step loop), from
clocks around the calls, the fastest of ``--repeats`` solves; and the same split of scipy's Radau.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import pyjode
from benchmarks._timing import interleaved

F64 = torch.float64


def robertson_torch(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2], -1)


def robertson_np(t, y):
    return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]


def robertson_jac(t, y):
    return [[-0.04, 1e4 * y[2], 1e4 * y[1]],
            [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
            [0.0, 6e7 * y[1], 0.0]]


class VdP:
    """x' = v, v' = mu (1 - x^2) v - x, for a scalar mu or a batch of them (mu of shape (B,))."""

    def __init__(self, mu):
        self.mu = mu

    def __call__(self, t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1 - x ** 2) * v - x], -1)

    def np(self, mu):
        return (lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
                lambda t, y: [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]])


def scipy_solve(f, jac, y0, T, method, rtol, atol):
    r = solve_ivp(f, (0.0, T), y0, method=method, rtol=rtol, atol=atol, jac=jac)
    if not r.success:
        raise RuntimeError(r.message)
    return r.y[:, -1], len(r.t) - 1, r.njev, r.nfev


def error(y, ref, floor):
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(y - ref) / np.maximum(np.abs(ref), floor)))


def pyjode_runner(func, y0, T, name, rtol, atol, jacobian, keep_step=1.0, per_sample=False):
    out = {}

    def run():
        method = pyjode.Implicit(name, jacobian=jacobian, keep_step=keep_step)
        stats = pyjode.Stats()
        with torch.no_grad():
            ys = pyjode.odeint(func, y0, torch.tensor([0.0, T], dtype=F64), method=method, rtol=rtol, atol=atol,
                               stats=stats, max_steps=10 ** 6, per_sample=per_sample)
        out.update(y=ys[-1].numpy(), steps=stats.steps_forward, jac=method.stats.jacobians, nfe=stats.nfe_forward)
    return run, out


def single(label, func, f_np, jac_np, y0, T, rtol, atol, floor, repeats, keep_step=1.0):
    ref = scipy_solve(f_np, jac_np, y0, T, "Radau", 1e-11, atol * 1e-4)[0]
    runners, outs = {}, {}
    for name in ("kvaerno5", "radauIIA5"):
        runners[f"pyjode {name}"], outs[f"pyjode {name}"] = pyjode_runner(func, torch.tensor(y0, dtype=F64), T, name,
                                                                           rtol, atol, "full", keep_step)
    for m in ("Radau", "BDF"):
        out = {}

        def run(m=m, out=out):
            y, steps, njev, nfev = scipy_solve(f_np, jac_np, y0, T, m, rtol, atol)
            out.update(y=y, steps=steps, jac=njev, nfe=nfev)
        runners[f"scipy {m}"], outs[f"scipy {m}"] = run, out
    times = interleaved(runners, repeats=repeats, warmup=1)
    report(label, times, outs, ref, floor, "scipy Radau")


def batch(repeats, n=256, T=3000.0, rtol=1e-6, atol=1e-6, mu_range=(900.0, 1000.0), shared=True, ref_rtol=1e-11):
    mus = np.linspace(*mu_range, n)
    mu_t = torch.tensor(mus, dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]] * n, dtype=F64)
    refs = np.stack([scipy_solve(*VdP(None).np(mu), [2.0, 0.0], T, "Radau", ref_rtol, 1e-10)[0] for mu in mus])
    runners, outs = {}, {}
    for name in ("kvaerno5", "radauIIA5"):
        if shared:
            runners[f"pyjode {name}"], outs[f"pyjode {name}"] = pyjode_runner(VdP(mu_t), y0, T, name, rtol, atol,
                                                                               "batch")
        label = f"pyjode {name} per-sample"
        runners[label], outs[label] = pyjode_runner(VdP(mu_t), y0, T, name, rtol, atol, "batch", per_sample=True)
    for m in ("Radau", "BDF"):
        out = {}

        def run(m=m, out=out):
            res = [scipy_solve(*VdP(None).np(mu), [2.0, 0.0], T, m, rtol, atol) for mu in mus]
            out.update(y=np.stack([r[0] for r in res]), steps=sum(r[1] for r in res), jac=sum(r[2] for r in res),
                       nfe=sum(r[3] for r in res))
        runners[f"scipy {m}"], outs[f"scipy {m}"] = run, out
    # each candidate runs for minutes: no warm-up call, but one tiny solve first, so that no candidate pays for
    # the first Jacobian's imports (torch.func), which take seconds
    warm_up = pyjode.Implicit("radauIIA5", jacobian="batch")
    with torch.no_grad():
        pyjode.odeint(VdP(mu_t[:2]), y0[:2], torch.tensor([0.0, 1.0], dtype=F64), method=warm_up, per_sample=True)
    times = interleaved(runners, repeats=repeats, warmup=0)
    report(f"{n} Van der Pol problems, mu in [{mu_range[0]:g}, {mu_range[1]:g}], [0, {T:g}], rtol={rtol:g}, "
           f"atol={atol:g} (reference: scipy Radau at rtol={ref_rtol:g})", times, outs, refs, 1e-3, "scipy Radau")


class _Clocked:
    """A callable that adds the wall-clock time of its calls to ``clock[key]`` (nested clocks of the same
    dictionary are not subtracted: the caller does that)."""

    def __init__(self, func, clock, key):
        self.func, self.clock, self.key = func, clock, key

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.clock[self.key] += time.perf_counter() - start


def breakdown(label, func, f_np, jac_np, y0, T, rtol, atol, repeats):
    """Where the time of a single-problem solve goes (see the module docstring)."""
    import pyjode.implicit as implicit_module

    print(f"\n### Time breakdown: {label}\n")
    print("| solver | total (s) | field (s) | Jacobians (s) | rest (s) | attempted steps | Newton iterations | "
          "rest per attempted step (µs) |")
    print("|---|---|---|---|---|---|---|---|")
    jacobian = implicit_module.field_jacobian
    for name in ("kvaerno5", "radauIIA5"):
        best = None
        for _ in range(repeats + 1):  # the first one warms up
            clock = {"field": 0.0, "jac": 0.0, "field_in_jac": 0.0}
            in_jac = [False]

            def timed_field(t, y):
                start = time.perf_counter()
                out = func(t, y)
                clock["field_in_jac" if in_jac[0] else "field"] += time.perf_counter() - start
                return out

            def timed_jacobian(*args, **kwargs):
                in_jac[0] = True
                try:
                    return _Clocked(jacobian, clock, "jac")(*args, **kwargs)
                finally:
                    in_jac[0] = False

            implicit_module.field_jacobian = timed_jacobian
            try:
                method, stats = pyjode.Implicit(name), pyjode.Stats()
                start = time.perf_counter()
                with torch.no_grad():
                    pyjode.odeint(timed_field, torch.tensor(y0, dtype=F64), torch.tensor([0.0, T], dtype=F64),
                                  method=method, rtol=rtol, atol=atol, stats=stats, max_steps=10 ** 6)
                total = time.perf_counter() - start
            finally:
                implicit_module.field_jacobian = jacobian
            attempts = stats.steps_forward + stats.rejected_forward
            if best is None or total < best[0]:
                best = (total, clock["field"], clock["jac"], attempts, method.stats.newton_iterations)
        total, field_s, jac_s, attempts, iterations = best
        rest = total - field_s - jac_s
        print(f"| pyjode {name} | {total:.3f} | {field_s:.3f} | {jac_s:.3f} | {rest:.3f} | {attempts} | {iterations} | "
              f"{1e6 * rest / attempts:.0f} |")
    # scipy's attempts and iterations: every attempted step solves the collocation system once (a private
    # function of scipy's Radau, wrapped here only to count)
    from scipy.integrate._ivp import radau as scipy_radau

    collocation = scipy_radau.solve_collocation_system
    best = None
    for _ in range(repeats + 1):
        clock, count = {"field": 0.0, "jac": 0.0}, {"attempts": 0, "iterations": 0}

        def counted(*args, **kwargs):
            out = collocation(*args, **kwargs)
            count["attempts"] += 1
            count["iterations"] += out[1]
            return out

        scipy_radau.solve_collocation_system = counted
        try:
            start = time.perf_counter()
            scipy_solve(_Clocked(f_np, clock, "field"), _Clocked(jac_np, clock, "jac"), y0, T, "Radau", rtol, atol)
            total = time.perf_counter() - start
        finally:
            scipy_radau.solve_collocation_system = collocation
        if best is None or total < best[0]:
            best = (total, clock["field"], clock["jac"], count["attempts"], count["iterations"])
    total, field_s, jac_s, attempts, iterations = best
    rest = total - field_s - jac_s
    print(f"| scipy Radau | {total:.3f} | {field_s:.3f} | {jac_s:.3f} | {rest:.3f} | {attempts} | {iterations} | "
          f"{1e6 * rest / attempts:.0f} |")


def report(label, times, outs, ref, floor, baseline):
    print(f"\n### {label}\n")
    print("| solver | time (s) | time / scipy Radau | steps | Jacobians | f evals | error at T |")
    print("|---|---|---|---|---|---|---|")
    for name, t in times.items():
        o = outs[name]
        print(f"| {name} | {t:.3f} | {t / times[baseline]:.2f} | {o['steps']} | {o['jac']} | {o['nfe']} | "
              f"{error(o['y'], ref, floor):.1e} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="single problems only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-only", action="store_true", help="only the batch of 256, one repeat")
    parser.add_argument("--mu-range", type=float, nargs=2, default=(900.0, 1000.0))
    parser.add_argument("--span", type=float, default=3000.0, help="end time of the batch solve")
    parser.add_argument("--no-shared", action="store_true", help="batch: only the per-sample pyjode solves")
    parser.add_argument("--n", type=int, default=256, help="batch: number of problems")
    parser.add_argument("--ref-rtol", type=float, default=1e-11,
                        help="batch: rtol of the reference solves (scipy Radau; 1e-11 takes ~1 min a problem at mu=100 "
                             "on [0, 3000])")
    parser.add_argument("--breakdown", action="store_true", help="where the single-problem solves' time goes")
    parser.add_argument("--keep-step", type=float, default=1.0,
                        help="keep_step of pyjode's implicit methods in the single-problem runs (1: off)")
    args = parser.parse_args()
    if args.breakdown:
        torch.set_num_threads(1)
        breakdown("Robertson", robertson_torch, robertson_np, robertson_jac, [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10,
                  args.repeats)
        f_np, jac_np = VdP(None).np(1000.0)
        breakdown("Van der Pol mu=1000", VdP(1000.0), f_np, jac_np, [2.0, 0.0], 3000.0, 1e-6, 1e-6, args.repeats)
        return
    if args.batch_only:
        torch.set_num_threads(1)
        batch(1, n=args.n, T=args.span, mu_range=tuple(args.mu_range), shared=not args.no_shared,
              ref_rtol=args.ref_rtol)
        return
    torch.set_num_threads(1)
    repeats = args.repeats
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread, repeats={repeats}")
    single("Robertson, [0, 1e5], rtol=1e-6, atol=1e-10", robertson_torch, robertson_np, robertson_jac,
           [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10, 1e-8, repeats, args.keep_step)
    f_np, jac_np = VdP(None).np(1000.0)
    single("Van der Pol mu=1000, [0, 3000], rtol=1e-6, atol=1e-6", VdP(1000.0), f_np, jac_np, [2.0, 0.0], 3000.0,
           1e-6, 1e-6, 1e-3, repeats, args.keep_step)
    if not args.quick:
        batch(1)


if __name__ == "__main__":
    main()
