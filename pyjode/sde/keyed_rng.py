"""Keyed normal random numbers: the same integer key always gives the same numbers.

A Brownian tree needs the midpoint noise of any node on demand, in any order, without keeping
a record of what it has drawn. A stateless hash of (seed, stream, node index) gives every node a
32-bit key, and the node's normals are drawn from a generator seeded with that key.

The hash is a 32-bit integer mixer in the style of Wellons' "lowbias32" (xor-shift, multiply),
applied in int64 with multipliers below 2**31 so that no product overflows.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MUL_A = 0x7FEB352D
_MUL_B = 0x6A09E667


def _mix32(x):
    """Avalanche 32-bit values held in int64 tensors or Python ints (values stay in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL_B) & _MASK32
    return x ^ (x >> 16)


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
    """Standard normals of shape (len(keys), numel); row i depends only on keys[i] (and numel).

    Each row is drawn by torch's own generator for `device`, reseeded with the row's key: on CPU
    that is about five times faster than hashing every element and inverting the normal CDF, and the
    per-row reseed (a few microseconds) is small against a row of a batch of states. Rows are drawn in
    float32 whatever `dtype`, so float32 and float64 paths with one seed are the same path to float32
    rounding. CPU and CUDA generators differ, so a seed replays its path on the same kind of device.
    """
    gen = torch.Generator(device=device)
    out = torch.empty(len(keys), numel, dtype=torch.float32, device=device)
    for row, key in zip(out, keys.tolist()):
        gen.manual_seed(key)
        torch.randn(numel, generator=gen, dtype=torch.float32, device=device, out=row)
    return out.to(dtype)
