"""The Julia package and its requirements, checked without Julia: syntax, metadata, juliapkg, wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "julia" / "PyJODE"
JL_FILES = sorted(PKG.rglob("*.jl")) + sorted((ROOT / "benchmarks" / "julia").rglob("*.jl"))


def _bad_nodes(node, out):
    if node.type == "ERROR" or node.is_missing:
        out.append((node.type, node.start_point))
    for child in node.children:
        _bad_nodes(child, out)
    return out


@pytest.mark.parametrize("path", JL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_julia_file_parses(path):
    tree_sitter = pytest.importorskip("tree_sitter")
    tsj = pytest.importorskip("tree_sitter_julia")
    parser = tree_sitter.Parser(tree_sitter.Language(tsj.language()))
    tree = parser.parse(path.read_bytes())
    assert _bad_nodes(tree.root_node, []) == []
    assert not tree.root_node.has_error


def test_parser_flags_broken_julia():
    tree_sitter = pytest.importorskip("tree_sitter")
    tsj = pytest.importorskip("tree_sitter_julia")
    parser = tree_sitter.Parser(tree_sitter.Language(tsj.language()))
    tree = parser.parse(b"function f(x)\n    y = (x + 1\nend\n")
    assert _bad_nodes(tree.root_node, [])


def test_julia_sources_cover_every_file():
    included = set(re.findall(r'include\("([^"]+)"\)', (PKG / "src" / "PyJODE.jl").read_text()))
    on_disk = {p.name for p in (PKG / "src").glob("*.jl")} - {"PyJODE.jl"}
    assert included == on_disk


def test_project_toml_is_consistent():
    project = tomllib.loads((PKG / "Project.toml").read_text())
    assert project["name"] == "PyJODE"
    for json_path in (ROOT / "juliapkg.json", ROOT / "pyjode" / "juliapkg.json"):
        entry = json.loads(json_path.read_text())["packages"]["PyJODE"]
        assert entry["uuid"] == project["uuid"], json_path
        assert entry["dev"] is True
    uuid_re = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    deps = {**project["deps"], **project["weakdeps"], **project["extras"]}
    assert all(uuid_re.match(u) for u in deps.values())
    assert set(project["compat"]) == set(deps) | {"julia"}
    assert project["compat"]["julia"] == "1.10"
    assert project["compat"]["PythonCall"] == "0.9"  # agrees with juliacall's exact PythonCall pin
    for ext, triggers in project["extensions"].items():
        assert (PKG / "ext" / f"{ext}.jl").is_file()
        triggers = [triggers] if isinstance(triggers, str) else triggers
        assert set(triggers) <= set(project["weakdeps"])
    assert set(project["targets"]["test"]) <= set(project["extras"])


def test_using_pyjode_is_pure_julia():
    """PythonCall and DLPack are weak dependencies behind an extension: plain `using PyJODE` (its own
    Pkg.test(), the Julia benchmark) never installs Python."""
    project = tomllib.loads((PKG / "Project.toml").read_text())
    assert not {"PythonCall", "DLPack", "CUDA"} & set(project["deps"])
    assert sorted(project["extensions"]["PyJODEPythonCallExt"]) == ["DLPack", "PythonCall"]
    source = "\n".join(p.read_text() for p in (PKG / "src").glob("*.jl"))
    assert not re.search(r"^\s*(using|import) (PythonCall|DLPack|CUDA)\b", source, re.M)
    # The Python side needs DLPack in its Julia environment to load the extension (juliacall brings PythonCall).
    for json_path in (ROOT / "juliapkg.json", ROOT / "pyjode" / "juliapkg.json"):
        entry = json.loads(json_path.read_text())["packages"]["DLPack"]
        assert entry["uuid"] == project["weakdeps"]["DLPack"]
        assert entry["version"] == project["compat"]["DLPack"]


def test_julia_method_table_matches_pyjode_tableaus():
    """Orders in methods.jl are pyjode's, so both backends place the same default number of quadrature nodes."""
    from pyjode.tableau import get_tableau

    source = (PKG / "src" / "methods.jl").read_text()
    rows = re.findall(r'MethodSpec\("(\w+)", \w+\(\), (\d+), (\d+), (true|false)\)', source)
    assert {name for name, *_ in rows} == set(re.findall(r'"(\w+)"', source.split("METHOD_NAMES = ")[1].splitlines()[0]))
    for name, order, error_order, adaptive in rows:
        tab = get_tableau(name)
        assert (int(order), adaptive == "true") == (tab.order, tab.adaptive), name
        assert int(error_order) == (tab.error_order if tab.adaptive else 0), name
    assert "default_nodes(m::MethodSpec) = max(1, cld(m.adaptive ? m.error_order : m.order, 2))" in source


def test_python_calls_exist_in_julia():
    """Every PyJODE function the bridge calls is defined in the Julia sources (`f_b` is `f!`)."""
    files = list((PKG / "src").glob("*.jl")) + list((PKG / "ext").glob("*.jl"))
    source = "\n".join(p.read_text() for p in files)
    bridge = (ROOT / "pyjode" / "_julia" / "bridge.py").read_text()
    called = set(re.findall(r'"(\w+_b)"', bridge)) | set(re.findall(r"module\.(\w+)\(", bridge))
    called |= {"make_field", "tableau_rowmajor", "wrap"}
    for name in called:
        julia_name = name[:-2] + "!" if name.endswith("_b") else name
        assert re.search(rf"^(function )?(PyJODE\.)?{re.escape(julia_name)}\(", source, re.M), julia_name
    from pyjode._julia.loader import API_VERSION

    assert re.search(rf"^const API_VERSION = {API_VERSION}$", source, re.M)


FIND_REQUIREMENTS = """
import json, os, sys
if os.environ.get("ONLY_PYTHONPATH"):
    # Only the checkout or wheel under test: drop an editable-install finder (which may point at another
    # checkout of pyjode, whose juliapkg.json would name a second PyJODE path).
    sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import juliapkg.deps as deps
compat, packages = deps.find_requirements()
pkg = [p for p in packages if p.name == "PyJODE"][0]
print(json.dumps({"path": pkg.path, "dev": pkg.dev, "uuid": pkg.uuid, "julia": str(compat),
                  "project": os.path.isfile(os.path.join(pkg.path, "Project.toml"))}))
"""


def _find_requirements(cwd: Path, extra_path: str = "") -> dict:
    pytest.importorskip("juliapkg")
    env = {"PYTHONPATH": extra_path, "PATH": "/usr/bin:/bin", "PYTHON_JULIAPKG_OFFLINE": "yes",
           "ONLY_PYTHONPATH": "1"}
    out = subprocess.run([sys.executable, "-c", FIND_REQUIREMENTS], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_requirements(req: dict):
    assert req["dev"] is True
    assert req["uuid"] == tomllib.loads((PKG / "Project.toml").read_text())["uuid"]
    assert req["project"], f"no Project.toml at {req['path']}"
    assert "1.10" in req["julia"]


def test_juliapkg_resolves_from_checkout():
    req = _find_requirements(ROOT)
    _check_requirements(req)
    assert Path(req["path"]).resolve() == PKG.resolve()


def test_juliapkg_resolves_from_wheel(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        target, origin = src / rel, ROOT / rel
        if not (origin.is_file() or origin.is_symlink()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(origin.readlink())
        else:
            target.write_bytes(origin.read_bytes())
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(tmp_path / "dist"),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    for jl in PKG.rglob("*"):
        if jl.is_file():
            assert f"pyjode/julia/PyJODE/{jl.relative_to(PKG).as_posix()}" in names
    assert "pyjode/juliapkg.json" in names
    elsewhere = tmp_path / "elsewhere"  # a working directory that holds no other juliapkg.json
    elsewhere.mkdir()
    req = _find_requirements(elsewhere, extra_path=str(site))
    _check_requirements(req)
    assert Path(req["path"]).resolve() == (site / "pyjode" / "julia" / "PyJODE").resolve()
