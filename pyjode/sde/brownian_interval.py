"""Brownian motion with its space-time Lévy area, queried over intervals (torchsde's ``BrownianInterval`` API).

A dyadic tree over [t0, t1] carries, for every node [a, b] of length h, the increment W = W_b − W_a and
the space-time Lévy area H = U/h − W/2, with U = ∫_a^b (W_s − W_a) ds; W ~ N(0, h) and H ~ N(0, h/12)
are independent (Foster, Lyons & Oberhauser 2020, "An optimal polynomial approximation of Brownian
motion"). A node is split at its midpoint by sampling its halves conditionally on (W, H): with
Z1, Z2 ~ N(0, 1),

    D = W1 − W2 = 3H + sqrt(h/4) Z1,   S = H1 + H2 = H/2 − sqrt(h/16) Z1,   T = H1 − H2 = sqrt(h/12) Z2,
    W1 = (W + D)/2,  W2 = (W − D)/2,  H1 = (S + T)/2,  H2 = (S − T)/2,

which follows from W = W1 + W2, H = (H1 + H2)/2 + (W1 − W2)/4 (the halves' (W_i, H_i) independent with
variances h/2, h/24). Z1, Z2 are keyed by (seed, level, index) through `keyed_rng`, so the path is a pure
function of the seed: any query order gives the same values, which is what a continuous adjoint replaying
the forward noise needs. Queries are rounded to the dyadic points of level `depth`; an interval query
is the left-to-right combination of at most 2·depth nodes with torchsde's rule
    H_{s,t} = ((t−u)(H_{u,t} + W_{s,u}/2) + (u−s)(H_{s,u} − W_{u,t}/2)) / (t − s).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch

from .keyed_rng import _mix32, stream_key

LEVY_AREA_APPROXIMATIONS = ("none", "space-time", "davie", "foster")
_CACHE_LIMIT = 1 << 15


class BrownianInterval:
    """Brownian motion on [t0, t1] of shape `size`, with torchsde's ``BrownianInterval`` constructor and call.

    ``bm(ta, tb)`` is W(tb) − W(ta); ``bm(ta, tb, return_U=True)`` also returns U = ∫_ta^tb (W_s − W_ta) ds
    (needs ``levy_area_approximation`` "space-time"); ``bm(t)`` is W(t) − W(t0). `entropy` seeds the path
    (random when None). `dt`, `pool_size`, `cache_size` and `halfway_tree` tune torchsde's data structure
    and do not change the law here; `tol` > 0 sets the resolution (the tree's depth). Lévy area A
    ("davie", "foster") is not provided: asking for it raises.
    """

    def __init__(self, t0=0.0, t1=1.0, size: Optional[Sequence[int]] = None, dtype: Optional[torch.dtype] = None,
                 device=None, entropy: Optional[int] = None, dt=None, tol=0.0, pool_size: int = 8,
                 cache_size: Optional[int] = 45, halfway_tree: bool = False,
                 levy_area_approximation: str = "none", W: Optional[torch.Tensor] = None,
                 H: Optional[torch.Tensor] = None) -> None:
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"BrownianInterval: need finite t0 < t1, got t0={t0}, t1={t1}.")
        if levy_area_approximation not in LEVY_AREA_APPROXIMATIONS:
            raise ValueError(f"BrownianInterval: levy_area_approximation must be one of "
                             f"{LEVY_AREA_APPROXIMATIONS}, got {levy_area_approximation!r}.")
        if levy_area_approximation in ("davie", "foster"):
            raise ValueError(f"BrownianInterval: levy_area_approximation={levy_area_approximation!r} (Lévy area A) "
                             "is not supported; use 'space-time' or 'none'.")
        if W is not None:
            size = W.shape if size is None else size
            dtype = W.dtype if dtype is None else dtype
            device = W.device if device is None else device
        size = () if size is None else tuple(int(s) for s in size)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ValueError(f"BrownianInterval: dtype must be floating, got {dtype}.")
        tol = float(tol)
        if tol < 0:
            raise ValueError(f"BrownianInterval: tol must be non-negative, got {tol}.")
        if entropy is None:
            entropy = int(torch.randint(0, 2 ** 62, (1,)).item())
        self._start, self._end, self._size, self._dtype = t0, t1, torch.Size(size), dtype
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self._entropy, self._levy = int(entropy), levy_area_approximation
        self._dt, self._tol, self._pool_size, self._cache_size = dt, tol, pool_size, cache_size
        self._halfway_tree = halfway_tree
        # Resolution: tol when given, else 2**-44 of the span (well below float32 rounding of times).
        span = t1 - t0
        self.depth = 44 if tol == 0 else max(1, min(50, math.ceil(math.log2(span / tol))))
        self._numel = math.prod(self._size)
        self._keys = [stream_key(self._entropy, level) for level in range(self.depth + 1)]
        self._cache: dict = {}
        root = self._normals(0, 0)
        w = math.sqrt(span) * root[0] if W is None else W.detach().to(self._device, torch.float64).reshape(-1)
        h = math.sqrt(span / 12) * root[1] if H is None else H.detach().to(self._device, torch.float64).reshape(-1)
        self._root = (w, h)

    # -- torchsde's read-only properties
    shape = property(lambda self: self._size)
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    entropy = property(lambda self: self._entropy)
    levy_area_approximation = property(lambda self: self._levy)
    dt = property(lambda self: self._dt)
    tol = property(lambda self: self._tol)
    pool_size = property(lambda self: self._pool_size)
    cache_size = property(lambda self: self._cache_size)
    halfway_tree = property(lambda self: self._halfway_tree)
    t0 = property(lambda self: self._start)
    t1 = property(lambda self: self._end)

    def size(self):
        return self._size

    def __repr__(self) -> str:
        return (f"BrownianInterval(t0={self._start:.3f}, t1={self._end:.3f}, size={tuple(self._size)}, "
                f"dtype={self._dtype}, device={self._device}, entropy={self._entropy}, "
                f"levy_area_approximation={self._levy!r})")

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        if return_A:
            raise ValueError("BrownianInterval: return_A (Lévy area) is not supported; methods that need it "
                             "(log_ode_midpoint with general noise) are not available.")
        if return_U and self._levy == "none":
            raise ValueError("BrownianInterval: return_U needs levy_area_approximation='space-time'.")
        if tb is None:
            ta, tb = self._start, ta
        ta, tb = self._clamp(float(ta), "ta"), self._clamp(float(tb), "tb")
        if ta > tb:
            raise RuntimeError(f"Query times ta={ta:.3f} and tb={tb:.3f} must respect ta <= tb.")
        w, h = self._interval(ta, tb)
        w = w.view(self._size).to(self._dtype)
        if not return_U:
            return w
        u = (tb - ta) * (0.5 * w + h.view(self._size).to(self._dtype))
        return w, u

    def _clamp(self, t: float, name: str) -> float:
        if t < self._start or t > self._end:
            warnings.warn(f"Should have {self._start} <= {name} <= {self._end}, got {name}={t}.")
            return min(max(t, self._start), self._end)
        return t

    def _position(self, t: float) -> int:
        full = 1 << self.depth
        return min(full, max(0, round((t - self._start) / (self._end - self._start) * full)))

    def _interval(self, ta: float, tb: float):
        pa, pb = self._position(ta), self._position(tb)
        zero = torch.zeros(self._numel, dtype=torch.float64, device=self._device)
        if pa == pb:
            return zero, zero
        nodes: list = []
        self._cover(0, 0, pa, pb, nodes)
        span = self._end - self._start
        w = h = None
        length = 0.0
        for level, index in nodes:
            wi, hi = self._node(level, index)
            li = span / (1 << level)
            if w is None:
                w, h, length = wi, hi, li
            else:
                h = (li * (hi + 0.5 * w) + length * (h - 0.5 * wi)) / (li + length)
                w, length = w + wi, length + li
        return w, h

    def _cover(self, level: int, index: int, pa: int, pb: int, out: list) -> None:
        shift = self.depth - level
        a, b = index << shift, (index + 1) << shift
        if pb <= a or b <= pa:
            return
        if pa <= a and b <= pb:
            out.append((level, index))
            return
        self._cover(level + 1, 2 * index, pa, pb, out)
        self._cover(level + 1, 2 * index + 1, pa, pb, out)

    def _normals(self, level: int, index: int) -> torch.Tensor:
        key = _mix32(_mix32(self._keys[level] ^ (index & 0xFFFFFFFF)) ^ (index >> 32))
        gen = torch.Generator(device=self._device)
        gen.manual_seed(key)
        return torch.randn(2, self._numel, generator=gen, dtype=torch.float64, device=self._device)

    def _node(self, level: int, index: int):
        """(W, H) of node `index` at `level` (float64, flat), walking down from the root through the cache."""
        if level == 0:
            return self._root
        got = self._cache.get((level, index))
        if got is not None:
            return got
        w, hh = self._node(level - 1, index >> 1)
        h = (self._end - self._start) / (1 << (level - 1))
        z = self._normals(level, index >> 1)
        d = 3.0 * hh + math.sqrt(h / 4) * z[0]
        s = 0.5 * hh - math.sqrt(h / 16) * z[0]
        t = math.sqrt(h / 12) * z[1]
        left, right = ((w + d) * 0.5, (s + t) * 0.5), ((w - d) * 0.5, (s - t) * 0.5)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[(level, index & ~1)] = left
        self._cache[(level, index | 1)] = right
        return left if index % 2 == 0 else right


def brownian_interval_like(y: torch.Tensor, t0=0.0, t1=1.0, size=None, dtype=None, device=None,
                           **kwargs) -> BrownianInterval:
    """A BrownianInterval with the size, dtype and device of `y` (torchsde's helper)."""
    return BrownianInterval(t0=t0, t1=t1, size=y.shape if size is None else size,
                            dtype=y.dtype if dtype is None else dtype,
                            device=y.device if device is None else device, **kwargs)


class BrownianPath:
    """torchsde's ``BrownianPath(t0, w0)``: W(t) = w0 + a Brownian interval on [t0, t0 + 1]."""

    def __init__(self, t0, w0: torch.Tensor, window_size: int = 8) -> None:
        self._w0 = w0
        self._interval = BrownianInterval(t0=t0, t1=float(t0) + 1, size=w0.shape, dtype=w0.dtype,
                                          device=w0.device)

    def __call__(self, t, tb=None, return_U=False, return_A=False):
        out = self._interval(t, tb, return_U=return_U, return_A=return_A)
        return out + self._w0 if tb is None and not return_U else out

    shape = property(lambda self: self._interval.shape)
    dtype = property(lambda self: self._interval.dtype)
    device = property(lambda self: self._interval.device)
    levy_area_approximation = property(lambda self: self._interval.levy_area_approximation)
    t0 = property(lambda self: self._interval.t0)
    t1 = property(lambda self: self._interval.t1)


class BrownianTree(BrownianPath):
    """torchsde's ``BrownianTree(t0, w0, t1=None, w1=None, entropy=None, tol=1e-6, ...)``."""

    def __init__(self, t0, w0: torch.Tensor, t1=None, w1: Optional[torch.Tensor] = None, entropy=None,
                 tol: float = 1e-6, pool_size: int = 24, cache_depth: int = 9, safety=None) -> None:
        t1 = float(t0) + 1 if t1 is None else t1
        self._w0 = w0
        self._interval = BrownianInterval(t0=t0, t1=t1, size=w0.shape, dtype=w0.dtype, device=w0.device,
                                          entropy=entropy, tol=tol, pool_size=pool_size, halfway_tree=True,
                                          W=None if w1 is None else w1 - w0)


class ReverseBrownian:
    """torchsde's ``ReverseBrownian(bm)``: the path run backwards in time, bm_rev(ta, tb) = bm(−tb, −ta)."""

    def __init__(self, base_brownian) -> None:
        self.base_brownian = base_brownian

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self.base_brownian(-tb, -ta, return_U=return_U, return_A=return_A)

    shape = property(lambda self: self.base_brownian.shape)
    dtype = property(lambda self: self.base_brownian.dtype)
    device = property(lambda self: self.base_brownian.device)
    levy_area_approximation = property(lambda self: self.base_brownian.levy_area_approximation)
