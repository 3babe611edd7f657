"""The one place that imports juliacall: once, on the first Julia solve (or at ``import pyjode`` when
the user selected the Julia backend in the environment, see :func:`start_early`).

A failed start is remembered and re-raised: juliacall must not be initialised twice in one process.

Import order. juliacall warns that importing torch first "may cause a segfault" (both load their own
copies of native libraries; PythonCall.jl issues #215 and #435). Python caches the first copy, so the
only cure is for juliacall to come first. ``pyjode`` imports torch, so a lazy start always comes after
it; :func:`start_early` therefore starts Julia while ``pyjode`` itself is being imported, before any
torch import of its own, when ``PYJODE_BACKEND=julia`` is set and Julia is available. A program that
imports torch before pyjode should ``import juliacall`` first itself.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Optional

from .probe import INSTALL_HINT, JuliaUnavailableError, unavailable_reason

__all__ = ["API_VERSION", "load_pyjode", "ensure_cuda", "assert_main_thread", "start_early"]

# Must equal PyJODE.API_VERSION in julia/PyJODE/src/PyJODE.jl.
API_VERSION = 2

# The package extension that holds PyField and the DLPack views (julia/PyJODE/ext).
PYTHON_EXTENSION = "PyJODEPythonCallExt"

_module: Optional[Any] = None
_bridge: Optional[Any] = None
_failure: Optional[BaseException] = None
_cuda_loaded = False


def load_pyjode() -> Any:
    """Start Julia (first call only) and return the ``PyJODE`` Julia module.

    Raises:
        JuliaUnavailableError: Julia or juliacall is missing, or Julia failed to start or to load PyJODE.
    """
    global _module, _bridge, _failure
    if _module is not None:
        return _module
    if _failure is not None:
        raise JuliaUnavailableError(f"the Julia backend failed to start earlier: {_failure}. {INSTALL_HINT}")
    reason = unavailable_reason()
    if reason is not None:
        raise JuliaUnavailableError(f'backend="julia" is not available: {reason}. {INSTALL_HINT}')
    # Julia's GC must only ever run on the thread that started it; keep Julia single-threaded.
    os.environ.setdefault("PYTHON_JULIACALL_THREADS", "1")
    try:
        import juliacall  # noqa: PLC0415 - deliberately lazy, see the module docstring

        main = juliacall.newmodule("PyJODEBridge")
        # PythonCall is loaded by juliacall itself; loading DLPack too triggers PyJODE's extension.
        main.seval("using PyJODE, DLPack")
        module = main.PyJODE
        if not bool(main.seval(f"Base.get_extension(PyJODE, :{PYTHON_EXTENSION}) !== nothing")):
            raise JuliaUnavailableError(
                f"PyJODE's extension {PYTHON_EXTENSION} did not load although PythonCall and DLPack are; "
                "reinstall pyjode so that juliapkg resolves PyJODE's Julia environment again"
            )
        version = int(module.API_VERSION)
        if version != API_VERSION:
            raise JuliaUnavailableError(
                f"the Julia package PyJODE speaks API version {version} but pyjode expects {API_VERSION}; "
                "reinstall pyjode so both come from the same release"
            )
    except Exception as exc:  # juliacall raises bare Exception, URLError, CalledProcessError, JuliaError
        _failure = exc
        raise JuliaUnavailableError(f"the Julia backend failed to start: {exc}. {INSTALL_HINT}") from exc
    _module, _bridge = module, main
    return module


def start_early() -> None:
    """Start Julia now if the environment selects the Julia backend and torch is not imported yet.

    Never raises: a failure is remembered by :func:`load_pyjode` and reported at the first Julia solve,
    so ``import pyjode`` itself always succeeds.
    """
    if os.environ.get("PYJODE_BACKEND", "").strip().lower() != "julia" or "torch" in sys.modules:
        return
    if unavailable_reason() is not None:
        return
    try:
        load_pyjode()
    except JuliaUnavailableError:
        pass


def ensure_cuda() -> None:
    """Load CUDA.jl (and so PyJODE's CUDA extension) before CUDA tensors cross over."""
    global _cuda_loaded
    if _cuda_loaded or _bridge is None:
        return
    try:
        _bridge.seval("import CUDA")
    except Exception as exc:
        raise RuntimeError(
            "CUDA tensors need CUDA.jl in the Julia environment: in Python run "
            "`import juliapkg; juliapkg.add('CUDA', '052768ef-5323-5732-b1bb-66c8b64840ba'); juliapkg.resolve()` "
            f"on a machine with network access, or solve on the CPU ({exc})"
        ) from exc
    _cuda_loaded = True


def assert_main_thread() -> None:
    """Julia may only be entered from the thread that started it (PythonCall.jl issue #578)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            'backend="julia" must run on the main Python thread, but this call came from another thread. '
            "On CUDA, PyTorch runs backward on a worker thread: wrap loss.backward() in "
            "`with torch.autograd.set_multithreading_enabled(False):`"
        )
