"""Interleaved timing: each repeat runs every candidate once, in a rotating order, and the median wins.

Interleaving spreads slow drifts of a busy machine (other processes, frequency changes) evenly over the
candidates, and the median ignores the occasional outlier, so ratios measured in one process are fair.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

import torch

__all__ = ["interleaved", "sync"]


def sync() -> None:
    """Wait for queued CUDA work, so a timing covers the kernels and not just their launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> Dict[str, float]:
    """Median wall-clock seconds of each zero-argument callable.

    Args:
        fns: name -> callable to time.
        repeats: timed calls of each callable; the order of the callables rotates every repeat.
        warmup: untimed calls of each callable first (caches, lazy initialisation, allocator).

    Returns:
        name -> median seconds per call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    samples: Dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}
