"""Every benchmark script at least compiles (running them is `make bench`)."""

import py_compile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_compiles(path):
    py_compile.compile(str(path), doraise=True)



def test_run_all_quick_goes_only_to_scripts_that_have_it(tmp_path):
    import subprocess
    import sys

    from benchmarks import run_all

    (tmp_path / "bench_a.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                         "p.add_argument('--quick', action='store_true')\np.parse_args()\n")
    (tmp_path / "bench_b.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                         "p.add_argument('--repeats', type=int)\np.parse_args()\n")
    (tmp_path / "bench_c.py").write_text("print('takes no arguments')\n")
    planned = {p.stem: args for p, args in run_all.plan(["--quick"], tmp_path)}
    assert planned == {"bench_a": ["--quick"], "bench_b": None, "bench_c": None}
    assert {p.stem: args for p, args in run_all.plan([], tmp_path)} == {"bench_a": [], "bench_b": [], "bench_c": []}
    # the scripts handed --quick accept it, and those skipped would have refused it
    for name, args in planned.items():
        rc = subprocess.run([sys.executable, str(tmp_path / f"{name}.py"), "--quick"], capture_output=True).returncode
        assert (rc == 0) == (args is not None) or name == "bench_c"
    real = {p.stem: args for p, args in run_all.plan(["--quick"])}
    assert set(real) == {p.stem for p in SCRIPTS if p.stem.startswith("bench_")}
    assert real["bench_forward"] == ["--quick"] and real["bench_brownian_interval"] is None
