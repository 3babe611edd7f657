"""Run every benchmark in turn: ``python -m benchmarks.run_all [--quick]``.

Each script runs in its own process (memory figures need a fresh one) and prints its own table. Arguments
are passed on to every script; ``--quick`` (a shorter smoke run) goes only to the scripts that have that
option, and the others are skipped under it, since they have no short form.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple


def accepts_quick(path: Path) -> bool:
    """Whether the script declares a ``--quick`` option (``parser.add_argument("--quick", ...)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
               and any(isinstance(a, ast.Constant) and a.value == "--quick" for a in node.args)
               for node in ast.walk(tree))


def plan(extra: List[str], folder: Optional[Path] = None) -> List[Tuple[Path, Optional[List[str]]]]:
    """Each ``bench_*.py`` script with the arguments it is run with, or ``None`` where it is skipped."""
    folder = Path(__file__).parent if folder is None else folder
    quick = "--quick" in extra
    return [(path, list(extra) if not quick or accepts_quick(path) else None)
            for path in sorted(folder.glob("bench_*.py"))]


def main() -> int:
    failed, skipped = [], []
    for path, args in plan(sys.argv[1:]):
        if args is None:
            skipped.append(path.stem)
            continue
        print(f"\n##### {path.stem}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{path.stem}", *args]).returncode != 0:
            failed.append(path.stem)
    if skipped:
        print(f"\nskipped (no --quick mode): {', '.join(skipped)}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
