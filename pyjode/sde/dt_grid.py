"""torchsde's fixed step grid: steps of dt from ts[0] that do not restart at the output times.

    t_0 = ts[0],  t_{k+1} = min(t_k + dt, ts[-1])   (accumulated in ts's dtype, as torchsde does),

stepping while t_k < ts[i] for each output in turn; the output at ts[i] is the linear interpolant of the two
grid states around it,
    y(ts[i]) = ((t_{k+1} − ts[i]) y_k + (ts[i] − t_k) y_{k+1}) / (t_{k+1} − t_k),
where t_k < ts[i] <= t_{k+1}. Compared with landing a step on every output, this takes ceil((T − t0)/dt) steps in
all rather than Σ ceil(Δt_i/dt).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch

_NP = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
       torch.bfloat16: np.float32}


@dataclass
class DtGrid:
    times: List[float]          # the step times t_0 < t_1 < ... (Python floats)
    nodes: List[int]            # the grid indices whose states the outputs need, increasing
    weights: list               # per output i > 0: (position of k in nodes, w_k, position of k+1, w_{k+1})


def dt_grid(ts: torch.Tensor, dt: float) -> DtGrid:
    """The grid and interpolation plan for outputs `ts` (1-D, strictly increasing)."""
    kind = _NP.get(ts.dtype, np.float64)
    outs = [kind(v) for v in ts.detach().cpu().double().tolist()] if ts.dtype != torch.float64 else \
        [np.float64(v) for v in ts.detach().cpu().tolist()]
    step, end = kind(dt), outs[-1]
    times, plan = [outs[0]], []
    curr = outs[0]
    for out in outs[1:]:
        while curr < out:
            curr = min(kind(curr + step), end)
            times.append(curr)
        plan.append((len(times) - 2, out))
    nodes = sorted({0} | {k for k, _ in plan} | {k + 1 for k, _ in plan})
    where = {k: i for i, k in enumerate(nodes)}
    weights = []
    for k, out in plan:
        t0, t1 = float(times[k]), float(times[k + 1])
        out = float(out)
        w1 = (out - t0) / (t1 - t0)
        weights.append((where[k], 1.0 - w1, where[k + 1], w1))
    return DtGrid([float(t) for t in times], nodes, weights)


def interpolate_outputs(grid: DtGrid, node_states: torch.Tensor) -> torch.Tensor:
    """The outputs (len(ts), ...) from the states at `grid.nodes` (stacked), by torchsde's linear rule."""
    ys = [node_states[0]]
    for i0, w0, i1, w1 in grid.weights:
        if w1 == 1.0:
            ys.append(node_states[i1])
        else:
            ys.append(w0 * node_states[i0] + w1 * node_states[i1])
    return torch.stack(ys)


def grid_from_times(times: List[float], ts: List[float]) -> DtGrid:
    """The interpolation plan of outputs `ts` on given step times (for instance accepted adaptive steps)."""
    import bisect
    plan = []
    for out in ts[1:]:
        k = max(0, min(len(times) - 2, bisect.bisect_left(times, out) - 1))
        plan.append((k, out))
    nodes = sorted({0} | {k for k, _ in plan} | {k + 1 for k, _ in plan})
    where = {k: i for i, k in enumerate(nodes)}
    weights = []
    for k, out in plan:
        w1 = (out - times[k]) / (times[k + 1] - times[k])
        weights.append((where[k], 1.0 - w1, where[k + 1], w1))
    return DtGrid(list(times), nodes, weights)
