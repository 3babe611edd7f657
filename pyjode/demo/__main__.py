"""Runs every demo section in turn; each prints its own table and writes a PNG into ``--out``."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import torch

# Order matters only for reading: the ODE gradient methods first, then the extensions.
SECTIONS = ("ode", "reversible", "sde", "taylor")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyjode.demo", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--out", default="out", help="folder for the PNG plots (default: out/)")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    # The demo's models are small: one intra-op thread is fastest and immune to oversubscription.
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or SECTIONS:
        module = importlib.import_module(f"pyjode.demo.{name}")
        print(f"\n=== {name}: {module.__doc__.strip().splitlines()[0]}")
        start = time.perf_counter()
        module.run(out, quick=args.quick)
        print(f"({name} took {time.perf_counter() - start:.1f} s)")
    print(f"\nPlots written to {out.resolve()}")


if __name__ == "__main__":
    main()
