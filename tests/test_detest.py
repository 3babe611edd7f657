"""pyjode against torchdiffeq on the non-stiff DETEST set (classes A-E, 25 problems, t in [0, 20]).

For dopri5, tsit5 and bosh3 at rtol = atol = tol, in both grad modes (autograd recording from a y0 that
requires grad, and ``torch.no_grad()``), on every problem of ``tests/detest.py``:

(a) pyjode's error stays within a stated multiple of tol (see ``MULTIPLE``);
(b) the geometric mean over the set of pyjode's error is at most torchdiffeq's, same method and tol;
(c) the geometric mean over the set of pyjode's per-problem evaluation ratio to torchdiffeq is <= 1.1;
(d) the two grad modes take identical steps and give the same answers.

The error of a solve is ``detest.relative_error``: the largest over the 21 output times t = 0, 1, ..., 20
of max_i |y_i - ref_i| / (1 + max_i |ref_i|), against a closed form or a DOP853 solve at rtol 1e-13.
Evaluations are counted by wrapping the field, the same way for both libraries.

torchdiffeq is solved once per (method, tol), under ``no_grad``: its loop has no grad-mode-dependent
path, so its steps and answers are the same in both modes (``benchmarks/bench_detest.py`` runs it in
both and reports them). bosh3 at 1e-9 (about 300 000 evaluations per library) is left to the benchmark.
The full table: ``python -m benchmarks.bench_detest``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from detest import PROBLEMS, geometric_mean, solve

pytest.importorskip("scipy")  # reference solutions of the problems without a closed form
pytest.importorskip("torchdiffeq")

CASES = [
    ("dopri5", 1e-3), ("dopri5", 1e-6), ("dopri5", 1e-9),
    ("tsit5", 1e-3), ("tsit5", 1e-6), ("tsit5", 1e-9),
    ("bosh3", 1e-3), ("bosh3", 1e-6),
]
CASE_IDS = [f"{m}-{tol:g}" for m, tol in CASES]
GRAD = pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])


def MULTIPLE(name: str) -> float:
    """The largest error a problem may have, in units of tol.

    Measured on this code (largest over the three methods, every tolerance above and both grad modes):
    classes A, B, C, E: 210x (dopri5 on B1 at 1e-3; bosh3 on B1 at 1e-6: 173x); class D: 1905x (bosh3 on
    D5 at 1e-6; dopri5 1302x, tsit5 967x). The bound is about twice the measured figure. These are global
    errors over 20 time units of a controller that bounds each step's local error: on the Kepler orbits
    (three revolutions, eccentricity up to 0.9) the phase error of every revolution adds up, and the
    speed at perihelion, sqrt((1 + e) / (1 - e)), turns it into a large position error. torchdiffeq
    lands in the same range (up to 2324x, on D5).
    """
    return 4000.0 if name.startswith("D") else 400.0


@functools.lru_cache(maxsize=None)
def runs(library: str, method: str, tol: float, grad: bool):
    """Every problem solved once per process (each test reads the same solves)."""
    return {name: solve(problem, library, method, tol, grad) for name, problem in PROBLEMS.items()}


def torchdiffeq_runs(method, tol):
    return runs("torchdiffeq", method, tol, False)


@pytest.mark.parametrize("method, tol", CASES, ids=CASE_IDS)
@GRAD
def test_error_within_a_multiple_of_the_tolerance(method, tol, grad):
    ours = runs("pyjode", method, tol, grad)
    over = {name: f"{run.error / tol:.0f}x" for name, run in ours.items() if run.error > MULTIPLE(name) * tol}
    assert not over, over


@pytest.mark.parametrize("method, tol", CASES, ids=CASE_IDS)
@GRAD
def test_geometric_mean_error_no_worse_than_torchdiffeq(method, tol, grad):
    ours, theirs = runs("pyjode", method, tol, grad), torchdiffeq_runs(method, tol)
    ratio = geometric_mean(r.error for r in ours.values()) / geometric_mean(r.error for r in theirs.values())
    # measured: 0.38-0.46 (dopri5), 0.52-0.70 (tsit5), 0.09-0.44 (bosh3)
    assert ratio <= 1.0, ratio


@pytest.mark.parametrize("method, tol", CASES, ids=CASE_IDS)
@GRAD
def test_evaluations_at_most_1_1x_torchdiffeq(method, tol, grad):
    ours, theirs = runs("pyjode", method, tol, grad), torchdiffeq_runs(method, tol)
    # the geometric mean of per-problem ratios, so that the large problems do not hide the small ones
    # (the total ratio is reported by the benchmark); measured 0.91-1.08, the highest dopri5 at 1e-9
    ratio = geometric_mean(ours[name].nfe / theirs[name].nfe for name in ours)
    assert ratio <= 1.1, ratio


@pytest.mark.parametrize("method, tol", CASES, ids=CASE_IDS)
def test_grad_and_no_grad_take_the_same_steps(method, tol):
    with_grad, without = runs("pyjode", method, tol, True), runs("pyjode", method, tol, False)
    for name in PROBLEMS:
        assert with_grad[name].stats == without[name].stats, name
        assert with_grad[name].nfe == without[name].nfe, name
        # same steps, so the same answer up to rounding (the grad path allocates fresh stage buffers)
        assert abs(with_grad[name].error - without[name].error) <= 1e-12, name


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_float32_solves_meet_the_same_bound(method):
    """The fields run in float32 too; at tol 1e-3 (well above float32 rounding) the errors stay within
    the same multiples (measured: the float64 figures to two digits)."""
    tol = 1e-3
    for name, problem in PROBLEMS.items():
        run = solve(problem, "pyjode", method, tol, grad=False, dtype=torch.float32)
        assert run.error <= MULTIPLE(name) * tol, (name, run.error / tol)


def test_problem_set_is_complete():
    assert sorted(PROBLEMS) == [f"{c}{k}" for c in "ABCDE" for k in range(1, 6)]
    for name, problem in PROBLEMS.items():
        ref = problem.reference()
        assert ref.shape == (21, problem.dim)
        torch.testing.assert_close(ref[0], problem.y0, rtol=0, atol=1e-15, msg=name)
        assert problem.field.__doc__, name  # each problem states its equation
