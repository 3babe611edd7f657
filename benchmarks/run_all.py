"""Run every benchmark in turn: ``python -m benchmarks.run_all [--quick]``.

Each script runs in its own process (memory figures need a fresh one) and prints its own table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"\n##### {path.stem}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{path.stem}", *extra]).returncode != 0:
            failed.append(path.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
