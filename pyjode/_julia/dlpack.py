"""Handing PyTorch tensors to Julia zero-copy, through DLPack.

Every tensor crosses as a flat, contiguous, detached 1-D vector: DLPack.jl ignores strides it does not
recognise and reverses the dimensions of N-d arrays, while a flat vector means the same on both sides.
A PyTorch ``(rows, n)`` tensor is then the Julia ``reshape(v, n, rows)``, column ``i`` being row ``i``.
Python keeps ownership: the capsule holds a reference to the storage until Julia drops its view.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["flat_for_julia", "to_julia"]


def flat_for_julia(t: torch.Tensor) -> torch.Tensor:
    """The flat contiguous tensor that will cross; shares memory with ``t`` when ``t`` is contiguous."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.reshape(-1)


def to_julia(module: Any, t: torch.Tensor) -> Any:
    """A Julia vector viewing ``t``'s memory (``module.wrap`` of a DLPack capsule).

    Writes from Julia land in ``t`` only when ``t`` was contiguous already: pass buffers you allocated.
    """
    flat = flat_for_julia(t)
    if flat.is_cuda:
        # PyTorch exports only tensors on the current device, and Julia reads them on its own stream.
        with torch.cuda.device(flat.device):
            torch.cuda.current_stream().synchronize()
            capsule = flat.__dlpack__()
    else:
        capsule = flat.__dlpack__()
    return module.wrap(capsule)
