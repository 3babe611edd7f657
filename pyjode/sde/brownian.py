"""Replayable Brownian motion: a Brownian tree over dyadic points with keyed noise.

The path lives on [t0, t1]. W(t0) = 0, W(t1) ~ N(0, t1 - t0), and the value at the midpoint of
every dyadic interval [a, b] is drawn from the Brownian bridge,
    W((a+b)/2) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) * xi(node),
(Levy's construction; the Brownian tree of Gaines & Lyons 1997 and torchsde's BrownianTree).
xi(node) is keyed by (seed, level, index) through `keyed_rng`, so every value is a pure
function of its node: queries in any order, repeated or overlapping, give the same path, the
backward pass of a reversible solver replays the forward noise exactly, and no state grows with
the number of queries (there is nothing to cache).

Query times are rounded to the nearest dyadic point of level `depth` (spacing
(t1 - t0) * 2**-depth), so W is exact Brownian motion sampled on that fine grid. Uniform step
grids whose spacing is a dyadic fraction of t1 - t0 land on coarse levels and cost O(#points).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .keyed_rng import keyed_normals, node_keys, stream_key

_ROOT_STREAM = 0


class BrownianPath:
    """Brownian motion on [t0, t1] with values of the given `shape`, reproducible from `seed`.

    `bm(ta, tb)` returns W(tb) - W(ta); `bm(t)` returns W(t) (W(t0) = 0). `values(times)` and
    `increments(times)` evaluate many times in one vectorised pass. Midpoints come from the Brownian
    bridge, W((a+b)/2) = (W(a) + W(b))/2 + sqrt((b - a)/4) xi (module docstring), so any queries, in any
    order, give the same path.

    Args:
        t0, t1: the interval (t0 < t1).
        shape: the shape of W(t).
        seed: the path is a pure function of it (default 0).
        dtype, device: of the values (default: torch's default dtype, the CPU).
        depth: query times are rounded to the dyadic grid of spacing (t1 - t0) * 2**-depth (default 32).
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int] | torch.Size, seed: int = 0,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 depth: int = 32) -> None:
        t0, t1 = _as_float(t0, "t0"), _as_float(t1, "t1")
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"BrownianPath: need finite t0 < t1, got t0={t0}, t1={t1}.")
        try:
            shape = torch.Size(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"BrownianPath: shape must be a sequence of ints, got {shape!r}.") from None
        if any(s < 0 for s in shape):
            raise ValueError(f"BrownianPath: shape must be non-negative, got {tuple(shape)}.")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"BrownianPath: seed must be a non-negative int, got {seed!r}.")
        if not isinstance(depth, int) or not 1 <= depth <= 60:
            raise ValueError(f"BrownianPath: depth must be an int in [1, 60], got {depth!r}.")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"BrownianPath: dtype must be a floating dtype, got {dtype}.")
        self.t0, self.t1, self.shape, self.seed, self.depth = t0, t1, shape, seed, depth
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # float32 paths are built in float32 (faster); they match the float64 path to rounding.
        self._work = torch.float32 if dtype == torch.float32 else torch.float64
        # One key per tree level (stream 0 is the root's endpoint), fixed for the path's life.
        self._level_keys = [stream_key(seed, s) for s in range(depth + 1)]

    def __repr__(self) -> str:
        return (f"BrownianPath(t0={self.t0}, t1={self.t1}, shape={tuple(self.shape)}, "
                f"seed={self.seed}, dtype={self.dtype}, device={self.device}, depth={self.depth})")

    def __call__(self, ta, tb=None) -> torch.Tensor:
        if tb is None:
            return self.values([_as_float(ta, "ta")])[0]
        w = self.values([_as_float(ta, "ta"), _as_float(tb, "tb")])
        return w[1] - w[0]

    def dyadic_spacing(self, dt: float) -> float:
        """The largest spacing (t1 - t0) * 2**-L of this tree that is <= dt."""
        span = self.t1 - self.t0
        level = max(0, math.ceil(math.log2(span / dt) - 1e-9))
        if level > self.depth:
            raise ValueError(f"dt={dt} is finer than this BrownianPath resolves ((t1 - t0) * "
                             f"2**-{self.depth}); build it with a larger depth.")
        return span / (1 << level)

    def values(self, times, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W at each of `times` (1-D), shape (len(times), *shape)."""
        w = self._values_in_order(self._positions(times))
        return w.reshape(-1, *self.shape).to(self.dtype if dtype is None else dtype)

    def increments(self, times, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W(times[k+1]) - W(times[k]), shape (len(times) - 1, *shape)."""
        w = self._values_in_order(self._positions(times))
        dw = (w[1:] - w[:-1]).reshape(-1, *self.shape)
        return dw.to(self.dtype if dtype is None else dtype)

    def _values_in_order(self, pos: torch.Tensor) -> torch.Tensor:
        """W at dyadic positions in the order given (a step grid is already sorted and distinct)."""
        if len(pos) < 2 or bool((pos[1:] > pos[:-1]).all()):
            return self._values_at(pos)
        uniq, inverse = torch.unique(pos, sorted=True, return_inverse=True)
        return self._values_at(uniq).index_select(0, inverse.to(self.device))

    def _positions(self, times) -> torch.Tensor:
        """Integer dyadic positions in [0, 2**depth] nearest to `times`."""
        t = torch.as_tensor(times, dtype=torch.float64).detach().cpu().reshape(-1)
        span = self.t1 - self.t0
        slack = 1e-12 * span
        bad = (t < self.t0 - slack) | (t > self.t1 + slack) | ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(
                f"BrownianPath: query time {t[bad][0].item()} lies outside [{self.t0}, {self.t1}]; "
                "create the path over an interval that covers every time the solver visits.")
        scale = float(1 << self.depth)
        pos = torch.round((t - self.t0) / span * scale).to(torch.int64)
        return pos.clamp_(0, 1 << self.depth)

    def _values_at(self, pos: torch.Tensor) -> torch.Tensor:
        """W (in the work dtype, flattened to (len(pos), numel)) at sorted unique dyadic positions.

        Walks the tree level by level over the distinct nodes that some query still lies in,
        so a dense query costs O(#nodes visited) rather than O(#points * depth)."""
        depth, span, device, work = self.depth, self.t1 - self.t0, self.device, self._work
        numel = math.prod(self.shape)
        full = 1 << depth
        root_key = node_keys(self._level_keys[_ROOT_STREAM], torch.zeros(1, dtype=torch.int64))
        w_end = math.sqrt(span) * keyed_normals(root_key, numel, work, device)
        out = torch.zeros(len(pos), numel, dtype=work, device=device)
        at_end = pos == full
        if bool(at_end.any()):
            out[at_end.to(device)] = w_end
        inner = (pos > 0) & (pos < full)
        p, rows = pos[inner], torch.nonzero(inner).reshape(-1)
        nodes = torch.zeros(1, dtype=torch.int64)          # nodes of this level still needed
        w_a = torch.zeros(1, numel, dtype=work, device=device)
        w_b = w_end
        for level in range(depth):
            if len(p) == 0:
                break
            shift = depth - level - 1
            keys = node_keys(self._level_keys[level + 1], nodes, wide=level >= 32)
            xi = keyed_normals(keys, numel, work, device)
            w_mid = torch.add(w_a, w_b).mul_(0.5).add_(xi, alpha=0.5 * math.sqrt(span / (1 << level)))
            node_of_p = p >> (shift + 1)
            done = p == ((node_of_p << 1) + 1) << shift
            if bool(done.any()):
                at = torch.searchsorted(nodes, node_of_p[done])
                out.index_copy_(0, rows[done].to(device), w_mid.index_select(0, at.to(device)))
                p, rows = p[~done], rows[~done]
                if len(p) == 0:
                    break
            children = torch.unique_consecutive(p >> shift)
            # A left child spans (w_a, w_mid) of its parent, a right child (w_mid, w_b): two gathers
            # from the parents' three values laid out as rows 3 * parent + {0, 1, 2}.
            ends = torch.stack([w_a, w_mid, w_b], dim=1).view(-1, numel)
            first = (torch.searchsorted(nodes, children >> 1) * 3 + (children & 1)).to(device)
            w_a, w_b = ends.index_select(0, first), ends.index_select(0, first + 1)
            nodes = children
        return out


def _as_float(x, name: str) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"BrownianPath: {name} must be a scalar, got shape {tuple(x.shape)}.")
        return float(x.item())
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"BrownianPath: {name} must be a real number, got {x!r}.") from None
