"""pyjode.torchsde against torchsde, method by method, for sdeint and sdeint_adjoint.

A neural SDE (drift and diffusion MLPs of width 32, state d = 8, batch 64; diagonal Itô noise for the Itô methods,
diagonal Stratonovich for the Stratonovich ones) is solved on [0, 1] with dt = 0.02 and outputs at 11 times; each
library draws its own Brownian motion (bm=None) as a user would. The figure is the median time of forward +
backward of a sum-of-squares loss over interleaved repeats in one process; the ratio is pyjode / torchsde.
Adjoint methods are each library's defaults (torchsde's per method; pyjode: Stratonovich midpoint, and the exact
reverse sweep for reversible Heun).

    python -m benchmarks.bench_torchsde_dropin [--repeats R] [--threads N]
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import pyjode.torchsde as pts

from ._timing import interleaved

CASES = [("ito", "euler"), ("ito", "milstein"), ("ito", "srk"), ("stratonovich", "midpoint"),
         ("stratonovich", "heun"), ("stratonovich", "euler_heun"), ("stratonovich", "reversible_heun")]


class NeuralSDE(nn.Module):
    noise_type = "diagonal"

    def __init__(self, sde_type: str, d: int = 8, width: int = 32):
        super().__init__()
        self.sde_type = sde_type
        self.drift = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d))
        self.diff = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d), nn.Sigmoid())

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        # diagonal noise needs g_i to depend on y_i only: a per-channel scale of a shared function of y_i
        return 0.1 + 0.5 * torch.sigmoid(y) * torch.sigmoid(self.diff[2].bias)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torchsde
    y0 = torch.randn(64, 8)
    ts = torch.linspace(0, 1, 11)
    print(f"{'method':16s} {'mode':15s} {'torchsde ms':>12s} {'pyjode ms':>10s} {'ratio':>6s}")
    for sde_type, method in CASES:
        sde = NeuralSDE(sde_type)
        for mode in ("sdeint", "sdeint_adjoint"):
            def run(lib, mode=mode, method=method, sde=sde):
                def go():
                    sde.zero_grad()
                    ys = getattr(lib, mode)(sde, y0, ts, method=method, dt=0.02)
                    (ys ** 2).sum().backward()
                return go
            try:
                med = interleaved({"torchsde": run(torchsde), "pyjode": run(pts)}, repeats=args.repeats)
            except Exception as exc:  # a mode one library does not offer for this method
                print(f"{method:16s} {mode:15s} not comparable: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            print(f"{method:16s} {mode:15s} {med['torchsde'] * 1e3:12.1f} {med['pyjode'] * 1e3:10.1f} "
                  f"{med['pyjode'] / med['torchsde']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
