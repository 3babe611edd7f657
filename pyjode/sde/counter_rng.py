"""Counter-based normal random numbers: the same integer key always gives the same numbers.

A Brownian tree needs the midpoint noise of any node on demand, in any order, without keeping
a record of what it has drawn. A stateless hash of (seed, stream, index, element) gives that:
it is vectorised over many nodes at once and gives identical values on every device.

The hash is a 32-bit integer mixer in the style of Wellons' "lowbias32" (xor-shift, multiply),
applied in int64 with multipliers below 2**31 so that no product overflows. Uniforms are mapped
to normals by the inverse normal CDF.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MUL_A = 0x7FEB352D
_MUL_B = 0x6A09E667
_COUNTER_MUL = 0x3C6EF373


def _mix32(x):
    """Avalanche 32-bit values held in int64 tensors or Python ints (values stay in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL_B) & _MASK32
    return x ^ (x >> 16)


def _mix32_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """`_mix32` in place; large temporaries cost more than the arithmetic on CPU."""
    torch.bitwise_right_shift(x, 16, out=tmp)
    x.bitwise_xor_(tmp).mul_(_MUL_A).bitwise_and_(_MASK32)
    torch.bitwise_right_shift(x, 15, out=tmp)
    x.bitwise_xor_(tmp).mul_(_MUL_B).bitwise_and_(_MASK32)
    torch.bitwise_right_shift(x, 16, out=tmp)
    return x.bitwise_xor_(tmp)


def stream_key(seed: int, stream: int) -> int:
    """32-bit key of one stream (e.g. one tree level) of one seed."""
    key = _mix32(_mix32(seed & _MASK32) ^ ((seed >> 32) & _MASK32))
    return _mix32(_mix32(key ^ (stream & _MASK32)) ^ 0x5BD1E995)


def node_keys(stream: int, index: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """32-bit keys of the nodes `index` (int64 >= 0) of a stream key; `wide` if index >= 2**32."""
    if len(index) <= 4:
        # Few nodes (deep levels of a sparse query): Python ints beat tiny tensor kernels.
        keys = [_mix32(stream ^ (i & _MASK32)) for i in index.tolist()]
        if wide:
            keys = [_mix32(k ^ (i >> 32)) for k, i in zip(keys, index.tolist())]
        return torch.tensor(keys, dtype=torch.int64)
    keys = _mix32(stream ^ (index & _MASK32))
    return _mix32(keys ^ (index >> 32)) if wide else keys


def keyed_normals(keys: torch.Tensor, numel: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """Standard normals of shape (len(keys), numel); row i depends only on keys[i]."""
    keys = keys.to(device)[:, None]
    counter = torch.arange(numel, dtype=torch.int64, device=device) * _COUNTER_MUL & _MASK32
    x = keys.expand(len(keys), numel).clone().bitwise_xor_(counter)
    _mix32_(x, torch.empty_like(x))
    # 32-bit uniforms in the open interval (0, 1); the normal tails are cut at about 6.2 sigma.
    # The inverse CDF runs in the output precision when that is float32 (values agree with the
    # float64 path to float32 rounding).
    work = torch.float32 if dtype == torch.float32 else torch.float64
    u = x.to(work).add_(0.5).mul_(1.0 / 4294967296.0)
    if work == torch.float32:
        # float32 cannot hold 1 - 2**-33; keep u strictly inside (0, 1).
        u.clamp_(2.0 ** -33, 1.0 - 2.0 ** -24)
    return torch.special.ndtri(u).to(dtype)
