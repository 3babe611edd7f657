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

import numpy as np
import torch

from .keyed_rng import _mix32, stream_key

LEVY_AREA_APPROXIMATIONS = ("none", "space-time", "davie", "foster")
_CACHE_LIMIT = 1 << 16


class BrownianInterval:
    """Brownian motion on [t0, t1] of shape `size`, with torchsde's ``BrownianInterval`` constructor and call.

    ``bm(ta, tb)`` is W(tb) − W(ta); ``bm(ta, tb, return_U=True)`` also returns U = ∫_ta^tb (W_s − W_ta) ds
    (needs ``levy_area_approximation`` "space-time"); ``bm(t)`` is W(t) − W(t0). `entropy` seeds the path
    (random when None). `dt`, `pool_size`, `cache_size` and `halfway_tree` tune torchsde's data structure
    and do not change the law here; `tol` > 0 sets the resolution (the tree's depth). ``return_A=True`` gives
    Davie's ("davie") or Foster's ("foster") approximation of the Lévy area A from (W, H) and a skew-symmetric
    Gaussian term (Davie 2014; Foster 2020, "Numerical approximations for stochastic differential equations"):
        A ≈ H Wᵀ − W Hᵀ + σ (N − Nᵀ),   σ² = h²/12 (Davie) or (h/10)(h/10 + H_i² + H_j²) (Foster),
    with N keyed by the query's end points, so a repeated query returns the same A.
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
        # Resolution: tol when given, else 2**-32 of the span. All queries round to the same dyadic points, so the
        # values are exactly a Brownian path sampled there; a time moves by at most 1.2e-10 of the span, far below
        # any step an SDE solver takes, and every level saved is one fewer node per new query end.
        span = t1 - t0
        self.depth = 32 if tol == 0 else max(1, min(50, math.ceil(math.log2(span / tol))))
        self._numel = math.prod(self._size)
        self._keys = [stream_key(self._entropy, level) for level in range(self.depth + 1)]
        self._cache: dict = {}
        self._points: dict = {}
        self._fresh: dict = {}
        root = _keyed_normals([(self._keys[0], 0)], self._numel)[0]
        w = math.sqrt(span) * root[0] if W is None else W.detach().cpu().double().reshape(-1).numpy()
        h = math.sqrt(span / 12) * root[1] if H is None else H.detach().cpu().double().reshape(-1).numpy()
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
        if return_A and self._levy not in ("davie", "foster"):
            raise ValueError("BrownianInterval: return_A needs levy_area_approximation='davie' or 'foster'.")
        if return_U and self._levy == "none":
            raise ValueError("BrownianInterval: return_U needs levy_area_approximation='space-time', 'davie' or "
                             "'foster'.")
        if tb is None:
            ta, tb = self._start, ta
        ta, tb = self._clamp(float(ta), "ta"), self._clamp(float(tb), "tb")
        if ta > tb:
            raise RuntimeError(f"Query times ta={ta:.3f} and tb={tb:.3f} must respect ta <= tb.")
        w, u, length = self._interval(ta, tb)
        w, u = self._tensor(w), self._tensor(u)
        out = [w.to(self._dtype)]
        if return_U:
            out.append(u.to(self._dtype))
        if return_A:
            hh = u / length - 0.5 * w if length > 0 else torch.zeros_like(w)
            out.append(self._levy_area(w, hh, tb - ta, ta, tb).to(self._dtype))
        return out[0] if len(out) == 1 else tuple(out)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).view(self._size).to(self._device)

    def _levy_area(self, w, hh, h, ta, tb):
        if w.dim() < 2:  # a scalar or a batch of scalar motions has no Lévy area
            return torch.zeros_like(w)
        a = hh.unsqueeze(-1) * w.unsqueeze(-2) - w.unsqueeze(-1) * hh.unsqueeze(-2)
        key = _mix32(_mix32(self._keys[-1] ^ (self._position(ta) & 0xFFFFFFFF)) ^ (self._position(tb) & 0xFFFFFFFF))
        gen = torch.Generator(device=self._device)
        gen.manual_seed(key ^ 0x2545F491)
        noise = torch.randn(a.shape, generator=gen, dtype=torch.float64, device=self._device)
        noise = noise - noise.transpose(-1, -2)
        if self._levy == "foster":
            h2 = hh * hh
            std = (0.1 * h * (0.1 * h + h2.unsqueeze(-1) + h2.unsqueeze(-2))).sqrt()
        else:
            std = math.sqrt(h * h / 12)
        return a + std * noise

    def _clamp(self, t: float, name: str) -> float:
        if t < self._start or t > self._end:
            warnings.warn(f"Should have {self._start} <= {name} <= {self._end}, got {name}={t}.")
            return min(max(t, self._start), self._end)
        return t

    def _position(self, t: float) -> int:
        full = 1 << self.depth
        return min(full, max(0, round((t - self._start) / (self._end - self._start) * full)))

    def _interval(self, ta: float, tb: float):
        """(W, U, dyadic length) over [ta, tb] from the point values (W, ∫W) at its ends: W = W_b − W_a and
        U = ∫_a^b (W_s − W_a) ds = I_b − I_a − (b − a) W_a (float64 numpy)."""
        pa, pb = self._position(ta), self._position(tb)
        if pa == pb:
            zero = np.zeros(self._numel)
            return zero, zero, 0.0
        wa, ia = self._point(pa)
        wb, ib = self._point(pb)
        length = (pb - pa) * (self._end - self._start) / (1 << self.depth)
        w = wb - wa
        return w, ib - ia - length * wa, length

    def _point(self, p: int):
        """(W, I) at dyadic position p, with I(t) = ∫_{t0}^t W_s ds, by one descent from the root."""
        got = self._points.get(p)
        if got is not None:
            return got
        span, depth = self._end - self._start, self.depth
        full = 1 << depth
        if p == full:
            w, hh = self._root
            out = (w, span * (hh + 0.5 * w))
        else:
            w_at, i_at = np.zeros(self._numel), np.zeros(self._numel)
            # the nodes this descent splits, and one batched draw of the normals of those not split before
            chain, level, index = [], 0, 0
            while p != index << (depth - level):
                chain.append((level, index))
                level, index = level + 1, (p >> (depth - level - 1))
            missing = [node for node in chain if node not in self._cache]
            if missing:
                z = _keyed_normals([(self._keys[lv + 1], ix) for lv, ix in missing], self._numel)
                self._fresh = dict(zip(missing, z))
            level, index = 0, 0
            # descend while p lies strictly inside the current node; entering a right child adds the left one
            while p != index << (depth - level):
                left, _ = self._children(level, index)
                length = span / (1 << (level + 1))
                level, index = level + 1, 2 * index
                if p >= (index + 1) << (depth - level):
                    w_l, h_l = left
                    i_at = i_at + length * w_at + length * (h_l + 0.5 * w_l)
                    w_at = w_at + w_l
                    index += 1
            out = (w_at, i_at)
        if len(self._points) >= 64:
            self._points.clear()
        self._points[p] = out
        return out

    def _node(self, level: int, index: int):
        if level == 0:
            return self._root
        return self._children(level - 1, index >> 1)[index & 1]

    def _children(self, level: int, index: int):
        """((W, H) of the left child, (W, H) of the right child) of node `index` at `level`."""
        got = self._cache.get((level, index))
        if got is not None:
            return got
        # This node's children are missing, and so are those of its descendants: draw the normals of the whole
        # chain down to the bottom in one call (they are keyed per node, so the batching changes no value).
        w, hh = self._node(level, index)
        h = (self._end - self._start) / (1 << level)
        z = self._fresh.pop((level, index), None)
        if z is None:
            z = _keyed_normals([(self._keys[level + 1], index)], self._numel)[0]
        d = 3.0 * hh + math.sqrt(h / 4) * z[0]
        s = 0.5 * hh - math.sqrt(h / 16) * z[0]
        t = math.sqrt(h / 12) * z[1]
        out = (((w + d) * 0.5, (s + t) * 0.5), ((w - d) * 0.5, (s - t) * 0.5))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[(level, index)] = out
        return out


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _keyed_normals(nodes, numel: int) -> np.ndarray:
    """Standard normals of shape (len(nodes), 2, numel); row i is a pure function of nodes[i] = (stream, index).

    A counter-based generator (SplitMix64 of key and counter, then Box–Muller), vectorised over all rows, so a
    node costs a few numpy operations rather than a generator reseed."""
    keys = np.array([_mix32(_mix32(k ^ (i & 0xFFFFFFFF)) ^ (i >> 32)) | (k << 32) for k, i in nodes],
                    dtype=np.uint64)
    counters = np.arange(2 * numel, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix(keys * _GOLD)[:, None]
        z1 = _splitmix(base ^ (counters << np.uint64(1)))
        z2 = _splitmix(base ^ ((counters << np.uint64(1)) | np.uint64(1)))
    u1 = ((z1 >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    u2 = (z2 >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    normals = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return normals.reshape(len(nodes), 2, numel)


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
