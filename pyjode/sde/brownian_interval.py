"""Brownian motion with its space-time Lévy area, queried over intervals (torchsde's ``BrownianInterval`` API).

A dyadic tree over [t0, t1] carries, for every node [a, b] of length h, the increment W = W_b − W_a and
the space-time Lévy area H = U/h − W/2, with U = ∫_a^b (W_s − W_a) ds; W ~ N(0, h) and H ~ N(0, h/12)
are independent (Foster, Lyons & Oberhauser 2020, "An optimal polynomial approximation of Brownian
motion"). A node is split at its midpoint by sampling its halves conditionally on (W, H): with
Z1, Z2 ~ N(0, 1),

    D = W1 − W2 = 3H + sqrt(h/4) Z1,   S = H1 + H2 = H/2 − sqrt(h/16) Z1,   T = H1 − H2 = sqrt(h/12) Z2,
    W1 = (W + D)/2,  W2 = (W − D)/2,  H1 = (S + T)/2,  H2 = (S − T)/2,

which follows from W = W1 + W2, H = (H1 + H2)/2 + (W1 − W2)/4 (the halves' (W_i, H_i) independent with
variances h/2, h/24). Without Lévy area (``levy_area_approximation="none"``) a node carries W alone and is
split by the Brownian bridge, W1 = W/2 + sqrt(h/4) Z1 (Lévy's construction), one normal per node instead of
two. Every node also carries the point values at its left end, W_a and I_a = ∫_{t0}^a W_s ds, so the values
at a dyadic point are read off the node it is the left end of. A split is linear in (W_a, I_a, W, H, Z1, Z2):
one small matrix product on the stacked rows.

Z1, Z2 are drawn by torch's generator reseeded with a 64-bit key of (seed, level, index), so the path is a
pure function of the seed: any query order gives the same values, which is what a continuous adjoint
replaying the forward noise needs, and the cache of split nodes (least recently used out first, bounded in
bytes) changes speed only. Queries are rounded to the dyadic points of level `depth`; a query end not seen
before costs one split per level below the deepest cached ancestor of the node it starts (about `depth`
splits at a random time, a few along a step grid), found by a bottom-up scan of at most `depth` dict entries.
An interval query is the difference of the point values at its ends:
    W_{s,t} = W_t − W_s,   U_{s,t} = I_t − I_s − (t − s) W_s.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import torch

from .keyed_rng import _mix32, stream_key

LEVY_AREA_APPROXIMATIONS = ("none", "space-time", "davie", "foster")
# Split nodes kept for reuse: at most about this many bytes, and at least _CACHE_MIN_ENTRIES parents' children.
_CACHE_BYTES = 1 << 26
_CACHE_MIN_ENTRIES = 8
_MASK32 = 0xFFFFFFFF
# With the default resolution a query whose length rounds to a length off by more than this fraction raises:
# its increment's variance would be off by as much, silently (tol > 0 sets the resolution explicitly instead).
# An interval shorter than _SLIVER of its times is a rounding artefact of the times themselves (a step grid
# accumulated in floating point ending just short of an output time), not a step: it is answered as before.
_LENGTH_RTOL = 1e-2
_SLIVER = 1e-13


def _split_matrix(length: float, with_h: bool) -> torch.Tensor:
    """The linear map from a node's rows and its normals to its children's rows, for a node of this length.

    With Lévy area the rows are (W_a, I_a, W, H) and the input (W_a, I_a, W, H, Z1, Z2); without, the rows are
    (W_a, W) and the input (W_a, W, Z1). Output: the left child's rows, then the right child's. The right child
    starts at the midpoint m: W_m = W_a + W1, I_m = I_a + (h/2) W_a + U1 with U1 = (h/2)(H1 + W1/2)."""
    h = length
    if not with_h:
        r = 0.5 * math.sqrt(h)
        return torch.tensor([[1.0, 0.0, 0.0],       # left child: W_a
                             [0.0, 0.5, r],         # W1
                             [1.0, 0.5, r],         # right child: W_m = W_a + W1
                             [0.0, 0.5, -r]],       # W2
                            dtype=torch.float64)
    a, b, c = math.sqrt(h / 4), math.sqrt(h / 16), math.sqrt(h / 12)
    # from the module docstring: W1 = W/2 + 3H/2 + (a/2) Z1, H1 = H/4 − (b/2) Z1 + (c/2) Z2, and W2, H2 with the
    # signs of the D and T terms flipped
    w1 = [0.0, 0.0, 0.5, 1.5, 0.5 * a, 0.0]
    w2 = [0.0, 0.0, 0.5, -1.5, -0.5 * a, 0.0]
    h1 = [0.0, 0.0, 0.0, 0.25, -0.5 * b, 0.5 * c]
    h2 = [0.0, 0.0, 0.0, 0.25, -0.5 * b, -0.5 * c]
    half = 0.5 * h
    wm = [1.0] + w1[1:]
    im = [half, 1.0] + [half * (h1[k] + 0.5 * w1[k]) for k in range(2, 6)]
    left_wa = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    left_ia = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    return torch.tensor([left_wa, left_ia, w1, h1, wm, im, w2, h2], dtype=torch.float64)


class BrownianInterval:
    """Brownian motion on [t0, t1] of shape `size`, with torchsde's ``BrownianInterval`` constructor and call.

    ``bm(ta, tb)`` is W(tb) − W(ta); ``bm(ta, tb, return_U=True)`` also returns U = ∫_ta^tb (W_s − W_ta) ds
    (needs a Lévy area approximation other than "none"); ``bm(t)`` is W(t) − W(t0). `entropy` seeds the path
    (random when None). `dt`, `pool_size`, `cache_size` and `halfway_tree` tune torchsde's data structure
    and do not change the law here; `tol` > 0 sets the resolution (the tree's depth). With the default `tol=0`
    the resolution is 2**-32 of the span, and a query whose length it would change by more than 1% (one
    shorter than about 2e-8 of the span, not on the dyadic points, and not a floating-point sliver below 1e-13
    of its times) raises a ValueError naming `tol`. `W` (and `H`) fix the
    increment (and space-time Lévy area) over [t0, t1]; the path is then the Brownian bridge between them.
    ``return_A=True`` gives Davie's ("davie") or Foster's ("foster") approximation of the Lévy area A from
    (W, H) and a skew-symmetric Gaussian term (Davie 2014; Foster 2020, "Numerical approximations for
    stochastic differential equations"):
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
        if H is not None and levy_area_approximation == "none":
            raise ValueError("BrownianInterval: H (the space-time Lévy area over [t0, t1]) was given but "
                             "levy_area_approximation='none' carries no Lévy area; pass "
                             "levy_area_approximation='space-time' (or 'davie', 'foster'), or leave H out.")
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
        # any step an SDE solver takes, and every level saved is one fewer split per new query end.
        span = t1 - t0
        self.depth = 32 if tol == 0 else max(1, min(50, math.ceil(math.log2(span / tol))))
        self._numel = math.prod(self._size)
        # The Lévy area is carried only when a query may ask for it: without it a split draws one normal, not two.
        self._with_h = levy_area_approximation != "none"
        self._rows = 4 if self._with_h else 2
        self._keys = [stream_key(self._entropy, level) for level in range(self.depth + 1)]
        self._gen = torch.Generator(device=self._device)
        self._splits = [_split_matrix(span / (1 << level), self._with_h).to(self._device)
                        for level in range(self.depth)]
        # the children of split nodes, keyed by the parent's (level, index): (2 * rows, numel) float64
        self._cache: "OrderedDict[Tuple[int, int], torch.Tensor]" = OrderedDict()
        self._cache_entries = max(_CACHE_MIN_ENTRIES, _CACHE_BYTES // max(1, 16 * self._rows * self._numel))
        # Evicted entries are reused as the output of later splits, and the split's input and normals have
        # buffers of their own: on a large batch, touching fresh memory (page faults) costs more than the split.
        self._free: list = []
        self._noise_rows = 2 if self._with_h else 1
        self._input = torch.empty(self._rows + self._noise_rows, self._numel, dtype=torch.float64,
                                  device=self._device)
        self._draw = torch.empty(self._noise_rows, self._numel, dtype=torch.float32, device=self._device)
        # point values of recently queried ends: interval queries share ends (a solver's (t_k, t_{k+1}) then
        # (t_{k+1}, t_{k+2}); the same end asked for W and then for U), and a large batch's chain outgrows the cache
        self._points: "OrderedDict[int, torch.Tensor]" = OrderedDict()
        self._points_entries = max(4, min(64, _CACHE_BYTES // 4 // max(1, 4 * self._rows * self._numel)))
        self._seed(0, 0)
        z = torch.randn(2, self._numel, generator=self._gen, dtype=torch.float32, device=self._device).double()
        w = math.sqrt(span) * z[0] if W is None else self._flat(W, "W")
        h = math.sqrt(span / 12) * z[1] if H is None else self._flat(H, "H")
        zero = torch.zeros_like(w)
        self._root = torch.stack([zero, zero, w, h] if self._with_h else [zero, w])

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
        if self._tol == 0 and abs(length - (tb - ta)) > _LENGTH_RTOL * (tb - ta) and \
                tb - ta > _SLIVER * max(abs(ta), abs(tb), self._end - self._start):
            raise self._unresolved(ta, tb, length)
        out = [w.view(self._size).to(self._dtype)]
        if return_U:
            out.append(u.view(self._size).to(self._dtype))
        if return_A:
            hh = u / length - 0.5 * w if length > 0 else torch.zeros_like(w)
            area = self._levy_area(w.view(self._size), hh.view(self._size), tb - ta, ta, tb)
            out.append(area.to(self._dtype))
        return out[0] if len(out) == 1 else tuple(out)

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.numel() != self._numel:
            raise ValueError(f"BrownianInterval: {name} must have {self._numel} elements (size "
                             f"{tuple(self._size)}), got shape {tuple(x.shape)}.")
        return x.detach().to(device=self._device, dtype=torch.float64).reshape(-1)

    def _seed(self, stream: int, index: int) -> None:
        """Seed the generator with a 64-bit key of (seed, stream, index): the normals it draws next are a pure
        function of the node."""
        low = _mix32(self._keys[stream] ^ (index & _MASK32))
        high = _mix32(_mix32(low ^ (index >> 32)) ^ 0x2545F491)
        self._gen.manual_seed((high << 32) | low)

    def _levy_area(self, w, hh, h, ta, tb):
        if w.dim() < 2:  # a scalar or a batch of scalar motions has no Lévy area
            return torch.zeros_like(w)
        a = hh.unsqueeze(-1) * w.unsqueeze(-2) - w.unsqueeze(-1) * hh.unsqueeze(-2)
        key = _mix32(_mix32(self._keys[-1] ^ (self._position(ta) & _MASK32)) ^ (self._position(tb) & _MASK32))
        self._gen.manual_seed(key ^ 0x2545F491)
        noise = torch.randn(a.shape, generator=self._gen, dtype=torch.float64, device=self._device)
        noise = noise - noise.transpose(-1, -2)
        if self._levy == "foster":
            h2 = hh * hh
            std = (0.1 * h * (0.1 * h + h2.unsqueeze(-1) + h2.unsqueeze(-2))).sqrt()
        else:
            std = math.sqrt(h * h / 12)
        return a + std * noise

    def _unresolved(self, ta: float, tb: float, length: float) -> ValueError:
        """The error for a query the default resolution (2**-32 of the span) would round to a different length:
        its increment would have the law of an interval ``length`` long instead of ``tb - ta``."""
        resolution = (self._end - self._start) / (1 << self.depth)
        return ValueError(
            f"BrownianInterval: the query [{ta!r}, {tb!r}] (length {tb - ta:.3g}) is too short for the path's "
            f"resolution {resolution:.3g} (its span over 2**{self.depth}): its increment would have the law of an "
            f"interval {length:.3g} long. Build the path with tol=... at most {(tb - ta) * _LENGTH_RTOL:.3g} "
            f"(a deeper tree; tol is the resolution), or query longer intervals.")

    def _clamp(self, t: float, name: str) -> float:
        if t < self._start or t > self._end:
            warnings.warn(f"Should have {self._start} <= {name} <= {self._end}, got {name}={t}.")
            return min(max(t, self._start), self._end)
        return t

    def _position(self, t: float) -> int:
        full = 1 << self.depth
        return min(full, max(0, round((t - self._start) / (self._end - self._start) * full)))

    def _interval(self, ta: float, tb: float):
        """(W, U, dyadic length) over [ta, tb], flat float64, from the point values (W, I) at its ends:
        W = W_b − W_a and U = I_b − I_a − (b − a) W_a (U is None without Lévy area)."""
        pa, pb = self._position(ta), self._position(tb)
        if pa == pb:
            zero = torch.zeros(self._numel, dtype=torch.float64, device=self._device)
            return zero, zero, 0.0
        a, b = self._point(pa), self._point(pb)
        length = (pb - pa) * (self._end - self._start) / (1 << self.depth)
        w = b[0] - a[0]
        return w, (b[1] - a[1] - length * a[0] if self._with_h else None), length

    def _point(self, p: int) -> torch.Tensor:
        """Rows (W, I) at dyadic position p (just (W,) without Lévy area), with I(t) = ∫_{t0}^t W_s ds."""
        full = 1 << self.depth
        if p == 0:
            return self._root[: self._rows // 2].clone()  # the root's left-end rows: zeros
        if p == full:
            root = self._root
            if not self._with_h:
                return root[1:2]
            return torch.stack([root[2], (self._end - self._start) * (root[3] + 0.5 * root[2])])
        got = self._points.get(p)
        if got is not None:
            self._points.move_to_end(p)
            return got
        # p is the left end of node (depth − z, p >> z), z the number of trailing zero bits of p
        z = (p & -p).bit_length() - 1
        # a copy: the cache entry it lies in may be reused by the next split
        got = self._points[p] = self._node(self.depth - z, p >> z)[: self._rows // 2].clone()
        if len(self._points) > self._points_entries:
            self._points.popitem(last=False)
        return got

    def _node(self, level: int, index: int) -> torch.Tensor:
        """The rows of node (level, index), split down from its deepest cached ancestor."""
        cache, rows = self._cache, self._rows
        chain = []
        while level > 0:
            parent = (level - 1, index >> 1)
            got = cache.get(parent)
            if got is not None:
                cache.move_to_end(parent)
                node = got[(index & 1) * rows:((index & 1) + 1) * rows]
                break
            chain.append((level, index))
            level, index = parent
        else:
            node = self._root
        work = self._input
        for level, index in reversed(chain):
            parent = (level - 1, index >> 1)
            work[:rows].copy_(node)
            self._seed(level, parent[1])
            # drawn in float32 (five times faster than float64 on CPU) and widened: the path is computed in float64
            torch.randn(self._draw.shape, generator=self._gen, out=self._draw)
            work[rows:].copy_(self._draw)
            children = self._free.pop() if self._free else torch.empty(
                2 * rows, self._numel, dtype=torch.float64, device=self._device)
            torch.mm(self._splits[level - 1], work, out=children)
            cache[parent] = children
            if len(cache) > self._cache_entries:
                # the oldest entry: neither this node's parent (just used) nor its children (just stored)
                self._free.append(cache.popitem(last=False)[1])
            node = children[(index & 1) * rows:((index & 1) + 1) * rows]
        return node


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
