"""The README's promises that can drift silently: its layout names every source, test and benchmark file,
and every ``pyjode.<name>`` it mentions exists."""

import importlib
import re
from pathlib import Path

import pytest

import pyjode

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _layout() -> str:
    start = README.index("## Layout")
    return README[start:README.index("\n## ", start + 1)]


def _words(text: str) -> set:
    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*(?:\.py)?", text))


@pytest.mark.parametrize("folder", ["pyjode", "pyjode/adjoints", "pyjode/sde", "pyjode/sde/methods"])
def test_layout_names_every_module(folder):
    words = _words(_layout())
    missing = [p.name for p in sorted((ROOT / folder).glob("*.py"))
               if p.name not in words and p.stem not in words]
    assert not missing, f"README's Layout section does not mention {folder}/{missing}"


@pytest.mark.parametrize("folder, prefix", [("tests", "test_"), ("benchmarks", "bench_")])
def test_layout_names_every_test_and_benchmark(folder, prefix):
    words = _words(_layout())
    missing = []
    for p in sorted((ROOT / folder).glob("*.py")):
        if p.name == "__init__.py":
            continue
        topic = p.stem[len(prefix):] if p.stem.startswith(prefix) else None
        if p.name not in words and (topic is None or topic not in words):
            missing.append(p.name)
    assert not missing, f"README's Layout section does not mention {folder}/{missing}"


def test_layout_names_no_absent_file():
    # every "name.py" in the layout exists somewhere in the package, the tests or the benchmarks
    present = {p.name for d in ("pyjode", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")}
    absent = sorted(n for n in re.findall(r"\b[a-z_0-9]+\.py\b", _layout()) if n not in present)
    assert not absent, f"README's Layout section names files that do not exist: {absent}"


def test_every_mentioned_public_name_exists():
    for dotted in sorted(set(re.findall(r"\bpyjode((?:\.[A-Za-z_][A-Za-z_0-9]*)+)", README))):
        parts = dotted.strip(".").split(".")
        obj, path = pyjode, "pyjode"
        for part in parts:
            if not hasattr(obj, part):
                obj = importlib.import_module(f"{path}.{part}")  # a submodule such as pyjode.torchsde
            else:
                obj = getattr(obj, part)
            path = f"{path}.{part}"
