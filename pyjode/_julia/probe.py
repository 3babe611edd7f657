"""Can the Julia backend run here? Answered without importing juliacall and without the network.

``import juliacall`` starts Julia at import time, and when no Julia can be found it asks juliapkg to
download one. So availability is decided from what is already on disk: juliacall is installed (found,
not imported) and a Julia executable exists, named by ``PYTHON_JULIACALL_EXE`` or
``PYTHON_JULIAPKG_EXE`` (or their ``-X`` options), recorded by an earlier juliapkg resolve, installed
by juliapkg into this environment, or on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from typing import Optional

__all__ = ["JuliaUnavailableError", "julia_available", "find_julia_executable", "unavailable_reason"]

INSTALL_HINT = (
    'To use it, run `pip install "pyjode[julia]"` on a machine with network access (juliapkg then fetches '
    "Julia, PyJODE's dependencies and compiles them on first use), or point PYTHON_JULIAPKG_EXE at an "
    "existing julia executable. To bypass juliapkg entirely, set PYTHON_JULIACALL_EXE to that julia and "
    "PYTHON_JULIACALL_PROJECT to a Julia project that already has PythonCall and PyJODE. "
    'backend="torch" (the default) needs none of this.'
)


class JuliaUnavailableError(RuntimeError):
    """``backend="julia"`` was asked for but the Julia backend cannot start; the message says how to get it."""


def _option(name: str) -> Optional[str]:
    """A juliacall/juliapkg setting from ``-X`` options or the environment (``-X`` wins, as there)."""
    prefix, _, key = name.partition("_")
    xopt = f"{prefix.lower()}-{key.lower().replace('_', '-')}"
    value = sys._xoptions.get(xopt)
    if isinstance(value, str) and value:
        return value
    return os.environ.get(f"PYTHON_{name}") or None


def _is_executable(path: Optional[str]) -> bool:
    if not path:
        return False
    found = shutil.which(path) if os.path.basename(path) == path else path
    return bool(found) and os.path.isfile(found) and os.access(found, os.X_OK)


def _juliapkg_project() -> Optional[str]:
    """The Julia project juliapkg would use, computed as juliapkg does but without importing it."""
    project = _option("JULIAPKG_PROJECT")
    if project:
        return project
    if sys.prefix != sys.base_prefix:
        return os.path.join(sys.prefix, "julia_env")
    if os.environ.get("CONDA_PREFIX"):
        return os.path.join(os.environ["CONDA_PREFIX"], "julia_env")
    depot = os.environ.get("JULIA_DEPOT_PATH", "").split(os.pathsep)[0] or os.path.join(
        os.path.expanduser("~"), ".julia"
    )
    return os.path.join(depot, "environments", "pyjuliapkg")


def _juliapkg_recorded_executables() -> list:
    """Julia executables juliapkg recorded (its meta file) or installed into this environment."""
    project = _juliapkg_project()
    if not project:
        return []
    prefix = os.path.join(project, "pyjuliapkg")
    found = []
    try:
        with open(os.path.join(prefix, "meta.json")) as fp:
            exe = json.load(fp).get("executable")
        if isinstance(exe, str):
            found.append(exe)
    except (OSError, ValueError):
        pass
    name = "julia.exe" if os.name == "nt" else "julia"
    found.append(os.path.join(prefix, "install", "bin", name))
    return found


def find_julia_executable() -> Optional[str]:
    """The Julia executable juliacall would use, if one exists on disk; ``None`` otherwise."""
    candidates = [_option("JULIACALL_EXE"), _option("JULIAPKG_EXE")]
    candidates += _juliapkg_recorded_executables()
    candidates.append(shutil.which("julia"))
    for path in candidates:
        if _is_executable(path):
            return path
    return None


def unavailable_reason() -> Optional[str]:
    """Why the Julia backend cannot start here, or ``None`` when it looks usable."""
    if importlib.util.find_spec("juliacall") is None:
        return "the Python package juliacall is not installed"
    if _option("JULIACALL_EXE") and not _option("JULIACALL_PROJECT"):
        return "PYTHON_JULIACALL_EXE is set but PYTHON_JULIACALL_PROJECT is not (juliacall needs both)"
    if find_julia_executable() is None:
        return (
            "no Julia executable was found (PYTHON_JULIACALL_EXE, PYTHON_JULIAPKG_EXE, juliapkg's environment "
            "and PATH were checked), and pyjode never lets juliacall download one implicitly"
        )
    return None


def julia_available() -> bool:
    """Whether ``backend="julia"`` can be used: juliacall is installed and a Julia executable exists.

    Cheap and side-effect free: it neither imports juliacall nor starts Julia nor touches the network,
    so it cannot tell whether PyJODE's Julia dependencies will resolve; the first Julia solve does that.
    """
    return unavailable_reason() is None
