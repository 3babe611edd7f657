"""Cost of checking the field on every call (shape, dtype, in-place change of y, autocast cast), and of the
captured-tensor check of an adjoint's backward pass (one extra evaluation and a graph walk when
``adjoint_params`` is not given).

Times the same forward solve through the shared loop with the checks on and off (``check_field``), in one
process, interleaved repeats, medians, one intra-op thread. A small field is the worst case: the checks'
fixed cost per call is then largest relative to the field's arithmetic.

    python -m benchmarks.bench_field_checks
"""

from __future__ import annotations

import statistics
import time

import torch

from pyjode.adjoints.base import make_stepper
from pyjode.integrate import integrate
from pyjode.step_control import StepControl
from pyjode.tableau import get_tableau


def main(repeats: int = 41) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    func = lambda t, y: net(y)  # noqa: E731
    y0 = torch.randn(4, 3, dtype=torch.float64)
    control = StepControl(rtol=1e-8, atol=1e-10)
    tableau = get_tableau("dopri5")
    times = {True: [], False: []}
    nfe = {}
    with torch.no_grad():
        for _ in range(repeats):
            for checked in (True, False):
                from pyjode.integrate import Counter
                counter = Counter()
                start = time.perf_counter()
                run = integrate(make_stepper(tableau, y0), func, y0, [0.0, 5.0], control, counter=counter,
                                check_field=checked)
                times[checked].append(time.perf_counter() - start)
                nfe[checked] = counter.nfe
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"dopri5, MLP 3-16-3, batch 4, float64, no grad, {nfe[True]} evaluations")
    print(f"checks on : {on * 1e3:.2f} ms   checks off: {off * 1e3:.2f} ms   ratio {on / off:.3f}   "
          f"per call {(on - off) / nfe[True] * 1e6:.2f} us")
    assert torch.isfinite(run.ys[-1]).all()


def captured_check(repeats: int = 21) -> None:
    """Backward of Quadrature() with adjoint_params given (no check) and defaulted (checked), interleaved."""
    import pyjode

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    func, y0 = Field(), torch.randn(16, 3, dtype=torch.float64)
    params = tuple(func.parameters())
    times = {True: [], False: []}
    for _ in range(repeats):
        for given in (True, False):
            ys = pyjode.odeint(func, y0, [0.0, 1.0], adjoint="quadrature",
                               **(dict(adjoint_params=params) if given else {}))
            start = time.perf_counter()
            ys.sum().backward()
            times[given].append(time.perf_counter() - start)
    a, b = statistics.median(times[True]), statistics.median(times[False])
    print(f"Quadrature backward, MLP 3-64-3, batch 16, float64: adjoint_params given {a * 1e3:.2f} ms, defaulted "
          f"(checked) {b * 1e3:.2f} ms, ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
    captured_check()
