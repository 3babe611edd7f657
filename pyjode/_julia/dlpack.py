"""Handing PyTorch tensors to Julia zero-copy, through DLPack.

Every tensor crosses as a flat, contiguous, detached 1-D vector: DLPack.jl ignores strides it does not
recognise and reverses the dimensions of N-d arrays, while a flat vector means the same on both sides.
A PyTorch ``(rows, n)`` tensor is then the Julia ``reshape(v, n, rows)``, column ``i`` being row ``i``.

Lifetime: Python owns the memory. Julia's ``PyJODE.wrap(capsule, owner)`` keeps ``owner`` (the flat
tensor itself, not the single-use capsule) referenced for as long as its view lives, and the caller also
keeps every tensor it hands over (``keep``) until it drops its Julia handles: a contiguous copy made
here would otherwise be freed while Julia still reads it.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch

__all__ = ["flat_for_julia", "to_julia"]


def flat_for_julia(t: torch.Tensor) -> torch.Tensor:
    """The flat contiguous tensor that will cross; shares memory with ``t`` when ``t`` is contiguous."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.reshape(-1)


def to_julia(module: Any, t: torch.Tensor, keep: Optional[List[torch.Tensor]] = None) -> Any:
    """A Julia vector viewing ``t``'s memory (``module.wrap`` of a DLPack capsule and its owner).

    Writes from Julia land in ``t`` only when ``t`` was contiguous already: pass buffers you allocated.
    ``keep``, when given, receives the tensor that crossed, to be held as long as the view is used.
    """
    flat = flat_for_julia(t)
    if keep is not None:
        keep.append(flat)
    if flat.is_cuda:
        # PyTorch exports only tensors on the current device; Julia selects the same device from the
        # capsule, and reads the memory on its own stream, so PyTorch's queued writes must be done.
        with torch.cuda.device(flat.device):
            torch.cuda.current_stream().synchronize()
            capsule = flat.__dlpack__()
    else:
        capsule = flat.__dlpack__()
    return module.wrap(capsule, flat)
