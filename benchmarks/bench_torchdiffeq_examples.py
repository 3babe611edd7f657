"""torchdiffeq's own examples (``examples/ode_demo.py``, ``examples/latent_ode.py``) run unchanged, once with
``import torchdiffeq`` resolving to torchdiffeq and once to ``pyjode.torchdiffeq``: time per training
iteration and the final loss of each.

Each run is a fresh process with one intra-op thread and the same NumPy/torch seeds, so both backends see
the same data and batches. The time per iteration is (T(n2) - T(n1)) / (n2 - n1) over two run lengths,
which removes the start-up (imports, data generation); runs are interleaved across repeats and medians are
reported.

    python benchmarks/bench_torchdiffeq_examples.py --examples PATH/TO/torchdiffeq/examples
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_DRIVER = r"""
import importlib, json, os, runpy, sys, time, io, contextlib
import numpy as np, torch
torch.set_num_threads(1)
backend, example, niters, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
sys.modules["torchdiffeq"] = importlib.import_module(backend)
np.random.seed(0); torch.manual_seed(0)
sys.argv = [example, "--niters", str(niters)] + extra
os.chdir(os.environ["RUN_DIR"])
out = io.StringIO()
start = time.perf_counter()
with contextlib.redirect_stdout(out):
    runpy.run_path(example, run_name="__main__")
elapsed = time.perf_counter() - start
lines = [l for l in out.getvalue().splitlines() if "oss" in l or "elbo" in l]
print(json.dumps(dict(seconds=elapsed, first=lines[0] if lines else "", last=lines[-1] if lines else "")))
"""

CASES = {
    "ode_demo": ("ode_demo.py", [], (20, 120)),
    "ode_demo --adjoint": ("ode_demo.py", ["--adjoint"], (20, 120)),
    "latent_ode": ("latent_ode.py", [], (5, 25)),
    "latent_ode --adjoint True": ("latent_ode.py", ["--adjoint", "True"], (5, 25)),
}
BACKENDS = ("torchdiffeq", "pyjode.torchdiffeq")


def run(backend: str, path: str, niters: int, extra, run_dir: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", RUN_DIR=run_dir)
    out = subprocess.run([sys.executable, "-c", _DRIVER, backend, path, str(niters), json.dumps(extra)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", required=True, help="the examples/ folder of a torchdiffeq checkout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        for case in args.cases:
            script, extra, (n1, n2) = CASES[case]
            path = os.path.join(os.path.abspath(args.examples), script)
            per_iter = {b: [] for b in BACKENDS}
            last = {}
            for r in range(args.repeats):
                order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
                for backend in order:
                    short = run(backend, path, n1, extra, run_dir)
                    long = run(backend, path, n2, extra, run_dir)
                    per_iter[backend].append((long["seconds"] - short["seconds"]) / (n2 - n1))
                    last[backend] = f'{long["first"]}; {long["last"]}'.replace("|", "")
            med = {b: statistics.median(v) for b, v in per_iter.items()}
            print(f"| {case} | {n2} | {1e3 * med['torchdiffeq']:.1f} | {1e3 * med['pyjode.torchdiffeq']:.1f} | "
                  f"{med['pyjode.torchdiffeq'] / med['torchdiffeq']:.2f} | {last['torchdiffeq']} | "
                  f"{last['pyjode.torchdiffeq']} |", flush=True)


if __name__ == "__main__":
    main()
