"""The one place that imports juliacall: lazily, once, on the first Julia solve.

A failed start is remembered and re-raised: juliacall must not be initialised twice in one process.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional

from .probe import INSTALL_HINT, JuliaUnavailableError, unavailable_reason

__all__ = ["API_VERSION", "load_pyjode", "ensure_cuda", "assert_main_thread"]

# Must equal PyJODE.API_VERSION in julia/PyJODE/src/PyJODE.jl.
API_VERSION = 1

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
        main.seval("using PyJODE")
        module = main.PyJODE
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
