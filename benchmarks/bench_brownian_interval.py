"""pyjode's BrownianInterval against torchsde's: time per query, in one process, interleaved repeats, medians.

Two access patterns: a solver's step grid (``bm(t_k, t_{k+1})`` along 200 steps of a non-dyadic dt, batch 256 x 4
channels) and isolated random intervals on a large batch (131072, as torchsde's own statistical tests query).
Each repeat builds a fresh Brownian motion of each library (new entropy), so every query of the random pattern
starts at new times. CPU time of this process (``time.process_time``), one intra-op thread, so that other load on
the machine does not enter the figures.

    python -m benchmarks.bench_brownian_interval [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _grid(lib, numel: int, levy: str, seed: int) -> float:
    bm = lib.BrownianInterval(0.0, 2.0, size=(numel // 4, 4), dtype=torch.float64, entropy=seed,
                              levy_area_approximation=levy)
    ts = torch.linspace(0.0, 2.0, 201, dtype=torch.float64).tolist()
    start = time.process_time()
    for a, b in zip(ts[:-1], ts[1:]):
        bm(a, b, return_U=True) if levy != "none" else bm(a, b)
    return (time.process_time() - start) / 200


def _random(lib, numel: int, levy: str, seed: int, queries: int = 4) -> float:
    bm = lib.BrownianInterval(0.0, 1.0, size=(numel,), dtype=torch.float64, entropy=seed,
                              levy_area_approximation=levy)
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.rand(queries, 2, generator=gen, dtype=torch.float64).sort(dim=1).values.tolist()
    start = time.process_time()
    for a, b in pairs:
        bm(a, b, return_U=True) if levy != "none" else bm(a, b)
    return (time.process_time() - start) / queries


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import torchsde

    import pyjode.torchsde as ours
    libs = {"torchsde": torchsde, "pyjode": ours}
    cases = [("grid of 200 steps, numel 1024", _grid, 1024, "none"),
             ("grid of 200 steps, numel 1024", _grid, 1024, "space-time"),
             ("random intervals, numel 131072", _random, 131072, "none"),
             ("random intervals, numel 131072", _random, 131072, "space-time")]
    print("case | levy area | torchsde ms/query | pyjode ms/query | pyjode / torchsde")
    for label, fn, numel, levy in cases:
        times = {name: [] for name in libs}
        for r in range(args.repeats):
            names = list(libs) if r % 2 == 0 else list(libs)[::-1]
            for name in names:
                times[name].append(fn(libs[name], numel, levy, 1000 + r))
        med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        print(f"{label} | {levy} | {med['torchsde']:.3f} | {med['pyjode']:.3f} | "
              f"{med['pyjode'] / med['torchsde']:.2f}", flush=True)


if __name__ == "__main__":
    main()
