"""Counting the bytes autograd graphs keep for their backward pass."""

import torch


class LiveSaved:
    """Bytes of the tensors that autograd graphs hold for their backward pass, live now and at peak.
    (Custom functions' save_for_backward goes through the same hooks.)"""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, x):
        return Held(self, x)

    @staticmethod
    def unpack(held):
        return held.x

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class Held:
    def __init__(self, meter, x):
        self.meter, self.x, self.n = meter, x, x.numel() * x.element_size()
        meter.live += self.n
        meter.peak = max(meter.peak, meter.live)

    def __del__(self):
        self.meter.live -= self.n


class Allocations:
    def __init__(self, peak: int, net: int):
        self.peak, self.net = peak, net


def allocations(fn) -> Allocations:
    """Bytes allocated by torch's CPU allocator while ``fn()`` runs: the peak growth over the start, and
    the net growth still allocated at the end (from the profiler's memory events, in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return Allocations(peak, cur)
